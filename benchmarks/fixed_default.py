"""Which fixed configuration should a study without a search train? Read from searched studies.

Pools the trials (search and final) of finished results folders of one spec and prints, for each
searched hyperparameter, the selection macro-F1 of the trials in each bin of its values, as the
difference from their label budget's mean (so that budgets with different levels pool), with a
standard error. A fixed default is then read off: the bin that did best, or the seed report's
value where no bin is clearly better. Only the selection split is read (``val_macro_f1``): the
reporting images take no part in choosing the default.

    python benchmarks/fixed_default.py RUN [RUN ...] [--json OUT]

The quick preset's fixed learning rate (1e-3, the border of the two best bins; 2e-3 and above
scored 5-7 points lower) comes from three searched quick studies (the ``final_config =
"replicates"`` runs of benchmarks/results/cpu-2026-12-06-replication).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import harness
import pandas as pd

BINS = {"lr": [5e-4, 1e-3, 2e-3, 3.2e-3, 5.1e-3],
        "weight_decay": [1e-5, 1e-4, 1e-3, 1e-2, 5.1e-2],
        "aug_factor": [0.5, 2.5, 4.5, 6.5, 8.5]}


def _table(trials: pd.DataFrame, column: str) -> list[dict[str, object]]:
    values = trials[column]
    groups = (pd.cut(values, BINS[column], include_lowest=True) if column in BINS
              else values.astype(str))
    rows = []
    for name, part in trials.groupby(groups, observed=True)["residual"]:
        rows.append({"value": str(name), "trials": len(part), "mean": float(part.mean()),
                     "se": float(part.std(ddof=1) / math.sqrt(len(part)))
                     if len(part) > 1 else math.nan})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished results folders")
    parser.add_argument("--json", type=Path, help="write the tables here")
    args = parser.parse_args()
    frames = []
    for run in args.runs:
        rows = pd.read_parquet(run / "trials.parquet")
        frames.append(rows[rows["status"] == "completed"].assign(run=run.name))
    trials = pd.concat(frames, ignore_index=True)
    trials["residual"] = trials["val_macro_f1"] - trials.groupby("subset")[
        "val_macro_f1"].transform("mean")
    harness.header(f"{len(trials)} trials of {len(args.runs)} runs")
    tables = {}
    for column in ("lr", "weight_decay", "imbalance", "background", "aug_factor"):
        part = trials[trials[column].notna()]
        if column in ("aug_factor", "background"):
            part = part[part["strategy"].str.contains("aug")]
        if not len(part):
            continue
        tables[column] = _table(part, column)
        print(f"\n{column}: selection macro-F1 minus the budget's mean, in points")
        for row in tables[column]:
            print(f"  {row['value']:<24} {row['trials']:>4} trials  "
                  f"{100 * float(row['mean']):+6.1f} ± {100 * float(row['se']):.1f}")
    best = max(tables["lr"], key=lambda r: float(r["mean"]))  # type: ignore[arg-type]
    print(f"\nbest learning-rate bin: {best['value']} ({100 * float(best['mean']):+.1f} points)")
    if args.json:
        args.json.write_text(json.dumps({"provenance": harness.provenance(),
                                         "runs": [str(r) for r in args.runs],
                                         "tables": tables}, indent=2) + "\n")


if __name__ == "__main__":
    main()
