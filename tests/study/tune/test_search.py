from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from study.spec import StudySpec
from study.trial_seeds import replicate_seed
from study.tune.search import (
    CellScheduler,
    CellSearcher,
    cell_name,
    final_seeds,
    search_seed,
)

SPEC = StudySpec(subsets=("WBC_100", "WBC_1"), strategies=("scratch", "pretrain_aug"),
                 search_trials=3, final_seeds=2, startup_trials=1, epochs=4, grace_epochs=1,
                 reduction_factor=2)


def _searcher(spec: StudySpec = SPEC) -> CellSearcher:
    return CellSearcher(spec, metric="best_val_macro_f1", mode="max")


def _drain(searcher: CellSearcher, start: int = 0) -> list[tuple[str, Any]]:
    """Suggest until the searcher waits or finishes."""
    out = []
    for n in range(start, start + 1000):
        config = searcher.suggest(f"t{n}")
        out.append((f"t{n}", config))
        if config is None or config == Searcher.FINISHED:
            return out
    raise AssertionError("the searcher never stopped suggesting")


def test_search_trials_come_largest_cell_first_with_stable_keys() -> None:
    suggested = _drain(_searcher())
    configs = [c for _, c in suggested[:-1]]
    assert suggested[-1][1] is None  # waits: the searches must finish before any final
    assert [c["cell"] for c in configs] == (["WBC_100-scratch"] * 3 + ["WBC_100-pretrain_aug"] * 3
                                            + ["WBC_1-scratch"] * 3 + ["WBC_1-pretrain_aug"] * 3)
    assert [c["trial_key"] for c in configs[:3]] == [
        "WBC_100-scratch/search-00", "WBC_100-scratch/search-01", "WBC_100-scratch/search-02"]
    assert all(c["phase"] == "search" and c["seed"] == SPEC.seed for c in configs)
    scratch = [c for c in configs if c["strategy"] == "scratch"]
    augment = [c for c in configs if c["strategy"] == "pretrain_aug"]
    assert all(set(c) >= {"lr", "weight_decay", "imbalance"} for c in configs)
    assert not any("aug_factor" in c or "background" in c for c in scratch)
    assert all(1 <= c["aug_factor"] <= 8 and c["background"] in ("none", "own", "other")
               for c in augment)
    assert all(SPEC.space.lr_min <= c["lr"] <= SPEC.space.lr_max for c in configs)


def test_each_cell_has_its_own_seeded_optuna_study() -> None:
    first, second = _drain(_searcher()), _drain(_searcher())
    assert [c for _, c in first] == [c for _, c in second]  # seeded: same suggestions
    lrs: dict[str, list[float]] = {}
    for _, config in first[:-1]:
        lrs.setdefault(config["cell"], []).append(config["lr"])
    assert len({tuple(v) for v in lrs.values()}) == len(lrs)  # cells do not share a sampler
    searcher = _searcher()
    _drain(searcher)
    studies = {id(cell.optuna.study) for cell in searcher._cells.values()}
    assert len(studies) == 4


def test_finals_follow_each_cells_search_with_its_best_configuration() -> None:
    searcher = _searcher()
    suggested = dict(_drain(searcher)[:-1])
    scores = {"t0": 0.2, "t1": 0.9, "t2": 0.5}  # WBC_100-scratch: t1 wins
    for trial_id, score in scores.items():
        searcher.on_trial_complete(trial_id, {"best_val_macro_f1": score})
    finals = _drain(searcher, start=100)
    assert [c["trial_key"] for _, c in finals[:-1]] == [
        "WBC_100-scratch/final-seed1", "WBC_100-scratch/final-seed2"]
    assert finals[-1][1] is None  # the other cells are still searching
    best = {k: v for k, v in suggested["t1"].items() if k in ("lr", "weight_decay", "imbalance")}
    for _, config in finals[:-1]:
        assert config["phase"] == "final"
        assert {k: config[k] for k in best} == best
        assert config["config_from"] == suggested["t1"]["trial_key"]
    assert [c["seed"] for _, c in finals[:-1]] == list(final_seeds(SPEC))
    assert SPEC.seed not in final_seeds(SPEC)


