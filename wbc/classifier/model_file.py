"""A trained WBC classifier as a file: weights without pickle, and what using them needs.

A study's kept models, ``wbc train``'s result and what ``wbc predict``, ``wbc evaluate`` and
``wbc export`` read are one format: a ``safetensors`` file (``model.safetensors``) whose header
carries a JSON card (:class:`Card`): the class names in output order, the working resolution,
the preprocessing (padding rule, resize filter, normalisation), the architecture and the run's
settings, the cell, seed, data fingerprint and the run's figures. A folder holding
``model.safetensors`` (a Tune checkpoint, a run folder) is accepted wherever a file is; a
``model.json`` copy of the card is written beside it for people to read, never read back.

safetensors holds tensors and strings only: loading a model runs no code from the file, unlike
``torch.load`` of a pickle. The card is checked on load (format, classes, sizes), so a file
that is not a classifier of this project is refused with what is wrong, not half-used.

Preprocessing is the training's, through the same functions: ``wbc.datasets.imageio.decode_working``
(decode, pad to square with the border's median colour, antialiased bilinear resize), the cache
builds its rows with it, and ``wbc.training.loop.prepare_batch`` (float, ImageNet normalisation).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wbc.fileio import atomic_write_bytes, atomic_write_text

__all__ = [
    "CARD_FILE",
    "FORMAT",
    "MODEL_FILE",
    "Card",
    "Classifier",
    "ClassifierError",
    "load_classifier",
    "model_path",
    "read_card",
    "run_card",
    "save_classifier",
]

FORMAT = "wbc-classifier/1"
MODEL_FILE = "model.safetensors"
CARD_FILE = "model.json"  # a readable copy of the card, beside the weights
PADDING = "square, border median colour"  # wbc.datasets.imageio.to_working
RESIZE = "bilinear, antialiased"


class ClassifierError(ValueError):
    """A model file that cannot be used: missing, not a safetensors file, not a classifier."""


@dataclass(frozen=True)
class Card:
    """What a classifier's weights need to be used, and where they came from."""

    classes: tuple[str, ...]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    arch: str = "resnet18"
    padding: str = PADDING
    resize: str = RESIZE
    precision: str = "fp32"  # the run's (TrainConfig.precision): evaluation repeats it
    channels_last: bool = True
    strategy: str | None = None
    subset: str | None = None
    seed: int | None = None
    cell: str | None = None  # "WBC_1-pretrain"
    study: str | None = None
    trial_key: str | None = None
    data_fingerprint: str | None = None
    selection_split: str | None = None
    reporting_split: str | None = None
    best_epoch: int | None = None
    figures: dict[str, Any] = field(default_factory=dict)  # the run's scalar figures
    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig.to_flat()
    provenance: dict[str, Any] = field(default_factory=dict)  # versions, commit, created

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1, sort_keys=True,
                          default=_plain)

    @classmethod
    def from_json(cls, text: str, *, where: Path | str) -> Card:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ClassifierError(f"{where}: its card is not JSON ({err})") from None
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            found = values.get("format") if isinstance(values, dict) else type(values).__name__
            raise ClassifierError(f"{where}: not a {FORMAT} model (format {found!r})")
        known = {f.name for f in fields(cls)}
        try:
            card = cls(**{k: v for k, v in values.items() if k in known})
        except TypeError as err:
            raise ClassifierError(f"{where}: its card lacks a field ({err})") from None
        card = _tupled(card)
        card.check(where)
        return card

    def check(self, where: Path | str) -> None:
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ClassifierError(f"{where}: class names {list(self.classes)} must be distinct "
                                  "and at least one")
        if not 8 <= int(self.image_size) <= 4096:
            raise ClassifierError(f"{where}: image_size {self.image_size} is out of range")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ClassifierError(f"{where}: normalisation mean {self.mean} / std {self.std} "
                                  "must have 3 values each, std > 0")
        if self.arch != "resnet18":
            raise ClassifierError(f"{where}: architecture {self.arch!r} is not supported "
                                  "(resnet18)")


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and the like in a run's figures."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _tupled(card: Card) -> Card:
    import dataclasses

    return dataclasses.replace(card, classes=tuple(card.classes), mean=tuple(card.mean),
                               std=tuple(card.std), image_size=int(card.image_size))


@dataclass
class Classifier:
    """A loaded classifier: the model (eval mode, on ``device``) and its card."""

    model: nn.Module
    card: Card
    path: Path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> Classifier:
        self.model.to(device)
        return self

    @torch.inference_mode()
    def logits(self, images_u8: Tensor, *, batch_size: int = 256) -> Tensor:
        """Logits (float32, on the CPU) of working-resolution uint8 NHWC images, in batches,
        with the run's precision and memory format."""
        from wbc.training.distributed import autocast
        from wbc.training.loop import prepare_batch

        device = self.device
        out = []
        for start in range(0, images_u8.shape[0], batch_size):
            x = prepare_batch(images_u8[start:start + batch_size].to(device),
                              channels_last=self.card.channels_last, mean=self.card.mean,
                              std=self.card.std)
            with autocast(device, self.card.precision):
                out.append(self.model(x).float().cpu())
        if not out:
            return torch.zeros((0, len(self.card.classes)))
        return torch.cat(out)

    def probabilities(self, images_u8: Tensor, *, batch_size: int = 256) -> Tensor:
        """Softmax of :meth:`logits`: one row per image, summing to 1."""
        return torch.softmax(self.logits(images_u8, batch_size=batch_size), dim=1)


