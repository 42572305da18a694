"""The seeding helper: same seed, same draws; rank offsets; seeds stable across processes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from wbc.training.seeding import derive_seed, seed_everything

REPO = Path(__file__).resolve().parents[2]


def _draws(generator: torch.Generator) -> tuple[float, float, list[float], list[float]]:
    return (
        random.random(),
        float(np.random.rand()),  # noqa: NPY002 - the legacy global state is what is seeded
        torch.rand(4).tolist(),
        torch.rand(4, generator=generator).tolist(),
    )


def test_same_seed_same_draws() -> None:
    first = _draws(seed_everything(42))
    second = _draws(seed_everything(42))
    assert first == second
    assert _draws(seed_everything(43)) != first


def test_rank_offsets_the_streams() -> None:
    rank0 = _draws(seed_everything(42))
    rank1 = _draws(seed_everything(42, rank=1))
    assert all(a != b for a, b in zip(rank0, rank1, strict=True))
    assert rank1 == _draws(seed_everything(43))  # the documented offset: seed + rank


def test_bad_seeds_are_refused() -> None:
    with pytest.raises(ValueError, match="seed \\+ rank"):
        seed_everything(-1)
    with pytest.raises(ValueError, match="rank"):
        seed_everything(0, rank=-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_everything(1.5)  # type: ignore[arg-type]


@pytest.fixture
def restore_determinism() -> Iterator[None]:
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
    if saved[4] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]


@pytest.mark.usefixtures("restore_determinism")
def test_deterministic_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seed_everything(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_derive_seed_differs_by_parts() -> None:
    seeds = {
        derive_seed(0),
        derive_seed("0"),
        derive_seed(0, 1),
        derive_seed(1, 0),
        derive_seed("ab", "c"),
        derive_seed("a", "bc"),
        derive_seed("WBC_10", "pretrain", 3),
    }
    assert len(seeds) == 7
    assert all(0 <= s < 2**31 for s in seeds)
    seed_everything(derive_seed("WBC_10", "pretrain", 3), rank=7)  # in range with an offset
    with pytest.raises(TypeError):
        derive_seed(1.0)  # type: ignore[arg-type]


def test_derive_seed_stable_across_processes() -> None:
    parts = ("WBC_10", "pretrain_aug", 3, "epoch", 17)
    code = f"from wbc.training.seeding import derive_seed; print(derive_seed(*{parts!r}))"
    # A different hash salt in the child: derive_seed must not depend on Python's hash().
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
        check=True, timeout=60,
    )
    assert int(out.stdout.strip()) == derive_seed(*parts)
