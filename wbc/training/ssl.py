"""Self-supervised pretraining of the ResNet-18 backbone on unlabelled images (SimCLR).

The report pretrains on CAM16 labels; pRCC's 1,419 images carry none. SimCLR (Chen et al. 2020,
"A Simple Framework for Contrastive Learning of Visual Representations") learns from them
alone: two random views of each image are pulled together and pushed away from the views of the
other images in the batch (the NT-Xent loss), through a small projection head that is thrown
away afterwards. docs/ssl.md says why SimCLR rather than BYOL or MAE, and what the views are.

Like ``wbc.training.loop``, the images stay on the training device as uint8 ``(N, S, S, 3)``; views
are made there in a few batched ops; the loss accumulates as a tensor and reaches the host once per
epoch. ``ssl_pretrain`` does no file I/O and knows nothing of Ray: each epoch's row, and when
due a complete checkpoint, go to an ``on_epoch`` callback.

The quality signal is a probe of the frozen backbone on a labelled set (CAM16 train -> val):
k-NN accuracy after every epoch, a linear probe at the end, and both for the randomly
initialised backbone the run starts from, so that the gain is visible.

Distributed: with ``torch.distributed`` initialised, the network is wrapped in
``DistributedDataParallel``; every rank draws the same epoch order and takes every
``world``-th index of it. The NT-Xent loss is per rank: an image's negatives are the other
views on its own rank (``2 * batch_size - 2``), not the global batch; gradients are averaged
by DDP as usual. BatchNorm statistics are per rank too.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import ResNet

from wbc.augment import color_jitter, flip_rot90, normalize, random_resized_crop, to_float_nchw
from wbc.config import SSLConfig
from wbc.training.distributed import autocast, world
from wbc.training.loop import IMAGENET_MEAN, IMAGENET_STD
from wbc.training.resnet import HEAD, build_resnet18, unwrap_model
from wbc.training.schedule import Schedule, build_optimizer
from wbc.training.seeding import derive_seed

__all__ = [
    "FEATURE_DIM",
    "ProjectionHead",
    "SSLConfig",
    "SSLResult",
    "features",
    "initial_encoder",
    "knn_accuracy",
    "linear_probe_accuracy",
    "nt_xent",
    "ssl_pretrain",
    "two_views",
]

FEATURE_DIM = 512  # ResNet-18's pooled features
# The saved state is a complete torchvision ResNet-18 state dict: a head of this width, all
# zeros (no classifier was trained), stands in for ``fc``; every consumer replaces it.
SAVED_HEAD_CLASSES = 2

Precision = Literal["auto", "fp32", "bf16"]
EpochCallback = Callable[[dict[str, Any], dict[str, Any] | None], None]


@dataclass
class SSLResult:
    # ResNet-18 state dict on the CPU, for wbc.training.resnet.load_backbone
    backbone: dict[str, Tensor]
    history: list[dict[str, Any]]  # one row per epoch, as handed to on_epoch
    metrics: dict[str, Any]  # final ssl_loss, probe accuracies, their random-init baselines
    wall_seconds: float
    resumed_from_epoch: int = 0
    config: dict[str, Any] = field(default_factory=dict)


class ProjectionHead(nn.Sequential):
    """SimCLR's g(.): Linear - BatchNorm - ReLU - Linear, used in training and then dropped."""

    def __init__(self, in_dim: int = FEATURE_DIM, out_dim: int = 128) -> None:
        super().__init__(nn.Linear(in_dim, in_dim, bias=False), nn.BatchNorm1d(in_dim),
                         nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))


