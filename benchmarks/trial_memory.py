"""Does a reused trial process stay small? Resident memory per trial over a study's trials.

A study's inline trials run in processes that Tune reuses from trial to trial, so whatever one
trial leaves behind the next ones inherit: on a 16-core node running 16 trials at once, a process
that grows from 1 GB to 3.5 GB does not fit. This runs one study on a local Ray of ``--cpus``
CPUs (one trial at a time per CPU, so with ``--cpus 1`` every trial shares one process) over
the quick preset's cells (the four budgets x scratch, pretrain, pretrain_aug: random init,
loaded weights and pasting), ``--search`` search trials and ``--seeds`` final seeds a cell, at the
quick preset's 32 px on a synthetic tree at ``--scale``. Each trial's rows carry the process id
and its resident memory at its last report (``pid``, ``rss_mib``); this prints them in the order
the trials finished, per process, and whether each process is flat: every trial after the first
``--settle`` within ``--tolerance`` (20%) of the process's median after them.

The same study runs twice, each on its own local Ray: first as the baseline, with
``WBC_KEEP_FREED_MEMORY=1`` (trial processes keep what they free, as before
``wbc.training.hardware.release_memory``), then as the study runs by default. ``--skip-baseline``
runs only the second.

    python benchmarks/trial_memory.py --cpus 1 --search 2 --seeds 1     # 36 trials, 1 process
"""

from __future__ import annotations

import os
import statistics
from typing import Any

import harness

from wbc.training.hardware import KEEP_FREED_ENV as KEEP


def run(args: Any, work: harness.Workspace, name: str) -> Any:
    import pandas as pd

    from study.runner import run_study
    from study.spec import preset

    spec = preset("quick").with_overrides([
        f"data=\"{work.root}\"", f"search_trials={args.search}",
        f"startup_trials={args.search}", f"final_seeds={args.seeds}",
        f"epochs={args.epochs}", "grace_epochs=1", "checkpoint_every=0",
        "resources.execution=\"inline\"", "resources.cpus_per_trial=1.0"])
    results = work.folder / name
    record = run_study(spec, results, quiet=True, cache_dir=str(work.cache),
                       say=lambda _: None)
    rows = pd.read_parquet(results / "trials.parquet")
    # ASHA stops some search trials early ("stopped"): their last report still holds the RSS.
    if record["status"] != "complete" or rows["status"].isin(["error"]).any():
        raise RuntimeError(f"the study ended {record['status']}: "
                           f"{rows['status'].value_counts().to_dict()}")
    return rows.sort_values("finished_at").reset_index(drop=True)


def verdicts(rows: Any, settle: int, tolerance: float) -> list[dict[str, Any]]:
    """Per process: its trials' RSS in order, and whether it stays within ``tolerance`` of its
    median after the first ``settle`` trials."""
    found = []
    for pid, group in rows.groupby("pid", sort=False):
        rss = [float(v) for v in group["rss_mib"]]
        after = rss[settle:] or rss
        median = statistics.median(after)
        worst = max(abs(v - median) / median for v in after)
        found.append({"pid": int(pid), "trials": len(rss), "rss_mib": rss,
                      "first_mib": rss[0], "last_mib": rss[-1], "median_after_mib": median,
                      "max_rel_deviation": worst, "flat": worst <= tolerance,
                      "growth_last_over_first_settled": rss[-1] / after[0]})
    return found


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs given to the local Ray")
    parser.add_argument("--search", type=int, default=2, help="search trials a cell")
    parser.add_argument("--seeds", type=int, default=1, help="final seeds a cell")
    parser.add_argument("--epochs", type=int, default=2, help="epochs a trial")
    parser.add_argument("--scale", type=float, default=0.15, help="the synthetic tree's scale")
    parser.add_argument("--settle", type=int, default=3,
                        help="first trials of a process left out of the flatness test")
    parser.add_argument("--tolerance", type=float, default=0.2,
                        help="largest deviation from the settled median called flat")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="run only the study as it runs by default")
    harness.add_json(parser)
    args = parser.parse_args()
    harness.header(f"{args.cpus} CPU(s) given to Ray; 12 cells x ({args.search} search + "
                   f"{args.seeds} final) trials of {args.epochs} epochs at 32 px", ray=True)
    figures: dict[str, Any] = {}
    with harness.workspace(scale=args.scale, image_size=64, prefix="trial-memory-") as work:
        os.environ["WBC_CACHE_DIR"] = str(work.cache)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        runs = [("default", "as the study runs (freed memory released after each trial)")]
        if not args.skip_baseline:
            runs.insert(0, ("baseline", f"baseline ({KEEP}=1: freed memory kept)"))
        for name, title in runs:
            if name == "baseline":
                os.environ[KEEP] = "1"  # before Ray starts: its workers inherit it
            else:
                os.environ.pop(KEEP, None)
            with harness.local_ray(args.cpus) as started:
                print(f"{title}: ray started in {started:.1f} s", flush=True)
                rows = run(args, work, name)
            found = verdicts(rows, args.settle, args.tolerance)
            figures[name] = found
            show(title, found, args.settle, len(rows))
    if "baseline" in figures:
        first = [p["last_mib"] for p in figures["baseline"]]
        then = [p["last_mib"] for p in figures["default"]]
        print(f"last trial's RSS: baseline {max(first):.0f} MiB, default {max(then):.0f} MiB "
              f"({max(then) / max(first):.2f}x)")
    harness.write_json(args.json, args, {"runs": figures})


def show(title: str, found: list[dict[str, Any]], settle: int, trials: int) -> None:
    print(title)
    for process in found:
        print(f"process {process['pid']}: {process['trials']} trials")
        for i, value in enumerate(process["rss_mib"], 1):
            print(f"  trial {i:2d}: RSS {value:7.0f} MiB")
        print(f"  first {process['first_mib']:.0f} MiB, last {process['last_mib']:.0f} MiB, "
              f"median after {settle} trials {process['median_after_mib']:.0f} MiB, "
              f"largest deviation {process['max_rel_deviation']:.1%}: "
              + ("FLAT" if process["flat"] else "GROWS"))
    print(f"{title}: " + ("flat" if all(p["flat"] for p in found) else "NOT flat")
          + f" in {len(found)} process(es), {trials} trials", flush=True)

if __name__ == "__main__":
    main()
