"""The study's Optuna storage: ``optuna.journal`` in the results folder, one study per cell.

Each cell's search is an Optuna study named after the cell (``WBC_10-pretrain``) in an Optuna
journal file (append-only JSON lines, ``optuna.storages.JournalStorage``): the study's
``OptunaSearch`` searchers ask and tell through it, so ``optuna.load_study``,
``optuna.visualization``, ``optuna.importance`` and optuna-dashboard open the very trials the
search ran, with their parameters, their objective (``best_val_macro_f1``) per epoch and at the
end, and user attributes (``trial_key``, ``seed``, the trial's selection figures)::

    import optuna
    from study.results.journal import optuna_storage
    search = optuna.load_study(study_name="WBC_10-scratch", storage=optuna_storage("results/x"))

or, without this project, ``JournalStorage(JournalFileBackend("results/x/optuna.journal"))``;
``optuna-dashboard results/x/optuna.journal`` shows it.

Only the study's driver writes it, and only while it owns the folder (``study.results.owner``),
so ``mend_journal`` may clear what a killed driver left: a last line cut short by the kill, and
the journal's lock file (Optuna's own lock would otherwise wait out its grace period).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["OPTUNA_FILE", "cell_studies", "mend_journal", "optuna_storage"]

OPTUNA_FILE = "optuna.journal"
_LOCK_SUFFIX = ".lock"  # optuna.storages.journal: the lock beside the journal


def optuna_storage(results: Path | str) -> Any:
    """The results folder's Optuna storage (``JournalStorage``); ``results`` may also be the
    journal file itself. Opening a folder without one creates an empty journal in it."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(results)
    if path.is_dir():
        path = path / OPTUNA_FILE
    elif not path.is_file():
        raise FileNotFoundError(f"{path}: neither a study's results folder nor an Optuna "
                                f"journal; give the folder `study run` wrote ({OPTUNA_FILE} "
                                "is in it)")
    return JournalStorage(JournalFileBackend(str(path)))


def cell_studies(results: Path | str) -> dict[str, Any]:
    """Every study in a results folder's journal, by name; {} when it has no journal or the
    journal cannot be opened (a folder this user may not write: Optuna opens it to append)."""
    import optuna

    path = Path(results) / OPTUNA_FILE
    if not path.is_file():
        return {}
    try:
        storage = optuna_storage(path)
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        return {name: optuna.load_study(study_name=name, storage=storage) for name in names}
    except (OSError, ValueError) as err:
        import logging

        logging.getLogger(__name__).warning("%s: not read (%s); importances come from the rows",
                                            path, err)
        return {}


def mend_journal(results: Path) -> None:
    """Undo what a killed driver left in the journal: the lock, and a last line without its
    end (Optuna would read the next append as part of it). Call with the folder owned."""
    path = results / OPTUNA_FILE
    lock = Path(f"{path}{_LOCK_SUFFIX}")
    if lock.is_symlink() or lock.exists():
        lock.unlink()
    if not path.is_file():
        return
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(max(0, size - 1))
        if handle.read(1) == b"\n":
            return
        # Find the end of the last whole line and cut after it.
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            chunk = handle.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                handle.truncate(start + cut + 1)
                return
            end = start
        handle.truncate(0)
