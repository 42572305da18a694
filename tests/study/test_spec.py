"""StudySpec: presets, TOML/JSON files merged into a preset, --set overrides, and errors that
name the offending setting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from study.sequential import Plan
from study.spec import (
    PRESETS,
    Resources,
    SearchSpace,
    StudySpec,
    load_spec,
    preset,
)
from study.trial_seeds import final_seed, replicate_seed
from wbc.datasets.layout import subset_percent


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- presets -------------------------------------------------------------------------------


def test_presets_construct_and_are_registered() -> None:
    assert set(PRESETS) == {"quick", "quick-ssl", "quick-masks", "real", "paper"}
    real = preset("real")
    assert real.strategies == ("scratch", "pretrain", "ssl_wbc", "pretrain_aug_predicted")
    assert real.train.optim.max_epoch_images == 2048  # a 10k-cell tree costs what 2k does
    assert preset("quick-masks").strategies == ("scratch", "pretrain", "pretrain_aug",
                                                "pretrain_aug_predicted")
    assert preset("quick") is PRESETS["quick"]
    assert preset("quick").preset == "quick" and preset("paper").preset == "paper"
    assert preset("paper").name == "paper"
    assert preset("paper").resources.gpus_per_trial == 1.0


def test_unknown_preset_names_it() -> None:
    with pytest.raises(ValueError, match="'nope'"):
        preset("nope")


def test_quick_has_the_reports_twelve_cells_largest_subset_first() -> None:
    spec = preset("quick")
    assert len(spec.cells) == 12
    assert len(set(spec.cells)) == 12
    assert {s for _, s in spec.cells} == {"scratch", "pretrain", "pretrain_aug"}
    assert {s for _, s in preset("quick-ssl").cells} == {"scratch", "pretrain", "pretrain_aug",
                                                          "ssl", "ssl_pretrain"}
    percents = [subset_percent(subset) for subset, _ in spec.cells]
    assert percents == sorted(percents, reverse=True)  # type: ignore[type-var]
    assert spec.cells[0] == ("WBC_100", "scratch")
    assert spec.cells[-1][0] == "WBC_1"
    assert len(preset("paper").cells) == 20
    assert spec.needs_cam16 and not spec.needs_prcc and preset("quick-ssl").needs_prcc


def test_ssl_settings_are_checked_by_name_and_value() -> None:
    spec = preset("quick")
    assert spec.ssl_config().image_size == spec.image_size
    with pytest.raises(ValueError, match="ssl settings: unknown epoch"):
        spec.with_overrides(["ssl.epoch=3"])
    with pytest.raises(ValueError, match="temperature"):
        spec.with_overrides(["ssl.temperature=0"])
    # Without an SSL strategy the SSL settings are not needed, and pRCC neither.
    plain = spec.with_overrides(['strategies=["scratch"]'])
    assert not plain.needs_prcc


@pytest.mark.parametrize("name", ["quick", "paper"])
def test_base_config_carries_image_size_and_epochs(name: str) -> None:
    spec = preset(name)
    config = spec.base_config()
    assert config.data.image_size == spec.image_size
    assert config.optim.epochs == spec.epochs
    assert config.optim.batch_size == spec.train.optim.batch_size
    assert config.bn_recalibrate == spec.train.bn_recalibrate


def test_paper_base_config_values() -> None:
    config = preset("paper").base_config()
    assert (config.data.image_size, config.optim.epochs) == (224, 30)
    assert config.optim.min_epoch_images == 4096


def test_needs_cam16_depends_on_strategies() -> None:
    assert preset("quick").needs_cam16
    assert not preset("quick").replace(strategies=("scratch",)).needs_cam16


# --- load_spec -------------------------------------------------------------------------------


def test_load_toml_overrides_and_merges_nested_tables(tmp_path: Path) -> None:
    path = _write(tmp_path / "study.toml", """
name = "mine"
epochs = 5
subsets = ["WBC_10", "WBC_1"]

[space]
lr_max = 0.3

[resources]
gpus_per_trial = 0.5

