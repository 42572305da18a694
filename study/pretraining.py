"""Pretraining once, shared by every run that starts from it: one orchestration for every
source of starting weights, used by ``study run`` and by ``wbc train``.

Three sources (``wbc.strategies.Strategy.weights_source``):

- ``cam16``: the report's step A, a supervised CAM16 tumour/normal classifier from random init
  (``pretrain``, ``pretrain_aug``);
- ``prcc_ssl``: SimCLR on the unlabelled pRCC images (``ssl``; ``wbc.training.ssl``), a Ray Train
  run that reports its loss and a k-NN probe on CAM16 every epoch;
- ``prcc_ssl+cam16``: the CAM16 classifier trained from the ``prcc_ssl`` backbone
  (``ssl_pretrain``);
- ``wbc_ssl``: SimCLR on WBC_100's training images, labels unused (``ssl_wbc``), probed by a
  k-NN of its features from those labelled images to the selection split (the labels score the
  backbone; they never train it).

Each is keyed by the decode fingerprint of its data, every setting of its run and the key of the
weights it started from, and kept in a ``wbc.training.pretrain.WeightsStore`` (a study's results
folder, shared storage on a cluster; the cache for ``wbc train``), which trains it only when the key
is not stored yet. Where the training runs is an executor's business: ``TaskExecutor`` (a Ray task
on one node for the CAM16 runs, a one-worker Ray Train run for SimCLR; a study's inline trials)
or ``TrainExecutor`` (Ray Train runs, DDP over several workers).

A run's reports reach the driver as they are made (``study.train.reports.progress_lines``: a Ray
queue the task or the Ray Train controller writes to, drained here), so pretraining says a line
per report instead of nothing for minutes, as ``wbc train`` does for its own run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import ray

from study.train.reports import Reports, epoch_line, progress_lines, put_brief
from study.train.trainer import RunSpec, ray_ssl_run, ray_train_run
from wbc.config import PretrainSettings, SSLConfig, TrainConfig
from wbc.datasets import Sample, Tree, histology_origin
from wbc.datasets.cache import decode_samples
from wbc.strategies import get_strategy
from wbc.training.inputs import SplitPlan, plan_cam16, plan_wbc
from wbc.training.loop import best_weights
from wbc.training.pretrain import (
    WeightsStore,
    kind_of,
    pretrain_config,
    pretrain_key,
    ssl_key,
)

__all__ = [
    "SOURCES",
    "Executor",
    "Pretrained",
    "TaskExecutor",
    "TrainExecutor",
    "ensure_sources",
    "largest_node_cpus",
    "sources_of",
]

# In the order they must be made: the SSL backbone before the CAM16 run that starts from it.
SOURCES = ("prcc_ssl", "wbc_ssl", "cam16", "prcc_ssl+cam16")
# A CAM16 classifier below this val accuracy (balanced classes: chance is 0.5) learnt nothing.
LEARNED = 0.6

State = dict[str, Any]
@dataclass(frozen=True)
class Pretrained:
    weights: Path
    key: str
    record: dict[str, Any]  # accuracies / probe figures, epochs, seconds: for study.json
    loop_seconds_this_session: float  # inside the training loop; 0 when reused
    cpus: float = 0.0  # what the pretraining held meanwhile; 0 when reused


class Executor(Protocol):
    """Where pretraining runs train."""

    @property
    def cpus(self) -> float:
        """CPUs a run holds."""
        ...

    def supervised(self, plan: SplitPlan, config: TrainConfig, init: Path | None, name: str,
                   *, on_report: Reports | None = None) -> tuple[State, dict[str, Any]]:
        """Train a classifier: (the best epoch's state dict, its final record with
        ``loop_seconds``); ``on_report`` gets each report's ``brief`` as it is made."""
        ...

    def ssl(self, samples: list[Sample], config: SSLConfig, probe_plan: SplitPlan | None,
            min_epoch_images: int, name: str, *, on_report: Reports | None = None
            ) -> tuple[State, dict[str, Any]]:
        """SimCLR: (the backbone's state dict, its final record with ``loop_seconds``);
        ``on_report`` as for ``supervised``."""
        ...


