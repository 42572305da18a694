"""What the benchmarks share: the machine line, a temporary synthetic tree, a timer, JSON with
provenance, the options several scripts take, a local Ray, and one training run through
``wbc.training.run.train_run``.

Each script imports it as ``import harness``: ``python benchmarks/<script>.py`` puts
``benchmarks/`` first on ``sys.path``. ``wbc`` and ``study`` come from the installed package
(``pip install -e '.[dev]'``), in the script's process and in Ray's worker processes alike. No
Ray worker imports this module: a Tune trainable stays in its script, where cloudpickle ships it
by value (it is defined in ``__main__``), and refers to nothing here.

- ``machine()`` / ``header(detail)``: one line with the GPU, CPU, cores, torch, Python (and Ray),
  the device and the commit; ``header`` prints it first thing.
- ``workspace(root, scale=..., image_size=...)``: a temporary folder with a synthetic tree in the
  report's layout (``wbc.synth.synthesize``), or the given ``--root``, and a decode cache that
  goes with the folder.
- ``Timer(device)``: wall seconds of a block, the GPU synchronised at both ends.
- ``write_json(path, args, figures)``: the figures with ``hardware``, ``args`` and
  ``provenance`` (commit, versions, hardware, command line); atomic, so a script can rewrite it
  after every measurement and a time limit keeps what was done.
- ``add_device``, ``add_tree``, ``add_json``, ``add_run_arguments`` + ``run_config``: the
  options, and the fixed recipe of the scripts that train whole runs.
- ``train(work, config, device=...)``: one run via ``wbc.training.run.train_run`` on the workspace's
  tree and cache (the WBC plan of ``config`` unless a plan is given).
- ``local_ray(cpus)``: a local Ray for the length of a ``with`` block.

    python benchmarks/harness.py      # prints the machine line and the provenance record
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from study.provenance import git_commit
from study.provenance import provenance as study_provenance
from wbc.config import TrainConfig
from wbc.datasets import Tree, scan_tree
from wbc.fileio import atomic_write_text
from wbc.synth import synthesize
from wbc.training.hardware import cpu_model, describe, gpu_name, pick_device
from wbc.training.inputs import SplitPlan, plan_wbc
from wbc.training.run import RunResult, train_run

__all__ = [
    "Timer",
    "Workspace",
    "add_device",
    "add_json",
    "add_run_arguments",
    "add_tree",
    "device",
    "git_commit",
    "gpu_peak_gib",
    "gpu_peak_reset",
    "header",
    "host_peak_gib",
    "local_ray",
    "machine",
    "parser",
    "provenance",
    "run_config",
    "sync",
    "train",
    "workspace",
    "write_json",
]



# --- the device: synchronising, timing, memory --------------------------------------------------

def sync(device: torch.device | str | None) -> None:
    """Wait for the GPU's queue (a no-op on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """``with Timer(device) as t: ...``; then ``t.seconds``. On a GPU the device is synchronised
    when the block starts and when it ends, so the time is that of the work, not its queueing."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self.seconds = 0.0
        self._started = 0.0

    def __enter__(self) -> Timer:
        sync(self.device)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._started


def gpu_peak_reset(device: torch.device) -> None:
    """Start counting the peak GPU memory from here (a no-op on the CPU)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def gpu_peak_gib(device: torch.device) -> float | None:
    """Peak GPU memory allocated since ``gpu_peak_reset``; None on the CPU."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def host_peak_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# --- what the figures were measured on --------------------------------------------------------

def versions() -> dict[str, str | None]:
    """The study's version record (``study.provenance``), with torch's build and CUDA."""
    found = dict(study_provenance()["versions"])
    found["torch"] = torch.__version__  # with its build: 2.14.1+cu130
    found["cuda"] = torch.version.cuda
    return found


def machine(*, device: torch.device | str | None = None, ray: bool = False) -> str:
    """One line: GPU (if any), CPU, cores, torch, Python, Ray (``ray``), the device, the commit."""
    found = versions()
    parts = [describe(), f"python {found['python']}"]
    if ray:
        parts.append(f"ray {found['ray']}")
    if device is not None:
        parts.append(f"device {device}")
    commit = git_commit()
    parts.append(f"commit {commit[:7] + commit[40:]}" if commit else "commit unknown")  # -dirty
    return ", ".join(parts)


def header(detail: str = "", *, device: torch.device | str | None = None,
           ray: bool = False) -> str:
    """Print (and return) the machine line, then ``; detail``: what the run is."""
    line = machine(device=device, ray=ray) + (f"; {detail}" if detail else "")
    print(line, flush=True)
    return line


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # paths, devices


def provenance(*, device: torch.device | str | None = None) -> dict[str, Any]:
    """The commit, versions, hardware and command line of this run."""
    return {
        "commit": git_commit(),
        "versions": versions(),
        "hardware": {"summary": describe(), "cpu": cpu_model(), "cores": os.cpu_count(),
                     "gpu": gpu_name(), "device": None if device is None else str(device),
                     "torch_threads": torch.get_num_threads(),
                     "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                     "host": platform.node()},
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: Path | None, args: argparse.Namespace, figures: dict[str, Any], *,
               device: torch.device | str | None = None) -> None:
    """Write ``{"hardware", "args", **figures, "provenance"}`` to ``path`` (nothing when None).

    Written to a temporary name and renamed: a reader, or a time limit, never sees half a file.
    """
    if path is None:
        return
    record = {"hardware": describe(), "args": _plain(vars(args)), **figures,
              "provenance": provenance(device=device)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2, default=str))


