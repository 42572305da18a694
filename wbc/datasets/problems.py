"""What can be wrong with a dataset tree, said so that a user can act on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["DatasetError", "Problem", "Severity"]

Severity = Literal["error", "warning"]


class DatasetError(Exception):
    """A user-facing problem with a path given on the command line (not a file inside a tree)."""


@dataclass(frozen=True)
class Problem:
    """Something wrong with a file or folder, said so that a user can act on it."""

    path: Path
    reason: str
    severity: Severity = "error"
    # The samples whose image (or, for a bad mask, whose mask) excluding this problem removes.
    excludes: tuple[Path, ...] = ()

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.reason}"
