"""CAM16 pretraining (the report's step A), paid for once and reused by every cell.

A pretraining run is an ordinary ``fit`` with two classes. Its result (the best epoch's weights
and its CAM16 val and test accuracy) is stored under a key made of the CAM16 decode fingerprint
(the exact files and resolution) and the pretraining configuration, so a study, or several
``wbc train`` runs, pay for it once. Steps B-E (load, drop the head, add a 5-way head, train on
WBC) are ``initial_model``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wbc.cache import default_cache_dir
from wbc.config import TrainConfig
from wbc.layout import WBC_CLASSES
from wbc.model import build_resnet18, load_backbone, read_state_dict
from wbc.strategies import get_strategy

__all__ = [
    "PretrainResult",
    "cached_pretrain",
    "initial_model",
    "pretrain_config",
    "pretrain_dir",
    "pretrain_key",
    "pretrain_lock",
    "store_pretrain",
]


@dataclass(frozen=True)
class PretrainResult:
    weights: Path  # state dict of the 2-class CAM16 classifier (best epoch)
    metrics: dict[str, Any]  # val_accuracy, test_accuracy, best_epoch, ... of the CAM16 run
    key: str


def pretrain_config(wbc_config: TrainConfig, *, epochs: int, lr: float | None = None,
                    from_ssl: bool = False) -> TrainConfig:
    """The CAM16 run that goes with a WBC configuration: same resolution and precision, two
    classes, random init (or the ImageNet file, if the WBC run starts from one), no pastes.
    ``from_ssl``: it starts from a self-supervised backbone instead (``ssl_pretrain``)."""
    return wbc_config.replace(strategy="ssl" if from_ssl else "scratch", epochs=epochs,
                              lr=lr or wbc_config.optim.lr, mask_augment=None,
                              imbalance="none", subset="WBC_100", subset_seed=None,
                              aug_factor=0, report_every=max(1, epochs // 4),
                              checkpoint_every=max(1, epochs // 4))


def pretrain_key(fingerprint: str, config: TrainConfig | dict[str, Any], *,
                 init: str | None = None) -> str:
    """What identifies a pretraining result: the data, every setting of the run, and the key of
    the weights it started from (``init``), if any."""
    flat = config.to_flat() if isinstance(config, TrainConfig) else config
    record: dict[str, Any] = {"data": fingerprint, "config": flat}
    if init is not None:
        record["init"] = init
    text = json.dumps(record, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def pretrain_dir(key: str, cache_dir: Path | str | None = None, *, kind: str = "cam16"
                 ) -> Path:
    """``<cache or results>/pretrain/<kind>-<key>``; kinds: ``cam16``, ``prcc_ssl``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "pretrain" / f"{kind}-{key}"


@contextmanager
def pretrain_lock(key: str, cache_dir: Path | str | None = None, *, kind: str = "cam16"
                  ) -> Iterator[None]:
    """Held while one process pretrains; others wait and then find the stored result."""
    directory = pretrain_dir(key, cache_dir, kind=kind)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with (directory.parent / f"{directory.name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def cached_pretrain(key: str, cache_dir: Path | str | None = None, *, kind: str = "cam16"
                    ) -> PretrainResult | None:
    directory = pretrain_dir(key, cache_dir, kind=kind)
    if not (directory / "result.json").exists():
        return None
    metrics = json.loads((directory / "result.json").read_text())
    return PretrainResult(directory / "model.pt", metrics, key)


def store_pretrain(key: str, state: dict[str, torch.Tensor], metrics: dict[str, Any],
                   cache_dir: Path | str | None = None, *, kind: str = "cam16"
                   ) -> PretrainResult:
    """Save the weights, then the metrics: ``result.json`` marks a complete entry."""
    directory = pretrain_dir(key, cache_dir, kind=kind)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / "model.pt.partial"
    torch.save(state, partial)
    partial.replace(directory / "model.pt")
    record = {k: v for k, v in metrics.items() if isinstance(v, int | float | str | None)}
    (directory / "result.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    return PretrainResult(directory / "model.pt", record, key)


def initial_model(config: TrainConfig, *, pretrained: Path | None = None,
                  num_classes: int = len(WBC_CLASSES)) -> nn.Module:
    """The model a WBC run starts from, by strategy.

    ``scratch``: random init (or ``imagenet_weights``). A CAM16 strategy: the pretrained binary
    classifier's weights loaded, its 2-way head dropped and a fresh ``num_classes``-way head
    added (the report's steps B-D). ``ssl``: the self-supervised backbone, a fresh head;
    ``ssl_pretrain``: the CAM16 classifier that itself started from that backbone. Random weights come from torch's global generator, which
    ``wbc.seeding.seed_everything`` has seeded.
    """
    strategy = get_strategy(config.model.strategy)
    model = build_resnet18(num_classes, weights_path=config.model.imagenet_weights)
    if not strategy.starts_pretrained:
        return model
    if pretrained is None:
        source = " then ".join(s for s in (strategy.ssl and f"{strategy.ssl} self-supervised",
                                          strategy.pretrain) if s)
        raise ValueError(f"strategy {strategy.name!r} needs {source} pretrained weights; run "
                         "the pretraining first")
    load_backbone(model, read_state_dict(pretrained), source=str(pretrained))
    return model
