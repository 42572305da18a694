"""A reused trial process gives back what a finished run freed
(``wbc.training.hardware.release_memory``)."""

from __future__ import annotations

import sys
import threading

import pytest

from wbc.training.hardware import KEEP_FREED_ENV, release_memory, rss_mib


def _churn(kept: list[bytes]) -> None:
    """What a trial's thread does to the allocator: many mid-sized blocks (above pymalloc's,
    below malloc's mmap threshold) allocated in a thread of its own, then freed but the last
    (which, on top of the heap, keeps glibc from trimming the free space below it)."""
    blocks = [b"x" * 100_000 for _ in range(4000)]  # 400 MB, every page touched
    kept.append(blocks[-1])
    del blocks


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_memory_goes_back_to_the_system_unless_kept(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    release_memory()  # what earlier tests left behind, given back before measuring
    kept: list[bytes] = []
    thread = threading.Thread(target=_churn, args=(kept,))
    thread.start()
    thread.join()
    before = rss_mib()
    assert before is not None
    monkeypatch.setenv(KEEP_FREED_ENV, "1")  # the benchmark's baseline: nothing given back
    release_memory()
    kept = rss_mib()
    assert kept is not None and kept > before - 50
    monkeypatch.delenv(KEEP_FREED_ENV)
    release_memory()
    after = rss_mib()
    # Not all 400 MB comes back (a heap that holds a live block keeps its pages, and what
    # earlier tests in the process left decides where blocks land: 131 of 200 MB came back
    # once after the whole suite), so the test asks for well over a third of it.
    assert after is not None and after < kept - 150, (before, kept, after)
