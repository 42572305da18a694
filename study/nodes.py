"""Every node checked and prepared before any trial runs on it.

A trial, a pretraining run or a final re-run may land on any node, and each reads the data
tree, reads and writes the results folder (rows, Tune's trial folders, the pretrained weights)
and maps the decode cache. On a cluster those paths must be the same storage on every node; a
node that cannot see them would fail every trial it gets, after the study had spent its time
elsewhere. So before pretraining and before Tune, one small task on each alive node
(``check_nodes``):

- reads the marker the driver wrote in the results folder (a folder of the same name on a
  node-local disk has no such marker) and writes one of its own that the driver must then see;
- reads a data file and the stored pretrained weights, and fingerprints the WBC decode set:
  it must be the driver's (the same paths, sizes and contents; a node with its own copy of the
  data reads each file once for its digest);
- decodes the WBC cache there (once per node; a node that has it maps it), so that no trial
  decodes in its slot.

A node that fails gets an error naming the node (id, host, address) and the path, before any
trial; what each node cost is kept in ``study.json`` (``nodes``).
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wbc.datasets import Sample
from wbc.datasets.cache import decode_samples

__all__ = ["NodeProblem", "check_nodes"]

MARKER_PREFIX = ".storage-check-"
CHECK_TIMEOUT_SECONDS = 3600.0  # decoding a large tree on a slow node included


class NodeProblem(Exception):
    """One or more nodes cannot run the study's trials; the message names them and the paths."""


@dataclass(frozen=True)
class _Check:
    results: str
    token: str
    read_files: tuple[str, ...]  # a data file, stored weights
    samples: tuple[Sample, ...]  # the WBC decode set
    image_size: int
    fingerprint: str
    cache_dir: str | None


def _read_some(path: Path) -> None:
    with path.open("rb") as handle:
        handle.read(4096)


def _on_node(check: _Check) -> dict[str, Any]:
    """What one node does: the checks, then the decode. Problems come back as text naming the
    path (the driver adds the node)."""
    import ray

    started = time.perf_counter()
    node = {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}
    results = Path(check.results)
    marker = results / f"{MARKER_PREFIX}{check.token}"
    try:
        seen = marker.read_text()
    except OSError as err:
        return {**node, "problem": f"cannot read the results folder {results} ({err}); it "
                                   "must be storage every node shares at the same path"}
    if seen != check.token:
        return {**node, "problem": f"{marker} does not hold what the driver wrote: the results "
                                   f"folder {results} is not the driver's on this node"}
    try:
        (results / f"{MARKER_PREFIX}{check.token}-{node['node_id']}").write_text(node["host"])
    except OSError as err:
        return {**node, "problem": f"cannot write in the results folder {results} ({err})"}
    for name in check.read_files:
        try:
            _read_some(Path(name))
        except OSError as err:
            return {**node, "problem": f"cannot read {name} ({err}); the data and the results "
                                       "folder must be readable at the same path on every node"}
    decode_started = time.perf_counter()
    try:
        decoded = decode_samples(list(check.samples), check.image_size, name="WBC",
                                 cache_dir=check.cache_dir)
    except (OSError, ValueError) as err:
        return {**node, "problem": f"cannot decode the WBC images ({err})"}
    if decoded.fingerprint != check.fingerprint:
        root = Path(check.samples[0].path).parent if check.samples else "?"
        return {**node, "problem": f"sees other WBC files than the driver under {root} "
                                   f"(fingerprint {decoded.fingerprint[:20]}, driver's "
                                   f"{check.fingerprint[:20]}): every node needs the same data"}
    return {**node, "decoded_images": decoded.decoded_now,
            "decode_seconds": round(time.perf_counter() - decode_started, 2),
            "check_seconds": round(time.perf_counter() - started, 2)}


def _alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def _weights_files(results: Path) -> list[str]:
    stored = results / "pretrain"
    return [str(p) for p in sorted(stored.rglob("*")) if p.is_file()][:4] \
        if stored.is_dir() else []


def _describe(node: dict[str, Any], info: dict[str, Any]) -> str:
    return (f"node {info.get('node_id', node.get('NodeID', '?'))} (host "
            f"{info.get('host', node.get('NodeManagerHostname', '?'))}, address "
            f"{node.get('NodeManagerAddress', '?')})")


def check_nodes(results: Path, samples: Sequence[Sample], image_size: int, fingerprint: str,
                *, cache_dir: str | None = None, say: Callable[[str], None] = print
                ) -> list[dict[str, Any]]:
    """Check and prepare every alive node (see the module docstring); what each cost. Raises
    ``NodeProblem`` naming every node that cannot run trials, and the path."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = _alive_nodes()
    token = secrets.token_hex(8)
    marker = results / f"{MARKER_PREFIX}{token}"
    marker.write_text(token)
    check = _Check(str(results), token,
                   (*(str(s.path) for s in samples[:1]), *_weights_files(results)),
                   tuple(samples), image_size, fingerprint, cache_dir)
    task = ray.remote(_on_node)
    started = time.perf_counter()
    try:
        refs = [task.options(num_cpus=0, max_retries=0, scheduling_strategy=(
            NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))).remote(check)
            for n in nodes]
        _, waiting = ray.wait(refs, num_returns=len(refs), timeout=CHECK_TIMEOUT_SECONDS)
        problems, found = [], []
        for node, ref in zip(nodes, refs, strict=True):
            if ref in waiting:
                problems.append(f"{_describe(node, {})}: no answer within "
                                f"{CHECK_TIMEOUT_SECONDS:.0f} s (a hung mount?)")
                continue
            try:
                info = ray.get(ref)
            except Exception as err:  # the node died, or the task could not start there
                problems.append(f"{_describe(node, {})}: the check failed ({err})")
                continue
            if "problem" not in info:
                seen = results / f"{MARKER_PREFIX}{token}-{info['node_id']}"
                if not seen.exists():
                    info["problem"] = (f"wrote {seen}, which the driver does not see: the "
                                       f"results folder {results} is not shared with it")
            if "problem" in info:
                problems.append(f"{_describe(node, info)}: {info['problem']}")
            else:
                found.append(info)
        for ref in waiting:
            ray.cancel(ref, force=True)
    finally:
        for leftover in results.glob(f"{MARKER_PREFIX}{token}*"):
            leftover.unlink(missing_ok=True)
    if problems:
        raise NodeProblem("the study cannot run on this cluster; before any trial:\n"
                          + "\n".join(f"  {p}" for p in problems)
                          + "\nput the data and --results on storage that every node mounts "
                            "at the same path (NFS, EFS; docs/cluster.md)")
    decoded = sum(n["decoded_images"] for n in found)
    say(f"{len(found)} node(s) checked in {time.perf_counter() - started:.1f} s: results "
        f"folder shared, data the same; {decoded} images decoded on nodes without the cache"
        if len(found) > 1 or decoded else
        f"node checked in {time.perf_counter() - started:.1f} s")
    return found