# The run's figures a card keeps: the selection and reporting splits' and the budget trained.
_FIGURE_PREFIXES = ("val_", "test_", "train_n_")
_FIGURE_KEYS = ("best_epoch", "train_images", "epochs_run", "wall_seconds")


def run_card(config: Any, classes: tuple[str, ...] | list[str], metrics: Mapping[str, Any], *,
             cell: str | None = None, study: str | None = None, trial_key: str | None = None,
             provenance: Mapping[str, Any] | None = None) -> Card:
    """The card of a training run: ``config`` (a ``wbc.config.TrainConfig``) and its final
    record ``metrics`` (``wbc.training.loop.fit``'s: ``val_*`` of the best epoch on the selection
    split, ``test_*`` on the reporting split)."""
    from wbc.metrics import scalars
    from wbc.training.loop import IMAGENET_MEAN, IMAGENET_STD

    flat = scalars(metrics)
    figures = {k: v for k, v in flat.items()
               if (k.startswith(_FIGURE_PREFIXES) or k in _FIGURE_KEYS)
               and isinstance(v, int | float | str) and not isinstance(v, bool)}
    best = metrics.get("best_epoch")
    return Card(
        classes=tuple(classes), image_size=int(config.data.image_size),
        mean=tuple(IMAGENET_MEAN), std=tuple(IMAGENET_STD),
        precision=str(metrics.get("precision_used") or config.precision),
        channels_last=bool(config.model.channels_last), strategy=config.model.strategy,
        subset=config.data.subset, seed=int(config.seed),
        cell=cell or f"{config.data.subset}-{config.model.strategy}", study=study,
        trial_key=trial_key, data_fingerprint=metrics.get("data_fingerprint"),
        selection_split=metrics.get("selection_split"),
        reporting_split=metrics.get("reporting_split"),
        best_epoch=int(best) if best is not None else None, figures=figures,
        config=config.to_flat(), provenance=dict(provenance or {}))


def model_path(path: Path | str) -> Path:
    """The weights file of ``path``: itself, or ``model.safetensors`` inside a folder."""
    path = Path(path)
    if path.is_dir():
        inside = path / MODEL_FILE
        if not inside.is_file():
            raise ClassifierError(f"{path}: a folder without {MODEL_FILE}; pass a model file "
                                  "or a folder holding one (a study's models/<cell>/..., a "
                                  "Tune checkpoint, a `wbc train` run)")
        return inside
    if not path.exists():
        raise ClassifierError(f"{path}: no such model file")
    return path


def _versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, Any] = {}
    for package in ("torch", "torchvision", "wbc-study", "safetensors"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def save_classifier(state: Mapping[str, Tensor], card: Card, out: Path | str) -> Path:
    """Write ``state`` (a ResNet-18 state dict) and ``card`` as ``out`` (a ``.safetensors``
    file) or into folder ``out`` (``model.safetensors`` and ``model.json``). Atomic: a crash
    leaves the previous file or none. Returns the weights file."""
    from safetensors.torch import save

    card.check(out)
    out = Path(out)
    target = out if out.suffix == ".safetensors" else out / MODEL_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    card = _with_provenance(card)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(target, save(tensors, metadata={"format": FORMAT,
                                                       "card": card.to_json()}))
    atomic_write_text(target.with_name(CARD_FILE) if target.name == MODEL_FILE
                      else target.with_suffix(".json"), card.to_json() + "\n")
    return target


def _with_provenance(card: Card) -> Card:
    import dataclasses

    if card.provenance:
        return card
    return dataclasses.replace(card, provenance={
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": _versions(),
        "host": os.uname().nodename})


def read_card(path: Path | str) -> Card:
    """The card of a model file or folder, without reading the weights."""
    from safetensors import safe_open

    file = model_path(path)
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as err:  # safetensors raises its own error types
        raise ClassifierError(f"{file}: not a readable safetensors file ({err}); expected a "
                              f"{MODEL_FILE} written by this project") from None
    if metadata.get("format") != FORMAT or "card" not in metadata:
        raise ClassifierError(f"{file}: a safetensors file without a {FORMAT} card (format "
                              f"{metadata.get('format')!r}); not a classifier of this project")
    return Card.from_json(metadata["card"], where=file)


def load_classifier(path: Path | str, *, device: torch.device | str = "cpu") -> Classifier:
    """Read a classifier from a model file or folder, ready for inference on ``device``."""
    from safetensors.torch import load_file

    from wbc.training.resnet import build_resnet18

    file = model_path(path)
    card = read_card(file)
    state = load_file(str(file))
    model = build_resnet18(len(card.classes))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ClassifierError(f"{file}: its weights do not fit a {len(card.classes)}-class "
                              f"ResNet-18 ({first})") from None
    model.eval().to(device)
    if card.channels_last:
        model.to(memory_format=torch.channels_last)
    return Classifier(model, card, file)

