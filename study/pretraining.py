"""Pretraining once per study, shared by every cell that needs it.

Three kinds of starting weights, by source (:func:`weights_source` of a strategy):

- ``cam16``: the report's step A, a supervised CAM16 tumour/normal classifier from random init
  (``pretrain``, ``pretrain_aug``);
- ``prcc_ssl``: SimCLR on the unlabelled pRCC images (``ssl``; ``wbc.ssl``), always a Ray Train
  run that reports its loss and a k-NN probe on CAM16 every epoch;
- ``prcc_ssl+cam16``: the CAM16 classifier trained from the ``prcc_ssl`` backbone
  (``ssl_pretrain``).

The weights go into the results folder (``pretrain/<kind>-<key>/``), which is shared storage on
a cluster, so trials on any node load the same file, and a resumed study finds them there. Each
key is the decode fingerprint of the data plus every setting of the run, plus the key of the
weights it started from (``wbc.pretrain.pretrain_key``).

With inline trials the CAM16 runs are one Ray task holding as many CPUs as a few trials (and a
GPU when trials use GPUs); with ``execution = "train"`` they are Ray Train runs like ``wbc
train``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from study.spec import StudySpec
from wbc.cache import decode_samples
from wbc.data import SplitPlan, load_plan, plan_cam16
from wbc.datasets import Tree
from wbc.pretrain import cached_pretrain, pretrain_config, pretrain_key, store_pretrain
from wbc.strategies import get_strategy

__all__ = ["Pretrained", "ensure_pretrained", "weights_source"]


def weights_source(strategy: str) -> str | None:
    """What a strategy's WBC model starts from (``wbc.strategies.Strategy.weights_source``)."""
    return get_strategy(strategy).weights_source


@dataclass(frozen=True)
class Pretrained:
    weights: Path
    key: str
    record: dict[str, Any]  # accuracies / probe figures, epochs, seconds: for study.json
    loop_seconds_this_session: float  # inside the training loop; 0 when reused
    cpus: float = 1.0  # what the pretraining held meanwhile


