"""A refactor that changes no behaviour changes no speed: the per-trial overhead of a study and
the training throughput of two commits, measured in one run, taking turns.

Each commit is checked out in a temporary git worktree (``--after`` defaults to the working
tree itself) and runs its own copies of ``benchmarks/trial_overhead.py`` (an inline study of
``--trials`` search trials on a generated tree, beside a bare Tune baseline) and
``benchmarks/train_throughput.py`` (the model alone and the project's full data path at
``--image-size``), with ``PYTHONPATH`` set to that checkout so that its own ``wbc`` and
``study`` (and its Ray workers') are the ones timed. The two commits take turns ``--repeats``
times (before, after, before, after, ...) so that a machine that speeds up or slows down during
the run weighs on both alike. It prints every measurement, the median of each figure per commit
and the after/before ratios; ``--json`` writes them with the provenance.

    python benchmarks/before_after.py --before d563651 --repeats 3
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import harness

ROOT = Path(__file__).resolve().parent.parent
OVERHEAD = re.compile(r"per-trial overhead: baseline=([\d.]+)s inline=([\d.]+)s")
RATE = re.compile(r"^\s*(\d+) px (model only|full path)\s+([\d.]+) img/s", re.MULTILINE)


def _checkout(rev: str, folder: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), rev],
                   check=True, capture_output=True)
    return folder


def _run(checkout: Path, script: str, args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, str(checkout / "benchmarks" / script), *args],
                          cwd=checkout, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{script} at {checkout} failed:\n{done.stdout[-2000:]}"
                         f"{done.stderr[-3000:]}")
    return done.stdout


def measure(checkout: Path, args: Any) -> dict[str, float]:
    """One turn of one commit: its per-trial overheads and its training rates."""
    text = _run(checkout, "trial_overhead.py", ["--trials", str(args.trials), "--skip-train"])
    found = OVERHEAD.search(text)
    if found is None:
        raise SystemExit(f"no overhead line from trial_overhead.py at {checkout}:\n{text}")
    figures = {"baseline overhead s": float(found[1]), "inline overhead s": float(found[2])}
    text = _run(checkout, "train_throughput.py", ["--device", "cpu", "--image-size",
                                                  str(args.image_size), "--steps",
                                                  str(args.steps)])
    for size, name, rate in RATE.findall(text):
        figures[f"{name} {size} px img/s"] = float(rate)
    return figures


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--before", required=True, help="the commit before the change")
    parser.add_argument("--after", default=None,
                        help="the commit after it (default: this working tree)")
    parser.add_argument("--repeats", type=int, default=3, help="turns of each commit")
    parser.add_argument("--trials", type=int, default=8, help="search trials of the study")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps a rate")
    harness.add_json(parser)
    args = parser.parse_args()
    harness.header(f"before {args.before}, after {args.after or 'the working tree'}, "
                   f"{args.repeats} turns each", ray=True)
    with tempfile.TemporaryDirectory(prefix="before-after-") as tmp:
        checkouts = {"before": _checkout(args.before, Path(tmp) / "before"),
                     "after": _checkout(args.after, Path(tmp) / "after") if args.after
                     else ROOT}
        try:
            runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            for turn in range(args.repeats):
                for label, checkout in checkouts.items():
                    runs[label].append(measure(checkout, args))
                    print(f"turn {turn + 1} {label}: " + ", ".join(
                        f"{k} {v:.2f}" for k, v in runs[label][-1].items()), flush=True)
        finally:
            for checkout in checkouts.values():
                if checkout != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                    str(checkout)], check=False, capture_output=True)
    medians = {label: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
               for label, rows in runs.items()}
    print(f"{'median':28s} {'before':>10s} {'after':>10s} {'after/before':>12s}")
    for key, before in medians["before"].items():
        after = medians["after"][key]
        print(f"{key:28s} {before:10.2f} {after:10.2f} {after / before:12.3f}")
    if args.json:
        harness.write_json(args.json, args, {"runs": runs, "medians": medians})


if __name__ == "__main__":
    main()