def test_resampled_finals_rerun_the_best_of_a_bootstrap_of_the_search_per_seed() -> None:
    spec = SPEC.replace(subsets=["WBC_100"], strategies=["scratch"], final_seeds=12,
                        final_config="resampled")
    searcher = _searcher(spec)
    suggested = dict(_drain(searcher)[:-1])
    scores = {"t0": 0.2, "t1": 0.9, "t2": 0.5}
    for trial_id, score in scores.items():
        searcher.on_trial_complete(trial_id, {"best_val_macro_f1": score})
    finals = [c for _, c in _drain(searcher, start=100)[:-1]]
    assert len(finals) == 12
    keys = {t: suggested[t]["trial_key"] for t in scores}
    sources = [c["config_from"] for c in finals]
    # Each seed re-runs the configuration of the search trial it names: the best one when it
    # was drawn into the seed's resample (about 70% for 3 trials), the next best otherwise.
    for config in finals:
        trial = next(t for t, k in keys.items() if k == config["config_from"])
        assert config["lr"] == suggested[trial]["lr"]
    assert sources.count(keys["t1"]) >= 6  # the best trial most often
    assert set(sources) <= {keys["t1"], keys["t2"], keys["t0"]} and len(set(sources)) >= 2
    again = _searcher(spec)
    _drain(again)
    for trial_id, score in scores.items():
        again.on_trial_complete(trial_id, {"best_val_macro_f1": score})
    assert [c["config_from"] for _, c in _drain(again, start=100)[:-1]] == sources  # seeded


def test_replicate_finals_each_rerun_the_best_of_their_own_independent_search() -> None:
    spec = SPEC.replace(subsets=["WBC_100"], strategies=["scratch"], search_trials=2,
                        final_seeds=3, final_config="replicates")
    assert spec.cell_search_trials == 6  # search_trials is per replicate
    searcher = _searcher(spec)
    suggested = dict(_drain(searcher)[:-1])
    assert len(suggested) == 6
    # Dealt in turn: trials 0 and 3 are replicate 0's search, 1 and 4 replicate 1's, ...
    seeds = [suggested[f"t{i}"]["seed"] for i in range(6)]
    assert seeds == [replicate_seed(0, r) for r in (0, 1, 2, 0, 1, 2)] == [1000, 2000, 3000] * 2
    assert not set(seeds) & set(final_seeds(spec))  # no replicate trains with a final seed
    assert [search_seed(spec, i) for i in range(6)] == seeds
    scores = {"t0": 0.2, "t3": 0.4, "t1": 0.9, "t4": 0.1, "t2": 0.3, "t5": 0.3}
    for trial_id, score in scores.items():
        searcher.on_trial_complete(trial_id, {"best_val_macro_f1": score})
    finals = [c for _, c in _drain(searcher, start=100)[:-1]]
    assert [c["seed"] for c in finals] == list(final_seeds(spec))
    # Each its own search's best (the first of equals in replicate 2), never another's.
    assert [c["config_from"] for c in finals] == [suggested[t]["trial_key"]
                                                   for t in ("t3", "t1", "t2")]
    for config, trial in zip(finals, ("t3", "t1", "t2"), strict=True):
        assert config["lr"] == suggested[trial]["lr"]


def test_a_replicate_whose_search_failed_loses_only_its_own_final_seed() -> None:
    spec = SPEC.replace(subsets=["WBC_100"], strategies=["scratch"], search_trials=1,
                        final_seeds=3, final_config="replicates")
    searcher = _searcher(spec)
    _drain(searcher)
    searcher.on_trial_complete("t0", {"best_val_macro_f1": 0.5})
    searcher.on_trial_complete("t1", None, error=True)
    searcher.on_trial_complete("t2", {"best_val_macro_f1": 0.7})
    finals = [c for _, c in _drain(searcher, start=100)[:-1]]
    assert [c["seed"] for c in finals] == [1, 3]


