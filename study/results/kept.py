"""The classifiers a study keeps: ``RESULTS/models/<cell>/seed-<seed>/model.safetensors``.

Each final trial of a cell keeps its best epoch's weights (``wbc.classifier.model_file``:
safetensors and a card with the classes, preprocessing, cell, seed, data fingerprint and the row's
figures) unless the spec says ``keep_models = "none"``. An inline trial reports them as its Tune
checkpoint, so Tune's ``get_best_result(...).checkpoint`` holds a model; the driver links that
file here before it writes the trial's row (a row of a final trial therefore means its model is
in place, and a replayed trial needs no training again). A Ray Train trial writes here itself.

``keep_models = "best"`` (the default) keeps one model per cell once all its final seeds are in:
the seed with the best selection macro-F1 (``val_macro_f1``, the figure that chose the epoch;
never a reporting figure, which would make the kept model's reported figures a choice on the
test split); ties go to the lower seed. The others are removed, here and in Tune's checkpoint
folders. ``"all"`` keeps every final seed, for seed-level spread out of domain.

Hard links, not copies, where the file system allows: Tune's checkpoint file and the one here
are the same bytes on disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wbc.classifier.model_file import CARD_FILE, MODEL_FILE, Card, read_card

__all__ = [
    "KEEP_CHOICES",
    "MODELS_DIR",
    "KeptModel",
    "best_seed",
    "kept_models",
    "model_folder",
    "place_model",
    "settle_models",
    "trial_dir_name",
    "tune_model_files",
]

MODELS_DIR = "models"
KEEP_CHOICES = ("best", "all", "none")
_DROPPED = "dropped.txt"


@dataclass(frozen=True)
class KeptModel:
    cell: str
    seed: int
    folder: Path  # holds model.safetensors and model.json

    @property
    def file(self) -> Path:
        return self.folder / MODEL_FILE

    def card(self) -> Card:
        return read_card(self.file)


def model_folder(results: Path | str, cell: str, seed: int) -> Path:
    return Path(results) / MODELS_DIR / cell / f"seed-{int(seed)}"


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


def place_model(results: Path | str, cell: str, seed: int, source: Path) -> Path:
    """Put the model folder ``source`` (``model.safetensors`` and ``model.json``) at
    ``models/<cell>/seed-<seed>``, replacing what was there; atomic (a staged folder renamed
    into place). Returns the folder."""
    target = model_folder(results, cell, seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}-{os.getpid()}-{time.time_ns()}")
    staged.mkdir()  # the umask's mode, as every other folder of the results
    try:
        for name in (MODEL_FILE, CARD_FILE):
            if (source / name).exists():
                _link_or_copy(source / name, staged / name)
        if target.exists():
            old = target.with_name(f".{target.name}-old-{os.getpid()}")
            target.rename(old)
            staged.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staged.rename(target)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return target


def tune_model_files(trial_path: str | Path | None) -> Path | None:
    """The checkpoint folder of a Tune trial that holds its kept model (the latest), or None."""
    if not trial_path or "://" in str(trial_path):
        return None
    found = sorted(p.parent for p in Path(trial_path).glob(f"checkpoint_*/{MODEL_FILE}"))
    return found[-1] if found else None


def kept_models(results: Path | str) -> list[KeptModel]:
    """Every model the study keeps, by cell then seed."""
    root = Path(results) / MODELS_DIR
    kept = []
    for file in sorted(root.glob(f"*/seed-*/{MODEL_FILE}")):
        with contextlib.suppress(ValueError):
            kept.append(KeptModel(file.parent.parent.name,
                                  int(file.parent.name.removeprefix("seed-")), file.parent))
    return sorted(kept, key=lambda m: (m.cell, m.seed))


def best_seed(rows: Iterable[dict[str, Any]]) -> int | None:
    """The seed whose model a cell keeps under ``"best"``: the best selection macro-F1 among
    its completed final rows, the lower seed on a tie; None without one."""
    scored = [(float(r["val_macro_f1"]), -int(r["seed"]), int(r["seed"])) for r in rows
              if r.get("phase") == "final" and r.get("status") == "completed"
              and isinstance(r.get("val_macro_f1"), float)]
    return max(scored)[2] if scored else None


def trial_dir_name(trial_id: str) -> str:
    """The folder Tune keeps a trial in (``study.tune.experiment`` names it so)."""
    return trial_id.replace("/", "-")


def _trial_folder(results: Path, trial_id: str) -> Path:
    return results / "tune" / trial_dir_name(trial_id)


def _empty_tune_model(results: Path, row: dict[str, Any], kept_seed: int) -> None:
    folder = tune_model_files(_trial_folder(results, str(row["trial_id"])))
    if folder is None:
        return
    for name in (MODEL_FILE, CARD_FILE):
        (folder / name).unlink(missing_ok=True)
    (folder / _DROPPED).write_text(f"keep_models=best: this cell keeps seed {kept_seed}'s "
                                   f"model ({MODELS_DIR}/{row['cell']}/seed-{kept_seed})\n")


def settle_models(results: Path | str, rows: Sequence[dict[str, Any]], *, keep: str,
                  final_seeds: int, cells: Iterable[str] | None = None) -> list[Path]:
    """Apply ``keep`` to the cells whose final seeds are all in (of ``cells``, default all):
    under ``"best"`` remove every model but the best seed's. Idempotent: the driver calls it
    as cells end and once more at the end of each session. Returns the removed folders."""
    if keep != "best":
        return []
    results = Path(results)
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for row in rows:  # a failed seed counts as in: it will not come
        if row.get("phase") == "final":
            by_cell.setdefault(str(row["cell"]), []).append(row)
    wanted = set(cells) if cells is not None else set(by_cell)
    removed = []
    for cell in sorted(wanted & set(by_cell)):
        final = by_cell[cell]
        seed = best_seed(final)
        if len(final) < final_seeds or seed is None:
            continue
        for row in final:
            if int(row["seed"]) == seed:
                continue
            folder = model_folder(results, cell, int(row["seed"]))
            if folder.exists():
                shutil.rmtree(folder)
                removed.append(folder)
            _empty_tune_model(results, row, seed)
    return removed