class _SimCLRNet(nn.Module):
    """The encoder (a torchvision ResNet-18 whose ``fc`` is the identity) and the head."""

    def __init__(self, projection_dim: int) -> None:
        super().__init__()
        self.encoder = build_resnet18(SAVED_HEAD_CLASSES)
        # No head while pretraining: DDP would otherwise find fc's parameters without gradients.
        setattr(self.encoder, HEAD, nn.Identity())
        self.projector = ProjectionHead(FEATURE_DIM, projection_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.projector(self.encoder(x))


def _initial_net(config: SSLConfig) -> _SimCLRNet:
    # From the config's seed, not the global RNG: a run is a function of its data and config.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "ssl", "init"))
        return _SimCLRNet(config.projection_dim)


def initial_encoder(config: SSLConfig) -> ResNet:
    """The randomly initialised ResNet-18 that ``ssl_pretrain(..., config)`` starts from.

    Its ``fc`` is the identity, so calling it gives the 512-d pooled features; it is the
    random-init baseline of the ``*_random`` probe scores.
    """
    return _initial_net(config).encoder


def _as_model_input(x: Tensor, channels_last: bool) -> Tensor:
    x = normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def _views(images_u8: Tensor, *, generator: torch.Generator, config: SSLConfig) -> Tensor:
    """Both views of every image as one ``(2N, 3, S, S)`` batch: view 1 rows, then view 2."""
    x = to_float_nchw(images_u8)
    # One warp, one flip and one jitter over both views: half the kernel launches of two calls.
    x = random_resized_crop(torch.cat([x, x]), generator=generator,
                            scale=(config.crop_scale_min, 1.0))
    x = flip_rot90(x, generator=generator)
    if config.jitter > 0:
        j = config.jitter
        x = color_jitter(x, generator=generator, brightness=j, contrast=j, saturation=j,
                         hue=j / 4)
    return _as_model_input(x, config.channels_last)


def two_views(images_u8: Tensor, *, generator: torch.Generator, config: SSLConfig
              ) -> tuple[Tensor, Tensor]:
    """Two independent random views of uint8 ``(N, S, S, 3)`` images, normalised float NCHW.

    Each view is a random crop of at least ``config.crop_scale_min`` of the area turned by any
    angle (``random_resized_crop``), one of the 8 flips and quarter turns (``flip_rot90``) and
    a per-image colour jitter of strength ``config.jitter``, then the ImageNet normalisation of
    ``wbc.training.loop``. Randomness comes from ``generator`` only; images stay on their device.
    """
    views = _views(images_u8, generator=generator, config=config)
    first, second = views.chunk(2)
    return first, second


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's normalised-temperature cross-entropy of the pairs ``(z1[i], z2[i])``.

    Every one of the 2N projections is an anchor whose positive is its pair and whose 2N - 2
    negatives are all the other projections; cosine similarities over ``temperature`` are the
    logits. Returns the mean over the 2N anchors, as float32 whatever the input dtype.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"nt_xent: z1 and z2 must both be (N, D), got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}")
    n = z1.shape[0]
    if n < 2:
        raise ValueError(f"nt_xent: needs at least 2 pairs (a negative), got {n}")
    if temperature <= 0:
        raise ValueError(f"nt_xent: temperature must be > 0, got {temperature}")
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    # An anchor is never its own negative.
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, -math.inf)
    index = torch.arange(n, device=z.device)
    targets = torch.cat([index + n, index])
    return F.cross_entropy(logits, targets)


def _pooled(net: nn.Module, x: Tensor) -> Tensor:
    """torchvision ResNet's forward without ``fc``: the 512-d pooled features."""
    if not isinstance(net, ResNet):
        raise TypeError(f"expected a torchvision ResNet, got {type(net).__name__}")
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return torch.flatten(net.avgpool(x), 1)


