"""The training loop: ``train_one_epoch``, ``evaluate`` and ``fit``, data resident on the device.

Design for the GPU case: the decoded uint8 images live on the
training device for the whole run; a batch is an index gather, a cast and a few batched tensor
ops; augmentation never leaves the device; losses and counts accumulate as tensors and reach the
host once per epoch. On the 2-core CPU the model dominates anyway, and this path keeps the data
share of an epoch in the low percent.

``fit`` does no file I/O and knows nothing of Ray: it hands each epoch's metrics, and when due a
complete checkpoint (``TrainingState.state_dict()``, plain data that ``torch.load(weights_only=
True)`` reads back), to an ``on_epoch`` callback. Whoever calls it decides where that goes (a
file, ``ray.train.report``). ``wbc.training.run.train_run`` is the usual way in: it prepares the
data and the model and then calls ``fit``.

Distributed: with ``torch.distributed`` initialised, every rank draws the same epoch order from
the same seed and takes every ``world``-th index of it, so shards are disjoint and equal in size;
evaluation is sharded the same way and predictions are gathered before scoring.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wbc.augment import (
    color_jitter,
    flip_rot90,
    make_pastes,
    normalize,
    pastes_enabled,
    to_float_nchw,
)
from wbc.config import OptimConfig, TrainConfig
from wbc.fileio import save_torch
from wbc.metrics import classification_metrics, flatten_metrics
from wbc.strategies import get_strategy
from wbc.training.distributed import autocast, gather, world
from wbc.training.inputs import EvalData, TrainData
from wbc.training.resnet import unwrap_model
from wbc.training.schedule import Schedule, build_optimizer
from wbc.training.seeding import derive_seed

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EpochCallback",
    "FitResult",
    "TrainingState",
    "best_weights",
    "epoch_batch",
    "epoch_images",
    "evaluate",
    "fit",
    "load_checkpoint",
    "prepare_batch",
    "recalibrate_bn",
    "save_checkpoint",
    "steps_per_epoch",
    "train_one_epoch",
]

# torchvision's ImageNet statistics: right for ImageNet-initialised backbones and harmless for
# the others (a fixed affine map the first convolution absorbs).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The BatchNorm layers whose running statistics recalibration replaces (torch's public classes).
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

EpochCallback = Callable[[dict[str, Any], dict[str, Any] | None], None]


@dataclass
class FitResult:
    best_epoch: int
    selection: dict[str, Any]  # metrics of the best epoch on the selection split
    reporting: dict[str, Any]  # metrics of the best epoch's weights on the reporting split
    history: list[dict[str, Any]]  # one dict of flat metrics per epoch
    best_state: dict[str, Tensor]
    train_images: int  # per epoch, originals plus pastes, all ranks together
    wall_seconds: float
    resumed_from_epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)  # the flat final record


def prepare_batch(images_u8: Tensor, *, generator: torch.Generator | None = None,
                  flips: bool = False, jitter: float = 0.0, channels_last: bool = True,
                  mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
                  ) -> Tensor:
    """uint8 NHWC -> normalised float NCHW, the model's input; with ``generator`` also the
    online augmentation (flips and quarter turns, colour jitter of strength ``jitter``).
    ``mean``/``std``: the normalisation (a classifier's card carries the one it trained with)."""
    x = to_float_nchw(images_u8)
    if generator is not None:
        if flips:
            x = flip_rot90(x, generator=generator)
        if jitter > 0:
            x = color_jitter(x, generator=generator, brightness=jitter, contrast=jitter,
                             saturation=jitter, hue=jitter / 5)
    x = normalize(x, tuple(mean), tuple(std))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def _class_weights(labels: Tensor, num_classes: int) -> Tensor:
    """scikit-learn's "balanced" class weights, ``n / (num_classes * count)``, over the fixed
    label space: a class absent from ``labels`` (a tiny WBC subset) gets weight 0.

    Hand-written rather than ``sklearn.utils.class_weight.compute_class_weight("balanced")``:
    given all ``num_classes`` classes it raises for one absent from ``y`` ("classes should have
    valid labels that are in y"), and given only the present ones it divides by their number,
    not ``num_classes``, so it would need a scatter and a rescale around it, plus a host copy
    of labels that live on the training device. With every class present the two agree
    (``tests/wbc/test_train.py``)."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    return torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)),
                       torch.zeros_like(counts))


def _passes(n: int, optim: OptimConfig) -> int:
    """Passes over ``n`` training images that make one epoch (``min_epoch_images``)."""
    return max(1, math.ceil(optim.min_epoch_images / max(n, 1)))


def epoch_images(n: int, optim: OptimConfig) -> int:
    """Images one epoch over ``n`` training images trains on (``min_epoch_images``,
    ``max_epoch_images``)."""
    total = n * _passes(n, optim)
    return min(total, optim.max_epoch_images) if optim.max_epoch_images else total


def epoch_batch(n: int, optim: OptimConfig, workers: int) -> int:
    """Each rank's batch in an epoch over ``n`` images: ``batch_size``, or less where that
    would give fewer than ``min_epoch_steps`` steps (not below 2, which BatchNorm needs, unless
    ``batch_size`` is)."""
    if not optim.min_epoch_steps:
        return optim.batch_size
    per_rank = math.ceil(epoch_images(n, optim) / workers)
    return min(optim.batch_size, max(2, math.ceil(per_rank / optim.min_epoch_steps)))


def steps_per_epoch(n: int, optim: OptimConfig, workers: int) -> int:
    """Optimiser steps of one epoch over ``n`` images on ``workers`` ranks."""
    return math.ceil(math.ceil(epoch_images(n, optim) / workers) / epoch_batch(n, optim, workers))


def _epoch_order(labels: Tensor, *, config: TrainConfig, epoch: int, rank: int, workers: int
                 ) -> Tensor:
    """This rank's indices for ``epoch``: the same permutation on every rank, then a stride.

    An epoch of several passes (``min_epoch_images``) concatenates fresh permutations; an
    epoch capped by ``max_epoch_images`` is the start of its permutation.
    """
    n = labels.numel()
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "order", epoch))
    passes = _passes(n, config.optim)
    if config.optim.imbalance == "balanced":
        weights = 1.0 / torch.bincount(labels.cpu()).float()[labels.cpu()]
        order = torch.multinomial(weights, n * passes, replacement=True, generator=generator)
    else:
        order = torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])
    order = order[:epoch_images(n, config.optim)]
    total = order.numel()
    per_rank = math.ceil(total / workers)
    if per_rank * workers > total:  # pad by wrapping, as DistributedSampler does
        order = torch.cat([order, order[: per_rank * workers - total]])
    return order[rank::workers].to(labels.device)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    *,
    config: TrainConfig,
    epoch: int,
    step: int,
    schedule: Schedule,
    loss_weights: Tensor | None,
) -> dict[str, float]:
    """One pass over this rank's shard of ``images``/``labels`` (uint8 NHWC on the device);
    returns the epoch's figures and ``steps``, the optimiser steps taken so far."""
    rank, workers = world()
    device = images.device
    model.train()
    order = _epoch_order(labels, config=config, epoch=epoch, rank=rank, workers=workers)
    batch = epoch_batch(labels.numel(), config.optim, workers)
    # On the data's device: random numbers drawn on the host would be copied to a GPU every
    # step, and a copy from pageable memory waits for the GPU's queue to drain.
    generator = torch.Generator(device=device).manual_seed(
        derive_seed(config.seed, "augment", epoch, rank))
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen, data_seconds, lr = 0, 0.0, schedule.lr(step)
    started = time.perf_counter()
    for start in range(0, order.numel(), batch):
        index = order[start:start + batch]
        if index.numel() < 2:  # BatchNorm cannot train on a batch of one
            continue
        tick = time.perf_counter()
        x = prepare_batch(images[index], generator=generator, flips=config.augment.flips,
                          jitter=config.augment.color_jitter,
                          channels_last=config.model.channels_last)
        y = labels[index]
        data_seconds += time.perf_counter() - tick
        lr = schedule.apply(optimizer, step)
        with autocast(device, config.precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, weight=loss_weights,
                               label_smoothing=config.optim.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * y.numel()
        correct += (logits.detach().argmax(1) == y).sum()
        seen += y.numel()
        step += 1
    seconds = time.perf_counter() - started
    seen = max(seen, 1)
    return {
        "train_loss": float(loss_sum.item()) / seen,
        "train_accuracy": float(correct.item()) / seen,
        "scheduled_lr": float(lr),  # the schedule's rate at the epoch's last step
        "steps": float(step),
        "epoch_seconds": seconds,
        "data_seconds": data_seconds,
        "images_per_second": seen * workers / seconds if seconds > 0 else 0.0,
    }


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: Tensor, *, count: int, seed: int,
                   batch_size: int = 128, channels_last: bool = True) -> None:
    """Replace BatchNorm running statistics by exact averages over ``count`` training images.

    Every rank draws the same images from ``seed`` and runs the same unwrapped model, so all
    ranks end with the same statistics without communicating.
    """
    plain = unwrap_model(model)
    norms = [m for m in plain.modules() if isinstance(m, _BATCH_NORMS)]
    if count <= 0 or not norms or images.shape[0] < 2:
        return
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(images.shape[0], generator=generator)[:count].to(images.device)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = plain.training
    plain.train()
    for start in range(0, pick.numel(), batch_size):
        chunk = pick[start:start + batch_size]
        if chunk.numel() < 2:
            continue
        plain(prepare_batch(images[chunk], channels_last=channels_last))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    plain.train(was_training)


@torch.inference_mode()
def evaluate(model: nn.Module, data: EvalData, *, class_names: Sequence[str],
             batch_size: int = 256, precision: str = "fp32", channels_last: bool = True
             ) -> dict[str, Any]:
    """Metrics of ``model`` on ``data`` (sharded across ranks, gathered before scoring)."""
    rank, workers = world()
    plain = unwrap_model(model)
    plain.eval()
    device = data.images.device
    index = torch.arange(data.labels.numel(), device=device)[rank::workers]
    predictions, targets = [], []
    loss_sum = torch.zeros((), device=device)
    for start in range(0, index.numel(), batch_size):
        chunk = index[start:start + batch_size]
        x = prepare_batch(data.images[chunk], channels_last=channels_last)
        with autocast(device, precision):
            logits = plain(x).float()
        loss_sum += F.cross_entropy(logits, data.labels[chunk], reduction="sum")
        predictions.append(logits.argmax(1))
        targets.append(data.labels[chunk])
    pred = gather(torch.cat(predictions) if predictions else index[:0])
    true = gather(torch.cat(targets) if targets else index[:0])
    # Back in the data's order: ranks hold strided shards, and per-image predictions are
    # paired across runs by position (study.report.stats resamples images).
    order = gather(index).argsort()
    pred, true = pred[order], true[order]
    if workers > 1:
        torch.distributed.all_reduce(loss_sum)
    metrics: dict[str, Any] = dict(classification_metrics(
        true.cpu().numpy(), pred.cpu().numpy(), num_classes=len(class_names),
        class_names=class_names))
    metrics["loss"] = float(loss_sum.item()) / max(1, true.numel())
    metrics["predictions"] = pred.cpu().tolist()
    return metrics


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    save_torch(state, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (tensors and plain data only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _cpu_copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    # .cpu() of a CPU tensor is the tensor itself: a snapshot must be a copy.
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def best_weights(checkpoint: dict[str, Any]) -> dict[str, Tensor]:
    """The best epoch's weights from a ``TrainingState.state_dict()`` checkpoint."""
    best = checkpoint.get("best_state")
    return dict(best) if best is not None else dict(checkpoint["model"])


class TrainingState:
    """Everything a run has learnt so far: the model and its optimiser, where the run is
    (epoch, step), its history and its best epoch (selection macro-F1; accuracy breaks ties).

    ``state_dict()`` is a complete checkpoint and ``load_state_dict()`` resumes from one.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer
        self.epoch = 0  # the last epoch completed
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best_score = -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, Tensor] = {}
        self.best_selection: dict[str, Any] = {}

    def observe(self, epoch: int, scores: dict[str, Any]) -> None:
        """Keep the weights of ``epoch`` if its selection ``scores`` are the best so far."""
        # Macro-F1 selects: accuracy would favour always saying "Neutrophil".
        score = scores["macro_f1"] + 1e-6 * scores["accuracy"]
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = _cpu_copy(unwrap_model(self.model).state_dict())
            self.best_selection = dict(scores)

    def state_dict(self) -> dict[str, Any]:
        """A complete checkpoint. When the best epoch is the last one, its weights are the
        model's and are not stored twice (``best_state`` None; ``best_weights`` reads it)."""
        return {
            "model": _cpu_copy(unwrap_model(self.model).state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": None if self.best_epoch == self.epoch else self.best_state,
            "best_selection": self.best_selection,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        self.best_score, self.best_epoch = float(state["best_score"]), int(state["best_epoch"])
        self.best_state = best_weights(state)
        self.best_selection = dict(state["best_selection"])

    def score_best(self, data: EvalData, class_names: Sequence[str], config: TrainConfig
                   ) -> dict[str, Any]:
        """The best epoch's weights scored on ``data``; the model's own weights are kept."""
        plain = unwrap_model(self.model)
        current = {k: v.detach().clone() for k, v in plain.state_dict().items()}
        plain.load_state_dict(self.best_state)
        try:
            return evaluate(self.model, data, class_names=class_names,
                            precision=config.precision, channels_last=config.model.channels_last)
        finally:
            plain.load_state_dict(current)


class _EpochImages:
    """A run's training images for each epoch: the originals, plus the pastes when the run
    pastes (``wbc.augment.pastes_enabled``), drawn once or every epoch."""

    def __init__(self, train: TrainData, config: TrainConfig) -> None:
        self.train, self.config = train, config
        self._draw: int | None = None
        self._data = (train.images, train.labels)

    def for_epoch(self, epoch: int) -> tuple[Tensor, Tensor]:
        if not pastes_enabled(self.config):
            return self._data
        draw = epoch if self.config.augment.paste_every_epoch and epoch > 1 else 0
        if draw != self._draw:
            train = self.train
            images, labels = make_pastes(
                train.images, train.labels, train.has_mask, train.masks,
                augment=self.config.augment, seed=derive_seed(self.config.seed, "paste", draw))
            self._data = (torch.cat([train.images, images]), torch.cat([train.labels, labels]))
            self._draw = draw
        return self._data


def _final_record(state: TrainingState, reporting_scores: dict[str, Any], *, train_images: int,
                  train: TrainData, started: float, selection: EvalData, reporting: EvalData
                  ) -> dict[str, Any]:
    best = state.best_selection
    counts = torch.bincount(train.labels.cpu(), minlength=train.num_classes).tolist()
    return {"best_epoch": state.best_epoch, **flatten_metrics("val", best),
            **flatten_metrics("test", reporting_scores),
            "val_confusion_matrix": best.get("confusion_matrix"),
            "test_confusion_matrix": reporting_scores.get("confusion_matrix"),
            # Per image of the reporting split, in its order: what the statistics resample.
            "test_predictions": reporting_scores.get("predictions"),
            "test_targets": reporting.labels.cpu().tolist(),
            # The label budget as trained: originals per class (pastes not counted).
            **{f"train_n_{name}": int(n) for name, n in zip(train.class_names, counts,
                                                             strict=True)},
            "train_images": train_images, "wall_seconds": time.perf_counter() - started,
            "selection_split": selection.name, "reporting_split": reporting.name}


def _setup(model: nn.Module, config: TrainConfig, device: torch.device) -> nn.Module:
    """Kernel choices; the module the steps run (maybe compiled). The memory format is the
    caller's (``wbc.training.run.train_run`` sets channels_last before DDP wraps the model)."""
    if device.type == "cuda" and not config.deterministic:
        # Fixed input shapes: let cuDNN time its convolution algorithms once and keep the best.
        torch.backends.cudnn.benchmark = True
    if config.model.compile:
        model.compile()  # in place (nn.Module.compile): no wrapper, the state dict's keys kept
    return model


def fit(
    model: nn.Module,
    config: TrainConfig,
    train: TrainData,
    selection: EvalData,
    reporting: EvalData,
    *,
    on_epoch: EpochCallback | None = None,
    resume: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` (already on the device, maybe DDP-wrapped) for ``config.optim.epochs``.

    Each epoch is scored on ``selection``; the best epoch's weights are kept and finally scored
    on ``reporting``. ``on_epoch(metrics, checkpoint)`` is called every ``report_every`` epochs
    and after the last, with a complete checkpoint every ``checkpoint_every`` epochs and at the
    end (else None). ``resume`` is such a checkpoint: training continues at the next epoch.
    Raises ``ValueError`` when ``train`` holds no images.
    """
    if train.labels.numel() == 0:
        raise ValueError(f"the training split holds no images (data.subset="
                         f"{config.data.subset!r}): a run would train on nothing and still "
                         "report figures")
    started = time.perf_counter()
    device = train.images.device
    step_model = _setup(model, config, device)
    pretrained = get_strategy(config.model.strategy).starts_pretrained
    state = TrainingState(model, build_optimizer(
        model, config.optim,
        backbone_lr_scale=config.optim.backbone_lr_scale if pretrained else 1.0))
    loss_weights = (_class_weights(train.labels, train.num_classes).to(device)
                    if config.optim.imbalance == "weighted" else None)
    epochs = _EpochImages(train, config)
    images, labels = epochs.for_epoch(0)
    workers = world()[1]
    schedule = Schedule.for_run(config.optim, workers=workers,
                                steps_per_epoch=steps_per_epoch(labels.numel(), config.optim,
                                                                workers))
    if resume is not None:
        state.load_state_dict(resume)
    first_epoch, final, reporting_scores = state.epoch + 1, {}, {}
    for epoch in range(first_epoch, config.optim.epochs + 1):
        images, labels = epochs.for_epoch(epoch)
        epoch_started = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch, **train_one_epoch(
            step_model, state.optimizer, images, labels, config=config, epoch=epoch,
            step=state.step, schedule=schedule, loss_weights=loss_weights)}
        state.step = int(row.pop("steps"))
        recalibrate_bn(model, images, count=config.bn_recalibrate,
                       seed=derive_seed(config.seed, "bn", epoch),
                       channels_last=config.model.channels_last)
        scores = evaluate(model, selection, class_names=train.class_names,
                          precision=config.precision, channels_last=config.model.channels_last)
        row.update(flatten_metrics("val", scores))
        state.observe(epoch, scores)
        row.update(best_epoch=state.best_epoch,
                   best_val_macro_f1=float(state.best_selection["macro_f1"]),
                   loop_seconds=time.perf_counter() - epoch_started,
                   train_images=int(labels.numel()))
        state.history.append(row)
        state.epoch = epoch
        last = epoch == config.optim.epochs
        if last:  # the final record goes out with the last epoch's report: one report less
            reporting_scores = state.score_best(reporting, train.class_names, config)
            final = _final_record(state, reporting_scores, train_images=int(labels.numel()),
                                  train=train, started=started, selection=selection,
                                  reporting=reporting)
        if on_epoch is not None and (epoch % config.report_every == 0 or last):
            checkpoint = None
            if epoch % config.checkpoint_every == 0 or last:
                checkpoint = {**state.state_dict(), "config": config.to_flat()}
            # The final record's val_* are the best epoch's; the epoch's own ride along.
            on_epoch({**row, **final, "epoch_metrics": dict(row)} if last else dict(row),
                     checkpoint)
    if not final:  # resumed from the final checkpoint: score again
        reporting_scores = state.score_best(reporting, train.class_names, config)
        final = _final_record(state, reporting_scores, train_images=int(labels.numel()),
                              train=train, started=started, selection=selection,
                              reporting=reporting)
    return FitResult(best_epoch=state.best_epoch, selection=state.best_selection,
                     reporting=reporting_scores, history=state.history,
                     best_state=state.best_state, train_images=int(labels.numel()),
                     wall_seconds=final["wall_seconds"], resumed_from_epoch=first_epoch - 1,
                     metrics=final)
