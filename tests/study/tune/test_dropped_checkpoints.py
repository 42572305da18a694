"""An ended trial's checkpoints are emptied, never removed: Tune may still restore from them."""

from __future__ import annotations

from pathlib import Path

from study.tune.callback import DROPPED_NOTE, _drop_checkpoints


def test_an_ended_trials_checkpoint_folders_stay_but_hold_no_state(tmp_path: Path) -> None:
    trial = tmp_path / "WBC_10-scratch-search-00"
    for index in range(2):
        folder = trial / f"checkpoint_{index:06d}"
        (folder / "nested").mkdir(parents=True)
        (folder / "checkpoint.pt").write_bytes(b"x" * 1000)
        (folder / "nested" / "more.bin").write_bytes(b"y")
    train = tmp_path / "train" / "run"
    train.mkdir(parents=True)
    (train / "state.pkl").write_bytes(b"z")
    _drop_checkpoints(str(trial), train)
    _drop_checkpoints(str(trial), None)  # twice (a replayed row): still only the note
    for index in range(2):
        folder = trial / f"checkpoint_{index:06d}"
        assert [p.name for p in folder.iterdir()] == [DROPPED_NOTE]  # exists for Tune, empty
    assert not train.exists()


def test_a_kept_model_stays_while_the_state_beside_it_goes(tmp_path: Path) -> None:
    folder = tmp_path / "WBC_10-scratch-final-seed1" / "checkpoint_000003"
    folder.mkdir(parents=True)
    for name in ("model.safetensors", "model.json", "checkpoint.pt"):
        (folder / name).write_bytes(b"w")
    _drop_checkpoints(str(folder.parent), None)
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
