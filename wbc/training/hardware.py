"""What the machine is and what it does fast: CPU and GPU names for provenance and benchmark
headers, and the precision ``"auto"`` means on this machine.

``precision = "auto"`` is bf16 autocast on a GPU. On a CPU it is bf16 only where bf16 is native
(``amx_bf16`` or ``avx512_bf16`` among the CPU's flags) *and* a short probe on this machine
measured bf16 training steps faster than fp32 ones; elsewhere fp32. The flags alone do not
decide: measured at 128 px against fp32 on one machine each, bf16 autocast was 1.83x as fast on
a Xeon with AMX-BF16 and 0.09x on an AVX2-only CPU (emulated bf16). The probe's answer is kept
per machine (CPU, flags, torch version, threads) in the decode cache folder, so it runs once;
``WBC_CPU_PRECISION=bf16`` or ``fp32`` forces the answer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

__all__ = [
    "CPU_PRECISION_ENV",
    "KEEP_FREED_ENV",
    "GPUUnavailableError",
    "cpu_flags",
    "cpu_model",
    "cpu_precision",
    "describe",
    "gpu_name",
    "measure_cpu_bf16",
    "native_bf16",
    "pick_device",
    "release_memory",
    "require_cuda",
    "resolve_precision",
    "rss_mib",
    "train_step_seconds",
]

CPU_PRECISION_ENV = "WBC_CPU_PRECISION"
# Set (to anything) to skip ``release_memory``'s trim: the baseline of benchmarks/trial_memory.py.
KEEP_FREED_ENV = "WBC_KEEP_FREED_MEMORY"
# The flags that mean bf16 arithmetic in hardware (AMX tiles, or AVX-512 BF16 dot products).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# bf16 is chosen when the probe measures it at least this much faster than fp32: a margin over
# the probe's own noise, so that a tie keeps the numerically safer fp32.
BF16_MIN_SPEEDUP = 1.15


def cpu_model() -> str:
    """The CPU's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``), empty where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bf16 in hardware (AMX-BF16 or AVX-512 BF16)."""
    return any(flag in (cpu_flags() if flags is None else flags) for flag in NATIVE_BF16_FLAGS)


def train_step_seconds(image_size: int, batch_size: int, *, precision: str = "fp32",
                       steps: int = 3) -> float:
    """Mean seconds of one ResNet-18 training step on the CPU (channels-last, fused AdamW as
    the loop's default, bf16 autocast when ``precision`` is "bf16") on a batch already in memory, over
    ``steps`` steps after one warm-up step, at torch's current thread count."""
    import torch
    import torch.nn.functional as F

    from wbc.training.resnet import build_resnet18

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (batch_size,), generator=generator)
    model = build_resnet18(5).to(memory_format=torch.channels_last)
    # The loop's default optimiser (wbc.training.loop.build_optimizer: fused AdamW); built here, as
    # wbc.training.loop itself depends on this module.
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, fused=True)
    started = 0.0
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps


def measure_cpu_bf16(*, image_size: int = 64, batch_size: int = 32, steps: int = 3
                     ) -> dict[str, float]:
    """Seconds per training step (``train_step_seconds``) in fp32 and under bf16 autocast, and
    ``speedup`` = fp32 seconds / bf16 seconds, at torch's current thread count."""
    fp32, bf16 = (train_step_seconds(image_size, batch_size, precision=p, steps=steps)
                  for p in ("fp32", "bf16"))
    return {"fp32_seconds": fp32, "bf16_seconds": bf16, "speedup": fp32 / bf16}


def _probe_file(threads: int) -> Path:
    """Where this machine's probe answer is kept: the decode cache folder, keyed by what
    decides the answer (CPU model and flags, torch version, threads)."""
    import torch

    from wbc.datasets.cache import default_cache_dir

    key = json.dumps([cpu_model(), sorted(cpu_flags()), torch.__version__, threads])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return default_cache_dir() / "precision" / f"cpu-{digest}.json"


def _probe(threads: int) -> dict[str, float]:
    """``measure_cpu_bf16`` at ``threads`` torch threads, kept per machine (one probe however
    many trials start together)."""
    import torch

    from wbc.fileio import atomic_write_text, file_lock

    path = _probe_file(threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_suffix(".lock")):
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            probe = measure_cpu_bf16()
        finally:
            torch.set_num_threads(before)
        atomic_write_text(path, json.dumps({**probe, "threads": threads, "cpu": cpu_model()}))
        return probe


@functools.cache
def cpu_precision(threads: int | None = None) -> tuple[str, str]:
    """``(precision, why)``: what ``"auto"`` means on this CPU at ``threads`` torch threads
    (default: the current count), ``"bf16"`` or ``"fp32"``, and one line that says why
    (forced, no native bf16, or the probe's figures)."""
    forced = os.environ.get(CPU_PRECISION_ENV, "").strip()
    if forced:
        if forced not in ("bf16", "fp32"):
            raise ValueError(f"{CPU_PRECISION_ENV}={forced!r}: set it to bf16 or fp32, or unset "
                             "it to let the measured probe decide")
        return forced, f"forced by {CPU_PRECISION_ENV}={forced}"
    if not native_bf16():
        return "fp32", "no native bf16 on this CPU (no amx_bf16 or avx512_bf16 flag)"
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    probe = _probe(threads)
    choice = "bf16" if probe["speedup"] >= BF16_MIN_SPEEDUP else "fp32"
    return choice, (f"native bf16, measured at {probe['speedup']:.2f}x fp32's speed "
                    f"({threads} threads; bf16 is chosen from {BF16_MIN_SPEEDUP}x)")


def resolve_precision(device: Any, precision: str) -> str:
    """The precision a run on ``device`` computes in: ``precision`` itself unless it is
    ``"auto"``, which is bf16 on a GPU and ``cpu_precision()`` on a CPU."""
    if precision != "auto":
        return precision
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        return "bf16"
    if kind == "cpu":
        return cpu_precision()[0]
    return "fp32"


def rss_mib() -> float | None:
    """This process's resident memory now, MiB (None where ``/proc`` cannot say)."""
    try:
        resident = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident * os.sysconf("SC_PAGE_SIZE") / 2**20


def release_memory() -> None:
    """Give the memory freed by a finished run back to the system: a garbage collection, then
    glibc's ``malloc_trim`` (where the C library is glibc). A reused trial process otherwise
    keeps every freed block in its allocator arenas (one per thread that allocated, 64 MiB
    each) and grows from trial to trial (benchmarks/trial_memory.py)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    if os.environ.get(KEEP_FREED_ENV):
        return
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return
    if trim is not None:
        trim(0)


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
