"""What the commands say on standard error: every message, or (``--quiet``) warnings and errors
only. The result itself goes to standard output either way."""

from __future__ import annotations

import sys

__all__ = ["say", "say_warnings"]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def say_warnings(message: str) -> None:
    """``say`` for ``--quiet``: only the messages that start with "warning" or "error"."""
    if message.startswith(("warning", "error")):
        say(message)
