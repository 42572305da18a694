"""Typed configuration: one frozen dataclass per concern, built once at the boundary.

Tune hands a trial a flat ``dict``; the CLI hands an argparse namespace. Both become a
``TrainConfig`` with ``TrainConfig.from_flat`` at the boundary, and nothing below it sees a dict.
``to_flat`` gives the inverse: the flat, typed names that become Parquet columns and checkpoint
metadata (plain Python scalars, so ``torch.load(weights_only=True)`` reads them back).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
]

Background = Literal["none", "own", "other"]
Imbalance = Literal["none", "weighted", "balanced"]
Precision = Literal["auto", "fp32", "bf16"]
LrRule = Literal["none", "linear", "sqrt"]


def _check(config: object, **ranges: tuple[float, float]) -> None:
    """Reject values outside a field's ``Literal`` choices or numeric range, naming both."""
    for name, hint in get_type_hints(type(config)).items():
        value = getattr(config, name)
        if get_origin(hint) is Literal and value not in get_args(hint):
            choices = ", ".join(map(str, get_args(hint)))
            raise ValueError(f"{name}={value!r} is not one of: {choices}")
    for name, (low, high) in ranges.items():
        value = getattr(config, name)
        if not low <= value <= high:
            raise ValueError(f"{name}={value!r} is outside [{low}, {high}]")


@dataclass(frozen=True)
class DataConfig:
    subset: str = "WBC_100"  # which label budget trains the model
    image_size: int = 128  # working resolution; the cache holds one array per size
    subset_seed: int | None = None  # redraw derived subsets per seed; None: the tree's (seed 0)
    exclude_bad: bool = False  # leave out unreadable files instead of failing

    def __post_init__(self) -> None:
        _check(self, image_size=(16, 2048))


@dataclass(frozen=True)
class ModelConfig:
    strategy: str = "scratch"  # a name in wbc.strategies: scratch | pretrain | pretrain_aug | ...
    imagenet_weights: str | None = None  # a local torchvision resnet18 file; never downloaded
    channels_last: bool = True  # ~20% faster convolutions on CPU and GPU
    # torch.compile the model: off by default, its compile time (tens of seconds per trial)
    # outweighs the gain on the short trials of a study; benchmarks/train_throughput.py --compile
    # measures both.
    compile: bool = False


@dataclass(frozen=True)
class OptimConfig:
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.05  # peak learning rate, reached after warmup
    weight_decay: float = 5e-4
    momentum: float = 0.9  # SGD only
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = 1.0  # linear warmup; keeps large-batch starts stable
    step_every: int = 10  # step schedule: epochs between decays
    step_gamma: float = 0.1  # step schedule: decay factor
    label_smoothing: float = 0.0
    imbalance: Imbalance = "none"  # Neutrophils are 61%: weighted loss or balanced sampling
    batch_size: int = 64  # per worker
    # Large batches: the peak rate becomes lr * rule(global batch / lr_reference_batch), with the
    # global batch = batch_size x workers. "linear" is Goyal et al. (2017) for SGD, "sqrt" suits
    # AdamW; "none" uses lr as given whatever the batch.
    lr_rule: LrRule = "none"
    lr_reference_batch: int = 256
    epochs: int = 10
    # An epoch passes over the training set as often as it takes to see this many images:
    # WBC_1 (82 images at full scale, a handful on a small synthetic tree) would otherwise get
    # one or two optimiser steps per epoch. 0: one pass, as the report.
    min_epoch_images: int = 0

    def __post_init__(self) -> None:
        _check(self, min_epoch_images=(0, 1 << 30), lr=(1e-8, 10.0), weight_decay=(0.0, 1.0), momentum=(0.0, 1.0),
               warmup_epochs=(0.0, 1e6), label_smoothing=(0.0, 0.5), batch_size=(1, 1 << 16),
               epochs=(1, 100_000), step_every=(1, 100_000), step_gamma=(0.0, 1.0),
               lr_reference_batch=(1, 1 << 20))

    def peak_lr(self, workers: int = 1) -> float:
        """The learning rate after warmup for ``workers`` data-parallel workers (``lr_rule``)."""
        ratio = self.batch_size * max(1, workers) / self.lr_reference_batch
        if self.lr_rule == "linear":
            return self.lr * ratio
        if self.lr_rule == "sqrt":
            return self.lr * ratio**0.5
        return self.lr


@dataclass(frozen=True)
class AugmentConfig:
    aug_factor: int = 5  # new images per masked image (the report: 5); used by *_aug strategies
    background: Background = "none"  # none (the report's empty background), own, other
    max_shift: float = 0.25  # translation as a fraction of the side
    paste_every_epoch: bool = False  # redraw the pastes each epoch (the report drew them once)
    flips: bool = True  # flips and 90-degree rotations: a smear has no up
    color_jitter: float = 0.1  # brightness/contrast/saturation strength; 0 turns it off
    # The pastes on or off for a strategy whose augmentation is a searched switch (ssl,
    # ssl_pretrain); None: the strategy's default. Other strategies ignore it.
    mask_augment: bool | None = None

    def __post_init__(self) -> None:
        _check(self, aug_factor=(0, 100), max_shift=(0.0, 0.5), color_jitter=(0.0, 1.0))


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    deterministic: bool = False  # bit-reproducible kernels; slower
    # auto: bf16 autocast on a GPU (measured not to cost accuracy, README performance section),
    # fp32 on a CPU (no bf16 hardware on AVX2 machines; "bf16" asks for it on AVX-512/AMX ones).
    precision: Precision = "auto"
    # Training images whose batch statistics replace BatchNorm's running averages before each
    # evaluation ("precise BN", Wu & Johnson 2021): with few steps per epoch (WBC_1 has 82
    # images) the running averages lag the weights and evaluation collapses. 0 turns it off.
    bn_recalibrate: int = 512
    report_every: int = 1  # epochs between metric reports (each Ray report costs ~1 s)
    checkpoint_every: int = 1  # epochs between resumable checkpoints

    def __post_init__(self) -> None:
        _check(self, report_every=(1, 100_000), checkpoint_every=(1, 100_000),
               bn_recalibrate=(0, 1 << 24))

    def to_flat(self) -> dict[str, Any]:
        """Every leaf field under its own name (``lr``, ``aug_factor``, ``subset``, ...)."""
        flat: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                flat.update(dataclasses.asdict(value))  # type: ignore[arg-type]
            else:
                flat[f.name] = value
        return flat

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from flat names; unknown names raise ``ValueError`` listing the valid ones."""
        sections: dict[str, dict[str, Any]] = {}
        owner: dict[str, str] = {}
        top_hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = top_hints[f.name]
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                for sub in dataclasses.fields(hint):
                    owner[sub.name] = f.name
            else:
                owner[f.name] = ""
        unknown = sorted(set(values) - set(owner))
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(sorted(owner))}")
        top: dict[str, Any] = {}
        for key, value in values.items():
            if owner[key]:
                sections.setdefault(owner[key], {})[key] = value
            else:
                top[key] = value
        built = {name: top_hints[name](**kw) for name, kw in sections.items()}
        return cls(**built, **top)

    def replace(self, **flat: Any) -> TrainConfig:
        """A copy with some flat settings changed: ``cfg.replace(lr=0.1, epochs=3)``."""
        return TrainConfig.from_flat({**self.to_flat(), **flat})
