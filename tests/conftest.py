from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                    ) -> Path:
    """Every test decodes into its own cache folder, never the user's ~/.cache/wbc."""
    cache = tmp_path_factory.mktemp("wbc-cache")
    monkeypatch.setenv("WBC_CACHE_DIR", str(cache))
    return cache
