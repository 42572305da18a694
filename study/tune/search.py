"""One Tune run for the whole study: a searcher and a scheduler that keep the cells apart.

Ray runs one Tuner per cluster at a time, yet each (subset x strategy) cell needs its own Optuna
study (a TPE model fitted to WBC_1's noisy objective must not steer WBC_100's) and its own ASHA
rungs (WBC_1's macro-F1 is not comparable with WBC_100's). ``CellSearcher`` holds one seeded
Optuna study per cell and hands out their suggestions, largest cells first so the long
trials start early; as soon as a cell's search trials have all finished it hands out that cell's
final phase (its best configuration, once per seed) while other cells are still searching. So
the cluster stays busy across cells and phases, with one Tuner and one experiment folder that
``ExperimentAnalysis`` and ``Tuner.restore`` understand. ``CellScheduler`` gives each cell its own
ASHA and leaves final trials alone.

The cells' Optuna studies live in the results folder's journal (``study.results.journal``:
one study per cell, named after it), which ``optuna.load_study`` and optuna-dashboard open; each
Optuna trial carries its ``trial_key`` and seed, the objective per epoch and the selection
figures of its last report as user attributes.

Each suggestion carries a stable ``trial_key`` (``WBC_10-pretrain/search-02``,
``WBC_10-pretrain/final-seed3``): rows are written under it, so a trial that Tune re-runs after a
restore replaces its row instead of adding one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.samplers import TPESampler
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from study.report.summary import COMPARISONS, compare_runs
from study.results.journal import optuna_storage
from study.sequential import Plan, Status, budget_open, status
from study.space import cell_space
from study.spec import StudySpec
from study.trial_seeds import final_seed, replicate_seed
from wbc.training.seeding import derive_seed

__all__ = ["CellScheduler", "CellSearcher", "cell_name", "final_seeds", "replicate_of",
           "search_seed"]

logger = logging.getLogger(__name__)


def cell_name(subset: str, strategy: str) -> str:
    return f"{subset}-{strategy}"


def final_seeds(spec: StudySpec) -> tuple[int, ...]:
    """The final phase's seeds: distinct from the search trials' seeds (``search_seed``)."""
    return tuple(final_seed(spec.seed, k) for k in range(spec.final_seeds))


def replicate_of(spec: StudySpec, index: int) -> int | None:
    """Which replicate (0-based: final seed ``final_seeds(spec)[r]``) search trial ``index``
    belongs to under ``final_config = "replicates"`` (None otherwise): trials are dealt to the
    replicates in turn, so each replicate's search makes progress from the start."""
    return index % spec.final_seeds if spec.final_config == "replicates" else None


def search_seed(spec: StudySpec, index: int) -> int:
    """The seed search trial ``index`` trains with: ``spec.seed`` for every trial of a cell (its
    configurations compared on one initialisation), or under ``"replicates"`` one seed per
    replicate, apart from the final seeds (``study.spec.replicate_seed``)."""
    replicate = replicate_of(spec, index)
    return spec.seed if replicate is None else replicate_seed(spec.seed, replicate)


def _first_seeds(targets: list[int], pa: np.ndarray, pb: np.ndarray, n: int) -> Any:
    """The report's comparison of two cells' final runs, on their first ``n`` seeds."""
    return compare_runs(targets, pa[:n], pb[:n], "macro_f1")


