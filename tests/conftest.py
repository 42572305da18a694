from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.treegen import make_cam16_prcc, make_wbc_tree
from wbc.datasets.layout import WBC_CLASSES

# What "auto" precision means on a CPU depends on the machine (wbc.training.hardware.cpu_precision):
# the suite computes in fp32 everywhere, Ray's workers included (they inherit the environment), so
# that its figures do not depend on which CPU runs it; tests/wbc/test_precision.py unsets it.
os.environ.setdefault("WBC_CPU_PRECISION", "fp32")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                    ) -> Path:
    """Every test decodes into its own cache folder, never the user's ~/.cache/wbc."""
    cache = tmp_path_factory.mktemp("wbc-cache")
    monkeypatch.setenv("WBC_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A real local Ray cluster for the session (2 CPUs, like the development machine)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=True, logging_level="WARNING", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WBC (with masks) and CAM16: enough for a model to learn at 32 px in a few epochs."""
    root = tmp_path_factory.mktemp("tiny-tree")
    make_wbc_tree(root, {c: (12, 3, 6) for c in WBC_CLASSES})
    make_cam16_prcc(root, n=8)
    return root