@torch.no_grad()
def features(model: nn.Module, images_u8: Tensor, *, batch_size: int = 256,
             channels_last: bool = True, precision: Precision = "fp32") -> Tensor:
    """Pooled backbone features ``(N, 512)`` float32 of uint8 ``(N, S, S, 3)`` images.

    ``model`` is a torchvision ResNet (any head, maybe DDP-wrapped); it runs in eval mode (its
    training mode is restored after) with ``wbc.training.loop``'s normalisation, on the images'
    device.
    """
    plain = unwrap_model(model)
    was_training = plain.training
    plain.eval()
    device = images_u8.device
    out = [images_u8.new_zeros((0, FEATURE_DIM), dtype=torch.float32)]
    try:
        for start in range(0, images_u8.shape[0], batch_size):
            x = _as_model_input(to_float_nchw(images_u8[start:start + batch_size]), channels_last)
            with autocast(device, precision):
                out.append(_pooled(plain, x).float())
    finally:
        plain.train(was_training)
    return torch.cat(out)


def _check_probe_inputs(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor,
                        test_labels: Tensor, name: str) -> int:
    if train_feats.dim() != 2 or test_feats.dim() != 2 or train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"{name}: features must be (N, D) with the same D, got "
                         f"{tuple(train_feats.shape)} and {tuple(test_feats.shape)}")
    if train_labels.shape != train_feats.shape[:1] or test_labels.shape != test_feats.shape[:1]:
        raise ValueError(f"{name}: one label per feature row expected")
    if train_feats.shape[0] == 0 or test_feats.shape[0] == 0:
        raise ValueError(f"{name}: needs at least one training and one test row")
    return int(max(int(train_labels.max()), int(test_labels.max()))) + 1


def knn_accuracy(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor,
                 test_labels: Tensor, *, k: int = 20, temperature: float = 0.07,
                 chunk: int = 1024) -> float:
    """Weighted k-NN accuracy on cosine similarity (Wu et al. 2018, "Unsupervised Feature
    Learning via Non-Parametric Instance Discrimination"; the probe of DINO and solo-learn).

    Each test row takes its ``k`` most similar training rows; each votes for its label with
    weight ``exp(similarity / temperature)``.
    """
    classes = _check_probe_inputs(train_feats, train_labels, test_feats, test_labels,
                                  "knn_accuracy")
    bank = F.normalize(train_feats.float(), dim=1)
    queries = F.normalize(test_feats.float(), dim=1)
    train_labels = train_labels.to(bank.device)
    k = min(k, bank.shape[0])
    correct = torch.zeros((), dtype=torch.int64, device=queries.device)
    for start in range(0, queries.shape[0], chunk):
        sim, index = (queries[start:start + chunk] @ bank.T).topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], classes, device=sim.device)
        votes.scatter_add_(1, train_labels[index], (sim / temperature).exp())
        truth = test_labels[start:start + chunk].to(votes.device)
        correct += (votes.argmax(1) == truth).sum()
    return int(correct.item()) / test_feats.shape[0]


def linear_probe_accuracy(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor,
                          test_labels: Tensor, *, seed: int = 0, steps: int = 100,
                          l2: float = 1e-2) -> float:
    """Accuracy of a multinomial logistic regression trained on frozen, standardised features.

    Features are standardised with the training rows' mean and standard deviation; the
    classifier minimises mean cross-entropy plus ``l2 * ||W||^2`` by full-batch L-BFGS (strong
    Wolfe line search, at most ``steps`` iterations) from small random weights drawn from
    ``seed``. The problem is convex, so the result hardly depends on the seed; on a CPU it is
    deterministic.
    """
    classes = _check_probe_inputs(train_feats, train_labels, test_feats, test_labels,
                                  "linear_probe_accuracy")
    x_train = train_feats.detach().float()
    mean = x_train.mean(0)
    std = x_train.std(0, unbiased=False).clamp_min(1e-6)
    x_train = (x_train - mean) / std
    x_test = (test_feats.detach().float().to(x_train.device) - mean) / std
    y_train = train_labels.to(x_train.device)
    generator = torch.Generator().manual_seed(seed)
    weight = (0.01 * torch.randn(x_train.shape[1], classes, generator=generator)
              ).to(x_train.device).requires_grad_()
    bias = torch.zeros(classes, device=x_train.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x_train @ weight + bias, y_train) + l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        predicted = (x_test @ weight + bias).argmax(1)
        correct = (predicted == test_labels.to(predicted.device)).sum()
    return int(correct.item()) / test_feats.shape[0]


