"""The search space, in one place: what Optuna may choose for a cell, and nothing else.

Per cell, because a strategy that pastes cells has two more knobs (how many pastes, on what
background) than one that does not, and the self-supervised strategies search the pastes'
on/off switch (``mask_augment``) as well. Distributions only; no training code calls ``suggest_*``.
"""

from __future__ import annotations

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from study.spec import SearchSpace
from wbc.strategies import get_strategy

__all__ = ["SEARCHABLE", "cell_space", "searched_names"]

# Every name a cell may search, in the order tables show them.
SEARCHABLE = ("lr", "weight_decay", "imbalance", "label_smoothing", "mask_augment", "aug_factor",
              "background")


def cell_space(space: SearchSpace, strategy: str) -> dict[str, BaseDistribution]:
    """Optuna distributions, by flat ``TrainConfig`` name, for one cell's strategy."""
    dists: dict[str, BaseDistribution] = {
        "lr": FloatDistribution(space.lr_min, space.lr_max, log=True),
        "weight_decay": FloatDistribution(space.weight_decay_min, space.weight_decay_max,
                                          log=True),
        "imbalance": CategoricalDistribution(list(space.imbalance)),
    }
    if space.label_smoothing_max > 0:
        dists["label_smoothing"] = FloatDistribution(space.label_smoothing_min,
                                                     space.label_smoothing_max)
    chosen = get_strategy(strategy)
    if chosen.augment_switch:
        dists["mask_augment"] = CategoricalDistribution([False, True])
    if chosen.mask_augment or chosen.augment_switch:
        dists["aug_factor"] = IntDistribution(space.aug_factor_min, space.aug_factor_max)
        dists["background"] = CategoricalDistribution(list(space.background))
    return dists


def searched_names(space: SearchSpace, strategies: tuple[str, ...]) -> tuple[str, ...]:
    """Every hyperparameter some cell searches (the Parquet columns they land in), in the
    order of ``SEARCHABLE``."""
    names = {name for strategy in strategies for name in cell_space(space, strategy)}
    return tuple(n for n in SEARCHABLE if n in names)