[train]
batch_size = 32
""")
    spec = load_spec(path)
    quick = preset("quick")
    assert spec.name == "mine" and spec.epochs == 5
    assert spec.subsets == ("WBC_10", "WBC_1")
    assert spec.preset == "quick" and spec.image_size == quick.image_size
    assert spec.space.lr_max == 0.3
    assert spec.space.lr_min == quick.space.lr_min  # merged, not replaced
    assert spec.space.imbalance == quick.space.imbalance
    assert spec.resources.gpus_per_trial == 0.5
    assert spec.resources.cpus_per_trial == quick.resources.cpus_per_trial
    assert spec.base_config() == quick.base_config().replace(batch_size=32, epochs=5,
                                                            checkpoint_every=5)
    assert spec.base_config().optim.batch_size == 32
    assert spec.base_config().optim.epochs == 5


def test_load_json_overrides_and_merges_nested_tables(tmp_path: Path) -> None:
    path = _write(tmp_path / "study.json", json.dumps({
        "final_seeds": 4, "space": {"weight_decay_max": 0.05},
        "resources": {"execution": "train"}, "train": {"report_every": 2}}))
    spec = load_spec(path)
    quick = preset("quick")
    assert spec.final_seeds == 4
    assert spec.space.weight_decay_max == 0.05
    assert spec.space.weight_decay_min == quick.space.weight_decay_min
    assert spec.resources.execution == "train"
    assert spec.resources.workers_per_trial == quick.resources.workers_per_trial
    assert spec.train == quick.train.replace(report_every=2)


def test_preset_key_in_file_picks_paper_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path / "study.toml",
                  'preset = "paper"\nfinal_seeds = 2\n[train]\nbatch_size = 128\n')
    spec = load_spec(path)
    paper = preset("paper")
    assert spec.preset == "paper" and spec.name == "paper"
    assert spec.image_size == 224 and spec.epochs == paper.epochs
    assert spec.final_seeds == 2
    assert spec.resources == paper.resources
    assert spec.train == paper.train.replace(batch_size=128)  # report_every kept from paper


def test_base_argument_gives_defaults_without_preset_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "study.toml", "final_seeds = 2\n")
    spec = load_spec(path, base=preset("paper"))
    assert spec.image_size == 224 and spec.final_seeds == 2


def test_empty_file_gives_the_preset(tmp_path: Path) -> None:
    assert load_spec(_write(tmp_path / "study.toml", "")) == preset("quick")


@pytest.mark.parametrize(("text", "pattern"), [
    ("colour = 1\n", r"colour"),
    ("[space]\nlr_mx = 0.3\n", r"space\.lr_mx"),
    ("[resources]\ngpu = 1\n", r"resources\.gpu"),
    ('subsets = ["WBC_10", "CAM16"]\n', r"'CAM16'"),
    ('subsets = ["WBC_0"]\n', r"'WBC_0'"),
    ('strategies = ["scratch", "finetune"]\n', r"'finetune'"),
    ("[space]\nlr_min = 0.5\nlr_max = 0.1\n", r"space\.lr_min=0\.5.*space\.lr_max=0\.1"),
    ('[space]\nimbalance = ["oversample"]\n', r"space\.imbalance.*oversample"),
    ('[resources]\nexecution = "remote"\n', r"resources\.execution='remote'"),
    ("[train]\nbatchsize = 8\n", r"batchsize"),
    ("epochs = 0\n", r"epochs=0"),
    ("reduction_factor = 1\n", r"reduction_factor=1"),
    ('name = "a/b"\n', r"name='a/b'"),
    ('preset = "huge"\n', r"'huge'"),
    ("final_seeds = 1000\n", r"final_seeds=1000"),
    ("seed = -1\n", r"seed=-1"),
    ("reach_chance = 1.0\n", r"reach_chance=1\.0"),
])
def test_bad_file_settings_raise_value_error_naming_them(tmp_path: Path, text: str,
                                                        pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        load_spec(_write(tmp_path / "study.toml", text))


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad-spec.toml", "colour = 1\n")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_spec(path)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "broken.toml", "epochs = = 3\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not valid TOML"):
        load_spec(path)


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "broken.json", '{"epochs": 3,}')
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not valid JSON"):
        load_spec(path)


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*cannot read"):
        load_spec(path)


# --- with_overrides --------------------------------------------------------------------------


def test_overrides_numbers_and_booleans() -> None:
    quick = preset("quick")
    spec = quick.with_overrides(["final_seeds=5", "synthetic_scale=0.1", "pretrain_lr=1",
                                 "redraw_subsets=true", "exclude_bad = true"])
    assert spec.final_seeds == 5 and type(spec.final_seeds) is int
    assert spec.synthetic_scale == 0.1
    assert spec.pretrain_lr == 1.0 and type(spec.pretrain_lr) is float
    assert spec.redraw_subsets is True and spec.exclude_bad is True
    assert spec.base_config().data.exclude_bad is True
    assert quick.final_seeds == 6 and quick.redraw_subsets is False  # the preset is unchanged


def test_overrides_strings() -> None:
    spec = preset("quick").with_overrides(["name=mine", 'data="/data/wbc tree"'])
    assert spec.name == "mine" and spec.data == "/data/wbc tree"


@pytest.mark.parametrize("assignment", ['subsets=["WBC_10","WBC_1"]', "subsets=WBC_10,WBC_1",
                                        "subsets=[WBC_10,WBC_1]", "subsets=[WBC_10, 'WBC_1']"])
def test_overrides_lists(assignment: str) -> None:
    spec = preset("quick").with_overrides([assignment])
    assert spec.subsets == ("WBC_10", "WBC_1")
    assert len(spec.cells) == 6 and spec.cells[0] == ("WBC_10", "scratch")


def test_overrides_single_word_for_a_tuple_field() -> None:
    assert preset("quick").with_overrides(["strategies=scratch"]).strategies == ("scratch",)


def test_overrides_dotted_names() -> None:
    spec = preset("quick").with_overrides(["space.lr_max=0.3", "resources.gpus_per_trial=0.5",
                                           "resources.workers_per_trial=2",
                                           "space.background=[\"own\"]"])
    assert spec.space.lr_max == 0.3
    assert spec.space.lr_min == preset("quick").space.lr_min
    assert spec.space.background == ("own",)
    assert spec.resources.gpus_per_trial == 0.5
    assert spec.resources.mode == "train"


def test_overrides_train_settings_go_through_train_config() -> None:
    spec = preset("quick").with_overrides(["train.lr=0.1", "train.precision=\"bf16\""])
    assert spec.train.optim.lr == 0.1
    assert spec.train.optim.batch_size == preset("quick").train.optim.batch_size
    config = spec.base_config()
    assert config.optim.lr == 0.1 and config.precision == "bf16"


def test_unknown_train_setting_raises_naming_it() -> None:
    with pytest.raises(ValueError, match=r"train settings.*frobnicate"):
        preset("quick").with_overrides(["train.frobnicate=1"])


def test_bad_train_value_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="precision='fp8'"):
        preset("quick").with_overrides(['train.precision="fp8"'])


def test_override_without_equals_sign_raises() -> None:
    with pytest.raises(ValueError, match=r"'epochs'.*expected name=value"):
        preset("quick").with_overrides(["epochs"])


def test_override_of_unknown_field_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="no field 'epoch'"):
        preset("quick").with_overrides(["epoch=3"])
    with pytest.raises(ValueError, match=r"no field 'space\.lr_mx'"):
        preset("quick").with_overrides(["space.lr_mx=0.3"])


def test_override_below_a_scalar_raises() -> None:
    with pytest.raises(ValueError, match="'epochs' has no fields"):
        preset("quick").with_overrides(["epochs.x=3"])


def test_override_validation_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"space\.lr_min=0\.5"):
        preset("quick").with_overrides(["space.lr_min=0.5", "space.lr_max=0.1"])
    with pytest.raises(ValueError, match="'WBC_1000'"):
        preset("quick").with_overrides(["subsets=WBC_1000"])
    with pytest.raises(ValueError, match="'transfer'"):
        preset("quick").with_overrides(["strategies=transfer"])
    with pytest.raises(ValueError, match=r"resources\.execution='cluster'"):
        preset("quick").with_overrides(["resources.execution=cluster"])


def test_non_numeric_value_for_numeric_field_raises_value_error() -> None:
    with pytest.raises(ValueError, match="epochs"):
        preset("quick").with_overrides(["epochs=abc"])


# --- dict round trip -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["quick", "paper"])
def test_to_dict_from_dict_round_trip(name: str) -> None:
    spec = preset(name).with_overrides(["space.lr_max=0.3", "subsets=WBC_10,WBC_1"])
    assert StudySpec.from_dict(spec.to_dict()) == spec
    through_json = json.loads(json.dumps(spec.to_dict()))
    assert StudySpec.from_dict(through_json) == spec
    assert through_json["space"]["lr_max"] == 0.3
    assert through_json["subsets"] == ["WBC_10", "WBC_1"]


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown study setting.*colour"):
        StudySpec.from_dict({**preset("quick").to_dict(), "colour": 1})


def test_nested_setting_must_be_a_table() -> None:
    with pytest.raises(ValueError, match="space must be a table"):
        StudySpec.from_dict({"space": 3})


def test_replace_returns_a_validated_copy() -> None:
    spec = preset("quick").replace(epochs=7)
    assert spec.epochs == 7 and spec.base_config().optim.epochs == 7
    with pytest.raises(ValueError, match="final_seeds=0"):
        preset("quick").replace(final_seeds=0)


# --- Resources and SearchSpace ---------------------------------------------------------------


@pytest.mark.parametrize(("execution", "workers", "mode"), [
    ("auto", 1, "inline"), ("auto", 2, "train"), ("inline", 1, "inline"), ("train", 1, "train"),
])
def test_resources_mode(execution: str, workers: int, mode: str) -> None:
    resources = Resources(execution=execution, workers_per_trial=workers)  # type: ignore[arg-type]
    assert resources.mode == mode


@pytest.mark.parametrize("kwargs", [{"cpus_per_trial": 0.0}, {"gpus_per_trial": -1.0},
                                    {"workers_per_trial": 0}, {"max_concurrent": -1}])
def test_resources_reject_bad_numbers(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="resources"):
        Resources(**kwargs)  # type: ignore[arg-type]


def test_search_space_rejects_inverted_and_empty_bounds() -> None:
    with pytest.raises(ValueError, match=r"space\.aug_factor_min=9"):
        SearchSpace(aug_factor_min=9)
    with pytest.raises(ValueError, match=r"space\.weight_decay_min=0"):
        SearchSpace(weight_decay_min=0)
    with pytest.raises(ValueError, match=r"space\.background"):
        SearchSpace(background=())


def test_label_smoothing_is_searched_only_where_its_bounds_allow() -> None:
    from study.space import cell_space

    assert "label_smoothing" not in cell_space(preset("quick").space, "scratch")
    space = preset("quick").with_overrides(["space.label_smoothing_max=0.2"]).space
    dist = cell_space(space, "pretrain_aug")["label_smoothing"]
    assert (dist.low, dist.high) == (0.0, 0.2)  # type: ignore[attr-defined]
    assert "label_smoothing" in cell_space(preset("paper").space, "scratch")
    with pytest.raises(ValueError, match="label_smoothing"):
        preset("quick").with_overrides(["space.label_smoothing_max=0.7"])


# --- bounds the trials would refuse, duplicate cells: refused when the spec loads -------------


@pytest.mark.parametrize(("assignment", "pattern"), [
    ("space.lr_max=50", r"space\.lr_max=50\.0: every trial would fail.*lr=50\.0 is outside"),
    ("space.lr_max=inf", r"space\.lr_max must be a finite number, got inf"),
    ("space.lr_min=nan", r"space\.lr_min must be a finite number, got nan"),
    ("space.aug_factor_max=1000", r"space\.aug_factor_max=1000: .*\[0, 100\]"),
    ("space.weight_decay_max=3", r"space\.weight_decay_max=3\.0: .*\[0\.0, 1\.0\]"),
    ("space.label_smoothing_max=0.9", r"label_smoothing_max=0\.9"),
    ("synthetic_scale=0", r"synthetic_scale=0\.0 is outside \[1e-06, 1\.0\]"),
    ("synthetic_scale=-1", r"synthetic_scale=-1\.0 is outside"),
    ("resources.cpus_per_trial=nan", r"resources\.cpus_per_trial must be a finite number"),
    ("resources.gpus_per_trial=inf", r"resources\.gpus_per_trial must be a finite number"),
    ("pretrain_epochs=0", r"pretrain_epochs=0 is outside \[1, "),
    ("pretrain_lr=0", r"pretrain_lr=0\.0 is outside \[1e-08, 10\.0\]"),
    ("image_size=4", r"image_size=4 is outside \[8, 2048\]"),
    ("subsets=[WBC_10,WBC_10]", r"subsets: WBC_10 given more than once"),
    ("subsets=[WBC_10,WBC_010]", r"subsets: WBC_010, WBC_10 given more than once"),
    ("strategies=scratch,pretrain,scratch", r"strategies: scratch given more than once"),
    ("space.imbalance=[none,none]", r"space\.imbalance=\['none', 'none'\] names a choice twice"),
    ("keep_models=some", r"keep_models='some' is not one of: best, all, none"),
    ("eval_data=[/a,/a]", r"eval_data=\['/a', '/a'\]: give each tree once"),
])
def test_settings_every_trial_would_refuse_are_refused_at_load(assignment: str, pattern: str
                                                               ) -> None:
    with pytest.raises(ValueError, match=pattern):
        preset("quick").with_overrides([assignment])


def test_pretrain_lr_is_used_as_given() -> None:
    from wbc.training.pretrain import pretrain_config

    spec = preset("quick").with_overrides(["pretrain_lr=1e-5"])
    assert pretrain_config(spec.base_config(), epochs=1, lr=spec.pretrain_lr).optim.lr == 1e-5


def test_eval_data_needs_kept_models_and_keep_models_defaults_to_best() -> None:
    assert preset("quick").keep_models == "best" and preset("paper").keep_models == "best"
    assert preset("quick").with_overrides(["eval_data=[/a,/b]"]).eval_data == ("/a", "/b")
    with pytest.raises(ValueError, match='scores the kept models, but keep_models is "none"'):
        preset("quick").with_overrides(["keep_models=none", "eval_data=/a"])


@pytest.mark.parametrize(("fields", "message"), [
    ({"search_trials": -1}, "search_trials=-1 is outside [0, "),
    ({"final_seeds": 3, "max_final_seeds": 2}, "at least final_seeds=3"),
    ({"final_config": "replicates", "search_trials": 1, "max_final_seeds": 6},
     "each seed needs a search of its own"),
    ({"seeds_per_look": 0}, "seeds_per_look=0"),
])
def test_seed_plans_that_cannot_run_are_refused_by_name(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        StudySpec(**fields)


def test_the_quick_preset_runs_a_fixed_configuration_with_sequential_seeds() -> None:
    quick = preset("quick")
    assert quick.search_trials == 0 and quick.cell_search_trials == 0
    assert (quick.final_seeds, quick.max_final_seeds, quick.seeds_per_look) == (6, 9, 3)
    assert quick.train.to_flat()["min_epoch_steps"] == 20
    assert quick.train.to_flat()["lr"] == 1e-3


def test_a_preset_cut_to_fewer_seeds_still_decides_at_its_last_look() -> None:
    few = preset("quick").with_overrides(["final_seeds=2", "max_final_seeds=0"])
    assert few.min_decide_seeds == 6
    plan = Plan.of(few.to_dict())
    assert plan.looks() == (2,) and plan.weights() == (1.0,)


def test_studies_of_different_seeds_share_no_trial_seed() -> None:
    assert [final_seed(0, k) for k in range(3)] == [1, 2, 3]  # seed 0's runs as they were
    runs = []
    for seed in range(4):
        finals = {final_seed(seed, k) for k in range(999)}
        replicates = {replicate_seed(seed, r) for r in range(99)}
        assert not finals & replicates
        runs.append(finals | replicates)
    for i, mine in enumerate(runs):
        for other in runs[i + 1:]:
            assert not mine & other  # no final or replicate run shared between two studies


def test_checkpoint_every_is_the_studys_and_the_trials_is_derived(tmp_path: Path) -> None:
    quick = preset("quick")
    assert quick.checkpoint_every == 0
    assert quick.to_dict()["train"]["checkpoint_every"] == quick.epochs  # at the end only
    every = quick.replace(checkpoint_every=2, epochs=6)
    assert every.base_config().checkpoint_every == 2
    assert StudySpec.from_dict(every.to_dict()) == every
    with pytest.raises(ValueError, match=r"train\.checkpoint_every=2 differs.*checkpoint_every"):
        load_spec(_write(tmp_path / "study.toml", "[train]\ncheckpoint_every = 2\n"))
    with pytest.raises(ValueError, match="--set checkpoint_every="):
        quick.with_overrides(["train.checkpoint_every=2"])
    # A study.json from before kept the train table's unused value (1): it still resumes.
    old = {**quick.to_dict(), "train": {**quick.to_dict()["train"], "checkpoint_every": 1}}
    with pytest.raises(ValueError, match="checkpoint_every"):
        StudySpec.from_dict(old)
    assert StudySpec.from_record(old) == quick
