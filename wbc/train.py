"""The training loop: ``train_one_epoch``, ``evaluate`` and ``fit``, data resident on the device.

Design for the GPU case (DESIGN.md, performance facts): the decoded uint8 images live on the
training device for the whole run; a batch is an index gather, a cast and a few batched tensor
ops; augmentation never leaves the device; losses and counts accumulate as tensors and reach the
host once per epoch. On the 2-core CPU the model dominates anyway, and this path keeps the data
share of an epoch in the low percent.

``fit`` does no file I/O and knows nothing of Ray: it hands each epoch's metrics, and when due a
complete checkpoint (a plain dict that ``torch.load(weights_only=True)`` reads back), to an
``on_epoch`` callback. Whoever calls it decides where that goes (a file, ``ray.train.report``).

Distributed: with ``torch.distributed`` initialised, every rank draws the same epoch order from
the same seed and takes every ``world``-th index of it, so shards are disjoint and equal in size;
evaluation is sharded the same way and predictions are gathered before scoring.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from wbc.augment import color_jitter, flip_rot90, mask_paste, normalize, to_float_nchw
from wbc.config import OptimConfig, TrainConfig
from wbc.metrics import classification_metrics, flatten_metrics
from wbc.model import unwrap_model
from wbc.seeding import derive_seed
from wbc.strategies import get_strategy, uses_pastes

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EvalData",
    "FitResult",
    "TrainData",
    "build_optimizer",
    "evaluate",
    "fit",
    "load_checkpoint",
    "lr_at",
    "recalibrate_bn",
    "save_checkpoint",
    "selection_reporting_split",
    "train_one_epoch",
]

# torchvision's ImageNet statistics: right for ImageNet-initialised backbones and harmless for
# the others (a fixed affine map the first convolution absorbs).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PASTE_CHUNK = 256  # masked images warped per grid_sample call: bounds the float scratch memory


@dataclass
class TrainData:
    """The training split on the device: uint8 NHWC images, labels, masks of the masked rows."""

    images: Tensor  # (N, S, S, 3) uint8
    labels: Tensor  # (N,) int64
    has_mask: Tensor  # (N,) bool
    masks: Tensor  # (M, S, S) bool, one per True in has_mask, in order
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to(self, device: torch.device) -> TrainData:
        return TrainData(self.images.to(device), self.labels.to(device),
                         self.has_mask.to(device), self.masks.to(device), self.class_names)


@dataclass
class EvalData:
    """An evaluation split on the device."""

    name: str  # what it is, for the record: "WBC_100/val (half A)", "WBC_100/test", ...
    images: Tensor  # (N, S, S, 3) uint8
    labels: Tensor  # (N,) int64

    def to(self, device: torch.device) -> EvalData:
        return EvalData(self.name, self.images.to(device), self.labels.to(device))


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


def selection_reporting_split(labels: Sequence[int] | np.ndarray, *, seed: int = 0
                              ) -> tuple[np.ndarray, np.ndarray]:
    """A fixed stratified half of a validation set: (selection indices, reporting indices).

    Used when a tree has no test split: the best epoch is chosen on one half and the reported
    figures come from the other, so the figures are not inflated by the choice. The split
    depends only on the labels and ``seed`` (fixed for a study), never on the trial.
    """
    labels_arr = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    selection, reporting = [], []
    for cls in np.unique(labels_arr):
        members = np.flatnonzero(labels_arr == cls)
        members = members[rng.permutation(members.size)]
        half = (members.size + 1) // 2  # an odd class gives selection the extra image
        selection.append(members[:half])
        reporting.append(members[half:])
    return np.sort(np.concatenate(selection)), np.sort(np.concatenate(reporting))


def lr_at(step: int, *, total_steps: int, warmup_steps: int, optim: OptimConfig,
          steps_per_epoch: int, workers: int = 1) -> float:
    """Learning rate at ``step`` (0-based): linear warmup to ``optim.peak_lr(workers)`` (the
    large-batch rule), then the configured schedule."""
    base = optim.peak_lr(workers)
    if warmup_steps > 0 and step < warmup_steps:
        return base * (step + 1) / warmup_steps
    if optim.schedule == "constant":
        return base
    if optim.schedule == "step":
        return base * optim.step_gamma ** (step // max(1, optim.step_every * steps_per_epoch))
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; no weight decay on biases and BatchNorm parameters.

    The fused implementations (one kernel over all parameters) on CPU and GPU alike: on the
    2-core development CPU a ResNet-18 step of SGD takes 5.4 ms fused against 11.2 ms in a
    loop, AdamW 8.5 ms against 40 ms (``benchmarks/train_throughput.py`` times whole steps).
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    params = decay + no_decay
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                 for p in params)
    if optim.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum,
                               nesterov=optim.momentum > 0, fused=fused or None)
    return torch.optim.AdamW(groups, lr=optim.lr, fused=fused or None)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast (AMP; bf16 needs no loss scaling) when asked, and on a GPU for "auto"."""
    enabled = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _prepare_batch(images_u8: Tensor, *, generator: torch.Generator | None = None,
                   flips: bool = False, jitter: float = 0.0, channels_last: bool) -> Tensor:
    """uint8 NHWC -> normalised float NCHW, with the online augmentation when ``generator``."""
    x = to_float_nchw(images_u8)
    if generator is not None:
        if flips:
            x = flip_rot90(x, generator=generator)
        if jitter > 0:
            x = color_jitter(x, generator=generator, brightness=jitter, contrast=jitter,
                             saturation=jitter, hue=jitter / 5)
    x = normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def _class_weights(labels: Tensor, num_classes: int) -> Tensor:
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)),
                          torch.zeros_like(counts))
    return weights


