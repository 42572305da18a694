"""Optimisers and learning-rate schedules, shared by supervised and self-supervised training.

A schedule is computed once per run from its optimisation settings and the number of steps an
epoch takes, and is then a pure function of the step (as nanoGPT's ``get_lr``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from wbc.config import OptimConfig

__all__ = ["Schedule", "build_optimizer"]


@dataclass(frozen=True)
class Schedule:
    """Linear warmup to ``peak_lr``, then cosine to 0, step decay, or constant."""

    peak_lr: float
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    kind: str = "cosine"  # cosine | step | constant
    step_every: int = 10  # step schedule: epochs between decays
    step_gamma: float = 0.1

    @classmethod
    def for_run(cls, optim: OptimConfig, *, steps_per_epoch: int, epochs: int | None = None,
                workers: int = 1) -> Schedule:
        """The schedule of a run of ``epochs`` (default ``optim.epochs``) epochs of
        ``steps_per_epoch`` steps on ``workers`` data-parallel workers (``optim.lr_rule``)."""
        epochs = optim.epochs if epochs is None else epochs
        return cls(peak_lr=optim.peak_lr(workers), steps_per_epoch=steps_per_epoch,
                   total_steps=steps_per_epoch * epochs,
                   warmup_steps=round(optim.warmup_epochs * steps_per_epoch),
                   kind=optim.schedule, step_every=optim.step_every,
                   step_gamma=optim.step_gamma)

    def lr(self, step: int) -> float:
        """The learning rate at ``step`` (0-based)."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.peak_lr
        if self.kind == "step":
            every = max(1, self.step_every * self.steps_per_epoch)
            return self.peak_lr * self.step_gamma ** (step // every)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every parameter group's rate for ``step`` (times the group's ``lr_scale``, see
        ``build_optimizer``); returns the schedule's rate."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr


def build_optimizer(model: nn.Module, optim: OptimConfig, *, backbone_lr_scale: float = 1.0,
                    head: str = "fc") -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; no weight decay on biases and normalisation parameters.

    ``backbone_lr_scale``: every parameter outside the ``head`` module trains at that fraction
    of the schedule's rate (a pretrained backbone under a fresh head; 1: one rate for all).

    The fused implementations (one kernel over all parameters) on CPU and GPU alike, several
    times faster than a loop over parameters (``benchmarks/train_throughput.py`` times whole
    steps). The rate given here is only the optimiser's start: ``Schedule.apply`` sets every
    group's before each step.
    """
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            in_head = name.split(".")[-2] == head if "." in name else False
            buckets.setdefault((in_head, param.ndim > 1), []).append(param)
    # Decaying weights first, then biases and norms; the head's after the backbone's.
    order = sorted(buckets, key=lambda key: (not key[1], key[0]))
    groups: list[dict[str, Any]] = [
        {"params": buckets[key], "weight_decay": optim.weight_decay if key[1] else 0.0,
         "lr_scale": 1.0 if key[0] else backbone_lr_scale} for key in order]
    params = [p for key in order for p in buckets[key]]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                 for p in params)
    if optim.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum,
                               nesterov=optim.momentum > 0, fused=fused or None)
    return torch.optim.AdamW(groups, lr=optim.lr, fused=fused or None)
