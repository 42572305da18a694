"""CAM16 and pRCC kept outside the WBC tree (``cam16``/``prcc`` in the spec, ``--cam16``/
``--prcc``): the study's tree takes them from there, refuses a folder that is not their layout,
records where they came from and whether they are real, and a tree without them gets one
message naming what each strategy lacks and the commands that run the study."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from study.cli import main as study_main
from study.data import StudyError, check_strategies, histology_record
from study.report.sections import _histology_lines, histology_phrase
from study.runner import _load_tree, run_study
from study.spec import StudySpec, load_spec, preset
from study.study_record import StudyRecord
from tests.treegen import make_cam16_prcc, make_wbc_tree
from wbc.datasets import DatasetError, scan_tree, with_histology
from wbc.datasets.layout import WBC_CLASSES
from wbc.strategies import strategy_names
from wbc.training.inputs import plan_wbc


@pytest.fixture(scope="module")
def apart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a WBC tree with masks and no histology, a folder holding CAM16/ and pRCC/)."""
    base = tmp_path_factory.mktemp("apart")
    return make_wbc_tree(base / "wbc"), make_cam16_prcc(base / "histology")


@pytest.fixture(scope="module")
def maskless(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real-like tree: WBC_100 without masks or histology (as `wbc import` makes)."""
    return make_wbc_tree(tmp_path_factory.mktemp("maskless"),
                         {c: (6, 0, 3) for c in WBC_CLASSES})


def _spec(data: Path, **changes: Any) -> StudySpec:
    return preset("quick").replace(data=str(data), **changes)


# --- the spec and the command line ---------------------------------------------------------


def test_spec_fields_round_trip_through_set_dict_and_files(tmp_path: Path) -> None:
    spec = preset("quick").with_overrides(["cam16=/data/cam16-real", "prcc=/data/prcc"])
    assert (spec.cam16, spec.prcc) == ("/data/cam16-real", "/data/prcc")
    assert StudySpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert preset("quick").cam16 is None and preset("quick").prcc is None
    path = tmp_path / "study.toml"
    path.write_text('cam16 = "/data/cam16-real"\n')
    assert load_spec(path).cam16 == "/data/cam16-real"
    with pytest.raises(ValueError, match=r"cam16=''.*folder that holds CAM16"):
        preset("quick").with_overrides(['cam16=""'])


def test_study_run_makes_the_folders_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.toml").write_text('prcc = "kept/prcc"\n')
    assert study_main(["run", "--cam16", "kept/cam16", "--config", "spec.toml",
                       "--print-spec"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cam16"] == str(tmp_path / "kept/cam16")
    assert printed["prcc"] == str(tmp_path / "kept/prcc")
    assert study_main(["run", "--resume", str(tmp_path), "--cam16", "x"]) == 2
    assert "drop --config, --set, --data, --cam16" in capsys.readouterr().err


# --- the tree takes its histology from the folders given -----------------------------------


@pytest.mark.parametrize("layout", ["holds", "is"])
def test_study_tree_takes_cam16_and_prcc_from_the_folders(apart: tuple[Path, Path],
                                                          layout: str) -> None:
    wbc, histology = apart
    cam16 = histology if layout == "holds" else histology / "CAM16"
    prcc = histology if layout == "holds" else histology / "pRCC"
    said: list[str] = []
    spec = _spec(wbc, cam16=str(cam16), prcc=str(prcc), strategies=(
        "scratch", "pretrain", "pretrain_aug", "ssl", "ssl_pretrain"))
    tree, data = _load_tree(spec, wbc.parent / "results", None, said.append)
    assert tree.cam16_dir == histology / "CAM16" and tree.prcc_dir == histology / "pRCC"
    assert all(histology / "CAM16" in s.path.parents for s in tree.cam16.samples())
    assert len(tree.prcc) == 5 and all(histology / "pRCC" in s.path.parents for s in tree.prcc)
    cam16_record = data["histology"]["cam16"]
    assert cam16_record["source"] == "folder" and cam16_record["kind"] == "real"
    assert cam16_record["counts"]["train"] == {"normal": 4, "tumor": 4}
    assert cam16_record["counts"]["val"] == {"normal": 2, "tumor": 2}
    assert data["histology"]["prcc"]["images"] == 5
    assert any(line.startswith("CAM16: 16 real images (8 train / 4 val / 4 test) from")
               for line in said)
    assert not any("not used" in line for line in said)  # the tree had none of its own


def test_the_given_folder_wins_over_the_trees_own(tiny_root: Path, apart: tuple[Path, Path]
                                                  ) -> None:
    histology = apart[1]
    said: list[str] = []
    tree, data = _load_tree(_spec(tiny_root, cam16=str(histology)), tiny_root / "results",
                            None, said.append)
    assert all(histology in s.path.parents for s in tree.cam16.samples())
    assert all(tiny_root in s.path.parents for s in tree.prcc)  # not given: the tree's own
    assert any(f"the tree's own {tiny_root / 'CAM16'} is not used (the given folder wins)"
               in line for line in said)
    assert data["histology"]["cam16"]["source"] == "folder"
    assert data["histology"]["prcc"]["source"] == "tree"


@dataclass
class _Recorder:
    """An executor that trains nothing and keeps the plans it was given."""

    plans: list[Any] = field(default_factory=list)
    cpus: float = 1.0

    def supervised(self, plan: Any, config: Any, init: Any, name: str, *,
                   on_report: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        self.plans.append(plan)
        return {}, {"val_accuracy": 0.9, "test_accuracy": 0.8, "loop_seconds": 0.0}

    def ssl(self, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        raise AssertionError("no self-supervised run was asked for")


def test_cam16_pretraining_trains_on_the_given_folder(apart: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    from study.pretraining import ensure_sources
    from wbc.training.pretrain import WeightsStore

    wbc, histology = apart
    spec = _spec(wbc, cam16=str(histology), strategies=("scratch", "pretrain"))
    tree, _ = _load_tree(spec, tmp_path / "results", None, lambda _: None)
    executor = _Recorder()
    done = ensure_sources(["cam16"], tree, spec.base_config(), spec.pretrain_settings(),
                          WeightsStore(tmp_path), executor, say=lambda _: None)
    (plan,) = executor.plans
    assert "cam16" in done and len(plan.train) == 8 and len(plan.val) == 4
    assert all(histology / "CAM16" in s.path.parents for s in (*plan.train, *plan.val))


# --- refusals ------------------------------------------------------------------------------


def test_a_missing_folder_is_refused_before_anything_is_written(apart: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(StudyError, match=rf"CAM16 folder {missing} does not exist; give a "
                                         r"folder that holds CAM16/\{train,val,test\}/data"):
        run_study(_spec(apart[0], cam16=str(missing)), tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_a_folder_without_cam16_is_refused_naming_the_layout(apart: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    wbc, histology = apart
    with pytest.raises(StudyError, match=rf"CAM16 folder {wbc} holds no CAM16.*"
                                         r"CAM16/\{train,val,test\}/data/\{normal,tumor\}"):
        _load_tree(_spec(wbc, cam16=str(wbc)), tmp_path / "r", None, lambda _: None)
    no_val = tmp_path / "no-val"
    shutil.copytree(histology / "CAM16/train", no_val / "CAM16/train")
    with pytest.raises(StudyError, match=rf"no val images in {no_val / 'CAM16'}"):
        _load_tree(_spec(wbc, cam16=str(no_val)), tmp_path / "r", None, lambda _: None)
    with pytest.raises(StudyError, match=rf"pRCC folder {no_val} holds no pRCC"):
        _load_tree(_spec(wbc, prcc=str(no_val)), tmp_path / "r", None, lambda _: None)


def test_a_bad_file_in_the_given_folder_makes_the_tree_unusable(apart: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    wbc, histology = apart
    copy = shutil.copytree(histology / "CAM16", tmp_path / "cam16")
    bad = copy / "train/data/normal/broken.jpg"
    bad.write_bytes(b"not an image")
    tree = with_histology(scan_tree(wbc, workers=1), cam16=copy, workers=1)
    assert not tree.usable and [p.path for p in tree.errors] == [bad]
    excluded = with_histology(scan_tree(wbc, workers=1), cam16=copy, exclude_bad=True,
                              workers=1)
    assert excluded.usable and excluded.excluded_files == (bad,)


# --- a tree without histology: one message, the strategies it can run, the commands ------


def test_no_histology_names_what_each_strategy_lacks_and_the_commands(maskless: Path,
                                                                      tmp_path: Path) -> None:
    with pytest.raises(StudyError) as caught:
        _load_tree(_spec(maskless), tmp_path / "r", None, lambda _: None)
    message = str(caught.value)
    assert "pretrain: needs CAM16\n" in message
    assert "pretrain_aug: needs CAM16 and masks\n" in message
    can_run = next(line for line in message.splitlines() if line.startswith("This tree can"))
    assert can_run.startswith("This tree can run: scratch")
    if "ssl_wbc" in strategy_names():
        assert "ssl_wbc" in can_run.partition(";")[0]
    assert "ssl pRCC" in can_run and "pretrain_aug_predicted CAM16" in can_run
    assert f"study run --data {maskless} --cam16 /path/to/folder-with-CAM16" in message
    assert f"study run --data {maskless} --set 'strategies=[scratch]'" in message
    assert "--strategy" not in message and "cell WBC_" not in message


def test_with_the_folder_given_only_the_masks_are_missing(maskless: Path,
                                                          apart: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    spec = _spec(maskless, cam16=str(apart[1]))
    with pytest.raises(StudyError, match="pretrain_aug: needs masks\n") as caught:
        _load_tree(spec, tmp_path / "r", None, lambda _: None)
    assert "--cam16" not in str(caught.value)  # the histology is there
    assert "--set 'strategies=[scratch,pretrain]'" in str(caught.value)
    _, data = _load_tree(spec.replace(strategies=("scratch", "pretrain")), tmp_path / "r",
                         None, lambda _: None)
    assert data["histology"]["cam16"]["root"] == str(apart[1] / "CAM16")


def test_a_tree_that_runs_every_strategy_passes(tiny_root: Path) -> None:
    tree = scan_tree(tiny_root, workers=1)
    check_strategies(tree, preset("quick-ssl").strategies, preset("quick").base_config())


def test_wbc_train_message_names_cam16_and_scratch(maskless: Path) -> None:
    tree = scan_tree(maskless, workers=1)
    config = preset("quick").base_config().replace(strategy="pretrain")
    with pytest.raises(DatasetError, match=r"--cam16 PATH.*--strategy scratch"):
        plan_wbc(tree, config)
    with pytest.raises(DatasetError, match=r"--prcc PATH.*--strategy scratch"):
        plan_wbc(tree, config.replace(strategy="ssl"))


# --- the record and the report -------------------------------------------------------------


def test_synthetic_tissue_is_recorded_as_synthetic(apart: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    synthetic = shutil.copytree(apart[1], tmp_path / "synth")
    (synthetic / "synth.json").write_text("{}")  # what `wbc synth` leaves at a tree's root
    tree = with_histology(scan_tree(apart[0], workers=1), cam16=synthetic, prcc=apart[1],
                          workers=1)
    record = histology_record(tree, synthetic_tree=False)
    assert record["cam16"]["kind"] == "synthetic" and record["prcc"]["kind"] == "real"
    own = histology_record(scan_tree(synthetic, verify=False), synthetic_tree=True)
    assert own["cam16"]["source"] == "synthetic tree"


def _study(histology: dict[str, Any] | None, pretrain: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"source": "tree", "root": "/data/pbc"}
    if histology is not None:
        data["histology"] = histology
    return StudyRecord(study="s", preset="quick", spec={}, provenance={}, data=data,
                       pretrain=pretrain).to_dict()


_CAM16 = {"source": "folder", "root": "/data/cam16-real/CAM16", "kind": "real", "images": 356,
          "counts": {"train": {"normal": 124, "tumor": 124}, "val": {"normal": 20, "tumor": 16},
                     "test": {"normal": 36, "tumor": 36}}}
_PRCC = {"source": "synthetic tree", "root": "/cache/synth/pRCC", "kind": "synthetic",
         "images": 1419, "counts": {"train": 1419}}


def test_report_says_which_histology_each_pretraining_used() -> None:
    study = _study({"cam16": _CAM16, "prcc": _PRCC},
                   {"prcc_ssl": {"ssl_loss": 1.0}, "cam16": {"val_accuracy": 0.8}})
    study = StudyRecord.from_dict(json.loads(json.dumps(study))).to_dict()  # kept in study.json
    assert histology_phrase(study, "cam16") == (
        "real tissue from /data/cam16-real/CAM16, given apart from the WBC tree "
        "(248 train / 36 val / 72 test tiles)")
    assert _histology_lines(study) == [
        "- CAM16 tiles (supervised pretraining): real tissue from /data/cam16-real/CAM16, given "
        "apart from the WBC tree (248 train / 36 val / 72 test tiles)",
        "- pRCC images (self-supervised pretraining): synthetic tissue (wbc synth) from "
        "/cache/synth/pRCC, in the study's synthetic tree (1419 images)"]
    assert histology_phrase(study, "cam16", brief=True) == "real tissue"
    # Only the histology a pretraining used; a study from before the record says nothing.
    assert _histology_lines(_study({"cam16": _CAM16}, {})) == []
    assert _histology_lines(_study(None, {"cam16": {"val_accuracy": 0.8}})) == []
    assert histology_phrase(_study(None, {}), "cam16") == ""
