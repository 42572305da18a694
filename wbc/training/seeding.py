"""The one seeding helper of the project (after timm's ``utils/random.py``).

Every entry point (a training worker, a test, the synthetic data generator) seeds through
:func:`seed_everything`, and every independent random stream (a trial, an epoch, a subset
redraw) gets its seed from :func:`derive_seed`, so that a run is reproducible from the seeds
recorded next to its results.
"""

from __future__ import annotations

import hashlib
import json
import os
import random

import numpy as np
import torch

__all__ = ["SEED_LIMIT", "derive_seed", "seed_everything"]

SEED_LIMIT = 2**32
"""Seeds (after the rank offset) must lie in ``0 .. SEED_LIMIT - 1``: numpy's global seed range."""

# derive_seed stays below 2**31 so that adding a rank offset cannot leave SEED_LIMIT, and so the
# value fits a signed 32-bit column.
_DERIVED_LIMIT = 2**31


def seed_everything(
    seed: int,
    *,
    rank: int = 0,
    deterministic: bool = False,
    device: torch.device | str = "cpu",
) -> torch.Generator:
    """Seed python ``random``, numpy and torch (CPU and every CUDA device) with ``seed + rank``.

    ``rank`` is the distributed worker's rank: DDP workers share ``seed`` but must not draw the
    same augmentations or dropout masks, so each is offset by its rank (rank 0 uses ``seed``
    itself, so a single-process run matches rank 0 of a multi-worker one).

    ``deterministic=True`` also asks torch for deterministic kernels
    (``use_deterministic_algorithms(True, warn_only=True)``: warn, not fail, where an op has no
    deterministic version), turns cuDNN autotuning off and sets ``CUBLAS_WORKSPACE_CONFIG`` to
    ``:4096:8`` unless already set (cuBLAS reads it when its first handle is made, so seed
    before any CUDA work). ``deterministic=False`` leaves those switches as they are.

    Returns a fresh ``torch.Generator`` on ``device``, seeded with ``seed + rank``, for code that
    takes an explicit generator (augmentations, samplers, head initialisation).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank must be a non-negative int, got {rank!r}")
    full = seed + rank
    if not 0 <= full < SEED_LIMIT:
        raise ValueError(f"seed + rank = {seed} + {rank} must be in 0..{SEED_LIMIT - 1}")
    random.seed(full)
    np.random.seed(full)  # noqa: NPY002 - libraries that use the legacy global state need it
    torch.manual_seed(full)  # also seeds every CUDA device, lazily when CUDA initialises
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    generator = torch.Generator(device=device)
    generator.manual_seed(full)
    return generator


def derive_seed(*parts: int | str) -> int:
    """A seed in ``0 .. 2**31 - 1`` determined by ``parts``, e.g. ``(study_seed, cell, trial)``.

    Stable across processes, machines and Python versions (a BLAKE2 hash of the parts; Python's
    ``hash()`` is salted per process), and sensitive to order, type and boundaries:
    ``("ab", "c")``, ``("a", "bc")``, ``(1,)`` and ``("1",)`` all differ.
    """
    if not parts:
        raise ValueError("derive_seed needs at least one part")
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, int | str):
            raise TypeError(f"derive_seed parts must be int or str, got {part!r}")
    # JSON keeps the type and the boundaries of each part in the hashed bytes.
    payload = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=True).encode()
    digest = hashlib.blake2b(payload, digest_size=8).digest()
    return int.from_bytes(digest, "big") % _DERIVED_LIMIT
