from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.treegen import make_cam16_prcc, make_wbc_tree
from wbc.layout import WBC_CLASSES


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
