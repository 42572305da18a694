"""``wbc predict``, ``wbc evaluate`` and ``wbc export`` on real files: a ResNet-18 trained for
two epochs at 32 px on a generated tree, image folders with broken files among good ones, and
the exported ONNX file run by onnxruntime."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.treegen import cell_image, make_wbc_tree, write_class_folder, write_image
from wbc.classifier.export import CARD_KEY, default_output, export_model
from wbc.classifier.inference import collect_images, evaluate_model, load_split, predict_files
from wbc.classifier.model_file import Card, Classifier, load_classifier, run_card, save_classifier
from wbc.cli import main
from wbc.config import TrainConfig
from wbc.datasets import scan_tree
from wbc.datasets.imageio import decode_working
from wbc.datasets.layout import WBC_CLASSES
from wbc.training.inputs import load_plan, plan_wbc
from wbc.training.loop import IMAGENET_MEAN, IMAGENET_STD, evaluate
from wbc.training.resnet import build_resnet18
from wbc.training.run import train_run

SIZE = 32
COUNTS = {c: (8, 2, 6) for c in WBC_CLASSES}  # train, masks, val per class


@dataclass(frozen=True)
class Trained:
    root: Path  # the tree it was trained on: no test split, so it reports on half B of val
    model: Path
    cache: Path
    config: TrainConfig
    metrics: dict[str, Any]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    base = tmp_path_factory.mktemp("trained")
    root = make_wbc_tree(base / "tree", COUNTS, sizes=((40, 40), (48, 36)))
    config = TrainConfig().replace(epochs=2, image_size=SIZE, batch_size=16, lr=0.02,
                                   color_jitter=0.0, warmup_epochs=0.5)
    cache = base / "cache"
    result = train_run(plan_wbc(scan_tree(root), config), config, cache_dir=cache)
    card = run_card(config, WBC_CLASSES, result.metrics)
    model = save_classifier(result.fit.best_state, card, base / "model")
    return Trained(root, model, cache, config, result.metrics)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PNGs and JPEGs of several sizes, one in a subfolder, among a truncated JPEG, a text file
    named .png, a .txt file and a hidden file."""
    folder = tmp_path_factory.mktemp("images")
    for i, (size, suffix) in enumerate([((40, 40), ".png"), ((52, 30), ".png"),
                                        ((36, 44), ".jpg"), ((40, 40), ".jpeg"),
                                        ((64, 64), ".png"), ((30, 30), ".bmp")]):
        write_image(folder / f"cell{i}{suffix}", cell_image(size, seed=i, label=i % 5)[0])
    write_image(folder / "deeper/cell9.tif", cell_image((40, 40), seed=9, label=3)[0])
    good = folder / "cell2.jpg"
    (folder / "broken.jpg").write_bytes(good.read_bytes()[:200])
    (folder / "letter.png").write_text("not an image\n")
    (folder / "notes.txt").write_text("what the folder holds\n")
    write_image(folder / ".hidden.png", cell_image((40, 40), seed=99)[0])
    return folder