# What a search trial's last report gives its Optuna trial as user attributes.
_FIGURES = ("epoch", "best_epoch", "val_accuracy", "val_macro_f1", "val_balanced_accuracy",
            "val_n")
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class _CellStudy:
    """One cell's Optuna study, asked and told through Optuna's public interface (``ask``,
    ``tell``, ``report``, user attributes), writing onto each trial what the study knows of it:
    its trial key and seed when asked, the objective per epoch, the selection figures of its
    last report before it is told. ``asked`` maps Tune's trial ids to the Optuna trials."""

    def __init__(self, space: dict[str, Any], *, metric: str, mode: str, sampler: Any,
                 study_name: str, storage: Any) -> None:
        self.space, self.metric = space, metric
        self.study = optuna.create_study(
            study_name=study_name, storage=storage, sampler=sampler, load_if_exists=True,
            direction="maximize" if mode == "max" else "minimize")
        self.asked: dict[str, optuna.Trial] = {}
        self.told: set[str] = set()  # Tune trial ids told

    def suggest(self, trial_id: str) -> dict[str, Any]:
        trial = self.study.ask(fixed_distributions=self.space)
        self.asked[trial_id] = trial
        return dict(trial.params)

    def _told(self, trial: optuna.Trial) -> bool:
        return any(t.number == trial.number
                   for t in self.study.get_trials(deepcopy=False, states=_FINISHED))

    def mark(self, trial_id: str, **attrs: Any) -> None:
        trial = self.asked.get(trial_id)
        if trial is not None:
            for name, value in attrs.items():
                trial.set_user_attr(name, value)

    def report(self, trial_id: str, result: dict[str, Any]) -> None:
        """The objective at this epoch, as an Optuna intermediate value."""
        trial, value = self.asked.get(trial_id), result.get(self.metric)
        if trial is None or not isinstance(value, int | float) or not math.isfinite(value):
            return
        with warnings.catch_warnings():  # an epoch reported again after a restore: kept once
            warnings.simplefilter("ignore")
            trial.report(float(value), step=int(result["epoch"]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        """Tell the trial: complete with its objective, failed (an error, or no finite
        objective), or pruned (stopped without one)."""
        trial = self.asked.get(trial_id)
        if trial is None or trial_id in self.told:
            return
        self.told.add(trial_id)
        if self._told(trial):  # told before a restore: once is enough
            return
        if result:
            if "epoch" in result and not result.get("replayed"):
                self.report(trial_id, result)  # Tune gives the last report here, not above
            for name in _FIGURES:
                value = result.get(name)
                if isinstance(value, int | float) and math.isfinite(value):
                    trial.set_user_attr(name, value)
        value = result.get(self.metric) if result else None
        if isinstance(value, int | float) and math.isfinite(value):
            self.study.tell(trial, float(value))
        else:
            self.study.tell(trial, state=TrialState.FAIL if error or value is not None
                            else TrialState.PRUNED)

    def note_study(self, **attrs: Any) -> None:
        for name, value in attrs.items():
            self.study.set_user_attr(name, value)

    def abandon_orphans(self) -> int:
        """Fail the trials asked before a crash that this (restored) searcher does not hold:
        Tune asks for them again under new ids. Returns how many."""
        held = {t.number for t in self.asked.values()}
        orphans = [t.number for t in self.study.get_trials(deepcopy=False,
                                                           states=(TrialState.RUNNING,))
                   if t.number not in held]
        for number in orphans:
            self.study.tell(number, state=TrialState.FAIL)
        return len(orphans)


@dataclass
class _Cell:
    name: str
    subset: str
    strategy: str
    optuna: _CellStudy
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
    # Final seeds handed out, and those that ended: seed -> (test predictions, targets), None
    # for one that failed or recorded none (sequential seeds compare them).
    handed: set[int] = field(default_factory=set)
    ended: dict[int, tuple[list[int], list[int]] | None] = field(default_factory=dict)


class CellSearcher(Searcher):
    """Per-cell Optuna TPE searches, then per-cell final re-runs, behind one ``Searcher``."""

    def __init__(self, spec: StudySpec, *, metric: str, mode: str = "max",
                 results: Path | str | None = None) -> None:
        """``results``: the folder whose Optuna journal holds the cells' studies (None: in
        memory only)."""
        super().__init__(metric=metric, mode=mode)
        storage = None if results is None else optuna_storage(Path(results))
        self._budget = spec.cell_search_trials
        self._seed = spec.seed
        self._spec = spec
        self._study = spec.name
        self._final_config = spec.final_config
        self._cells: dict[str, _Cell] = {}
        for subset, strategy in spec.cells:
            name = cell_name(subset, strategy)
            # Replicates search at random: a TPE model would learn from other replicates.
            startup = (spec.cell_search_trials if spec.final_config == "replicates"
                       else spec.startup_trials)
            sampler = TPESampler(seed=derive_seed(spec.seed, "tpe", name),
                                 n_startup_trials=startup)
            self._cells[name] = _Cell(
                name, subset, strategy,
                _CellStudy(cell_space(spec.space, strategy), metric=metric, mode=mode,
                            sampler=sampler, study_name=name, storage=storage),
                finals=list(final_seeds(spec)))
        self._owner: dict[str, tuple[str, str]] = {}  # Tune trial id -> (cell, phase)
        self._final_of: dict[str, int] = {}  # Tune trial id of a final trial -> its seed
        self._plan = Plan.of(spec.to_dict())
        # The report's strategy comparisons this study can make, at each label budget.
        self._pairs = [(a, b) for a, b, _ in COMPARISONS
                       if a in spec.strategies and b in spec.strategies]
        self._family = len(self._pairs) * len(spec.subsets)  # rows of the report's table
        # Sequential seeds: seeds each label budget's cells run to for now, and the budgets
        # whose last look decided that they need no more.
        self._target = dict.fromkeys(spec.subsets, spec.final_seeds)
        self._closed: set[str] = set() if self._plan.sequential else set(spec.subsets)
        if spec.search_trials == 0:  # no search: the train settings as they are
            for cell in self._cells.values():
                cell.best, cell.best_key = {}, "fixed"

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True  # every cell's search was fully set up in __init__

    def suggest(self, trial_id: str) -> dict[str, Any] | None:  # or Searcher.FINISHED
        waiting = False
        for cell in self._cells.values():  # finals first: their cells' searches are over
            if cell.best is not None and cell.finals:
                seed = cell.finals.pop(0)
                self._owner[trial_id] = (cell.name, "final")
                self._final_of[trial_id] = seed
                cell.handed.add(seed)
                source, chosen = cell.final_params.get(seed, (cell.best_key, cell.best))
                return {**self._config(cell, "final", f"final-seed{seed}", seed, chosen),
                        "config_from": source, **self._named()}
        for cell in self._cells.values():
            if cell.suggested < self._budget:
                params = cell.optuna.suggest(trial_id)
                index = cell.suggested
                cell.suggested += 1
                cell.params[trial_id] = dict(params or {})
                cell.keys[trial_id] = f"{cell.name}/search-{index:02d}"
                seed = search_seed(self._spec, index)
                cell.optuna.mark(trial_id, trial_key=cell.keys[trial_id], seed=seed)
                self._owner[trial_id] = (cell.name, "search")
                return {**self._config(cell, "search", f"search-{index:02d}", seed,
                                       params or {}), **self._named()}
            if len(cell.finished) < self._budget:
                waiting = True
        # A label budget still to be looked at may get more seeds: wait for its look.
        waiting = waiting or len(self._closed) < len(self._target)
        return None if waiting else Searcher.FINISHED  # type: ignore[return-value]

    def _named(self) -> dict[str, str]:
        """The study's name for a trial's config (a report from the Tune folder alone reads
        it)."""
        return {"study": self._study}

    @staticmethod
    def _config(cell: _Cell, phase: str, key: str, seed: int, params: dict[str, Any]
                ) -> dict[str, Any]:
        return {"cell": cell.name, "subset": cell.subset, "strategy": cell.strategy,
                "phase": phase, "trial_key": f"{cell.name}/{key}", "seed": seed, **params}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        owner = self._owner.get(trial_id)
        if owner is not None and owner[1] == "search" and "epoch" in result \
                and not result.get("replayed"):
            self._cells[owner[0]].optuna.report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        owner = self._owner.get(trial_id)
        if owner is not None and owner[1] == "final":
            self._final_ended(self._cells[owner[0]], trial_id, result, error)
            return
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

    @property
    def _sign(self) -> float:
        return 1.0 if self.mode == "max" else -1.0

    @staticmethod
    def _scored(cell: _Cell) -> list[str]:
        """The cell's scored search trials in trial-key order, so that of equal scores the first
        asked wins whatever order the trials ended in (and Tune's analysis finds the same one:
        study.tune.analysis)."""
        return sorted(cell.scores, key=lambda t: cell.keys.get(t, t))

    def _choose_best(self, cell: _Cell) -> None:
        if not cell.scores:
            cell.failed = True
            cell.finals.clear()
            logger.warning("cell %s: every search trial failed; no final phase", cell.name)
            self._maybe_look(cell.subset)  # its budget may have waited for it alone
            return
        sign, scored = self._sign, self._scored(cell)
        best_id = max(scored, key=lambda t: sign * cell.scores[t])  # first of equals
        cell.best = dict(cell.params[best_id])
        cell.best_key = cell.keys.get(best_id, "")
        cell.optuna.note_study(chosen_trial_key=cell.best_key, final_config=self._final_config)
        if self._final_config == "replicates":
            self._choose_replicates(cell, scored, sign)
        elif self._final_config == "resampled":
            self._resample(cell, list(cell.finals))

    def _resample(self, cell: _Cell, seeds: list[int]) -> None:
        """Per final seed, the best trial of a bootstrap resample of the cell's search: the
        search as it might have gone."""
        sign, scored = self._sign, self._scored(cell)
        for seed in seeds:
            rng = np.random.default_rng(derive_seed(self._seed, "final-config", cell.name, seed))
            drawn = [scored[i] for i in rng.integers(0, len(scored), len(scored))]
            pick = max(drawn, key=lambda t: sign * cell.scores[t])
            cell.final_params[seed] = (cell.keys.get(pick, ""), dict(cell.params[pick]))
        cell.optuna.note_study(final_seed_configs={
            str(seed): key for seed, (key, _) in cell.final_params.items()})

    def _final_ended(self, cell: _Cell, trial_id: str, result: dict | None, error: bool) -> None:
        """Note a final seed's predictions; once its label budget's seeds have all ended,
        look at its comparisons (sequential seeds)."""
        seed = self._final_of.get(trial_id)
        if seed is None or seed in cell.ended:
            return
        predictions = None if error or not result else result.get("test_predictions")
        targets = None if error or not result else result.get("test_targets")
        cell.ended[seed] = (None if predictions is None or targets is None
                            else (list(predictions), list(targets)))
        self._maybe_look(cell.subset)

    def _maybe_look(self, subset: str) -> None:
        """Once every seed of a label budget has ended, look at its comparisons: more seeds in
        each of its cells while one is open, else the budget is closed."""
        if subset in self._closed:
            return
        cells = [c for c in self._cells.values() if c.subset == subset and not c.failed]
        if any(c.finals or not c.handed <= set(c.ended) for c in cells):
            return  # seeds of this budget still to run
        if cells and budget_open(self._look(subset, cells)) \
                and self._target[subset] < self._plan.most:
            old = self._target[subset]
            self._target[subset] = new = self._plan.next_seeds(old)
            seeds = [final_seed(self._spec.seed, k) for k in range(old, new)]
            logger.info("%s: a comparison is undecided after %d seeds; %d more in each of its "
                        "cells", subset, old, new - old)
            for c in cells:
                c.finals.extend(seeds)
                if self._final_config == "resampled" and c.scores:  # a search to resample
                    self._resample(c, seeds)
        else:
            self._closed.add(subset)

    def _look(self, subset: str, cells: list[_Cell]) -> list[Status]:
        """The sequential status of every strategy comparison at ``subset``."""
        by_strategy = {c.strategy: c for c in cells}
        looks = []
        for better, base in self._pairs:
            a, b = by_strategy.get(better), by_strategy.get(base)
            if a is None or b is None:
                continue
            seeds = sorted(s for s in set(a.ended) & set(b.ended)
                           if a.ended[s] is not None and b.ended[s] is not None)
            if not seeds:
                continue
            targets = a.ended[seeds[0]][1]  # type: ignore[index]
            pa = np.array([a.ended[s][0] for s in seeds])  # type: ignore[index]
            pb = np.array([b.ended[s][0] for s in seeds])  # type: ignore[index]
            looks.append(status(functools.partial(_first_seeds, targets, pa, pb), len(seeds),
                                self._plan, self._family))
        return looks

    def _choose_replicates(self, cell: _Cell, scored: list[str], sign: float) -> None:
        """Each final seed re-runs the best trial of its own replicate's search; a replicate
        whose trials all failed has no final seed (the report counts the seeds it has)."""
        by_key = {cell.keys.get(t, ""): t for t in scored}
        for r, seed in enumerate(list(cell.finals)):
            own = [t for key, t in by_key.items()
                   if replicate_of(self._spec, int(key.rsplit("-", 1)[1])) == r]
            if not own:
                cell.finals.remove(seed)
                logger.warning("cell %s: replicate %d's search trials all failed; final seed "
                               "%d is left out", cell.name, r, seed)
                continue
            pick = max(own, key=lambda t: sign * cell.scores[t])  # first of equals
            cell.final_params[seed] = (cell.keys.get(pick, ""), dict(cell.params[pick]))
        cell.optuna.note_study(final_seed_configs={
            str(seed): key for seed, (key, _) in cell.final_params.items()})

    def best_configs(self) -> dict[str, dict[str, Any] | None]:
        """Each cell's chosen hyperparameters (None while searching, or when all failed)."""
        return {name: cell.best for name, cell in self._cells.items()}

    def save(self, checkpoint_path: str) -> None:
        with Path(checkpoint_path).open("wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with Path(checkpoint_path).open("rb") as handle:
            self.__dict__.update(pickle.load(handle))
        for cell in self._cells.values():
            abandoned = cell.optuna.abandon_orphans()
            if abandoned:
                    logger.info("cell %s: %d search trial(s) asked before the stop are "
                                "marked failed in the Optuna journal; Tune asks again",
                                cell.name, abandoned)


class CellScheduler(FIFOScheduler):
    """ASHA per cell on the reported ``epoch`` (restores reset ``training_iteration``); under
    ``final_config = "replicates"`` per replicate of a cell, so that no replicate's trials are
    stopped for another's."""

    def __init__(self, spec: StudySpec, *, metric: str, mode: str = "max") -> None:
        super().__init__()
        self._spec = spec
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
        if self._spec.final_config == "replicates":
            index = int(str(trial.config["trial_key"]).rsplit("-", 1)[1])
            cell = f"{cell}#{replicate_of(self._spec, index)}"
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
