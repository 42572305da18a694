"""Does a second run of a study give the same answers? Replication across independent seeds.

Runs one study spec ``--k`` times with study seeds 0 .. k-1 (each its own results folder under
``--out``, each with its own local Ray, one after another), or reads finished results folders
given with ``--runs``, and compares every pair of runs on what their reports claim:

- **cells beyond their intervals**: a cell's Table 1 macro-F1 in run A against run B, taking
  each interval at face value (standard error = half-width / 1.96): the share of cells whose
  difference exceeds 1.96 combined standard errors. Honest intervals give about 5%.
- **strong verdicts**: every paired comparison and budget effect with strong evidence (interval
  clear of 0 after Holm) in a run; whether it is at least "some" (same sign) in every other run;
  and any pair of runs with strong verdicts of opposite signs (a flip).

It prints the figures per pair and in total, and ``--json`` writes them with the runs' folders,
specs and provenance.

    python benchmarks/replication.py --preset quick --k 3 --out /tmp/replication-quick
    python benchmarks/replication.py --preset real --data data/pbc --k 3 --out /tmp/rep-pbc
    python benchmarks/replication.py --runs results/quick results/quick-seed1
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness

Z = 1.96
RANK = {"strong": 2, "some": 1}  # "none", "cannot tell": 0


def run_studies(args: Any) -> list[Path]:
    """The study ``--k`` times, seeds 0 .. k-1, through the command line a user runs."""
    folders = []
    for seed in range(args.k):
        folder = args.out / f"seed{seed}"
        folders.append(folder)
        if (folder / "study.json").exists() and \
                json.loads((folder / "study.json").read_text()).get("status") == "complete":
            print(f"seed {seed}: complete in {folder}, reused", flush=True)
            continue
        command = [sys.executable, "-m", "study", "run", "-q", "--preset", args.preset,
                   "--set", f"seed={seed}",
                   *[part for s in args.set for part in ("--set", s)]]
        if args.data:
            command += ["--data", str(args.data)]
        command += (["--resume", str(folder)] if folder.exists() else ["--results", str(folder)])
        started = time.perf_counter()
        done = subprocess.run(command, check=False)
        print(f"seed {seed}: exit status {done.returncode} in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        if done.returncode != 0:
            raise SystemExit(f"the study with seed {seed} did not complete ({folder}): "
                             "fix the cause and run this again; finished runs are reused")
    return folders


def _design(spec: dict[str, Any]) -> str:
    """``no search, sequential seeds 3-6``, ``replicates``, ``resampled``, ...: how a run chose
    and spent its seeds."""
    from study.sequential import Plan
    from study.spec import no_search

    plan = Plan.of(spec)
    seeds = (f", sequential seeds {plan.planned}-{plan.most}" if plan.sequential
             else f", {plan.planned} seeds")
    return ("no search" if no_search(spec) else str(spec.get("final_config"))) + seeds


def claims(folder: Path) -> dict[str, Any]:
    """What one run's report says: Table 1 macro-F1 per cell with its interval, and every
    comparison's difference and evidence."""
    from study.report import load_results, summarise
    from study.report.summary import budget_effects, cell_estimate_of, paired

    report = summarise(load_results(folder))
    cells = {}
    for (subset, strategy), cell in report.cells.items():
        if not len(cell.finals):
            continue
        est = cell_estimate_of(report, cell, "test_macro_f1")
        cells[f"{subset}/{strategy}"] = {"mean": est.mean, "low": est.low,
                                         "high": est.high, "seeds": est.seeds}
    verdicts = {}
    for table, key in ((paired(report), "subset"), (budget_effects(report), "strategy")):
        for row in table.to_dict("records"):
            verdicts[f"{row[key]}: {row['comparison']}"] = {
                "difference": float(row["difference"]), "evidence": str(row["evidence"]),
                "low": float(row["low"]), "high": float(row["high"])}
    spec = report.results.study.get("spec", {})
    return {"folder": str(folder), "seed": spec.get("seed"), "cells": cells,
            "verdicts": verdicts, "design": _design(spec)}


def _se(cell: dict[str, float]) -> float:
    return (cell["high"] - cell["low"]) / (2 * Z)


