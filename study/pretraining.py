"""CAM16 pretraining once per study (the report's step A), shared by every cell that needs it.

The weights go into the results folder (``pretrain/cam16-<key>/``), which is shared storage on a
cluster, so trials on any node load the same file, and a resumed study finds them there. The key
is the CAM16 decode fingerprint plus the pretraining configuration (``wbc.pretrain``).

With inline trials the pretraining is one Ray task holding as many CPUs as a few trials (and a
GPU when trials use GPUs); with ``execution = "train"`` it is a Ray Train run like ``wbc train``'s.
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

__all__ = ["Pretrained", "ensure_pretrained"]


@dataclass(frozen=True)
class Pretrained:
    weights: Path
    key: str
    record: dict[str, Any]  # CAM16 val/test accuracy, epochs, seconds: for study.json
    loop_seconds_this_session: float  # inside the training loop; 0 when reused
    cpus: float = 1.0  # what the pretraining held meanwhile


def _train_cam16(plan: SplitPlan, flat: dict[str, Any], threads: int, use_gpu: bool,
                 cache_dir: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
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
    model = initial_model(config, num_classes=len(plan.classes)).to(device)
    result = fit(model, config, data.train, data.selection, data.reporting)
    loop = float(sum(row.get("loop_seconds", 0.0) for row in result.history))
    return result.best_state, {**result.metrics, "loop_seconds": loop}


def ensure_pretrained(tree: Tree, spec: StudySpec, results: Path, *,
                      cache_dir: str | None = None,
                      say: Callable[[str], None] = print) -> Pretrained:
    """The study's CAM16 weights: found in ``results`` (a resumed study) or trained now."""
    config = pretrain_config(spec.base_config(), epochs=spec.pretrain_epochs,
                             lr=spec.pretrain_lr)
    plan = plan_cam16(tree, image_size=spec.image_size)
    fingerprint = decode_samples([*plan.train, *plan.val, *plan.test], plan.image_size,
                                 name=plan.dataset, cache_dir=cache_dir).fingerprint
    key = pretrain_key(fingerprint, config)
    found = cached_pretrain(key, results)
    if found is not None:
        say(f"CAM16 pretraining {key}: found in the results folder (val accuracy "
            f"{found.metrics.get('val_accuracy', float('nan')):.3f})")
        return Pretrained(found.weights, key, found.metrics, 0.0, 0.0)
    started = time.perf_counter()
    say(f"CAM16 pretraining {key}: {len(plan.train)} images, {spec.pretrain_epochs} epochs")
    resources = spec.resources
    if resources.mode == "train":
        from study.train import RunSpec, ensure_cam16_pretrain

        run = RunSpec(storage_path=str(results / "train"), name=f"pretrain-cam16-{key}",
                      workers=resources.workers_per_trial, use_gpu=resources.gpus_per_trial > 0,
                      cpus_per_worker=resources.cpus_per_trial, cache_dir=cache_dir)
        outcome = ensure_cam16_pretrain(tree, spec.base_config(), run,
                                        epochs=spec.pretrain_epochs, lr=spec.pretrain_lr,
                                        log=say, store_dir=results)
        loop = float(outcome.metrics.get("pretrain_seconds", 0.0))
        return Pretrained(outcome.weights, key, outcome.metrics, loop,
                          resources.cpus_per_trial * resources.workers_per_trial)
    cpus = max(1, int(min(ray.cluster_resources().get("CPU", 1), 8)))
    use_gpu = resources.gpus_per_trial > 0
    task = ray.remote(_train_cam16).options(num_cpus=cpus, num_gpus=1 if use_gpu else 0)
    state, metrics = ray.get(task.remote(plan, config.to_flat(), cpus, use_gpu, cache_dir))
    metrics = {**metrics, "pretrain_seconds": time.perf_counter() - started,
               "epochs": spec.pretrain_epochs, "train_images": len(plan.train),
               "cpus": cpus}
    stored = store_pretrain(key, state, metrics, results)
    say(f"CAM16 pretraining {key}: val accuracy {metrics.get('val_accuracy', 0):.3f}, "
        f"test accuracy {metrics.get('test_accuracy', 0):.3f} "
        f"in {metrics['pretrain_seconds']:.0f} s")
    return Pretrained(stored.weights, key, stored.metrics, float(metrics["loop_seconds"]), cpus)