GOOD = 7  # the readable images of ``images``
BAD = ("broken.jpg", "letter.png", "notes.txt")


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _reported(metrics: dict[str, Any]) -> dict[str, Any]:
    """The reporting split's figures of a run's record, named as ``evaluate_model`` names
    them: ``test_accuracy`` (``flatten_metrics("test", ...)``) -> ``accuracy``."""
    return {k.removeprefix("test_"): v for k, v in metrics.items()
            if k.startswith("test_") and isinstance(v, int | float)}


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wbc {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_predict_writes_a_row_per_good_image_and_skips_the_bad_ones(
        trained: Trained, images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model", str(trained.model), str(images), "--quiet"]) == 0
    out, err = capsys.readouterr()
    rows = _rows(out)
    assert len(rows) == GOOD
    assert list(rows[0]) == ["path", "predicted", "probability",
                             *(f"p_{c}" for c in WBC_CLASSES)]
    assert {Path(r["path"]).name for r in rows} == {
        "cell0.png", "cell1.png", "cell2.jpg", "cell3.jpeg", "cell4.png", "cell5.bmp",
        "cell9.tif"}
    for row in rows:
        probabilities = [float(row[f"p_{c}"]) for c in WBC_CLASSES]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert row["predicted"] == WBC_CLASSES[int(np.argmax(probabilities))]
        assert float(row["probability"]) == max(probabilities)
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert sorted(Path(line.split()[1].rstrip(":")).name for line in skipped) == sorted(BAD)
    reasons = {Path(line.split(": ")[0].removeprefix("skipped ")).name: line.split(": ", 1)[1]
               for line in skipped}
    assert reasons["letter.png"].startswith("not an image") and reasons["broken.jpg"]
    assert "predict:" not in err  # --quiet: no progress


def test_predict_json_to_a_file(trained: Trained, images: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "predictions.json"
    assert main(["predict", "--model", str(trained.model.parent), str(images), "--out",
                 str(out), "--batch-size", "3", "--workers", "2"]) == 0
    assert f"wrote {GOOD} predictions to {out}" in capsys.readouterr().out
    document = json.loads(out.read_text())
    assert document["classes"] == list(WBC_CLASSES) and len(document["predictions"]) == GOOD
    assert sorted(Path(s["path"]).name for s in document["skipped"]) == sorted(BAD)
    assert set(document["predictions"][0]) == {"path", "predicted", "probability",
                                               *(f"p_{c}" for c in WBC_CLASSES)}
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, nothing left beside it


def test_predict_probabilities_are_the_classifiers_on_decode_working(
        trained: Trained, images: Path) -> None:
    classifier = load_classifier(trained.model)
    paths = [p for p in collect_images([images])[0] if p.name not in BAD]
    records, skipped = predict_files(classifier, paths, batch_size=256, workers=1)
    assert not skipped and [r["path"] for r in records] == [str(p) for p in paths]
    arrays = torch.from_numpy(np.stack([decode_working(p, SIZE)[0] for p in paths]))
    want = classifier.probabilities(arrays)
    got = torch.tensor([[r[f"p_{c}"] for c in WBC_CLASSES] for r in records])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # In small batches decoded by worker processes: the same answers.
    again, _ = predict_files(classifier, paths, batch_size=3, workers=2)
    assert [r["predicted"] for r in again] == [r["predicted"] for r in records]
    torch.testing.assert_close(torch.tensor([[r[f"p_{c}"] for c in WBC_CLASSES] for r in again]),
                               want, rtol=0, atol=1e-6)


def test_predict_reports_progress_on_long_lists(trained: Trained, images: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("wbc.classifier.inference.PROGRESS_SECONDS", 0.0)
    lines: list[str] = []
    paths = collect_images([images])[0]
    predict_files(load_classifier(trained.model), paths, batch_size=4, workers=1,
                  progress=lines.append)
    assert lines == [f"predict: {n}/{len(paths)} images" for n in (4, 8, 9)]


def test_predict_with_nothing_readable_or_a_missing_input_exits_2(
        trained: Trained, images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(trained.model)
    assert main(["predict", "--model", model, str(images / "letter.png"),
                 str(images / "broken.jpg")]) == 2
    err = capsys.readouterr().err
    assert "no image could be read" in err.splitlines()[-1] and "Traceback" not in err
    missing = images / "absent.png"
    assert main(["predict", "--model", model, str(images / "cell0.png"), str(missing)]) == 2
    assert str(missing) in _one_error_line(capsys.readouterr().err, "predict")


def test_predict_agrees_with_the_evaluation_through_the_decode_cache(trained: Trained) -> None:
    classifier = load_classifier(trained.model)
    loaded = load_split(trained.root, WBC_CLASSES, SIZE, split="val", cache_dir=trained.cache)
    records, _ = predict_files(classifier, loaded.paths, workers=1)
    result = evaluate_model(classifier, trained.root, split="val", cache_dir=trained.cache)
    assert [WBC_CLASSES.index(r["predicted"]) for r in records] == result["predictions"]
    assert len(set(result["predictions"])) > 1  # a model that tells classes apart


@pytest.mark.parametrize("case", ["image", "folder", "bare-safetensors", "missing"])
def test_a_file_that_is_not_a_model_exits_2_in_one_line(
        case: str, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import save_file

    model = {"image": images / "cell0.png", "folder": images, "missing": tmp_path / "none",
             "bare-safetensors": tmp_path / "weights.safetensors"}[case]
    if case == "bare-safetensors":
        save_file(build_resnet18(5).state_dict(), str(model))
    assert main(["predict", "--model", str(model), str(images / "cell0.png")]) == 2
    line = _one_error_line(capsys.readouterr().err, "predict")
    assert str(model) in line


def test_evaluate_and_export_refuse_a_non_model_too(images: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--model", str(images), "--data", str(tmp_path)]) == 2
    assert "without model.safetensors" in _one_error_line(capsys.readouterr().err, "evaluate")
    assert main(["export", "--model", str(images / "cell0.png")]) == 2
    assert "safetensors" in _one_error_line(capsys.readouterr().err, "export")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_says_so(trained: Trained, images: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model", str(trained.model), str(images), "--device", "cuda"]) == 2
    assert "--device cpu" in _one_error_line(capsys.readouterr().err, "predict")


def test_evaluate_scores_exactly_the_runs_reporting_split(trained: Trained) -> None:
    data = load_plan(plan_wbc(scan_tree(trained.root), trained.config), cache_dir=trained.cache)
    for split, want in (("reporting", data.reporting), ("selection", data.selection)):
        loaded = load_split(trained.root, WBC_CLASSES, SIZE, split=split,
                            cache_dir=trained.cache)
        assert loaded.data.name == want.name
        assert torch.equal(loaded.data.images, want.images)
        assert torch.equal(loaded.data.labels, want.labels)
    classifier = load_classifier(trained.model)
    result = evaluate_model(classifier, str(trained.root), cache_dir=trained.cache)
    assert result["split"] == "WBC_100/val half B (reporting)" == trained.metrics["reporting_split"]
    assert result["predictions"] == evaluate(classifier.model, data.reporting,
                                             class_names=WBC_CLASSES)["predictions"]
    # The run's own figures, recomputed from the saved model: bit for bit on the same device.
    assert result["predictions"] == trained.metrics["test_predictions"]
    reported = _reported(trained.metrics)
    assert reported and all(result[key] == value for key, value in reported.items()), reported
    assert result["confusion_matrix"] == trained.metrics["test_confusion_matrix"]
    assert result["same_data"] is True
    assert result["training_accuracy"] == trained.metrics["test_accuracy"]


def test_evaluate_cli_text_and_json(trained: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--model", str(trained.model), "--data", str(trained.root), "--cache-dir",
              str(trained.cache), "--quiet"]
    assert main(["evaluate", *common]) == 0
    text = capsys.readouterr().out
    for expected in ("accuracy", "macro-F1", "balanced accuracy", "recall Basophil",
                     "95% interval", "confusion matrix", "training data: these very files",
                     "WBC_100/val half B (reporting), 15 images"):
        assert expected in text
    val_n = sum(v for _, _, v in COUNTS.values())
    train_n = sum(t for t, _, _ in COUNTS.values())
    for split, n in (("reporting", 15), ("selection", 15), ("val", val_n), ("train", train_n),
                     ("WBC_50", train_n // 2)):
        assert main(["evaluate", *common, "--json", "--split", split]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["n"] == n == sum(result[f"n_{c}"] for c in WBC_CLASSES), split
        matrix = np.array(result["confusion_matrix"])
        assert matrix.sum() == n and [int(v) for v in matrix.sum(1)] == [
            result[f"n_{c}"] for c in WBC_CLASSES]
        assert result["accuracy"] == pytest.approx(np.trace(matrix) / n)
        assert result["accuracy_low"] <= result["accuracy"] <= result["accuracy_high"]
        assert set(_reported(trained.metrics)) <= set(result)
        assert {"split", "model", "data", "confusion_matrix",
                *(f"recall_{c}_low" for c in WBC_CLASSES)} <= set(result)
    assert main(["evaluate", *common, "--split", "test"]) == 2
    assert "no WBC_100/test" in _one_error_line(capsys.readouterr().err, "evaluate")


def test_evaluate_reports_on_a_test_split_when_the_tree_has_one(
        trained: Trained, tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path / "tree", {c: (4, 1, 3) for c in WBC_CLASSES}, seed=5)
    for label, cls in enumerate(WBC_CLASSES):
        write_class_folder(root / "WBC_100/test/data" / cls, 2, label=label, seed=5, stem="te")
    result = evaluate_model(load_classifier(trained.model), root, cache_dir=tmp_path / "cache")
    assert result["split"] == "WBC_100/test" and result["n"] == 10
    assert result["same_data"] is False and result["training_accuracy"] is None


def test_evaluate_an_imagefolder_tree(trained: Trained, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "folder"
    write_class_folder(root / "basophils", 3, label=0, seed=7)  # any case, plural
    write_class_folder(root / "Monocyte/more", 2, label=3, seed=7)
    common = ["--model", str(trained.model), "--data", str(root), "--quiet", "--json"]
    assert main(["evaluate", *common]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["layout"] == "imagefolder" and result["n"] == 5
    assert result["n_Basophil"] == 3 and result["n_Monocyte"] == 2 and result["n_Eosinophil"] == 0
    assert result["recall_Eosinophil"] is None  # no images: undefined, null in JSON
    assert main(["evaluate", *common, "--split", "val"]) == 2
    assert "no 'val' split" in _one_error_line(capsys.readouterr().err, "evaluate")
    write_class_folder(root / "Platelet", 2, label=4, seed=7)
    assert main(["evaluate", *common]) == 2
    line = _one_error_line(capsys.readouterr().err, "evaluate")
    assert "Platelet" in line and "Basophil" in line


def test_evaluate_refuses_a_model_of_other_classes(trained: Trained, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    card = Card(("normal", "tumor"), SIZE, IMAGENET_MEAN, IMAGENET_STD)
    model = save_classifier(build_resnet18(2).state_dict(), card, tmp_path / "cam16")
    assert main(["evaluate", "--model", str(model), "--data", str(trained.root)]) == 2
    line = _one_error_line(capsys.readouterr().err, "evaluate")
    assert "normal, tumor" in line and "Basophil" in line


def test_onnx_export_runs_in_onnxruntime_as_predict_does(
        trained: Trained, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx
    import onnxruntime

    out = tmp_path / "model.onnx"
    assert main(["export", "--model", str(trained.model), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "checked with onnxruntime" in printed and "top-1 agrees on 8/8" in printed
    assert "pad to a square with the border's median colour" in printed
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert Card.from_json(metadata[CARD_KEY], where=out) == load_classifier(trained.model).card
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]
    assert main(["predict", "--model", str(trained.model), str(images), "--quiet"]) == 0
    rows = _rows(capsys.readouterr().out)
    batch = np.stack([decode_working(Path(r["path"]), SIZE)[0] for r in rows])
    assert len(batch) == GOOD  # 7: a batch size the example batch of 2 did not fix
    logits, probabilities = session.run(None, {"images": batch})
    assert [WBC_CLASSES[i] for i in probabilities.argmax(1)] == [r["predicted"] for r in rows]
    np.testing.assert_allclose(probabilities, torch.softmax(torch.from_numpy(logits), 1),
                               atol=1e-6)
    one = session.run(None, {"images": batch[:1]})[1]
    np.testing.assert_allclose(one, probabilities[:1], atol=1e-5)


def test_torch_export_program_carries_the_card(trained: Trained, tmp_path: Path) -> None:
    classifier = load_classifier(trained.model)
    result = export_model(classifier, tmp_path / "m.pt2", fmt="torch-export")
    assert result.check is not None and result.check.ok, result.check
    extra = {f"{CARD_KEY}.json": ""}
    program = torch.export.load(result.path, extra_files=extra)
    assert Card.from_json(extra[f"{CARD_KEY}.json"], where=result.path) == classifier.card
    images = torch.randint(0, 256, (7, SIZE, SIZE, 3), dtype=torch.uint8)
    with torch.inference_mode():
        for batch in (images[:1], images):
            _, probabilities = program.module()(batch)
            torch.testing.assert_close(probabilities, classifier.probabilities(batch),
                                       rtol=0, atol=1e-5)


def test_export_default_place_and_missing_exporter(
        trained: Trained, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = trained.model.parent
    assert default_output(folder, "onnx") == folder / "model.onnx"
    assert default_output(trained.model, "torch-export") == folder / "model.pt2"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    assert main(["export", "--model", str(folder)]) == 2
    assert "pip install 'wbc-study[export]'" in _one_error_line(capsys.readouterr().err, "export")
    assert not (folder / "model.onnx").exists()


def test_python_m_wbc_predict(trained: Trained, images: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "wbc", "predict", "--model", str(trained.model),
                           str(images), "--quiet"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert len(_rows(done.stdout)) == GOOD
    assert "Traceback" not in done.stderr and "skipped" in done.stderr


def test_a_classifier_file_round_trips_through_predict(tmp_path: Path, images: Path) -> None:
    """A random model is enough for the plumbing: what save_classifier writes, predict reads."""
    card = Card(WBC_CLASSES, 64, IMAGENET_MEAN, IMAGENET_STD)
    path = save_classifier(build_resnet18(5).state_dict(), card, tmp_path / "r.safetensors")
    classifier = load_classifier(path)
    assert isinstance(classifier, Classifier) and classifier.card.image_size == 64
    records, skipped = predict_files(classifier, collect_images([images])[0], workers=1)
    assert len(records) == GOOD and len(skipped) == 2  # notes.txt is not read at all