def compare_pair(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    beyond, counted = [], 0
    for name in sorted(set(a["cells"]) & set(b["cells"])):
        ca, cb = a["cells"][name], b["cells"][name]
        se = math.hypot(_se(ca), _se(cb))
        if not math.isfinite(se) or se == 0:
            continue
        counted += 1
        z = abs(ca["mean"] - cb["mean"]) / se
        if z > Z:
            beyond.append({"cell": name, "a": ca["mean"], "b": cb["mean"], "z": z})
    flips = [name for name in sorted(set(a["verdicts"]) & set(b["verdicts"]))
             if a["verdicts"][name]["evidence"] == b["verdicts"][name]["evidence"] == "strong"
             and a["verdicts"][name]["difference"] * b["verdicts"][name]["difference"] < 0]
    return {"cells": counted, "beyond": beyond, "share_beyond": len(beyond) / max(counted, 1),
            "flips": flips}


def held(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every strong verdict of any run, and how it fared in each other run."""
    rows = []
    for i, run in enumerate(runs):
        for name, verdict in run["verdicts"].items():
            if verdict["evidence"] != "strong":
                continue
            sign = math.copysign(1.0, verdict["difference"])
            others = []
            for j, other in enumerate(runs):
                if j == i:
                    continue
                v = other["verdicts"].get(name)
                same = v is not None and math.copysign(1.0, v["difference"]) == sign
                others.append(RANK.get(v["evidence"], 0) if v is not None and same else 0)
            rows.append({"run": i, "verdict": name, "difference": verdict["difference"],
                         "at_least_some_elsewhere": all(o >= 1 for o in others),
                         "strong_everywhere": all(o == 2 for o in others)})
    return rows


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--runs", type=Path, nargs="+", help="finished results folders")
    parser.add_argument("--preset", default="quick", help="the spec to run --k times")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a spec override for every run (repeatable)")
    parser.add_argument("--data", type=Path, help="the tree (default: synthetic)")
    parser.add_argument("--k", type=int, default=3, help="independent runs (seeds 0 .. k-1)")
    parser.add_argument("--out", type=Path, help="where the --k runs go (kept, reused)")
    harness.add_json(parser)
    args = parser.parse_args()
    if args.runs is None and (args.out is None or args.k < 2):
        parser.error("give --runs FOLDER..., or --out with --k of at least 2")
    harness.header("replication" + (f" of {args.preset}, k={args.k}" if args.runs is None
                                     else f" of {len(args.runs)} runs"))
    folders = args.runs if args.runs is not None else run_studies(args)
    runs = [claims(folder) for folder in folders]
    pairs = {}
    for (i, a), (j, b) in itertools.combinations(enumerate(runs), 2):
        pair = compare_pair(a, b)
        pairs[f"{i}-{j}"] = pair
        print(f"runs {i} and {j} (seeds {a['seed']} and {b['seed']}): "
              f"{len(pair['beyond'])} of {pair['cells']} cells beyond their intervals "
              f"({pair['share_beyond']:.0%}); strong verdicts of opposite sign: "
              f"{len(pair['flips'])}")
        for cell in pair["beyond"]:
            print(f"  {cell['cell']}: {100 * cell['a']:.1f} against {100 * cell['b']:.1f} "
                  f"(z = {cell['z']:.2f})")
    strong = held(runs)
    for i, run in enumerate(runs):
        mine = [s for s in strong if s["run"] == i]
        print(f"run {i} (seed {run['seed']}, {run['design']}): {len(mine)} strong "
              f"verdicts, {sum(s['at_least_some_elsewhere'] for s in mine)} at least some in "
              f"every other run, {sum(s['strong_everywhere'] for s in mine)} strong in all")
        for s in mine:
            print(f"  {s['verdict']}: {100 * s['difference']:+.1f}"
                  + ("" if s["at_least_some_elsewhere"] else "  (NOT held elsewhere)"))
    worst = max((p["share_beyond"] for p in pairs.values()), default=0.0)
    most = max((len(p["beyond"]) for p in pairs.values()), default=0)
    flips = sum(len(p["flips"]) for p in pairs.values())
    unheld = sum(not s["at_least_some_elsewhere"] for s in strong)
    print(f"replication: at most {most} cells beyond their intervals between two runs "
          f"({worst:.0%}); {flips} opposite-sign strong verdicts; {unheld} of {len(strong)} "
          "strong verdicts not at least some in every other run")
    harness.write_json(args.json, args, {"runs": runs, "pairs": pairs, "strong": strong,
                                         "summary": {"most_cells_beyond": most,
                                                     "largest_share_beyond": worst,
                                                     "flips": flips, "strong": len(strong),
                                                     "strong_not_held": unheld}})


if __name__ == "__main__":
    main()