def test_replicate_trials_are_scheduled_apart_from_other_replicates() -> None:
    spec = SPEC.replace(subsets=["WBC_100"], strategies=["scratch"], search_trials=2,
                        final_seeds=2, final_config="replicates")
    scheduler = CellScheduler(spec, metric="best_val_macro_f1", mode="max")
    trials = [SimpleNamespace(config={"cell": "WBC_100-scratch", "phase": "search",
                                      "trial_key": f"WBC_100-scratch/search-{i:02d}"})
              for i in range(4)]
    assert scheduler._for(trials[0]) is scheduler._for(trials[2])
    assert scheduler._for(trials[0]) is not scheduler._for(trials[1])


def test_more_replicates_bring_their_own_searches_and_search_at_random() -> None:
    spec = SPEC.replace(subsets=["WBC_100"], strategies=["scratch"], search_trials=1,
                        startup_trials=0, final_seeds=5, final_config="replicates")
    searcher = _searcher(spec)
    suggested = [c for _, c in _drain(searcher)[:-1]]
    assert [c["seed"] for c in suggested] == [1000, 2000, 3000, 4000, 5000]


def test_a_cell_whose_trials_all_fail_gets_no_final_phase_and_the_study_finishes() -> None:
    spec = SPEC.replace(subsets=["WBC_1"], strategies=["scratch"])
    searcher = _searcher(spec)
    ids = [t for t, c in _drain(searcher)[:-1]]
    for trial_id in ids:
        searcher.on_trial_complete(trial_id, None, error=True)
    assert searcher.suggest("next") == Searcher.FINISHED
    assert searcher.best_configs() == {"WBC_1-scratch": None}


def test_nan_objectives_do_not_win() -> None:
    spec = SPEC.replace(subsets=["WBC_1"], strategies=["scratch"])
    searcher = _searcher(spec)
    ids = [t for t, c in _drain(searcher)[:-1]]
    searcher.on_trial_complete(ids[0], {"best_val_macro_f1": math.nan})
    searcher.on_trial_complete(ids[1], {"best_val_macro_f1": 0.1})
    searcher.on_trial_complete(ids[2], {"best_val_macro_f1": 0.05})
    best = searcher.best_configs()["WBC_1-scratch"]
    assert best is not None and best["lr"] == searcher._cells["WBC_1-scratch"].params[ids[1]]["lr"]


def test_save_and_restore_continue_where_the_searcher_stopped(tmp_path: Path) -> None:
    searcher = _searcher()
    _drain(searcher)
    for trial_id in ("t0", "t1", "t2"):
        searcher.on_trial_complete(trial_id, {"best_val_macro_f1": 0.5})
    searcher.save(str(tmp_path / "state.pkl"))
    expected = _drain(searcher, start=100)

    restored = _searcher()
    restored.restore(str(tmp_path / "state.pkl"))
    assert _drain(restored, start=100) == expected


def _trial(trial_id: str, cell: str, phase: str) -> Any:
    return SimpleNamespace(trial_id=trial_id, config={"cell": cell, "phase": phase})


def test_scheduler_runs_asha_per_cell_and_leaves_finals_alone() -> None:
    scheduler = CellScheduler(SPEC, metric="best_val_macro_f1", mode="max")
    good, bad = _trial("a", "WBC_1-scratch", "search"), _trial("b", "WBC_1-scratch", "search")
    other = _trial("c", "WBC_100-scratch", "search")
    final = _trial("d", "WBC_1-scratch", "final")
    for trial in (good, bad, other, final):
        scheduler.on_trial_add(None, trial)

    def report(trial: Any, epoch: int, score: float) -> str:
        return scheduler.on_trial_result(None, trial, {"epoch": epoch,
                                                       "best_val_macro_f1": score})

    assert report(good, 1, 0.9) == TrialScheduler.CONTINUE
    assert report(bad, 1, 0.1) == TrialScheduler.STOP  # below the cell's first rung
    # Another cell's rung does not compare with WBC_1's: a low score there still continues.
    assert report(other, 1, 0.05) == TrialScheduler.CONTINUE
    # Final re-runs are never stopped early.
    assert report(final, 1, 0.0) == TrialScheduler.CONTINUE
    assert report(final, 4, 0.0) == TrialScheduler.CONTINUE
    assert set(scheduler._asha) == {cell_name("WBC_1", "scratch"), "WBC_100-scratch"}


