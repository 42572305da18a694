"""The config boundaries a trial crosses: Tune's flat config -> ``TrainConfig``
(``trial_config``), flat names <-> ``TrainConfig`` (``to_flat``/``from_flat``), and the settings
a run never reads (``inapplicable_settings``)."""

from __future__ import annotations

import dataclasses

import pytest

from study.spec import StudySpec, preset
from study.tune.trial import trial_config
from wbc.config import TrainConfig
from wbc.strategies import inapplicable_settings

SPEC = StudySpec(subsets=("WBC_10",), strategies=("scratch", "pretrain_aug"), epochs=3)


def _config(strategy: str = "pretrain_aug", phase: str = "search", **searched: object) -> dict:
    return {"cell": f"WBC_10-{strategy}", "subset": "WBC_10", "strategy": strategy,
            "phase": phase, "trial_key": f"WBC_10-{strategy}/{phase}-00", "seed": 7,
            "study": "quick", "config_from": None, **searched}


def test_searched_values_override_the_shared_settings_and_the_cell_is_set() -> None:
    flat = trial_config(SPEC, _config(lr=3e-3, aug_factor=4, background="own")).to_flat()
    assert (flat["lr"], flat["aug_factor"], flat["background"]) == (3e-3, 4, "own")
    assert (flat["subset"], flat["strategy"], flat["seed"]) == ("WBC_10", "pretrain_aug", 7)
    shared = SPEC.base_config().to_flat()
    assert flat["batch_size"] == shared["batch_size"] and flat["epochs"] == SPEC.epochs


def test_without_a_search_a_trial_trains_the_specs_settings() -> None:
    quick = preset("quick")
    flat = trial_config(quick, _config(phase="final")).to_flat()
    assert flat["lr"] == 1e-3 and flat["aug_factor"] == 5 and flat["imbalance"] == "none"


def test_a_run_that_pastes_nothing_reports_aug_factor_0() -> None:
    assert trial_config(SPEC, _config("scratch", lr=1e-3)).to_flat()["aug_factor"] == 0
    assert trial_config(SPEC, _config("pretrain_aug", aug_factor=3)).to_flat()["aug_factor"] == 3


@pytest.mark.parametrize(("every", "expected"), [(0, 3), (1, 1), (2, 2), (3, 3), (9, 3)])
def test_checkpoints_every_n_epochs_or_only_at_the_end(every: int, expected: int) -> None:
    spec = dataclasses.replace(SPEC, checkpoint_every=every)
    assert trial_config(spec, _config()).to_flat()["checkpoint_every"] == expected


def test_final_seeds_redraw_their_subsets_only_when_asked() -> None:
    assert trial_config(SPEC, _config(phase="final")).to_flat()["subset_seed"] is None
    redraw = dataclasses.replace(SPEC, redraw_subsets=True)
    assert trial_config(redraw, _config(phase="final")).to_flat()["subset_seed"] == 7
    assert trial_config(redraw, _config(phase="search")).to_flat()["subset_seed"] is None


def test_a_searched_value_the_config_refuses_names_itself() -> None:
    with pytest.raises(ValueError, match="lr"):
        trial_config(SPEC, _config(lr=-1.0))


def test_flat_names_round_trip_and_unknown_ones_are_named() -> None:
    config = TrainConfig().replace(lr=3e-3, aug_factor=2, strategy="pretrain_aug")
    assert TrainConfig.from_flat(config.to_flat()) == config
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_flat({**config.to_flat(), "learning_rate": 0.1})


def test_settings_a_run_never_reads() -> None:
    scratch = inapplicable_settings({"strategy": "scratch", "optimizer": "adamw",
                                     "schedule": "cosine"})
    assert {"aug_factor", "background", "momentum", "step_every"} <= scratch
    pasting = inapplicable_settings({"strategy": "pretrain_aug", "optimizer": "sgd",
                                     "schedule": "step"})
    assert not {"aug_factor", "background", "momentum", "step_every"} & pasting