Probe = tuple[Tensor, Tensor, Tensor, Tensor]
# Settings that may differ between a checkpoint and the run that resumes it.
_RESUMABLE = frozenset({"checkpoint_every", "knn_k", "probe_steps", "precision"})


def _check_images(images_u8: Tensor, config: SSLConfig) -> None:
    s = config.image_size
    if images_u8.dim() != 4 or images_u8.shape[-1] != 3 or images_u8.dtype != torch.uint8:
        raise ValueError(f"ssl_pretrain: expected uint8 images (N, {s}, {s}, 3) as the decode "
                         f"cache stores them, got {images_u8.dtype} {tuple(images_u8.shape)}")
    if tuple(images_u8.shape[1:3]) != (s, s):
        raise ValueError(f"ssl_pretrain: images are {images_u8.shape[1]}x{images_u8.shape[2]} "
                         f"px but image_size={s}; decode them at {s} px or change image_size")


def _check_probe(probe: Probe | None, device: torch.device) -> Probe | None:
    if probe is None:
        return None
    if len(probe) != 4:
        raise ValueError("probe must be (train_images_u8, train_labels, test_images_u8, "
                         f"test_labels), got {len(probe)} items")
    train_images, train_labels, test_images, test_labels = probe
    for name, images, labels in (("train", train_images, train_labels),
                                 ("test", test_images, test_labels)):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"probe {name} images must be uint8 (N, S, S, 3), got "
                             f"{images.dtype} {tuple(images.shape)}")
        if labels.shape != images.shape[:1] or images.shape[0] == 0:
            raise ValueError(f"probe {name}: {images.shape[0]} images and labels of shape "
                             f"{tuple(labels.shape)}; expected one label per image, at least one")
    return (train_images.to(device), train_labels.to(device, torch.int64),
            test_images.to(device), test_labels.to(device, torch.int64))


def _probe_features(encoder: nn.Module, probe: Probe, config: SSLConfig) -> tuple[Tensor, Tensor]:
    kwargs: dict[str, Any] = {"channels_last": config.channels_last,
                              "precision": config.precision}
    return features(encoder, probe[0], **kwargs), features(encoder, probe[2], **kwargs)


def _probe_scores(encoder: nn.Module, probe: Probe, config: SSLConfig, *, linear: bool
                  ) -> dict[str, float]:
    train_feats, test_feats = _probe_features(encoder, probe, config)
    scores = {"knn_accuracy": knn_accuracy(train_feats, probe[1], test_feats, probe[3],
                                           k=config.knn_k)}
    if linear:
        scores["linear_probe_accuracy"] = linear_probe_accuracy(
            train_feats, probe[1], test_feats, probe[3],
            seed=derive_seed(config.seed, "ssl", "probe"), steps=config.probe_steps)
    return scores


