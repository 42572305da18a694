"""Pretrained starting weights: how a WBC model starts, and where the weights are kept.

The report's step A (a CAM16 tumour/normal classifier) and the self-supervised pRCC backbone are
paid for once and reused by every cell that starts from them. A result (the weights and the
run's figures) is stored in a :class:`WeightsStore` under a key made of the decode fingerprint of
its data (the exact files and resolution), every setting of the run and the key of the weights
it started from, so a study, a resumed study or several ``wbc train`` runs pay for it once.
``WeightsStore.ensure`` is the one place that says "the weights for this key: stored, or made now
under a lock". Steps B-E (load, drop the head, add a 5-way head, train on WBC) are
:func:`initial_model`.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wbc.config import SSLConfig, TrainConfig
from wbc.datasets.cache import default_cache_dir
from wbc.datasets.layout import WBC_CLASSES
from wbc.fileio import atomic_write_bytes, atomic_write_text, file_lock
from wbc.strategies import get_strategy
from wbc.training.resnet import WeightsError, build_resnet18, load_backbone, read_state_dict

__all__ = [
    "PretrainResult",
    "WeightsStore",
    "initial_model",
    "kind_of",
    "pretrain_config",
    "pretrain_key",
    "ssl_key",
]

WEIGHTS_FILE = "model.pt"
RECORD_FILE = "result.json"  # written after the weights: its presence marks a complete entry


@dataclass(frozen=True)
class PretrainResult:
    weights: Path  # a ResNet-18 state dict (the best epoch's, for a supervised run)
    metrics: dict[str, Any]  # val_accuracy, test_accuracy, ... or the SSL probe figures
    key: str


def kind_of(source: str) -> str:
    """The store's folder kind of a weights source: the CAM16 classifiers (from random init or
    from the SSL backbone) are ``cam16``, a SimCLR backbone its own source (``prcc_ssl``,
    ``wbc_ssl``)."""
    return source if source.endswith("_ssl") else "cam16"


class WeightsStore:
    """Pretrained weights under ``<root>/pretrain/<kind>-<key>/`` (``model.pt``,
    ``result.json``); ``root`` is a study's results folder (shared storage on a cluster) or
    the cache (``wbc train``).

    The record holds the weights file's size and SHA-256: an entry whose file no longer matches
    (truncated, overwritten, zeroed) is not used but set aside as ``<folder>.corrupt-<time>``
    and made again; an entry written without them (by hand, or by an older version) is used
    only if it reads as a state dict. ``rebuilt`` says which keys were made again, and why.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.rebuilt: dict[str, str] = {}  # key -> why its stored entry was not used

    def folder(self, kind: str, key: str) -> Path:
        return self.root / "pretrain" / f"{kind}-{key}"

    def problem(self, kind: str, key: str) -> str | None:
        """Why the stored entry of ``key`` cannot be used, or None (also when there is none)."""
        folder = self.folder(kind, key)
        try:
            record = json.loads((folder / RECORD_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            return f"{folder / RECORD_FILE} is unreadable ({err})"
        weights = folder / WEIGHTS_FILE
        expected = record.get("weights_sha256") if isinstance(record, dict) else None
        if expected is None:
            try:
                read_state_dict(weights)
            except (FileNotFoundError, WeightsError) as err:
                return str(err)
            return None
        try:
            size = weights.stat().st_size
            with weights.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as err:
            return f"{weights}: unreadable ({err.strerror or err})"
        if size != record.get("weights_bytes", size) or digest != expected:
            return (f"{weights}: its {size} bytes do not match the SHA-256 its record holds "
                    "(truncated or overwritten)")
        return None

    def find(self, kind: str, key: str) -> PretrainResult | None:
        """The stored result for ``key`` if it is there and intact, else None."""
        folder = self.folder(kind, key)
        if not (folder / RECORD_FILE).exists() or self.problem(kind, key) is not None:
            return None
        metrics = json.loads((folder / RECORD_FILE).read_text())
        return PretrainResult(folder / WEIGHTS_FILE, metrics, key)

    def store(self, kind: str, key: str, state: dict[str, torch.Tensor],
              metrics: dict[str, Any]) -> PretrainResult:
        """Save the weights, then the figures (plain scalars) and the weights' checksum: the
        record marks completion."""
        folder = self.folder(kind, key)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        atomic_write_bytes(folder / WEIGHTS_FILE, data)
        record = {k: v for k, v in metrics.items() if isinstance(v, int | float | str | None)}
        record["weights_sha256"] = hashlib.sha256(data).hexdigest()
        record["weights_bytes"] = len(data)
        atomic_write_text(folder / RECORD_FILE, json.dumps(record, indent=2, sort_keys=True))
        return PretrainResult(folder / WEIGHTS_FILE, record, key)

    def ensure(self, kind: str, key: str,
               make: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]]
               ) -> tuple[PretrainResult, bool]:
        """The weights for ``key``: stored, or made now by ``make()`` (weights, figures) under
        a lock, so that two processes asking at once train once. Returns (result, made now)."""
        found = self.find(kind, key)
        if found is not None:
            return found, False
        folder = self.folder(kind, key)
        with file_lock(folder.parent / f"{folder.name}.lock"):
            found = self.find(kind, key)
            if found is not None:
                return found, False
            problem = self.problem(kind, key)
            if problem is not None:  # kept for a look, out of the way of the new entry
                self.rebuilt[key] = problem
                folder.rename(folder.with_name(f"{folder.name}.corrupt-{time.time_ns()}"))
            state, metrics = make()
            return self.store(kind, key, state, metrics), True


def pretrain_config(wbc_config: TrainConfig, *, epochs: int, lr: float | None = None,
                    from_ssl: bool = False) -> TrainConfig:
    """The CAM16 run that goes with a WBC configuration: same resolution and precision, two
    classes, random init (or the ImageNet file, if the WBC run starts from one), no pastes.
    ``from_ssl``: it starts from a self-supervised backbone instead (``ssl_pretrain``)."""
    return wbc_config.replace(strategy="ssl" if from_ssl else "scratch", epochs=epochs,
                              lr=wbc_config.optim.lr if lr is None else lr, mask_augment=None,
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


def ssl_key(fingerprint: str, config: SSLConfig, *, min_epoch_images: int) -> str:
    """The key of a self-supervised run on the images of ``fingerprint``."""
    return pretrain_key(fingerprint, {**config.to_flat(), "min_epoch_images": min_epoch_images})


def initial_model(config: TrainConfig, *, pretrained: Path | None = None,
                  num_classes: int = len(WBC_CLASSES)) -> nn.Module:
    """The model a WBC run starts from, by strategy.

    ``scratch``: random init (or ``imagenet_weights``). A CAM16 strategy: the pretrained binary
    classifier's weights loaded, its 2-way head dropped and a fresh ``num_classes``-way head
    added (the report's steps B-D). ``ssl``: the self-supervised backbone, a fresh head;
    ``ssl_pretrain``: the CAM16 classifier that itself started from that backbone. Random
    weights come from torch's global generator, which ``wbc.training.seeding.seed_everything``
    seeded.
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
    state = read_state_dict(pretrained)
    kept = config.model.transfer_stages
    if kept < 4:
        # The stages after the kept ones start random: the model's own fresh tensors.
        fresh = model.state_dict()
        later = tuple(f"layer{k}." for k in range(kept + 1, 5))
        state = {k: (fresh[k] if k.startswith(later) else v) for k, v in state.items()}
    load_backbone(model, state, source=str(pretrained))
    return model
