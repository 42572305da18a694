"""The training strategies the study compares, as a registry that later work can extend.

A strategy says how a WBC model starts and whether it sees the mask-based copy-paste
augmentation; the study crosses every strategy with every subset. The report's three
experiments are built in (its section 3), then the two its conclusion opens: self-supervised
pretraining on the unlabelled pRCC images (``ssl``), and that followed by the CAM16 supervised
pretraining (``ssl_pretrain``), each with the mask-based augmentation as a searched switch.
``ssl_wbc`` answers the report's "insufficient labels" with no other dataset: the label budget
limits labels, not images, so SimCLR pretrains on WBC_100's training images without their
labels (never the validation images) before the budget's labels fine-tune it. Others can be
added with :func:`register_strategy`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MASK_SOURCES", "Strategy", "get_strategy", "inapplicable_settings", "register_strategy",
           "strategy_names", "uses_pastes"]

# Names end up in cell ids, trial names, file paths and Parquet values: keep them to one
# spelling that needs no quoting anywhere.
_NAME = re.compile(r"[a-z][a-z0-9_]*")
MASK_SOURCES = ("given", "predicted")


@dataclass(frozen=True)
class Strategy:
    """How a WBC classifier is initialised and augmented."""

    name: str  # registry key, e.g. "pretrain_aug"; lowercase letters, digits and "_"
    description: str  # one line for reports and --help
    pretrain: str | None  # supervised pretraining source it needs (e.g. "cam16"), or None
    mask_augment: bool  # uses the report's 2.3 mask-based cell copy-paste augmentation
    # Self-supervised pretraining source, before the supervised one if any: "prcc" (the
    # unlabelled pRCC images) or "wbc" (WBC_100's training images, labels unused).
    ssl: str | None = None
    # The mask-based augmentation is a searched switch (``mask_augment`` in the search space)
    # rather than fixed by ``mask_augment``, which is then only its default.
    augment_switch: bool = False
    # Which cells it pastes: "given", those of the images that have a mask (about 10%, the
    # report's); "predicted", every training image's, a predicted mask (wbc.segment) standing
    # in where none is given (the report's "getting masks for all data").
    mask_source: str = "given"

    def __post_init__(self) -> None:
        if self.mask_source not in MASK_SOURCES:
            raise ValueError(f"strategy {self.name!r}: mask_source {self.mask_source!r} is not "
                             f"one of: {', '.join(MASK_SOURCES)}")
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"strategy name {self.name!r} must be lowercase letters, digits and '_', "
                "starting with a letter"
            )
        if self.pretrain is not None and not _NAME.fullmatch(self.pretrain):
            raise ValueError(
                f"strategy {self.name!r}: pretrain source {self.pretrain!r} must be None or a "
                "lowercase name such as 'cam16'"
            )
        if self.ssl is not None and not _NAME.fullmatch(self.ssl):
            raise ValueError(
                f"strategy {self.name!r}: self-supervised source {self.ssl!r} must be None or a "
                "lowercase name such as 'prcc'"
            )

    @property
    def weights_source(self) -> str | None:
        """What the WBC model starts from: ``cam16``, ``prcc_ssl``, ``wbc_ssl``,
        ``prcc_ssl+cam16`` (the self-supervised stage, then the supervised one), or None for
        random init."""
        parts = ([f"{self.ssl}_ssl"] if self.ssl else []) + (
            [self.pretrain] if self.pretrain else [])
        return "+".join(parts) or None

    @property
    def starts_pretrained(self) -> bool:
        """Whether the WBC model starts from stored weights (any pretraining at all)."""
        return self.weights_source is not None


_REGISTRY: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    """Add ``strategy`` to the registry and return it; a name already taken is an error."""
    if strategy.name in _REGISTRY:
        raise ValueError(
            f"strategy {strategy.name!r} is already registered "
            f"({_REGISTRY[strategy.name].description!r}); choose another name"
        )
    _REGISTRY[strategy.name] = strategy
    return strategy


def uses_pastes(strategy: Strategy, mask_augment: bool | None) -> bool:
    """Whether a run makes copy-paste images: the searched switch when the strategy has one and
    the trial set it, else the strategy's own ``mask_augment``."""
    if strategy.augment_switch and mask_augment is not None:
        return mask_augment
    return strategy.mask_augment


