"""The model file: weights and card round-trip; files that are not such a model are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wbc.classifier.model_file import (
    CARD_FILE,
    MODEL_FILE,
    Card,
    ClassifierError,
    load_classifier,
    read_card,
    run_card,
    save_classifier,
)
from wbc.config import TrainConfig
from wbc.datasets.layout import WBC_CLASSES
from wbc.training.resnet import build_resnet18


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_resnet18(len(WBC_CLASSES)).eval()


def _card(**changes: object) -> Card:
    config = TrainConfig().replace(image_size=32, subset="WBC_10", strategy="pretrain", seed=3)
    card = run_card(config, WBC_CLASSES, {"best_epoch": 4, "test_accuracy": 0.75,
                                          "test_confusion_matrix": [[1, 0], [0, 1]],
                                          "val_macro_f1": 0.5, "data_fingerprint": "f" * 64,
                                          "reporting_split": "WBC_100/test"},
                    study="s", trial_key="WBC_10-pretrain/final-seed3")
    import dataclasses

    return dataclasses.replace(card, **changes)  # type: ignore[arg-type]


def test_a_saved_classifier_loads_with_the_same_outputs_and_card(tmp_path: Path,
                                                                  model: torch.nn.Module) -> None:
    file = save_classifier(model.state_dict(), _card(), tmp_path / "m")
    assert file == tmp_path / "m" / MODEL_FILE
    readable = json.loads((tmp_path / "m" / CARD_FILE).read_text())
    assert readable["cell"] == "WBC_10-pretrain" and readable["seed"] == 3
    loaded = load_classifier(tmp_path / "m")  # the folder, or the file
    assert load_classifier(file).card == loaded.card
    card = loaded.card
    assert card.classes == WBC_CLASSES and card.image_size == 32
    assert card.figures == {"best_epoch": 4, "test_accuracy": 0.75, "val_macro_f1": 0.5}
    assert card.best_epoch == 4 and card.reporting_split == "WBC_100/test"
    assert card.config["lr"] == TrainConfig().optim.lr
    assert torch.__version__.startswith(card.provenance["versions"]["torch"])
    assert card.provenance["created"]
    images = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    from wbc.training.loop import prepare_batch

    with torch.inference_mode():
        expected = model(prepare_batch(images)).float()
    assert torch.allclose(loaded.logits(images, batch_size=2), expected, atol=1e-5)
    probabilities = loaded.probabilities(images)
    assert torch.allclose(probabilities.sum(1), torch.ones(5), atol=1e-6)


def test_the_file_holds_no_pickle(tmp_path: Path, model: torch.nn.Module) -> None:
    file = save_classifier(model.state_dict(), _card(), tmp_path / "m.safetensors")
    head = file.read_bytes()[:16]
    assert not head.startswith(b"PK") and b"\x80\x02" not in head  # not a zip nor a pickle
    assert read_card(file).seed == 3


def test_files_that_are_not_a_classifier_are_refused_by_name(tmp_path: Path,
                                                              model: torch.nn.Module) -> None:
    pickle = tmp_path / "model.pt"
    torch.save(model.state_dict(), pickle)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, words in ((pickle, "not a readable safetensors file"),
                        (bare, "without a wbc-classifier/1 card"),
                        (empty, f"a folder without {MODEL_FILE}"),
                        (tmp_path / "missing.safetensors", "no such model file")):
        with pytest.raises(ClassifierError, match=words) as info:
            load_classifier(path)
        assert str(path) in str(info.value)


def test_weights_that_do_not_fit_the_card_are_refused(tmp_path: Path,
                                                       model: torch.nn.Module) -> None:
    three = _card(classes=("a", "b", "c"))
    file = save_classifier(model.state_dict(), three, tmp_path / "m")
    with pytest.raises(ClassifierError, match="do not fit a 3-class ResNet-18"):
        load_classifier(file)
    with pytest.raises(ClassifierError, match="must be distinct"):
        save_classifier(model.state_dict(), _card(classes=("a", "a")), tmp_path / "n")