def largest_node_cpus(cap: int = 8, *, gpu: bool = False) -> int:
    """The CPUs of the largest alive node (of those with a GPU when ``gpu``), up to ``cap``:
    a one-off run on one node can use no more; the cluster's sum would never be scheduled on
    a cluster of several nodes."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    cpus = [r.get("CPU", 0) for r in nodes if not gpu or r.get("GPU", 0) >= 1]
    return max(1, int(min(max(cpus, default=1), cap)))


def _supervised_task(plan: SplitPlan, flat: dict[str, Any], init: str | None, threads: int,
                     use_gpu: bool, cache_dir: str | None, reports: Any = None
                     ) -> tuple[State, dict[str, Any]]:
    """A pretraining run in a Ray task: best weights and the final record; each report's
    ``brief`` put on the ``reports`` queue, if any."""
    from wbc.training.hardware import require_cuda
    from wbc.training.run import train_run

    device = require_cuda("CAM16 pretraining") if use_gpu else "cpu"
    result = train_run(plan, TrainConfig.from_flat(flat), device=device,
                       weights=Path(init) if init else None, cache_dir=cache_dir,
                       threads=threads,
                       on_epoch=None if reports is None else lambda m, _: put_brief(reports, m))
    loop = float(sum(row.get("loop_seconds", 0.0) for row in result.fit.history))
    return result.fit.best_state, {**result.metrics, "loop_seconds": loop}


@dataclass(frozen=True)
class TaskExecutor:
    """CAM16 runs as one Ray task holding ``cpus`` CPUs (and a GPU when ``use_gpu``); SimCLR
    as a one-worker Ray Train run of the same size, stored under ``storage``."""

    cpus: float
    use_gpu: bool
    storage: str
    cache_dir: str | None = None

    def supervised(self, plan: SplitPlan, config: TrainConfig, init: Path | None, name: str,
                   *, on_report: Reports | None = None) -> tuple[State, dict[str, Any]]:
        task = ray.remote(_supervised_task).options(num_cpus=self.cpus,
                                                    num_gpus=1 if self.use_gpu else 0)
        with progress_lines(on_report) as queue:
            return ray.get(task.remote(plan, config.to_flat(), str(init) if init else None,
                                       int(self.cpus), self.use_gpu, self.cache_dir, queue))

    def ssl(self, samples: list[Sample], config: SSLConfig, probe_plan: SplitPlan | None,
            min_epoch_images: int, name: str, *, on_report: Reports | None = None
            ) -> tuple[State, dict[str, Any]]:
        spec = RunSpec(storage_path=self.storage, name=name, workers=1, use_gpu=self.use_gpu,
                       cpus_per_worker=self.cpus, cache_dir=self.cache_dir)
        return TrainExecutor(spec).ssl(samples, config, probe_plan, min_epoch_images, name,
                                       on_report=on_report)


@dataclass(frozen=True)
class TrainExecutor:
    """Every pretraining run as a Ray Train run with ``spec``'s workers and resources."""

    spec: RunSpec

    @property
    def cpus(self) -> float:
        return self.spec.cpus_per_worker * self.spec.workers

    def supervised(self, plan: SplitPlan, config: TrainConfig, init: Path | None, name: str,
                   *, on_report: Reports | None = None) -> tuple[State, dict[str, Any]]:
        outcome = ray_train_run(plan, config, self.spec.named(name), pretrained=init,
                                on_report=on_report)
        state = outcome.load_checkpoint()
        loop = float(sum(row.get("loop_seconds", 0.0) for row in state["history"]))
        return best_weights(state), {**outcome.metrics, "loop_seconds": loop}

    def ssl(self, samples: list[Sample], config: SSLConfig, probe_plan: SplitPlan | None,
            min_epoch_images: int, name: str, *, on_report: Reports | None = None
            ) -> tuple[State, dict[str, Any]]:
        state, metrics, history = ray_ssl_run(
            samples, config, self.spec.named(name), probe_plan=probe_plan,
            min_epoch_images=min_epoch_images, on_report=on_report)
        loop = float(sum(row.get("epoch_seconds", 0.0) for row in history))
        first = history[0].get("ssl_loss", float("nan")) if history else float("nan")
        return state, {**metrics, "loop_seconds": loop, "first_ssl_loss": first}


def sources_of(strategies: Iterable[str]) -> list[str]:
    """The weights sources the strategies start from, in the order they are made."""
    wanted = {get_strategy(s).weights_source for s in strategies}
    return [s for s in SOURCES if s in wanted]


def _fingerprint(samples: list[Sample], image_size: int, name: str,
                 cache_dir: str | None) -> str:
    return decode_samples(samples, image_size, name=name, cache_dir=cache_dir).fingerprint


