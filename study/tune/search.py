"""One Tune run for the whole study: a searcher and a scheduler that keep the cells apart.

Ray runs one Tuner per cluster at a time, yet each (subset x strategy) cell needs its own Optuna
study (a TPE model fitted to WBC_1's noisy objective must not steer WBC_100's) and its own ASHA
rungs (WBC_1's macro-F1 is not comparable with WBC_100's). ``CellSearcher`` holds one seeded
``OptunaSearch`` per cell and hands out their suggestions, largest cells first so the long
trials start early; as soon as a cell's search trials have all finished it hands out that cell's
final phase (its best configuration, once per seed) while other cells are still searching. So
the cluster stays busy across cells and phases, with one Tuner and one experiment folder that
``ExperimentAnalysis`` and ``Tuner.restore`` understand. ``CellScheduler`` gives each cell its own
ASHA and leaves final trials alone.

Each suggestion carries a stable ``trial_key`` (``WBC_10-pretrain/search-02``,
``WBC_10-pretrain/final-seed3``): rows are written under it, so a trial that Tune re-runs after a
restore replaces its row instead of adding one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from optuna.samplers import TPESampler
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.space import cell_space
from study.spec import StudySpec
from wbc.seeding import derive_seed

__all__ = ["CellScheduler", "CellSearcher", "cell_name", "final_seeds"]

logger = logging.getLogger(__name__)


def cell_name(subset: str, strategy: str) -> str:
    return f"{subset}-{strategy}"


def final_seeds(spec: StudySpec) -> tuple[int, ...]:
    """The final phase's seeds: distinct from the search trials' seed (``spec.seed``)."""
    return tuple(spec.seed + 1 + k for k in range(spec.final_seeds))


@dataclass
class _Cell:
    name: str
    subset: str
    strategy: str
    optuna: OptunaSearch
    suggested: int = 0  # search trials handed out
    finals: list[int] = field(default_factory=list)  # seeds still to hand out
    scores: dict[str, float] = field(default_factory=dict)  # finished search trial -> objective
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # search trial -> params
    finished: set[str] = field(default_factory=set)  # search trials that finished (any state)
    best: dict[str, Any] | None = None  # chosen when the search is over
    best_key: str = ""  # the trial key of ``best``
    # Per final seed: (search trial key, its params), when each seed re-runs its own choice.
    final_params: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # search trial id -> its trial key
    failed: bool = False  # every search trial failed: no final phase


class CellSearcher(Searcher):
    """Per-cell Optuna TPE searches, then per-cell final re-runs, behind one ``Searcher``."""

    def __init__(self, spec: StudySpec, *, metric: str, mode: str = "max") -> None:
        super().__init__(metric=metric, mode=mode)
        self._budget = spec.search_trials
        self._seed = spec.seed
        self._final_config = spec.final_config
        self._cells: dict[str, _Cell] = {}
        for subset, strategy in spec.cells:
            name = cell_name(subset, strategy)
            sampler = TPESampler(seed=derive_seed(spec.seed, "tpe", name),
                                 n_startup_trials=spec.startup_trials)
            self._cells[name] = _Cell(
                name, subset, strategy,
                OptunaSearch(cell_space(spec.space, strategy), metric=metric, mode=mode,
                             sampler=sampler),
                finals=list(final_seeds(spec)))
        self._owner: dict[str, tuple[str, str]] = {}  # Tune trial id -> (cell, phase)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True  # every cell's search was fully set up in __init__

    def suggest(self, trial_id: str) -> dict[str, Any] | None:  # or Searcher.FINISHED
        waiting = False
        for cell in self._cells.values():  # finals first: their cells' searches are over
            if cell.best is not None and cell.finals:
                seed = cell.finals.pop(0)
                self._owner[trial_id] = (cell.name, "final")
                source, chosen = cell.final_params.get(seed, (cell.best_key, cell.best))
                return {**self._config(cell, "final", f"final-seed{seed}", seed, chosen),
                        "config_from": source}
        for cell in self._cells.values():
            if cell.suggested < self._budget:
                params = cell.optuna.suggest(trial_id)
                index = cell.suggested
                cell.suggested += 1
                cell.params[trial_id] = dict(params or {})
                cell.keys[trial_id] = f"{cell.name}/search-{index:02d}"
                self._owner[trial_id] = (cell.name, "search")
                return self._config(cell, "search", f"search-{index:02d}", self._seed,
                                    params or {})
            if len(cell.finished) < self._budget:
                waiting = True
        return None if waiting else Searcher.FINISHED  # type: ignore[return-value]

    @staticmethod
    def _config(cell: _Cell, phase: str, key: str, seed: int, params: dict[str, Any]
                ) -> dict[str, Any]:
        return {"cell": cell.name, "subset": cell.subset, "strategy": cell.strategy,
                "phase": phase, "trial_key": f"{cell.name}/{key}", "seed": seed, **params}

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        owner = self._owner.get(trial_id)
        if owner is None or owner[1] != "search":
            return
        cell = self._cells[owner[0]]
        if trial_id in cell.finished:
            return
        cell.finished.add(trial_id)
        value = None if result is None else result.get(self.metric)
        if not error and isinstance(value, int | float) and math.isfinite(value):
            cell.scores[trial_id] = float(value)
        cell.optuna.on_trial_complete(trial_id, None if error else result, error=error)
        if len(cell.finished) >= self._budget:
            self._choose_best(cell)

    def _choose_best(self, cell: _Cell) -> None:
        if not cell.scores:
            cell.failed = True
            cell.finals.clear()
            logger.warning("cell %s: every search trial failed; no final phase", cell.name)
            return
        sign = 1.0 if self.mode == "max" else -1.0
        best_id = max(cell.scores, key=lambda t: sign * cell.scores[t])  # first of equals
        cell.best = dict(cell.params[best_id])
        cell.best_key = cell.keys.get(best_id, "")
        if self._final_config == "resampled":
            scored = sorted(cell.scores, key=lambda t: cell.keys.get(t, t))
            for seed in cell.finals:
                # The search as it might have gone: its trials resampled with replacement.
                rng = np.random.default_rng(derive_seed(self._seed, "final-config", cell.name,
                                                        seed))
                drawn = [scored[i] for i in rng.integers(0, len(scored), len(scored))]
                pick = max(drawn, key=lambda t: sign * cell.scores[t])
                cell.final_params[seed] = (cell.keys.get(pick, ""), dict(cell.params[pick]))

    def best_configs(self) -> dict[str, dict[str, Any] | None]:
        """Each cell's chosen hyperparameters (None while searching, or when all failed)."""
        return {name: cell.best for name, cell in self._cells.items()}

    def save(self, checkpoint_path: str) -> None:
        with Path(checkpoint_path).open("wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with Path(checkpoint_path).open("rb") as handle:
            self.__dict__.update(pickle.load(handle))


class CellScheduler(FIFOScheduler):
    """ASHA per cell on the reported ``epoch`` (restores reset ``training_iteration``)."""

    def __init__(self, spec: StudySpec, *, metric: str, mode: str = "max") -> None:
        super().__init__()
        self._metric_name, self._mode_name = metric, mode
        self._max_t = spec.epochs
        self._grace = min(spec.grace_epochs, spec.epochs)
        self._rf = spec.reduction_factor
        self._asha: dict[str, ASHAScheduler] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _for(self, trial: Any) -> ASHAScheduler | None:
        if trial.config.get("phase") != "search":
            return None
        cell = trial.config["cell"]
        if cell not in self._asha:
            self._asha[cell] = ASHAScheduler(
                time_attr="epoch", metric=self._metric_name, mode=self._mode_name,
                max_t=self._max_t, grace_period=self._grace, reduction_factor=self._rf)
        return self._asha[cell]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        asha = self._for(trial)
        if asha is not None:
            asha.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        asha = self._for(trial)
        if asha is None or self._metric_name not in result:
            return TrialScheduler.CONTINUE
        return str(asha.on_trial_result(tune_controller, trial, result))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        asha = self._for(trial)
        if asha is not None and result and self._metric_name in result:
            with contextlib.suppress(KeyError):  # already removed: nothing to forget
                asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        asha = self._for(trial)
        if asha is not None:
            with contextlib.suppress(KeyError):
                asha.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"ASHA per cell on epoch (grace {self._grace}, rf {self._rf}, max {self._max_t})"
