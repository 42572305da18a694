"""The status line's ETA (said only once trials have ended), and the cell line's settings
(only those the chosen run read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.spec import StudySpec
from study.tune.callback import StudyCallback
from study.tune.progress import Progress, format_eta


def test_eta_rounds_as_an_estimate_deserves() -> None:
    assert [format_eta(s) for s in (4, 42, 180, 7200)] == [
        "ETA ~10 s", "ETA ~40 s", "ETA ~3 min", "ETA ~2.0 h"]


def test_eta_is_shown_once_trials_ended_and_never_as_escape_codes_off_a_terminal(
        capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress(total_search=4, total_final=2, cells=1)

    def line(**counts: int) -> str:
        progress._last_line = float("-inf")  # the 30 s a line in a file have passed
        progress.status(cells_done=0, failed=0, **counts)
        return capsys.readouterr().err

    assert "ETA" not in line(search=0, final=0, running=2, remaining=6)  # no data: no guess
    progress.trial_ended(60.0)
    progress.trial_ended(None)  # a row without its time counts for nothing
    progress.trial_ended(60.0)
    text = line(search=2, final=0, running=2, remaining=4)
    assert text.endswith("ETA ~2 min\n") and "\x1b" not in text  # 60 s x 4 / 2 at once
    assert "ETA" not in line(search=4, final=2, running=0, remaining=0)
    # Off a terminal a forced line still waits its 30 s: a log keeps every line it gets.
    progress.status(search=4, final=2, running=0, cells_done=1, failed=0, force=True)
    assert capsys.readouterr().err == ""


def test_a_cell_line_leaves_out_the_settings_its_run_never_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = StudySpec().replace(subsets=("WBC_100",), strategies=("ssl",), search_trials=1,
                               final_seeds=1)
    callback = StudyCallback(spec, str(tmp_path))
    settings = {"cell": "WBC_100-ssl", "strategy": "ssl", "status": "completed",
                "val_macro_f1": 0.5, "test_accuracy": 0.8, "test_macro_f1": 0.5, "lr": 0.001,
                "weight_decay": 1e-4, "imbalance": "none", "mask_augment": False,
                "aug_factor": 0, "background": "own"}
    for phase in ("search", "final"):
        callback._rows.add({**settings, "phase": phase, "trial_id": f"WBC_100-ssl/{phase}"})
    callback._announce("WBC_100-ssl")
    line = capsys.readouterr().err
    assert "mask_augment=False" in line and "lr=0.001" in line
    assert "aug_factor" not in line and "background" not in line


def test_a_cell_is_announced_when_done_and_again_at_its_budgets_next_look(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No search, 2 seeds, 4 where undecided: a line at 2 seeds and one at 4, none at 3."""
    from types import SimpleNamespace

    spec = StudySpec().replace(subsets=("WBC_1",), strategies=("scratch",), search_trials=0,
                               final_seeds=2, max_final_seeds=4, seeds_per_look=2)
    callback = StudyCallback(spec, str(tmp_path))
    lines = []
    for seed in (1, 2, 3, 4):
        key = f"WBC_1-scratch/final-seed{seed}"
        row = {"cell": "WBC_1-scratch", "phase": "final", "trial_id": key, "seed": seed,
               "status": "completed", "test_accuracy": 0.8, "test_macro_f1": 0.5}
        callback._finish(SimpleNamespace(trial_id=key, config={"cell": "WBC_1-scratch"}), row)
        lines.append(capsys.readouterr().err.count("fixed configuration -> "))
    callback.flush()
    assert lines == [0, 1, 0, 1]
