"""A classifier as a file that runs without this project: ONNX, or a ``torch.export`` program.

The exported graph takes what the decode cache stores, uint8 RGB images at the card's working
resolution in NHWC order (input ``images``, of any batch size), and does the rest of the
training's input path inside: the float conversion and ImageNet normalisation of
``wbc.training.loop.prepare_batch`` without augmentation. It returns ``logits`` and their softmax,
``probabilities``, one column per class of the card. What stays outside is the per-file part,
whose sizes differ from image to image: decode to RGB, pad to a square with the border's median
colour, resize to ``S x S`` (bilinear, antialiased), as ``wbc.datasets.imageio.decode_working``
does.

The card's JSON travels inside the file (ONNX ``metadata_props["wbc_card"]``; the ``.pt2``
archive's extra file ``wbc_card.json``), so the class order and preprocessing stay with the
weights. The graph computes in fp32 whatever the run's precision was; a bf16 run's figures came
from bf16 autocast, which moves probabilities by about 1e-2.

Each export is checked by running the file (onnxruntime for ONNX, when installed) on a few
random images against the classifier in torch.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from wbc.classifier.model_file import Card, Classifier, model_path

__all__ = ["CARD_KEY", "FORMATS", "Check", "ExportError", "ExportResult", "default_output",
           "export_model", "preprocessing_note"]

CARD_KEY = "wbc_card"  # ONNX metadata_props key of the card; wbc_card.json in a .pt2
FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}
CHECK_IMAGES = 8  # random images each export is checked on
# Largest probability difference an fp32 graph may show against torch: the same arithmetic in
# another order. A bf16 card's torch side runs under autocast, hence its wider bound.
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}


class ExportError(ValueError):
    """An export that cannot be made: a missing exporter, an unknown format."""


class _Exportable(nn.Module):
    """The classifier with its input path: uint8 NHWC in, (logits, probabilities) out."""

    mean: Tensor
    std: Tensor

    def __init__(self, model: nn.Module, card: Card) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(card.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(card.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        # wbc.augment.to_float_nchw and normalize, as prepare_batch applies them.
        x = images.permute(0, 3, 1, 2).to(torch.float32).div(255)
        x = (x - self.mean) / self.std
        logits = self.model(x).float()
        return logits, torch.softmax(logits, dim=1)


@dataclass(frozen=True)
class Check:
    """An exported file run on random images beside the classifier in torch."""

    runtime: str  # "onnxruntime 1.18.0", "torch.export"
    images: int
    top1_agree: int  # images whose top class is the same
    max_abs_diff: float  # of the probabilities
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.top1_agree == self.images and self.max_abs_diff <= self.tolerance

    def __str__(self) -> str:
        return (f"checked with {self.runtime} on {self.images} random images: top-1 agrees on "
                f"{self.top1_agree}/{self.images}, max |probability difference| "
                f"{self.max_abs_diff:.2g} (tolerance {self.tolerance:g})")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    seconds: float
    check: Check | None  # None: no runtime to check with (onnxruntime not installed)


def default_output(model: Path | str, fmt: str) -> Path:
    """Beside the weights: ``best.safetensors`` -> ``best.onnx``; a folder ``M`` ->
    ``M/model.onnx``."""
    return model_path(model).with_suffix(FORMATS[fmt])


def preprocessing_note(card: Card) -> str:
    """What a user of the exported file must do to an image file before the graph."""
    size = card.image_size
    return (f"before the graph: decode to RGB, pad to a square with the border's median colour, "
            f"resize to {size}x{size} (bilinear, antialiased) and stack as uint8 "
            f"N x {size} x {size} x 3; the graph normalises (mean {list(card.mean)}, std "
            f"{list(card.std)}) and returns logits and probabilities over "
            f"{', '.join(card.classes)}")


def _require_onnx() -> None:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}: pip install "
                          "'wbc-study[export]'")


def _temporary(out: Path) -> Path:
    # The suffix kept: torch.export.save warns about an archive name not ending in .pt2.
    return out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")


def _write_onnx(module: _Exportable, example: Tensor, card: Card, out: Path) -> None:
    _require_onnx()
    program = torch.onnx.export(
        module, (example,), dynamo=True, input_names=["images"],
        output_names=["logits", "probabilities"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch")}}, verbose=False)
    assert program is not None  # dynamo=True always returns the program
    program.model.metadata_props[CARD_KEY] = card.to_json()
    temporary = _temporary(out)
    try:
        program.save(temporary)
        temporary.replace(out)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_archive() -> Iterator[None]:
    """torch 2.14 warns of "no complete tensor" for channels_last weights, which a .pt2 stores
    and loads correctly (the check compares them): not a user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No complete tensor found")
        yield


def _write_program(module: _Exportable, example: Tensor, card: Card, out: Path) -> None:
    program = torch.export.export(module, (example,),
                                  dynamic_shapes={"images": {0: torch.export.Dim("batch")}})
    temporary = _temporary(out)
    try:
        with _quiet_archive():
            torch.export.save(program, temporary,
                              extra_files={f"{CARD_KEY}.json": card.to_json()})
        temporary.replace(out)
    finally:
        temporary.unlink(missing_ok=True)


def _run_file(path: Path, fmt: str, images: Tensor) -> tuple[str, np.ndarray] | None:
    """(runtime, probabilities) of the exported file on ``images``; None without a runtime."""
    if fmt == "torch-export":
        with _quiet_archive():
            module = torch.export.load(path).module()
        with torch.inference_mode():
            _, probabilities = module(images)
        return "torch.export", probabilities.numpy()
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, probabilities = session.run(["logits", "probabilities"], {"images": images.numpy()})
    return f"onnxruntime {onnxruntime.__version__}", np.asarray(probabilities)


def _check(path: Path, fmt: str, classifier: Classifier) -> Check | None:
    size = classifier.card.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (CHECK_IMAGES, size, size, 3), dtype=torch.uint8,
                           generator=generator)
    ran = _run_file(path, fmt, images)
    if ran is None:
        return None
    runtime, theirs = ran
    ours = classifier.probabilities(images).numpy()
    return Check(runtime, CHECK_IMAGES, int((theirs.argmax(1) == ours.argmax(1)).sum()),
                 float(np.abs(theirs - ours).max()),
                 TOLERANCE["bf16" if classifier.card.precision == "bf16" else "fp32"])


def export_model(classifier: Classifier, out: Path | str | None = None, *, fmt: str = "onnx",
                 check: bool = True) -> ExportResult:
    """Write ``classifier`` as ``fmt`` (``onnx`` or ``torch-export``) to ``out`` (default:
    :func:`default_output`), atomically, with a dynamic batch dimension; then, with ``check``,
    run the file on random images against the classifier (see the module docstring)."""
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    target = Path(out) if out is not None else default_output(classifier.path, fmt)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = classifier.model
    if classifier.device.type != "cpu":  # export and check on the CPU; leave the caller's be
        model = copy.deepcopy(model).cpu()
    module = _Exportable(model, classifier.card).eval()
    size = classifier.card.image_size
    # Two images, not one: an example batch of 1 would be specialised as a constant.
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    write = _write_onnx if fmt == "onnx" else _write_program
    write(module, example, classifier.card, target)
    seconds = time.perf_counter() - started
    cpu = Classifier(model, classifier.card, classifier.path)
    return ExportResult(target, fmt, seconds, _check(target, fmt, cpu) if check else None)
