"""One driver per results folder: a lock held for the driver's whole life, and who holds it.

``own_folder(root)`` takes ``<root>/.owner`` with a non-blocking ``filelock.FileLock`` (on Linux
``flock(LOCK_EX | LOCK_NB)``) before anything reads or writes the study, and keeps it until the
driver ends. A second ``study run`` on the same folder, or a second ``--resume``, is refused at
once with the holder's host, pid and start time (written into the lock file by the holder). The
kernel releases the lock when its process dies, however it dies (SIGKILL included), so a stale
lock never blocks: the next driver takes it and rewrites the holder; filelock also closes the
descriptor in forked children (a decode pool), which would otherwise keep a killed driver's lock
alive. On NFS, Linux maps ``flock`` to a POSIX lock that the server arbitrates between clients,
so two drivers on two hosts exclude each other too.

The holder's identity lives in the lock file itself, so the lock is set up to keep that content
and that guarantee: filelock opens an existing lock file without truncating it (a refused
contender leaves the holder's words), ``on_acquired`` writes them while the lock is held,
``preserve_lock_file`` keeps the path, and with ``on_acquired`` filelock never falls back to its
soft (marker-file) lock, which would outlive a killed holder and write its own content; a
file system without ``flock`` is an error, as it was with ``fcntl``.

The study's workers (Tune trials, Ray Train ranks) never take this lock: they write their own row
files (``study.results.store``) while the driver owns the folder.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from study.study_record import now

__all__ = ["OWNER_FILE", "FolderBusy", "own_folder", "owner_of"]

OWNER_FILE = ".owner"


class FolderBusy(Exception):
    """Another live process owns the results folder."""


def owner_of(root: Path) -> dict[str, Any]:
    """What the holder of ``root``'s lock wrote about itself ({} when unknown)."""
    try:
        text = (Path(root) / OWNER_FILE).read_text()
        found = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _describe(owner: dict[str, Any]) -> str:
    if not owner:
        return "another process (it has not said which yet)"
    return (f"{owner.get('command', 'a study driver')} (pid {owner.get('pid', '?')} on host "
            f"{owner.get('host', '?')}, since {owner.get('since', '?')})")


@contextmanager
def own_folder(root: Path, *, command: str = "study run") -> Iterator[dict[str, Any]]:
    """Hold ``root``'s owner lock for the ``with`` block; raise ``FolderBusy`` naming the holder
    if another process has it. ``root`` must exist."""
    owner: dict[str, Any] = {"command": command, "pid": os.getpid(),
                             "host": socket.gethostname(), "since": "", "argv": sys.argv[1:]}
    held: list[int] = []

    def claim(fd: int) -> None:
        owner["since"] = now()
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        held.append(fd)  # the lock's own descriptor, open until release

    lock = FileLock(Path(root) / OWNER_FILE, mode=0o644, blocking=False, thread_local=False,
                    preserve_lock_file=True, on_acquired=claim)
    try:
        lock.acquire()
    except Timeout:
        raise FolderBusy(f"{root} is in use by {_describe(owner_of(root))}; wait for it to "
                         "end (or stop it), or give another --results folder") from None
    try:
        yield owner
    finally:
        try:
            # Clear the holder before letting go: a reader never names a process that is gone.
            os.ftruncate(held[0], 0)
        finally:
            lock.release()
