"""Writing files so that a crash or a reader never sees half of one, and locking them.

One helper of each kind for the whole project: the decode cache, the synthetic writer, the
pretrained-weights store, checkpoints and the study's results folder all use these.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

__all__ = ["atomic_write_bytes", "atomic_write_text", "file_lock", "save_torch"]


def atomic_write_bytes(path: Path | str, data: bytes, *, fsync: bool = True) -> None:
    """Write ``path`` so that it holds the old bytes or the new ones, never a mix.

    The bytes go to a file beside the target, which is then renamed over it (atomic on POSIX
    within one file system). ``fsync`` makes the new bytes durable before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path | str, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def save_torch(obj: Any, path: Path | str) -> None:
    """``torch.save`` atomically: a crash mid-write leaves the previous file intact."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


@contextmanager
def file_lock(path: Path | str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Processes, and threads of one process, wait for each other. Not reentrant across nested
    ``with`` blocks on the same path: take it once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)):
        yield