def make_pastes(data: TrainData, config: TrainConfig, *, seed: int) -> tuple[Tensor, Tensor]:
    """The report's 2.3 on the device: ``aug_factor`` uint8 pastes per masked training image."""
    factor = config.augment.aug_factor
    rows = data.has_mask.nonzero().squeeze(1)
    empty = (data.images[:0], data.labels[:0])
    if factor == 0 or rows.numel() == 0:
        return empty
    device = data.images.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out_images, out_labels = [], []
    for start in range(0, rows.numel(), PASTE_CHUNK):
        chunk = rows[start:start + PASTE_CHUNK]
        images = to_float_nchw(data.images[chunk])
        new, _, source = mask_paste(
            images, data.masks[start:start + PASTE_CHUNK].to(device), generator=generator,
            factor=factor, background=config.augment.background,
            max_shift=config.augment.max_shift)
        out_images.append((new.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1))
        out_labels.append(data.labels[chunk][source.to(device)])
    return torch.cat(out_images).contiguous(), torch.cat(out_labels)


def _passes(n: int, optim: OptimConfig) -> int:
    """Passes over ``n`` training images that make one epoch (``min_epoch_images``)."""
    return max(1, math.ceil(optim.min_epoch_images / max(n, 1)))


def _epoch_order(labels: Tensor, *, config: TrainConfig, epoch: int, rank: int, world: int
                 ) -> Tensor:
    """This rank's indices for ``epoch``: the same permutation on every rank, then a stride.

    An epoch of several passes (``min_epoch_images``) concatenates fresh permutations.
    """
    n = labels.numel()
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "order", epoch))
    passes = _passes(n, config.optim)
    if config.optim.imbalance == "balanced":
        weights = 1.0 / torch.bincount(labels.cpu()).float()[labels.cpu()]
        order = torch.multinomial(weights, n * passes, replacement=True, generator=generator)
    else:
        order = torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])
    total = order.numel()
    per_rank = math.ceil(total / world)
    if per_rank * world > total:  # pad by wrapping, as DistributedSampler does
        order = torch.cat([order, order[: per_rank * world - total]])
    return order[rank::world].to(labels.device)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    *,
    config: TrainConfig,
    epoch: int,
    step: int,
    total_steps: int,
    steps_per_epoch: int,
    loss_weights: Tensor | None,
) -> dict[str, float]:
    """One pass over this rank's shard of ``images``/``labels`` (uint8 NHWC on the device)."""
    rank, world = _world()
    device = images.device
    model.train()
    order = _epoch_order(labels, config=config, epoch=epoch, rank=rank, world=world)
    batch = config.optim.batch_size
    # On the data's device: random numbers drawn on the host would be copied to a GPU every
    # step, and a copy from pageable memory waits for the GPU's queue to drain.
    generator = torch.Generator(device=device).manual_seed(
        derive_seed(config.seed, "augment", epoch, rank))
    warmup = round(config.optim.warmup_epochs * steps_per_epoch)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    data_seconds = 0.0
    started = time.perf_counter()
    for start in range(0, order.numel(), batch):
        index = order[start:start + batch]
        if index.numel() < 2:  # BatchNorm cannot train on a batch of one
            continue
        tick = time.perf_counter()
        x = _prepare_batch(images[index], generator=generator, flips=config.augment.flips,
                           jitter=config.augment.color_jitter,
                           channels_last=config.model.channels_last)
        y = labels[index]
        data_seconds += time.perf_counter() - tick
        lr = lr_at(step, total_steps=total_steps, warmup_steps=warmup, optim=config.optim,
                   steps_per_epoch=steps_per_epoch, workers=world)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with _autocast(device, config.precision):
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
        "lr": float(optimizer.param_groups[0]["lr"]),
        "steps": float(step),
        "epoch_seconds": seconds,
        "data_seconds": data_seconds,
        "images_per_second": seen * world / seconds if seconds > 0 else 0.0,
    }


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: Tensor, *, count: int, seed: int,
                   batch_size: int = 128, channels_last: bool = True) -> None:
    """Replace BatchNorm running statistics by exact averages over ``count`` training images.

    Every rank draws the same images from ``seed`` and runs the same unwrapped model, so all
    ranks end with the same statistics without communicating.
    """
    plain = unwrap_model(model)
    norms = [m for m in plain.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
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
        plain(_prepare_batch(images[chunk], channels_last=channels_last))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    plain.train(was_training)


def _gather(tensor: Tensor) -> Tensor:
    """Concatenate equal-or-shorter shards from every rank (padding with -1, then dropped)."""
    _, world = _world()
    if world == 1:
        return tensor
    size = torch.tensor([tensor.numel()], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.full((longest,), -1, dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.numel()] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])