def test_scheduler_ignores_reports_without_the_metric() -> None:
    scheduler = CellScheduler(SPEC, metric="best_val_macro_f1", mode="max")
    trial = _trial("a", "WBC_1-scratch", "search")
    scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, trial, {"replayed": True}) == TrialScheduler.CONTINUE
    scheduler.on_trial_remove(None, trial)
    scheduler.on_trial_remove(None, trial)  # twice: no KeyError


@pytest.mark.parametrize("rf", [2, 3])
def test_scheduler_respects_grace_period(rf: int) -> None:
    spec = SPEC.replace(grace_epochs=2, reduction_factor=rf)
    scheduler = CellScheduler(spec, metric="best_val_macro_f1", mode="max")
    first, second = _trial("a", "WBC_1-scratch", "search"), _trial("b", "WBC_1-scratch", "search")
    scheduler.on_trial_add(None, first)
    scheduler.on_trial_add(None, second)
    scheduler.on_trial_result(None, first, {"epoch": 1, "best_val_macro_f1": 0.9})
    result = scheduler.on_trial_result(None, second, {"epoch": 1, "best_val_macro_f1": 0.0})
    assert result == TrialScheduler.CONTINUE  # epoch 1 is inside the grace period


def test_cells_studies_live_in_the_results_folders_optuna_journal(tmp_path: Path) -> None:
    import optuna

    from study.results.journal import OPTUNA_FILE, cell_studies, optuna_storage

    searcher = CellSearcher(SPEC, metric="best_val_macro_f1", mode="max", results=tmp_path)
    suggested = dict(_drain(searcher)[:-1])
    # The journal changes nothing the searcher hands out (same seeds, same history).
    assert list(suggested.values()) == [c for _, c in _drain(_searcher())[:-1]]
    for epoch, value in ((1, 0.3), (2, 0.6)):
        searcher.on_trial_result("t1", {"epoch": epoch, "best_val_macro_f1": value})
    searcher.on_trial_result("t1", {"epoch": 2, "best_val_macro_f1": 0.6, "replayed": True})
    scores = {"t0": 0.2, "t1": 0.6, "t2": 0.5}
    for trial_id, score in scores.items():
        searcher.on_trial_complete(trial_id, {"best_val_macro_f1": score, "epoch": 2,
                                              "best_epoch": 2, "val_macro_f1": score,
                                              "val_accuracy": 0.7, "val_n": 40})
    assert (tmp_path / OPTUNA_FILE).is_file()
    study = optuna.load_study(study_name="WBC_100-scratch", storage=optuna_storage(tmp_path))
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.user_attrs["trial_key"] for t in trials] == [
        f"WBC_100-scratch/search-0{i}" for i in range(3)]
    assert [t.value for t in trials] == [0.2, 0.6, 0.5]
    assert trials[1].intermediate_values == {1: 0.3, 2: 0.6}
    assert trials[1].user_attrs["val_n"] == 40 and trials[1].user_attrs["seed"] == SPEC.seed
    assert {k: trials[1].params[k] for k in trials[1].params} == {
        k: v for k, v in suggested["t1"].items() if k in trials[1].params}
    assert study.best_trial.user_attrs["trial_key"] == study.user_attrs["chosen_trial_key"]
    # One study per cell, named after it; the other cells' trials still running.
    assert set(cell_studies(tmp_path)) == {cell_name(s, t) for s, t in SPEC.cells}


