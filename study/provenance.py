"""What a reader needs to trust or repeat a study's numbers: versions, hardware and code."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from wbc.training.hardware import cpu_model

__all__ = ["code_digest", "git_commit", "provenance"]

_ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str | None:
    """The checkout's commit, with ``-dirty`` when tracked code differs from it (``wbc/``,
    ``study/``, ``pyproject.toml``: a results folder or a document being rewritten does not
    make the code another); None without git."""
    if not (_ROOT / ".git").exists() or shutil.which("git") is None:
        return None
    try:
        commit = subprocess.run(["git", "-C", str(_ROOT), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(_ROOT), "status", "--porcelain",
                                "--untracked-files=no", "--", "wbc", "study", "pyproject.toml"],
                               check=True, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def code_digest() -> str:
    """A digest of the project's own source: identifies the code where there is no git
    checkout (``ray job submit`` uploads the working tree without ``.git``)."""
    digest = hashlib.sha256()
    for path in sorted([*_ROOT.glob("wbc/**/*.py"), *_ROOT.glob("study/**/*.py")]):
        digest.update(path.relative_to(_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def provenance() -> dict[str, Any]:
    """Versions, hardware and commit of this process."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "ray", "optuna", "numpy", "pandas", "pyarrow",
                    "pillow", "scikit-learn", "wbc-study"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    memory = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {"git_commit": git_commit(), "code_sha256": code_digest(), "versions": versions,
            "hardware": {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
                         "memory_gib": memory, "gpus": gpus,
                         "os": f"{platform.system()} {platform.machine()}"}}