# --- data: a synthetic tree in a temporary folder ---------------------------------------------

@dataclass
class Workspace:
    """Where a benchmark's data is: the tree, the decode cache, a folder for anything else."""

    root: Path  # the tree, in the report's layout
    cache: Path  # the decode cache (``wbc.datasets.cache``): never the user's own
    folder: Path  # scratch space, removed at the end unless given
    _tree: Tree | None = field(default=None, repr=False)

    @property
    def tree(self) -> Tree:
        """The scanned tree (structure only, no decoding: ``verify=False``), scanned once."""
        if self._tree is None:
            self._tree = scan_tree(self.root, verify=False)
        return self._tree


@contextmanager
def workspace(root: Path | None = None, *, scale: float = 0.25, image_size: int = 256,
              seed: int = 0, prefix: str = "wbc-bench-",
              say: Callable[[str], None] | None = print) -> Iterator[Workspace]:
    """A temporary folder holding the decode cache and, unless ``root`` names an existing tree,
    a synthetic one: ``wbc.synth.synthesize(scale=scale, image_size=image_size, seed=seed)``
    (``image_size`` is the side of the JPEG files). ``say`` hears how long that took."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        folder = Path(tmp)
        if root is None:
            root = folder / "tree"
            with Timer() as timer:
                synthesize(root, scale=scale, image_size=image_size, seed=seed)
            if say is not None:
                say(f"generated {root} at scale {scale:.3f} ({image_size} px JPEG) in "
                    f"{timer.seconds:.0f} s")
        yield Workspace(root=Path(root), cache=folder / "cache", folder=folder)


# --- options -----------------------------------------------------------------------------------

def parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose ``--help`` says what the script measures (the docstring's first
    paragraph) and, after the options, the rest of the docstring: how to run it, what it
    prints."""
    head, _, rest = (doc or "").strip().partition("\n\n")
    return argparse.ArgumentParser(description=head, epilog=rest or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto (a GPU when there is one), cpu, cuda")


def device(args: argparse.Namespace) -> torch.device:
    """``--device`` resolved (``wbc.training.hardware.pick_device``)."""
    return torch.device(pick_device(args.device))


def add_tree(parser: argparse.ArgumentParser, *, scale: float | None = 0.25,
             source_size: int = 256) -> None:
    """``--root`` (an existing tree), and for the generated one ``--scale`` (unless None: the
    script works it out) and ``--source-size``."""
    parser.add_argument("--root", type=Path, default=None,
                        help="an existing tree in the report's layout (default: generate one)")
    if scale is not None:
        parser.add_argument("--scale", type=float, default=scale,
                            help="synthetic tree scale, of the report's counts")
    parser.add_argument("--source-size", type=int, default=source_size,
                        help="side of the generated JPEG files (real crops are 120-360 px)")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the figures here, with their provenance")


def add_run_arguments(parser: argparse.ArgumentParser, *, image_size: int, epochs: int,
                      batch_size: int, epoch_images: int, seeds: int | None = None,
                      lr: float = 0.05, bn_recalibrate: int = 1024, scale: float = 0.25) -> None:
    """The options of the scripts that train whole runs with one fixed recipe
    (``run_config``): device, resolution, epochs, batch, learning rate, images an epoch,
    BatchNorm recalibration, seeds (unless None), the tree and the JSON file."""
    add_device(parser)
    parser.add_argument("--image-size", type=int, default=image_size, help="working resolution")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    parser.add_argument("--epoch-images", type=int, default=epoch_images,
                        help="min_epoch_images: images an epoch trains on at least")
    parser.add_argument("--bn-recalibrate", type=int, default=bn_recalibrate,
                        help="training images that recalibrate BatchNorm before evaluating")
    if seeds is not None:
        parser.add_argument("--seeds", type=int, default=seeds)
    add_tree(parser, scale=scale)
    add_json(parser)


def run_config(args: argparse.Namespace, **flat: Any) -> TrainConfig:
    """The fixed recipe of ``add_run_arguments``' options, with ``flat`` settings on top."""
    return TrainConfig().replace(image_size=args.image_size, epochs=args.epochs,
                                 batch_size=args.batch_size, lr=args.lr,
                                 min_epoch_images=args.epoch_images,
                                 bn_recalibrate=args.bn_recalibrate, **flat)


# --- runs --------------------------------------------------------------------------------------

def train(work: Workspace, config: TrainConfig, *, device: torch.device | str,
          plan: SplitPlan | None = None, weights: Path | None = None,
          threads: int | None = None) -> RunResult:
    """One run through the project's run API (``wbc.training.run.train_run``): ``plan`` (default the
    WBC plan of ``config`` on the workspace's tree) with the workspace's decode cache; ``weights``:
    the starting weights of a pretrained strategy. ``result.fit.wall_seconds`` is the training
    alone, without decoding or moving the data."""
    plan = plan_wbc(work.tree, config) if plan is None else plan
    return train_run(plan, config, device=device, weights=weights, cache_dir=work.cache,
                     threads=threads)


@contextmanager
def local_ray(cpus: int) -> Iterator[float]:
    """A local Ray with ``cpus`` CPUs, quiet, for the block; yields the seconds it took to
    start."""
    import logging

    import ray

    with Timer() as timer:
        ray.init(num_cpus=cpus, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield timer.seconds
    finally:
        ray.shutdown()


if __name__ == "__main__":
    parser(__doc__).parse_args()
    header()
    print(json.dumps(provenance(device=pick_device()), indent=2))