# The settings that only some runs read (flat ``TrainConfig`` names).
_PASTE_SETTINGS = ("aug_factor", "background", "max_shift", "paste_every_epoch")
_PRETRAINED_SETTINGS = ("backbone_lr_scale", "transfer_stages")


def inapplicable_settings(settings: Mapping[str, Any]) -> frozenset[str]:
    """The settings a run with these flat ``TrainConfig`` settings never reads: the pastes'
    for a run that makes none, ``mask_augment`` for a strategy without the switch, the
    pretrained backbone's for a random start, SGD's momentum under AdamW, the step schedule's
    under another. Results store them as nulls and progress lines leave them out, so a scratch
    row does not claim an ``aug_factor`` of 0."""
    strategy = get_strategy(str(settings.get("strategy", "scratch")))
    off: set[str] = set()
    if not strategy.augment_switch:
        off.add("mask_augment")
    if not uses_pastes(strategy, settings.get("mask_augment")):
        off.update(_PASTE_SETTINGS)
    if not strategy.starts_pretrained:
        off.update(_PRETRAINED_SETTINGS)
    if settings.get("optimizer", "sgd") != "sgd":
        off.add("momentum")
    if settings.get("schedule", "step") != "step":
        off.update(("step_every", "step_gamma"))
    return frozenset(off)


def get_strategy(name: str) -> Strategy:
    """The registered strategy called ``name``; ValueError listing the valid names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown strategy {name!r}; valid strategies: {', '.join(strategy_names())}"
        ) from None


def strategy_names() -> tuple[str, ...]:
    """Registered strategy names, in registration order (the report's row order first)."""
    return tuple(_REGISTRY)


# The report's Table 1 rows, in its order.
register_strategy(
    Strategy(
        name="scratch",
        description="ResNet-18 from random initialisation, trained on WBC",
        pretrain=None,
        mask_augment=False,
    )
)
register_strategy(
    Strategy(
        name="pretrain",
        description="ResNet-18 pretrained as a CAM16 tumour/normal classifier, head replaced "
        "by a 5-way layer, fine-tuned on WBC",
        pretrain="cam16",
        mask_augment=False,
    )
)
register_strategy(
    Strategy(
        name="pretrain_aug",
        description="CAM16 pretraining plus the mask-based cell copy-paste augmentation",
        pretrain="cam16",
        mask_augment=True,
    )
)
register_strategy(
    Strategy(
        name="pretrain_aug_predicted",
        description="pretrain_aug with masks for all data: every training image's cell is "
        "pasted, with a predicted mask (wbc.segment) where none is given",
        pretrain="cam16",
        mask_augment=True,
        mask_source="predicted",
    )
)
register_strategy(
    Strategy(
        name="ssl",
        description="ResNet-18 pretrained self-supervised (SimCLR) on the unlabelled pRCC "
        "images, head replaced by a 5-way layer; mask-based augmentation a searched switch",
        pretrain=None,
        mask_augment=False,
        ssl="prcc",
        augment_switch=True,
    )
)
register_strategy(
    Strategy(
        name="ssl_pretrain",
        description="pRCC self-supervised, then CAM16 supervised pretraining, then WBC; "
        "mask-based augmentation a searched switch",
        pretrain="cam16",
        mask_augment=False,
        ssl="prcc",
        augment_switch=True,
    )
)
register_strategy(
    Strategy(
        name="ssl_wbc",
        description="ResNet-18 pretrained self-supervised (SimCLR) on WBC_100's training images "
        "without their labels, head replaced by a 5-way layer, fine-tuned on the budget's labels",
        pretrain=None,
        mask_augment=False,
        ssl="wbc",
    )
)