@torch.inference_mode()
def evaluate(model: nn.Module, data: EvalData, *, class_names: Sequence[str],
             batch_size: int = 256, precision: str = "fp32", channels_last: bool = True
             ) -> dict[str, Any]:
    """Metrics of ``model`` on ``data`` (sharded across ranks, gathered before scoring)."""
    rank, world = _world()
    plain = unwrap_model(model)
    plain.eval()
    device = data.images.device
    index = torch.arange(data.labels.numel(), device=device)[rank::world]
    predictions, targets = [], []
    loss_sum = torch.zeros((), device=device)
    for start in range(0, index.numel(), batch_size):
        chunk = index[start:start + batch_size]
        x = _prepare_batch(data.images[chunk], channels_last=channels_last)
        with _autocast(device, precision):
            logits = plain(x).float()
        loss_sum += F.cross_entropy(logits, data.labels[chunk], reduction="sum")
        predictions.append(logits.argmax(1))
        targets.append(data.labels[chunk])
    pred = _gather(torch.cat(predictions) if predictions else index[:0])
    true = _gather(torch.cat(targets) if targets else index[:0])
    if world > 1:
        dist.all_reduce(loss_sum)
    metrics: dict[str, Any] = dict(classification_metrics(
        true.cpu().numpy(), pred.cpu().numpy(), num_classes=len(class_names),
        class_names=class_names))
    metrics["loss"] = float(loss_sum.item()) / max(1, true.numel())
    return metrics


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    torch.save(state, partial)
    partial.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (tensors and plain data only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _score_best(model: nn.Module, best_state: dict[str, Tensor], data: EvalData,
                class_names: Sequence[str], config: TrainConfig) -> dict[str, Any]:
    """Score the best epoch's weights on ``data``, leaving ``model``'s own weights as they were."""
    plain = unwrap_model(model)
    current = {k: v.detach().clone() for k, v in plain.state_dict().items()}
    plain.load_state_dict(best_state)
    try:
        return evaluate(model, data, class_names=class_names, precision=config.precision,
                        channels_last=config.model.channels_last)
    finally:
        plain.load_state_dict(current)


EpochCallback = Callable[[dict[str, Any], dict[str, Any] | None], None]


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
    """
    started = time.perf_counter()
    _, world = _world()
    device = train.images.device
    strategy = get_strategy(config.model.strategy)
    if config.model.channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda" and not config.deterministic:
        # Fixed input shapes: let cuDNN time its convolution algorithms once and keep the best.
        torch.backends.cudnn.benchmark = True
    optimizer = build_optimizer(model, config.optim)
    # The compiled module shares parameters with ``model``: state dicts, evaluation and
    # checkpoints keep using ``model`` itself.
    step_model: nn.Module = torch.compile(model) if config.model.compile else model  # type: ignore[assignment]
    loss_weights = (_class_weights(train.labels, train.num_classes).to(device)
                    if config.optim.imbalance == "weighted" else None)

    def epoch_data(epoch: int) -> tuple[Tensor, Tensor]:
        if not uses_pastes(strategy, config.augment.mask_augment):
            return train.images, train.labels
        draw = epoch if config.augment.paste_every_epoch else 0
        images, labels = make_pastes(train, config, seed=derive_seed(config.seed, "paste", draw))
        return torch.cat([train.images, images]), torch.cat([train.labels, labels])

    images, labels = epoch_data(0)
    passes = _passes(labels.numel(), config.optim)
    steps_per_epoch = math.ceil(math.ceil(labels.numel() * passes / world)
                                / config.optim.batch_size)
    total_steps = steps_per_epoch * config.optim.epochs
    first_epoch, step = 1, 0
    history: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    reporting_scores: dict[str, Any] = {}
    best_score, best_epoch = -math.inf, 0
    best_state: dict[str, Tensor] = {}
    best_selection: dict[str, Any] = {}
    if resume is not None:
        unwrap_model(model).load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        first_epoch, step = int(resume["epoch"]) + 1, int(resume["step"])
        history = list(resume["history"])
        best_score, best_epoch = float(resume["best_score"]), int(resume["best_epoch"])
        best_state = dict(resume["best_state"])
        best_selection = dict(resume["best_selection"])

    def final_record(reporting_scores: dict[str, Any]) -> dict[str, Any]:
        return {"best_epoch": best_epoch, **flatten_metrics("val", best_selection),
                **flatten_metrics("test", reporting_scores),
                "val_confusion_matrix": best_selection.get("confusion_matrix"),
                "test_confusion_matrix": reporting_scores.get("confusion_matrix"),
                "train_images": int(labels.numel()),
                "wall_seconds": time.perf_counter() - started,
                "selection_split": selection.name, "reporting_split": reporting.name}

    for epoch in range(first_epoch, config.optim.epochs + 1):
        if config.augment.paste_every_epoch and epoch > 1:
            images, labels = epoch_data(epoch)
        epoch_started = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch}
        row.update(train_one_epoch(step_model, optimizer, images, labels, config=config,
                                   epoch=epoch, step=step, total_steps=total_steps,
                                   steps_per_epoch=steps_per_epoch, loss_weights=loss_weights))
        step = int(row.pop("steps"))
        recalibrate_bn(model, images, count=config.bn_recalibrate,
                       seed=derive_seed(config.seed, "bn", epoch),
                       channels_last=config.model.channels_last)
        scores = evaluate(model, selection, class_names=train.class_names,
                          precision=config.precision, channels_last=config.model.channels_last)
        row.update(flatten_metrics("val", scores))
        # Macro-F1 selects: accuracy would favour always saying "Neutrophil".
        score = scores["macro_f1"] + 1e-6 * scores["accuracy"]
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = {k: v.detach().clone().cpu()
                          for k, v in unwrap_model(model).state_dict().items()}
            best_selection = dict(scores)
        row["best_epoch"] = best_epoch
        row["best_val_macro_f1"] = float(best_selection["macro_f1"])
        row["loop_seconds"] = time.perf_counter() - epoch_started
        row["train_images"] = int(labels.numel())
        history.append(row)
        last = epoch == config.optim.epochs
        if last:
            # The final record goes out with the last epoch's report: one report less.
            reporting_scores = _score_best(model, best_state, reporting, train.class_names,
                                           config)
            final = final_record(reporting_scores)
        if on_epoch is not None and (epoch % config.report_every == 0 or last):
            checkpoint = None
            if epoch % config.checkpoint_every == 0 or last:
                checkpoint = {
                    "model": {k: v.detach().cpu() for k, v in
                              unwrap_model(model).state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "step": step,
                    "config": config.to_flat(),
                    "history": history,
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "best_state": best_state,
                    "best_selection": best_selection,
                }
            # The final record's val_* are the best epoch's; the epoch's own ride along.
            on_epoch({**row, **final, "epoch_metrics": dict(row)} if last else dict(row),
                     checkpoint)
    if first_epoch > config.optim.epochs:  # resumed from the final checkpoint: score again
        reporting_scores = _score_best(model, best_state, reporting, train.class_names, config)
        final = final_record(reporting_scores)
    return FitResult(
        best_epoch=best_epoch,
        selection=best_selection,
        reporting=reporting_scores,
        history=history,
        best_state=best_state,
        train_images=int(labels.numel()),
        wall_seconds=final["wall_seconds"],
        resumed_from_epoch=first_epoch - 1,
        metrics=final,
    )