def _snapshot(obj: Any) -> Any:
    """A CPU copy that later training cannot change: ``.cpu()`` of a CPU tensor is itself."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_snapshot(v) for v in obj)
    return copy.deepcopy(obj)


def _saved_backbone(encoder: nn.Module) -> dict[str, Tensor]:
    state = {k: v.detach().to("cpu", copy=True) for k, v in encoder.state_dict().items()}
    state[f"{HEAD}.weight"] = torch.zeros(SAVED_HEAD_CLASSES, FEATURE_DIM)
    state[f"{HEAD}.bias"] = torch.zeros(SAVED_HEAD_CLASSES)
    return state


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, images_u8: Tensor, *,
                 config: SSLConfig, epoch: int, step: int, schedule: Schedule
                 ) -> tuple[dict[str, Any], int]:
    rank, workers = world()
    device = images_u8.device
    n = images_u8.shape[0]
    batch = config.batch_size
    model.train()
    order_gen = torch.Generator().manual_seed(derive_seed(config.seed, "ssl", "order", epoch))
    # Every rank the same permutation, cut to a multiple of the world, then a stride per rank.
    order = torch.randperm(n, generator=order_gen)[: (n // workers) * workers][rank::workers]
    order = order.to(device)
    # On the data's device: host random numbers would be copied to a GPU every step, and a
    # copy from pageable memory waits for the GPU's queue to drain.
    generator = torch.Generator(device=device).manual_seed(
        derive_seed(config.seed, "ssl", "views", epoch, rank))
    loss_sum = torch.zeros((), device=device)
    lr = config.lr
    started = time.perf_counter()
    for i in range(schedule.steps_per_epoch):  # the last incomplete batch is dropped
        index = order[i * batch:(i + 1) * batch]
        views = _views(images_u8[index], generator=generator, config=config)
        lr = schedule.apply(optimizer, step)
        # Both views in one forward: BatchNorm sees the 2B views together, as in SimCLR.
        with autocast(device, config.precision):
            z = model(views)
        loss = nt_xent(z[:batch], z[batch:], config.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
        step += 1
    if workers > 1:
        dist.all_reduce(loss_sum)
    # The epoch's one host sync.
    mean_loss = float(loss_sum.item()) / (schedule.steps_per_epoch * workers)
    seconds = time.perf_counter() - started
    images = schedule.steps_per_epoch * batch * workers
    return {"epoch": epoch, "ssl_loss": mean_loss, "scheduled_lr": lr, "steps": step,
            "epoch_seconds": seconds,
            "images_per_second": images / seconds if seconds > 0 else 0.0}, step


class _SSLState:
    """A SimCLR run's network, optimiser, position, history and random-init probe baselines,
    with ``state_dict``/``load_state_dict`` for complete checkpoints."""

    def __init__(self, net: _SimCLRNet, optimizer: torch.optim.Optimizer, config: SSLConfig
                 ) -> None:
        self.net, self.optimizer, self.config = net, optimizer, config
        self.epoch, self.step = 0, 0
        self.history: list[dict[str, Any]] = []
        self.baselines: dict[str, float] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"model": _saved_backbone(self.net.encoder),
                "projector": _snapshot(self.net.projector.state_dict()),
                "optimizer": _snapshot(self.optimizer.state_dict()),
                "epoch": self.epoch, "step": self.step, "config": self.config.to_flat(),
                "history": _snapshot(self.history), "baselines": dict(self.baselines)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = dict(state.get("config", {}))
        changed = sorted(k for k, v in self.config.to_flat().items()
                         if k in saved and saved[k] != v and k not in _RESUMABLE)
        if changed:
            differences = ", ".join(f"{k}={saved[k]!r}, now {getattr(self.config, k)!r}"
                                    for k in changed)
            raise ValueError(f"resume: the checkpoint was made with other settings "
                             f"({differences}); resume with its config")
        self.net.encoder.load_state_dict(
            {k: v for k, v in state["model"].items() if not k.startswith(HEAD + ".")})
        self.net.projector.load_state_dict(state["projector"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        self.baselines = dict(state["baselines"])


def _steps_per_epoch(n: int, config: SSLConfig) -> int:
    _, workers = world()
    steps = (n // workers) // config.batch_size
    if steps < 1:
        raise ValueError(f"batch_size={config.batch_size} is more than the {n // workers} images "
                         f"per rank ({n} images, {workers} rank(s)); lower batch_size")
    return steps


def ssl_pretrain(images_u8: Tensor, config: SSLConfig, *, probe: Probe | None = None,
                 on_epoch: EpochCallback | None = None, resume: dict[str, Any] | None = None
                 ) -> SSLResult:
    """Pretrain a ResNet-18 backbone with SimCLR on unlabelled uint8 ``(N, S, S, 3)`` images.

    The images stay on their device (pass them on the GPU to train there). An epoch is a fresh
    permutation in batches of ``config.batch_size`` per rank, the incomplete last batch
    dropped; AdamW with linear warmup and a cosine schedule per step (``wbc.training.schedule``, as
    the supervised runs). The network's initial weights come from ``config.seed`` (the global RNG
    is not used), so a run is a function of the images and the config.

    ``probe = (train_images_u8, train_labels, test_images_u8, test_labels)``, e.g. CAM16
    train and val: k-NN accuracy of the frozen backbone after every epoch, a linear probe at
    the end, and both once before training (``*_random``: the random-init baseline).

    ``on_epoch(row, checkpoint)`` gets every epoch's row (``epoch``, ``ssl_loss``,
    ``scheduled_lr``, ``steps``, ``epoch_seconds``, ``images_per_second`` (source images, two
    views each, all ranks), ``knn_accuracy`` and ``probe_seconds`` with a probe; the last row
    also the final metrics), and a complete checkpoint every ``checkpoint_every`` epochs and
    after the last (else None): plain tensors and data that ``torch.load(weights_only=True)``
    reads, and that ``wbc.training.resnet.read_state_dict`` reads as the backbone (key ``"model"``).
    Under DDP every rank calls it; save on rank 0. ``resume`` is such a checkpoint: training
    continues at the next epoch and ends as the uninterrupted run would (bit for bit on a CPU).
    """
    started = time.perf_counter()
    _check_images(images_u8, config)
    device = images_u8.device
    n = images_u8.shape[0]
    schedule = Schedule.for_run(config.optim(), steps_per_epoch=_steps_per_epoch(n, config))
    probe = _check_probe(probe, device)
    net = _initial_net(config)
    net.to(device)
    if config.channels_last:
        net.to(memory_format=torch.channels_last)
    state = _SSLState(net, build_optimizer(net, config.optim()), config)
    if resume is not None:
        state.load_state_dict(resume)
    elif probe is not None:
        scores = _probe_scores(net.encoder, probe, config, linear=True)
        state.baselines = {f"{k}_random": v for k, v in scores.items()}
    model: nn.Module = net
    if world()[1] > 1:
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[device] if device.type == "cuda" else None)

    def final_metrics() -> dict[str, Any]:
        scores = _probe_scores(net.encoder, probe, config, linear=True) if probe else {}
        last = state.history[-1] if state.history else {}
        return {"ssl_loss": last.get("ssl_loss", math.nan), **scores, **state.baselines,
                "epochs": config.epochs, "images": n, "steps": state.step,
                "wall_seconds": time.perf_counter() - started}

    first_epoch, metrics = state.epoch + 1, {}
    for epoch in range(first_epoch, config.epochs + 1):
        row, state.step = _train_epoch(model, state.optimizer, images_u8, config=config,
                                       epoch=epoch, step=state.step, schedule=schedule)
        if probe is not None:
            tick = time.perf_counter()
            row.update(_probe_scores(net.encoder, probe, config, linear=False))
            row["probe_seconds"] = time.perf_counter() - tick
        state.history.append(row)
        state.epoch = epoch
        last = epoch == config.epochs
        if last:
            metrics = final_metrics()
        if on_epoch is not None:
            due = last or (config.checkpoint_every and epoch % config.checkpoint_every == 0)
            on_epoch({**row, **metrics}, state.state_dict() if due else None)
    if not metrics:  # resumed from the final checkpoint: nothing left to train
        metrics = final_metrics()
    return SSLResult(backbone=_saved_backbone(net.encoder), history=state.history,
                     metrics=metrics, wall_seconds=time.perf_counter() - started,
                     resumed_from_epoch=first_epoch - 1, config=config.to_flat())