def _train_cam16(plan: SplitPlan, flat: dict[str, Any], threads: int, use_gpu: bool,
                 cache_dir: str | None, init: str | None = None
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pretraining fit, in a Ray task: best weights and the final record."""
    import torch

    from wbc.config import TrainConfig
    from wbc.pretrain import initial_model
    from wbc.seeding import seed_everything
    from wbc.train import fit

    config = TrainConfig.from_flat(flat)
    torch.set_num_threads(threads)
    seed_everything(config.seed)
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    data = load_plan(plan, cache_dir=cache_dir).to(device)
    model = initial_model(config, num_classes=len(plan.classes),
                          pretrained=Path(init) if init else None).to(device)
    result = fit(model, config, data.train, data.selection, data.reporting)
    loop = float(sum(row.get("loop_seconds", 0.0) for row in result.history))
    return result.best_state, {**result.metrics, "loop_seconds": loop}


def ensure_pretrained(tree: Tree, spec: StudySpec, results: Path, *,
                      cache_dir: str | None = None,
                      say: Callable[[str], None] = print) -> dict[str, Pretrained]:
    """Every source the study's strategies start from, by :func:`weights_source`: found in
    ``results`` (a resumed study) or trained now, the self-supervised backbone first."""
    sources = {weights_source(s) for s in spec.strategies} - {None}
    done: dict[str, Pretrained] = {}
    if any(s and s.startswith("prcc_ssl") for s in sources):
        done["prcc_ssl"] = _ensure_ssl(tree, spec, results, cache_dir=cache_dir, say=say)
    if "cam16" in sources:
        done["cam16"] = _ensure_cam16(tree, spec, results, cache_dir=cache_dir, say=say)
    if "prcc_ssl+cam16" in sources:
        done["prcc_ssl+cam16"] = _ensure_cam16(tree, spec, results, cache_dir=cache_dir,
                                               say=say, init=done["prcc_ssl"])
    return done


def _ensure_cam16(tree: Tree, spec: StudySpec, results: Path, *, cache_dir: str | None,
                  say: Callable[[str], None], init: Pretrained | None = None) -> Pretrained:
    """Supervised CAM16 weights, from random init or from ``init`` (the SSL backbone)."""
    config = pretrain_config(spec.base_config(), epochs=spec.pretrain_epochs,
                             lr=spec.pretrain_lr, from_ssl=init is not None)
    plan = plan_cam16(tree, image_size=spec.image_size)
    fingerprint = decode_samples([*plan.train, *plan.val, *plan.test], plan.image_size,
                                 name=plan.dataset, cache_dir=cache_dir).fingerprint
    key = pretrain_key(fingerprint, config, init=init.key if init else None)
    label = "CAM16 pretraining" + (" from the pRCC SSL backbone" if init else "")
    found = cached_pretrain(key, results)
    if found is not None:
        say(f"{label} {key}: found in the results folder (val accuracy "
            f"{found.metrics.get('val_accuracy', float('nan')):.3f})")
        return Pretrained(found.weights, key, found.metrics, 0.0, 0.0)
    started = time.perf_counter()
    say(f"{label} {key}: {len(plan.train)} images, {spec.pretrain_epochs} epochs")
    resources = spec.resources
    if resources.mode == "train":
        from study.train import RunSpec, ensure_cam16_pretrain

        run = RunSpec(storage_path=str(results / "train"), name=f"pretrain-cam16-{key}",
                      workers=resources.workers_per_trial, use_gpu=resources.gpus_per_trial > 0,
                      cpus_per_worker=resources.cpus_per_trial, cache_dir=cache_dir)
        outcome = ensure_cam16_pretrain(tree, spec.base_config(), run,
                                        epochs=spec.pretrain_epochs, lr=spec.pretrain_lr,
                                        log=say, store_dir=results,
                                        init=(init.weights, init.key) if init else None)
        loop = float(outcome.metrics.get("pretrain_seconds", 0.0))
        return Pretrained(outcome.weights, key, outcome.metrics, loop,
                          resources.cpus_per_trial * resources.workers_per_trial)
    cpus = _pretrain_cpus()
    use_gpu = resources.gpus_per_trial > 0
    task = ray.remote(_train_cam16).options(num_cpus=cpus, num_gpus=1 if use_gpu else 0)
    state, metrics = ray.get(task.remote(plan, config.to_flat(), cpus, use_gpu, cache_dir,
                                         str(init.weights) if init else None))
    metrics = {**metrics, "pretrain_seconds": time.perf_counter() - started,
               "epochs": spec.pretrain_epochs, "train_images": len(plan.train),
               "cpus": cpus, "init_key": init.key if init else None}
    stored = store_pretrain(key, state, metrics, results)
    say(f"{label} {key}: val accuracy {metrics.get('val_accuracy', 0):.3f}, "
        f"test accuracy {metrics.get('test_accuracy', 0):.3f} "
        f"in {metrics['pretrain_seconds']:.0f} s")
    return Pretrained(stored.weights, key, stored.metrics, float(metrics["loop_seconds"]), cpus)


def _pretrain_cpus() -> int:
    """CPUs of a one-off pretraining run: the cluster's, up to 8 (more gain little)."""
    return max(1, int(min(ray.cluster_resources().get("CPU", 1), 8)))


def _ensure_ssl(tree: Tree, spec: StudySpec, results: Path, *, cache_dir: str | None,
                say: Callable[[str], None]) -> Pretrained:
    """The pRCC self-supervised backbone: a Ray Train run, stored in the results folder."""
    from study.train import RunSpec, ensure_ssl_pretrain

    resources = spec.resources
    train_mode = resources.mode == "train"
    run = RunSpec(storage_path=str(results / "train"), name="pretrain-prcc-ssl",
                  workers=resources.workers_per_trial if train_mode else 1,
                  use_gpu=resources.gpus_per_trial > 0,
                  cpus_per_worker=resources.cpus_per_trial if train_mode else _pretrain_cpus(),
                  cache_dir=cache_dir)
    started = time.perf_counter()
    outcome, trained_now = ensure_ssl_pretrain(tree, spec.ssl_config(), run,
                                               min_epoch_images=spec.ssl_min_epoch_images,
                                               include_wbc=spec.ssl_include_wbc,
                                               log=say, store_dir=results)
    loop = float(outcome.metrics.get("loop_seconds", 0.0)) if trained_now else 0.0
    if trained_now:
        say(f"pRCC self-supervised pretraining {outcome.key}: done in "
            f"{time.perf_counter() - started:.0f} s")
    return Pretrained(outcome.weights, outcome.key, outcome.metrics, loop,
                      run.cpus_per_worker * run.workers if trained_now else 0.0)
