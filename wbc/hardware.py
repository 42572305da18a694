"""What the numbers were measured on: CPU and GPU names, for provenance and benchmark headers."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["GPUUnavailableError", "cpu_model", "describe", "gpu_name", "pick_device",
           "require_cuda"]


def cpu_model() -> str:
    """The CPU's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first visible CUDA device's name, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)


def pick_device(name: str = "auto") -> str:
    """``auto``: ``cuda`` when a GPU is visible, else ``cpu``; any other name as given."""
    import torch

    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


class GPUUnavailableError(RuntimeError):
    """A run was given a GPU and cannot use it."""


def require_cuda(where: str, *, instead: str = "run without GPUs (resources.gpus_per_trial=0)"
                 ) -> str:
    """``cuda``, or a ``GPUUnavailableError`` that says why a run given a GPU cannot see one
    (training on the CPU while holding a GPU would only be slow and wrong in the record).
    ``instead``: the way to go without a GPU, as the caller spells it."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    built = torch.version.cuda or "none (a CPU-only build)"
    raise GPUUnavailableError(
        f"{where} was given a GPU but torch cannot use CUDA (torch {torch.__version__}, built "
        f"for CUDA {built}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}): "
        "check the node's NVIDIA driver (a CUDA 13 build of torch needs driver R580 or newer) "
        f"and that the container sees the GPU (`docker run --gpus all`), or {instead}")


def describe() -> str:
    """One line: GPU (if any), CPU, cores, torch version."""
    import torch

    gpu = gpu_name()
    parts = [f"GPU {gpu}" if gpu else "no GPU", cpu_model(), f"{os.cpu_count()} cores",
             f"torch {torch.__version__}"]
    return ", ".join(parts)
