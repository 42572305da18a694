"""``benchmarks/seed_spread.py``: spreads per cell and per pair, paired by run and seed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import seed_spread  # noqa: E402


def _trials(folder: Path, run: int) -> Path:
    """Final rows of two strategies at two budgets; pretrain = scratch - 0.05 seed by seed
    (a paired spread of 0), plus a search row and a failed final that must be left out."""
    folder.mkdir()
    rows = []
    for seed in range(1, 5):
        base = 0.6 + 0.01 * seed + 0.1 * run
        for subset in ("WBC_1", "WBC_100"):
            rows.append({"subset": subset, "strategy": "scratch", "seed": seed, "phase": "final",
                         "test_macro_f1": base})
            rows.append({"subset": subset, "strategy": "pretrain", "seed": seed,
                         "phase": "final", "test_macro_f1": base - 0.05})
    rows.append({"subset": "WBC_1", "strategy": "scratch", "seed": 9, "phase": "search",
                 "test_macro_f1": 0.0})
    rows.append({"subset": "WBC_1", "strategy": "scratch", "seed": 7, "phase": "final",
                 "test_macro_f1": np.nan})
    pd.DataFrame(rows).to_parquet(folder / "trials.parquet")
    return folder


def test_cells_and_pairs_spread_over_runs_and_seeds(tmp_path: Path) -> None:
    folders = [_trials(tmp_path / f"run{i}", i) for i in range(2)]
    figures = seed_spread.group(seed_spread.finals(folders))
    assert list(figures) == ["WBC_100", "WBC_1"]  # largest budget first
    scratch = figures["WBC_1"]["cells"]["scratch"]
    values = np.array([60 + s + 10 * r for r in range(2) for s in range(1, 5)], dtype=float)
    assert scratch["n"] == 8 and scratch["mean"] == pytest.approx(values.mean())
    assert scratch["sd"] == pytest.approx(values.std(ddof=1))
    assert scratch["sd_low"] < scratch["sd"] < scratch["sd_high"]
    pair = figures["WBC_1"]["pairs"]["pretrain - scratch"]
    assert pair["n"] == 8 and pair["mean"] == pytest.approx(-5.0)
    assert pair["sd"] == pytest.approx(0.0, abs=1e-9)
