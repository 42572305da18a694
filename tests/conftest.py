from __future__ import annotations

import os
from pathlib import Path

import pytest

# What "auto" precision means on a CPU depends on the machine (wbc.hardware.cpu_precision): the
# suite computes in fp32 everywhere, Ray's workers included (they inherit the environment), so
# that its figures do not depend on which CPU runs it; tests/wbc/test_precision.py unsets it.
os.environ.setdefault("WBC_CPU_PRECISION", "fp32")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                    ) -> Path:
    """Every test decodes into its own cache folder, never the user's ~/.cache/wbc."""
    cache = tmp_path_factory.mktemp("wbc-cache")
    monkeypatch.setenv("WBC_CACHE_DIR", str(cache))
    return cache