def test_a_restored_searcher_continues_its_journal_without_doubling_trials(
        tmp_path: Path) -> None:
    import optuna

    from study.results.journal import optuna_storage

    searcher = CellSearcher(SPEC, metric="best_val_macro_f1", mode="max", results=tmp_path)
    first = [searcher.suggest(t) for t in ("t0", "t1")]  # two of WBC_100-scratch's three
    searcher.on_trial_complete("t0", {"best_val_macro_f1": 0.4})
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune's checkpoint of the experiment
    searcher.suggest("late")  # asked after the checkpoint: the driver then dies
    restored = CellSearcher.__new__(CellSearcher)
    restored.restore(str(tmp_path / "searcher.pkl"))
    again = restored.suggest("t9")  # Tune asks for the lost one again
    assert again["trial_key"] == "WBC_100-scratch/search-02"
    restored.on_trial_complete("t1", {"best_val_macro_f1": 0.7})
    restored.on_trial_complete("t9", {"best_val_macro_f1": 0.5})
    restored.on_trial_complete("t0", {"best_val_macro_f1": 0.4})  # told twice: kept once
    study = optuna.load_study(study_name="WBC_100-scratch", storage=optuna_storage(tmp_path))
    by_state: dict[str, list[str]] = {}
    for trial in study.trials:
        by_state.setdefault(trial.state.name, []).append(trial.user_attrs["trial_key"])
    assert by_state == {"COMPLETE": ["WBC_100-scratch/search-00", "WBC_100-scratch/search-01",
                                     "WBC_100-scratch/search-02"],
                        "FAIL": ["WBC_100-scratch/search-02"]}  # the one lost in the crash
    assert [c["trial_key"] for c in first] == ["WBC_100-scratch/search-00",
                                                  "WBC_100-scratch/search-01"]


def test_mend_journal_clears_what_a_killed_driver_left(tmp_path: Path) -> None:
    from study.results.journal import OPTUNA_FILE, mend_journal

    journal = tmp_path / OPTUNA_FILE
    journal.write_bytes(b'{"op_code":0}\n{"op_code":1}\n{"op_co')
    (tmp_path / f"{OPTUNA_FILE}.lock").symlink_to(journal)
    mend_journal(tmp_path)
    assert journal.read_bytes() == b'{"op_code":0}\n{"op_code":1}\n'
    assert not (tmp_path / f"{OPTUNA_FILE}.lock").is_symlink()
    mend_journal(tmp_path)  # whole lines: left as they are
    assert journal.read_bytes() == b'{"op_code":0}\n{"op_code":1}\n'