def _ssl_data(tree: Tree, source: str, settings: PretrainSettings, base: TrainConfig
              ) -> tuple[list[Sample], SplitPlan | None, str]:
    """What a self-supervised source trains on, the plan of its probe, and its label.
    ``prcc_ssl``: pRCC (and WBC_100's training images with ``ssl_include_wbc``), probed on
    CAM16; ``wbc_ssl``: WBC_100's training images, probed from them to the selection split."""
    size = settings.ssl.image_size
    if source == "wbc_ssl":
        samples = list(tree.wbc.subset(100))
        if not samples:
            raise ValueError(f"{tree.root}: WBC_100/train holds no images to pretrain on")
        wbc = plan_wbc(tree, base.replace(subset="WBC_100", strategy="scratch",
                                          image_size=size))
        return samples, wbc, "WBC self-supervised pretraining"
    if not tree.prcc:
        raise ValueError(f"{tree.root / 'pRCC'} holds no images: self-supervised pretraining "
                         "needs them")
    samples = [*tree.prcc, *(tree.wbc.subset(100) if settings.ssl_include_wbc else ())]
    probe = (plan_cam16(tree, image_size=size) if tree.cam16.train and tree.cam16.val
             else None)
    return samples, probe, "pRCC self-supervised pretraining"


def _ensure_ssl(source: str, tree: Tree, base: TrainConfig, settings: PretrainSettings,
                store: WeightsStore, executor: Executor, *, cache_dir: str | None,
                say: Callable[[str], None], progress: bool = True) -> Pretrained:
    config = settings.ssl
    samples, probe_plan, label = _ssl_data(tree, source, settings, base)
    folder = "pRCC" if source == "prcc_ssl" else "WBC"  # the cache folder's label
    key = ssl_key(_fingerprint(samples, config.image_size, folder, cache_dir), config,
                  min_epoch_images=settings.ssl_min_epoch_images)
    if probe_plan is not None:  # decoded here, once, rather than in the run
        _fingerprint(list(probe_plan.decode_set or (*probe_plan.train, *probe_plan.val,
                                                     *probe_plan.test)),
                     config.image_size, probe_plan.dataset, cache_dir)
    probe_name = probe_plan.dataset if probe_plan is not None else "no"

    def make() -> tuple[State, dict[str, Any]]:
        say(f"{label} {key}: {len(samples)} images, {config.epochs} epochs")
        started = time.perf_counter()
        on_report = (lambda figures: say(epoch_line(label, config.epochs, figures))
                     ) if progress else None
        state, metrics = executor.ssl(samples, config, probe_plan,
                                      settings.ssl_min_epoch_images,
                                      f"pretrain-{source.replace('_', '-')}-{key}",
                                      on_report=on_report)
        metrics = {**metrics, "source": source, "probe": probe_name,
                   "prcc_images": len(tree.prcc) if source == "prcc_ssl" else 0,
                   "ssl_images": len(samples),
                   "pretrain_seconds": time.perf_counter() - started}
        say(f"{label} {key}: loss {metrics.get('first_ssl_loss', float('nan')):.3f} -> "
            f"{metrics.get('ssl_loss', float('nan')):.3f}; {probe_name} probe: k-NN "
            f"{metrics.get('knn_accuracy', float('nan')):.3f} (random init "
            f"{metrics.get('knn_accuracy_random', float('nan')):.3f}), linear "
            f"{metrics.get('linear_probe_accuracy', float('nan')):.3f} (random init "
            f"{metrics.get('linear_probe_accuracy_random', float('nan')):.3f}) in "
            f"{metrics['pretrain_seconds']:.0f} s")
        return state, metrics

    return _ensured(store, source, key, make, executor, say,
                    f"{label} {key}: reused (k-NN probe accuracy {{:.3f}})", "knn_accuracy")


