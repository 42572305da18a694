"""How much do a cell's final seeds spread? Per cell and per paired comparison, across runs.

A verdict replicates when the seed-to-seed spread of its difference is small against the
difference; this prints that spread for each label budget, for groups of finished results
folders (``--runs NAME=FOLDER[,FOLDER...]``, one group per training setting), so that two
settings are compared on the seeds they really ran: the mean and standard deviation over seeds
of each cell's test macro-F1, and of each pair's per-seed difference (paired by seed within a
run), in points.

    python benchmarks/seed_spread.py --runs base=R/seed0,R/seed1 b32=E/b32 --json OUT

The standard deviation of n seeds is itself uncertain: its 95% interval (chi-square) is printed
beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

import harness
import numpy as np
import pandas as pd
from scipy import stats as sps

METRIC = "test_macro_f1"


def finals(folders: list[Path]) -> pd.DataFrame:
    """The final seeds of every run in a group, with the run's index."""
    frames = []
    for i, folder in enumerate(folders):
        trials = pd.read_parquet(folder / "trials.parquet")
        done = trials[(trials["phase"] == "final") & trials[METRIC].notna()]
        frames.append(done[["subset", "strategy", "seed", METRIC]].assign(run=i))
    return pd.concat(frames, ignore_index=True)


def spread(values: np.ndarray) -> dict[str, Any]:
    """Mean and standard deviation (points), with the sd's 95% chi-square interval."""
    n = values.size
    sd = float(np.std(values, ddof=1)) if n > 1 else math.nan
    low = high = math.nan
    if n > 1:
        low = sd * math.sqrt((n - 1) / sps.chi2.ppf(0.975, n - 1))
        high = sd * math.sqrt((n - 1) / sps.chi2.ppf(0.025, n - 1))
    return {"n": n, "mean": float(values.mean()), "sd": sd, "sd_low": low, "sd_high": high}


def group(rows: pd.DataFrame) -> dict[str, Any]:
    """Per label budget: every cell's spread and every pair of strategies' paired spread."""
    out: dict[str, Any] = {}
    order = sorted(rows["subset"].unique(), key=lambda s: -float(str(s).rpartition("_")[2]))
    for subset in order:
        at = rows[rows["subset"] == subset]
        by = {s: cell.set_index(["run", "seed"])[METRIC] * 100
              for s, cell in at.groupby("strategy", sort=False)}
        cells = {s: spread(v.to_numpy()) for s, v in by.items()}
        pairs = {}
        for a, b in itertools.combinations(sorted(by), 2):
            diff = (by[a] - by[b]).dropna().to_numpy()
            if diff.size:
                pairs[f"{a} - {b}"] = spread(diff)
        out[str(subset)] = {"cells": cells, "pairs": pairs}
    return out


def _line(name: str, s: dict[str, Any]) -> str:
    return (f"    {name:28s} n {s['n']:3d}  mean {s['mean']:+6.1f}  sd {s['sd']:5.1f} "
            f"[{s['sd_low']:4.1f}, {s['sd_high']:4.1f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="NAME=FOLDER[,FOLDER...]",
                        help="a group of finished results folders of one setting")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    print(harness.machine(), flush=True)
    figures = {}
    for item in args.runs:
        name, _, folders = item.partition("=")
        if not folders:
            parser.error(f"--runs {item!r}: give NAME=FOLDER[,FOLDER...]")
        figures[name] = group(finals([Path(f) for f in folders.split(",")]))
        print(f"{name} ({len(folders.split(','))} run(s)): test macro-F1 over final seeds, "
              "points (sd with its 95% interval)")
        for subset, at in figures[name].items():
            print(f"  {subset}")
            for label, s in {**at["cells"], **at["pairs"]}.items():
                print(_line(label, s))
    if args.json:
        args.json.write_text(json.dumps({"groups": {i.partition("=")[0]: i.partition("=")[2]
                                                    for i in args.runs},
                                         "provenance": harness.provenance(),
                                         "figures": figures}, indent=1))


if __name__ == "__main__":
    main()