def test_optuna_storage_refuses_a_path_that_is_no_results_folder(tmp_path: Path) -> None:
    from study.results.journal import optuna_storage

    with pytest.raises(FileNotFoundError, match=r"nope: neither a study's results folder"):
        optuna_storage(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()  # nothing made where nothing was meant


FIXED = StudySpec(subsets=("WBC_10", "WBC_1"), strategies=("scratch", "pretrain"),
                  search_trials=0, final_seeds=2, max_final_seeds=4,
                  seeds_per_look=2)


def _finish(searcher: CellSearcher, suggested: list[tuple[str, Any]]) -> None:
    """End final trials: WBC_10's pretrain runs predict every image right, every other run
    predicts every image as class 0."""
    targets = [0, 1, 2, 3, 4] * 4
    for trial_id, config in suggested:
        if isinstance(config, dict):
            right = config["cell"] == "WBC_10-pretrain"
            searcher.on_trial_complete(trial_id, {
                "best_val_macro_f1": 0.5, "test_targets": targets,
                "test_predictions": targets if right else [0] * len(targets)})


def test_a_fixed_study_runs_finals_only_with_the_train_settings() -> None:
    searcher = _searcher(dataclasses.replace(FIXED, max_final_seeds=0))
    suggested = _drain(searcher)
    configs = [c for _, c in suggested[:-1]]
    assert suggested[-1][1] == Searcher.FINISHED  # nothing to wait for: no search, one look
    assert len(configs) == 8 and all(c["phase"] == "final" for c in configs)
    assert all(c["config_from"] == "fixed" and "lr" not in c for c in configs)
    assert {c["seed"] for c in configs} == set(final_seeds(FIXED))


def test_an_undecided_budget_gets_more_seeds_and_a_decided_one_does_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import study.tune.search as search
    from study.sequential import DECIDED, OPEN, Status

    def fake_status(compare_at: Any, seeds: int, plan: Any, family: int) -> Status:
        # The real comparison of the runs: WBC_10 differs (decided), WBC_1 does not (open).
        difference = compare_at(seeds).difference
        return Status(seeds, (seeds,), 0.5, None, DECIDED if difference else OPEN)

    monkeypatch.setattr(search, "status", fake_status)
    searcher = _searcher(FIXED)
    first = _drain(searcher)
    assert first[-1][1] is None  # waits for the looks, does not finish
    assert len(first) - 1 == 8  # 2 budgets x 2 strategies x 2 planned seeds
    _finish(searcher, first[:-1])
    more = _drain(searcher, start=100)
    # WBC_1 was open after 2 seeds: 2 more seeds in each of its cells; WBC_10 was decided.
    assert sorted(c["trial_key"] for _, c in more[:-1]) == sorted(
        f"WBC_1-{t}/final-seed{k}" for t in ("scratch", "pretrain") for k in (3, 4))
    assert more[-1][1] is None  # and waits for their look
    _finish(searcher, more[:-1])
    assert searcher.suggest("t999") == Searcher.FINISHED  # 4 seeds: the budget is spent


def test_more_seeds_of_a_searched_cell_rerun_resampled_choices(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import study.tune.search as search
    from study.sequential import OPEN, Status

    monkeypatch.setattr(search, "status", lambda at, seeds, plan, family: Status(
        seeds, (seeds,), 0.5, None, OPEN))
    spec = dataclasses.replace(FIXED, subsets=("WBC_1",), search_trials=2,
                               final_config="resampled")
    searcher = _searcher(spec)
    searched = _drain(searcher)[:-1]
    for n, (trial_id, _) in enumerate(searched):
        searcher.on_trial_complete(trial_id, {"best_val_macro_f1": 0.1 * n})
    finals = _drain(searcher, start=100)
    _finish(searcher, finals[:-1])
    more = [c for _, c in _drain(searcher, start=200)[:-1]]
    assert sorted(c["seed"] for c in more) == [3, 3, 4, 4]
    keys = {c["cell"]: {f"{c['cell']}/search-00", f"{c['cell']}/search-01"} for c in more}
    assert all(c["config_from"] in keys[c["cell"]] and "lr" in c for c in more)


def test_a_budget_whose_other_cell_failed_its_search_is_still_closed() -> None:
    """WBC_1-scratch's seeds end before WBC_1-pretrain's only search trial fails: the budget's
    look happens then (it waited for that cell), and the study finishes instead of waiting."""
    spec = dataclasses.replace(FIXED, subsets=("WBC_1",), search_trials=1,
                               final_config="resampled")
    searcher = _searcher(spec)
    searched = dict(_drain(searcher)[:-1])
    scratch = next(t for t, c in searched.items() if c["strategy"] == "scratch")
    pretrain = next(t for t, c in searched.items() if c["strategy"] == "pretrain")
    searcher.on_trial_complete(scratch, {"best_val_macro_f1": 0.5})
    finals = _drain(searcher, start=100)
    assert finals[-1][1] is None  # pretrain's search still runs
    _finish(searcher, finals[:-1])
    searcher.on_trial_complete(pretrain, None, error=True)
    assert searcher.suggest("t999") == Searcher.FINISHED