def _ensure_cam16(tree: Tree, base: TrainConfig, settings: PretrainSettings,
                  store: WeightsStore, executor: Executor, *, cache_dir: str | None,
                  say: Callable[[str], None], init: Pretrained | None,
                  progress: bool = True) -> Pretrained:
    """Supervised CAM16 weights, from random init or from ``init`` (the SSL backbone)."""
    config = pretrain_config(base, epochs=settings.cam16_epochs, lr=settings.cam16_lr,
                             from_ssl=init is not None)
    plan = plan_cam16(tree, image_size=base.data.image_size)
    fingerprint = _fingerprint([*plan.train, *plan.val, *plan.test], plan.image_size, "CAM16",
                               cache_dir)
    key = pretrain_key(fingerprint, config, init=init.key if init else None)
    label = "CAM16 pretraining" + (" from the pRCC SSL backbone" if init else "")

    def make() -> tuple[State, dict[str, Any]]:
        tissue = histology_origin(tree, "CAM16").get("kind", "")
        say(f"{label} {key}: {len(plan.train)} {tissue} images from {tree.cam16_dir}, "
            f"{settings.cam16_epochs} epochs")
        started = time.perf_counter()
        on_report = (lambda figures: say(epoch_line(label, settings.cam16_epochs, figures))
                     ) if progress else None
        state, metrics = executor.supervised(plan, config, init.weights if init else None,
                                             f"pretrain-cam16-{key}", on_report=on_report)
        metrics = {**metrics, "pretrain_seconds": time.perf_counter() - started,
                   "epochs": settings.cam16_epochs, "train_images": len(plan.train),
                   "cpus": executor.cpus, "init_key": init.key if init else None}
        say(f"{label} {key}: val accuracy {metrics.get('val_accuracy', 0):.3f}, "
            f"test accuracy {metrics.get('test_accuracy', 0):.3f} "
            f"in {metrics['pretrain_seconds']:.0f} s")
        if metrics.get("val_accuracy", 1.0) < LEARNED:
            say(f"warning: {label} did not learn (val accuracy {metrics['val_accuracy']:.3f}, "
                f"chance 0.5 on {len(plan.val)} images): the pretrained strategies start from "
                "weights no better than random. Give CAM16 more images or epochs "
                "(pretrain_epochs; a synthetic tree's synthetic_tissue_scale).")
        return state, metrics

    return _ensured(store, "cam16", key, make, executor, say,
                    f"{label} {key}: reused (val accuracy {{:.3f}})", "val_accuracy")


def _ensured(store: WeightsStore, kind: str, key: str,
             make: Callable[[], tuple[State, dict[str, Any]]], executor: Executor,
             say: Callable[[str], None], reused: str, score: str) -> Pretrained:
    """The weights of ``key`` from the store, made by ``make`` when absent; the loop time and
    CPUs count only when this call made them. ``reused`` is said, with the ``score`` metric,
    when they were already there."""
    result, made = store.ensure(kind_of(kind), key, make)
    if key in store.rebuilt:
        say(f"warning: the stored {kind} weights {key} were not used and were made again: "
            f"{store.rebuilt[key]}")
    if not made:
        say(reused.format(result.metrics.get(score, float("nan"))))
    return Pretrained(result.weights, key, result.metrics,
                      float(result.metrics.get("loop_seconds", 0.0)) if made else 0.0,
                      executor.cpus if made else 0.0)


def ensure_sources(sources: Iterable[str], tree: Tree, base: TrainConfig,
                   settings: PretrainSettings, store: WeightsStore, executor: Executor, *,
                   cache_dir: str | None = None, say: Callable[[str], None] = print,
                   progress: bool = True) -> dict[str, Pretrained]:
    """Every source in ``sources``: found in ``store`` or trained now by ``executor``, the
    self-supervised backbone before the CAM16 run that starts from it. ``base`` is the WBC
    runs' configuration (resolution, precision, optimiser) that CAM16 runs follow. ``say``
    gets what is made or reused and, with ``progress``, a line per report of each run."""
    wanted = set(sources)
    unknown = wanted - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown weights source(s) {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(SOURCES)}")
    if "prcc_ssl+cam16" in wanted:
        wanted.add("prcc_ssl")
    if any(s.endswith("_ssl") for s in wanted) and \
            settings.ssl.image_size != base.data.image_size:  # both follow one resolution
        raise ValueError(f"ssl image_size {settings.ssl.image_size} differs from the WBC runs' "
                         f"{base.data.image_size}")
    done: dict[str, Pretrained] = {}
    for source in (s for s in SOURCES if s in wanted):
        if source.endswith("_ssl"):
            done[source] = _ensure_ssl(source, tree, base, settings, store, executor,
                                       cache_dir=cache_dir, say=say, progress=progress)
        else:
            init = done["prcc_ssl"] if source == "prcc_ssl+cam16" else None
            done[source] = _ensure_cam16(tree, base, settings, store, executor,
                                         cache_dir=cache_dir, say=say, init=init,
                                         progress=progress)
    return done
