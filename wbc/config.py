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
    "PretrainSettings",
    "SSLConfig",
    "SegmentSettings",
    "TrainConfig",
    "check_fields",
]

Background = Literal["none", "own", "other"]
Imbalance = Literal["none", "weighted", "balanced"]
Precision = Literal["auto", "fp32", "bf16"]
LrRule = Literal["none", "linear", "sqrt"]


def check_fields(config: object, **ranges: tuple[float, float]) -> None:
    """Reject values outside a field's ``Literal`` choices or numeric range, naming both.

    Every config dataclass calls it from ``__post_init__``; a number field given something else
    (a string, a bool, NaN) is refused with the same message shape.
    """
    for name, hint in get_type_hints(type(config)).items():
        value = getattr(config, name)
        if get_origin(hint) is Literal and value not in get_args(hint):
            choices = ", ".join(map(str, get_args(hint)))
            raise ValueError(f"{name}={value!r} is not one of: {choices}")
    for name, (low, high) in ranges.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name}={value!r} must be a number in [{low}, {high}]")
        if not low <= value <= high:  # also refuses NaN
            raise ValueError(f"{name}={value!r} is outside [{low}, {high}]")


def setting(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A config field with its command-line help: ``wbc train`` makes its options from the
    fields (``wbc.cli_options``), so defaults, choices and help have one source."""
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass(frozen=True)
class DataConfig:
    subset: str = setting("WBC_100", "label budget that trains the model: WBC_100, WBC_50, "
                          "WBC_10, WBC_1 (or WBC_<p>, drawn from WBC_100)")
    # The cache holds one array per size.
    image_size: int = setting(128, "working resolution in pixels")
    subset_seed: int | None = setting(None, "redraw the subset from WBC_100 with this seed "
                                      "(default: the tree's own subset)")
    exclude_bad: bool = setting(False, "leave out unreadable files instead of failing")
    # Oliver et al. (2018), "Realistic evaluation of deep semi-supervised learning algorithms":
    # with 1% of the labels a researcher also has about 1% of the validation labels.
    selection: Literal["full", "scaled"] = setting(
        "full", "the split that picks the best epoch: full, or scaled to the label budget "
        "(WBC_10 selects on 10%% of it)")

    def __post_init__(self) -> None:
        check_fields(self, image_size=(16, 2048))


@dataclass(frozen=True)
class ModelConfig:
    strategy: str = setting("scratch", "how the model starts and is augmented (wbc.strategies)")
    imagenet_weights: str | None = setting(
        None, "a local torchvision resnet18 ImageNet weights file (never downloaded)")
    channels_last: bool = setting(True, "channels-last memory format (~20%% faster convolutions)")
    # A 2-class classifier's last stage collapses its features onto the tumour/normal direction
    # (neural collapse, Papyan et al. 2020: effective rank about 2 on WBC images); keeping
    # fewer stages transfers the generic lower ones and lets the last learn WBC afresh.
    transfer_stages: int = setting(4, "ResNet stages (1-4) a pretrained strategy keeps from its "
                                   "pretrained weights; the later ones start random")
    # Off by default: its compile time (tens of seconds per trial) outweighs the gain on the
    # short trials of a study; benchmarks/train_throughput.py --compile measures both.
    compile: bool = setting(False, "torch.compile the model")

    def __post_init__(self) -> None:
        check_fields(self, transfer_stages=(1, 4))


@dataclass(frozen=True)
class OptimConfig:
    # AdamW by default: on the synthetic smears at 32 px it reaches WBC_100 macro-F1 0.97 in 5
    # epochs where SGD at 0.05-0.1 stays below 0.78 after 10 (docs/pretraining.md, "3. The
    # optimiser"); the paper preset keeps the report's SGD.
    optimizer: Literal["sgd", "adamw"] = setting("adamw", "AdamW, or SGD with Nesterov momentum")
    lr: float = setting(2e-3, "peak learning rate, reached after warmup (SGD wants about 0.05)")
    weight_decay: float = setting(5e-4, "weight decay (not on biases and norms)")
    momentum: float = setting(0.9, "SGD momentum")
    schedule: Literal["cosine", "step", "constant"] = setting("cosine", "learning-rate schedule")
    # Keeps large-batch starts stable.
    warmup_epochs: float = setting(1.0, "epochs of linear warmup")
    step_every: int = setting(10, "step schedule: epochs between decays")
    step_gamma: float = setting(0.1, "step schedule: decay factor")
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy")
    # A pretrained backbone under a fresh, random head: the head's first large gradients would
    # otherwise distort the pretrained features (Kumar et al. 2022, "Fine-tuning can distort
    # pretrained features"); a lower backbone rate is the usual remedy (discriminative
    # fine-tuning, Howard & Ruder 2018). Random-init strategies ignore it.
    backbone_lr_scale: float = setting(1.0, "learning-rate factor of a pretrained backbone under "
                                       "its fresh head (pretrained strategies only)")
    # Neutrophils are 61% of the data.
    imbalance: Imbalance = setting("none", "class imbalance: none, a class-weighted loss, or "
                                   "class-balanced sampling")
    batch_size: int = setting(64, "batch size per worker")
    # The peak rate becomes lr * rule(global batch / lr_reference_batch), with the global
    # batch = batch_size x workers. "linear" is Goyal et al. (2017) for SGD, "sqrt" suits AdamW.
    lr_rule: LrRule = setting("none", "scale lr with the global batch: none, linear or sqrt")
    lr_reference_batch: int = setting(256, "the global batch at which lr is meant as given")
    epochs: int = setting(10, "training epochs")
    # WBC_1 (82 images at full scale, a handful on a small synthetic tree) would otherwise get
    # one or two optimiser steps per epoch. 0: one pass, as the report.
    min_epoch_images: int = setting(0, "an epoch passes over the training set until it has seen "
                                    "this many images (0: one pass)")
    # A large tree (10k real cells) would make each WBC_100 epoch, and so the study, grow with
    # the tree: a cap keeps an epoch's cost fixed, each epoch a fresh random part of the set.
    max_epoch_images: int = setting(0, "an epoch ends after this many images, a fresh random "
                                    "part of the training set each epoch (0: no cap)")
    # An epoch of min_epoch_images over a small budget is few steps (WBC_50 and WBC_10 of the
    # quick tree: 8 at batches of 64, 24 in a 3-epoch run); a smaller batch gives the same
    # images more steps (docs/study.md). The learning rate is not rescaled for it.
    min_epoch_steps: int = setting(0, "an epoch takes at least this many optimiser steps: where "
                                   "batch_size would give fewer, the batch shrinks (0: always "
                                   "batch_size)")

    def __post_init__(self) -> None:
        check_fields(self, min_epoch_images=(0, 1 << 30), max_epoch_images=(0, 1 << 30),
                     min_epoch_steps=(0, 1 << 20),
                     lr=(1e-8, 10.0),
                     weight_decay=(0.0, 1.0), momentum=(0.0, 1.0), warmup_epochs=(0.0, 1e6),
                     label_smoothing=(0.0, 0.5), backbone_lr_scale=(0.0, 1.0),
                     batch_size=(1, 1 << 16), epochs=(1, 100_000),
                     step_every=(1, 100_000), step_gamma=(0.0, 1.0),
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
    aug_factor: int = setting(5, "pastes per masked image, for strategies that paste (the "
                              "report: 5)")
    background: Background = setting("none", "background of pasted cells: none (the report's "
                                     "empty one), own (its image inpainted) or other")
    max_shift: float = setting(0.25, "largest move of a pasted cell, as a fraction of the side")
    paste_every_epoch: bool = setting(False, "redraw the pastes every epoch (the report drew "
                                      "them once)")
    flips: bool = setting(True, "random flips and quarter turns (a smear has no up)")
    color_jitter: float = setting(0.1, "brightness/contrast/saturation jitter strength (0: off)")
    # The searched switch of ssl and ssl_pretrain; None: the strategy's default.
    mask_augment: bool | None = setting(None, "the pastes on or off for strategies whose pastes "
                                        "are a switch (ssl, ssl_pretrain; default: off)")

    def __post_init__(self) -> None:
        check_fields(self, aug_factor=(0, 100), max_shift=(0.0, 0.5), color_jitter=(0.0, 1.0))


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = setting(0, "seed of the run (initialisation, order, augmentation)")
    deterministic: bool = setting(False, "deterministic kernels (bit-reproducible; slower)")
    # auto: bf16 autocast on a GPU (measured not to cost accuracy, docs/benchmarks.md "On one GPU"),
    # and on a CPU with native bf16 that a probe measured faster; fp32 elsewhere
    # (wbc.training.hardware.cpu_precision: emulated bf16 on an AVX2 CPU is ten times slower).
    precision: Precision = setting("auto", "auto (bf16 autocast on a GPU and on a CPU with native "
                                   "bf16 measured faster, else fp32), fp32 or bf16")
    # "Precise BN" (Wu & Johnson 2021): with few steps per epoch (WBC_1 has 82 images) the
    # running averages lag the weights and evaluation collapses.
    bn_recalibrate: int = setting(512, "training images whose batch statistics replace "
                                  "BatchNorm's running averages before each evaluation (0: off)")
    # Each Ray report costs about 1 s.
    report_every: int = setting(1, "epochs between metric reports")
    checkpoint_every: int = setting(1, "epochs between resumable checkpoints")

    def __post_init__(self) -> None:
        check_fields(self, report_every=(1, 100_000), checkpoint_every=(1, 100_000),
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


@dataclass(frozen=True)
class SSLConfig:
    """One SimCLR pretraining run (``wbc.training.ssl``). ``batch_size`` is per rank (images; each
    gives two views)."""

    image_size: int = 128  # working resolution: the same as the downstream WBC runs'
    epochs: int = 100  # contrastive learning wants many passes over a small set
    batch_size: int = 256  # per rank; negatives per view are 2 * batch_size - 2
    lr: float = 1e-3  # AdamW peak learning rate, after warmup; cosine to 0
    weight_decay: float = 1e-4  # AdamW, decoupled; not on biases and norms
    warmup_epochs: float = 5.0  # linear warmup: the first steps of contrastive training are wild
    temperature: float = 0.2  # NT-Xent; SimCLR's 0.1-0.5 range, lower is sharper
    projection_dim: int = 128  # SimCLR's z; the head is 512 -> 512 -> projection_dim
    crop_scale_min: float = 0.35  # crops keep at least this area fraction: most of a cell
    # Colour jitter strength: brightness, contrast and saturation in [1 - j, 1 + j], hue a
    # turn of j / 4 (SimCLR's CIFAR strength 0.5 is j = 0.4): stain and scanner variation.
    jitter: float = 0.4
    seed: int = 0
    # as TrainConfig.precision (wbc.training.hardware.resolve_precision)
    precision: Precision = "auto"
    channels_last: bool = True  # ~20% faster convolutions on CPU and GPU
    checkpoint_every: int = 0  # epochs between checkpoints handed to on_epoch; 0: at the end only
    knn_k: int = 20  # neighbours of the k-NN probe
    probe_steps: int = 100  # L-BFGS iterations of the final linear probe

    def __post_init__(self) -> None:
        check_fields(self, image_size=(16, 2048), epochs=(1, 100_000), batch_size=(2, 1 << 16),
                     lr=(1e-8, 10.0), weight_decay=(0.0, 1.0), warmup_epochs=(0.0, 1e6),
                     temperature=(1e-3, 10.0), projection_dim=(1, 8192),
                     crop_scale_min=(0.01, 1.0), jitter=(0.0, 1.0), seed=(0, 2**32 - 1),
                     checkpoint_every=(0, 100_000), knn_k=(1, 100_000),
                     probe_steps=(1, 100_000))

    def to_flat(self) -> dict[str, Any]:
        """Every field under its own name: plain scalars for fingerprints and checkpoints."""
        return dataclasses.asdict(self)

    def optim(self) -> OptimConfig:
        """The optimisation settings in the supervised runs' terms: AdamW, cosine, warmup, so
        that both loops build their optimiser and schedule the same way."""
        return OptimConfig(optimizer="adamw", lr=self.lr, weight_decay=self.weight_decay,
                           schedule="cosine", warmup_epochs=self.warmup_epochs,
                           batch_size=self.batch_size, epochs=self.epochs)


@dataclass(frozen=True)
class PretrainSettings:
    """How the starting weights are made: the CAM16 runs and the SimCLR run."""

    cam16_epochs: int = 8
    cam16_lr: float | None = None  # None: the WBC runs' lr
    ssl: SSLConfig = field(default_factory=SSLConfig)
    ssl_min_epoch_images: int = 0  # an SSL epoch sees at least this many images (pRCC tiled)
    ssl_include_wbc: bool = False  # add the WBC_100 training images, their labels unused


@dataclass(frozen=True)
class SegmentSettings:
    """How the segmenter trains and is scored; every field is part of its cache key."""

    image_size: int = setting(64, "working resolution of the segmenter, a multiple of 32")
    steps: int = setting(300, "optimiser steps of each training (every fold and the final model)")
    batch_size: int = setting(16, "images per step")
    lr: float = setting(2e-3, "peak AdamW learning rate")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    jitter: float = setting(0.1, "colour-jitter strength of the training images")
    folds: int = setting(3, "k of the k-fold scoring on the masked images")
    threshold: float = setting(0.5, "probability above which a pixel is cell")
    seed: int = setting(0, "seed of the folds, the initialisation and the batches")
    # To measure the segmenter on a tree with a mask for every image as if it had only some.
    withhold: float = setting(0.0, "fraction of each class's given masks kept from training "
                              "and scored as true masks (0.9 on a fully masked tree: a tree "
                              "with 10%% of its masks)")

    def __post_init__(self) -> None:
        check_fields(self, image_size=(32, 1024), steps=(1, 1 << 20), batch_size=(1, 4096),
                     lr=(1e-7, 1.0), weight_decay=(0.0, 1.0), jitter=(0.0, 0.5),
                     folds=(2, 100), threshold=(0.01, 0.99), withhold=(0.0, 0.99))
        if self.image_size % 32:
            raise ValueError(f"image_size={self.image_size} must be a multiple of 32 (the "
                             "encoder halves it five times)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
