"""A real Ray head node on 127.0.0.1, with token auth, for tests that go through ``ray job submit``.

``ray stop`` kills every Ray process on the machine, including another test's in-process
``ray.init()`` cluster, so it is never used here. The head runs as ``ray start --head --block``
in a new session; teardown sends that process SIGTERM (Ray then ends its own processes) and
kills by id whatever it started and left behind: the processes of that session and their
descendants (a job's driver runs in a session of its own under the raylet).

The token lives in a file in the head's temp dir and reaches Ray through
``RAY_AUTH_TOKEN_PATH``, so the real ``~/.ray/auth_token`` is neither read nor written.
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` stops Ray from swapping ``--node-ip-address=127.0.0.1``
for the machine's routable address (``ray._private.services.resolve_ip_for_localhost``), so
every address it hands out is loopback; it also makes a plain `ray start --address` refuse to
join, so ``running_worker`` joins a second node through a small entry that lifts both.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "HeadNode",
    "WorkerNode",
    "free_port",
    "ray_cli",
    "ray_head",
    "running_head",
    "running_worker",
    "started_by",
    "still_running",
]

# Variables that would point the head or the CLI at another cluster or another token.
_SCRUBBED_ENV = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                 "RAY_AUTH_TOKEN_PATH", "RAY_JOB_ID", "RAY_NAMESPACE")
# No proxy may carry a request to the local dashboard (``requests`` honours these variables).
_PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def ray_cli() -> list[str]:
    """The ``ray`` command of the Python running the tests, so the head and the job's
    ``python`` see the same packages (the project included)."""
    return [sys.executable, "-m", "ray.scripts.scripts"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now: held open together while the
    OS picks them, so no two are the same (one at a time, the OS may hand the same port out
    twice, and Ray refuses two components on one port)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                 for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


@dataclass(frozen=True)
class HeadNode:
    """A running head: where to reach it and the environment a client needs."""

    dashboard_url: str  # http://127.0.0.1:PORT, the job server (``ray job submit --address``)
    gcs_address: str  # 127.0.0.1:PORT, for ``ray.init(address=...)``
    env: dict[str, str]  # RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH, no RAY_ADDRESS
    token: str
    temp_dir: Path  # --temp-dir: session logs live under it
    pid: int  # the ``ray start --block`` process

    def ray(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run the ``ray`` CLI with this head's auth environment; output captured, no check."""
        return subprocess.run([*ray_cli(), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def http_status(self, path: str, *, token: str | None = None) -> int:
        """HTTP status of GET ``path`` on the dashboard, sending ``token`` as a bearer token."""
        request = urllib.request.Request(self.dashboard_url + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        return _get_status(request)

    def get_json(self, path: str) -> Any:
        """GET ``path`` on the dashboard with this head's token; the decoded JSON body."""
        request = urllib.request.Request(self.dashboard_url + path,
                                         headers={"Authorization": f"Bearer {self.token}"})
        with _OPENER.open(request, timeout=30) as response:
            return json.load(response)

    def answers(self) -> bool:
        """Whether the job server is up and accepts this head's token."""
        try:
            return self.http_status("/api/jobs/", token=self.token) == 200
        except OSError:  # not listening yet
            return False


# Straight to 127.0.0.1, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_status(request: urllib.request.Request) -> int:
    try:
        with _OPENER.open(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _head_env(token_path: Path) -> dict[str, str]:
    """The environment of the head and of every client of it (the ``ray`` CLI)."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV + _PROXY_ENV}
    env.update({
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # loopback addresses only (module docstring)
        "RAY_USAGE_STATS_ENABLED": "0",
        # SIGTERM on ``ray start --block`` first drains the node for up to 30 s; a test head
        # has nothing to hand over.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    return env


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, parent pid, session id, start time in clock ticks) from /proc, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces
    return fields[0], int(fields[1]), int(fields[3]), int(fields[19])


def _alive(pid: int, started: int) -> bool:
    """Whether ``pid`` still runs the process that started at ``started`` (not a zombie)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[3] == started and stat[0] not in ("Z", "X")


def started_by(root: int, *, descendants: bool = True) -> dict[int, int]:
    """Processes of ``root``'s session (and, by default, all of ``root``'s descendants):
    pid -> start time. Pass ``descendants=False`` once ``root`` is reaped: its pid may be
    reused, but a session id is not while any process of the session lives."""
    table: dict[int, tuple[str, int, int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            table[int(entry.name)] = stat
    found = {pid for pid, stat in table.items() if stat[2] == root}
    frontier = (found | {root}) if descendants else set()
    while frontier:
        children = {pid for pid, stat in table.items() if stat[1] in frontier and pid not in found}
        found |= children
        frontier = children
    return {pid: table[pid][3] for pid in found}


def still_running(known: dict[int, int]) -> list[int]:
    """The pids of ``known`` (pid -> start time) still running; the start time guards against
    pid reuse."""
    return [pid for pid, started in known.items() if _alive(pid, started)]


def _kill_leftovers(known: dict[int, int], *, timeout: float = 10.0) -> None:
    """SIGKILL what is left of ``known`` and wait until it is gone. Children of Ray's own
    processes exit on their own once their parent has, but not at once."""
    deadline = time.monotonic() + timeout
    while (left := still_running(known)) and time.monotonic() < deadline:
        for pid in left:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes], temp_dir: Path) -> None:
    """End a ``ray start --block`` and exactly the processes it started; remove its temp dir."""
    known = started_by(proc.pid)
    if proc.poll() is None:
        # ``ray start --block`` ends its processes on SIGTERM (no drain: _head_env).
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    known.update(started_by(proc.pid, descendants=False))
    _kill_leftovers(known)
    shutil.rmtree(temp_dir, ignore_errors=True)


@contextmanager
def running_head(*, num_cpus: int = 2, start_timeout: float = 120.0,
                 extra_args: Sequence[str] = ()) -> Iterator[HeadNode]:
    """Start a token-auth Ray head on 127.0.0.1 with free ports, yield it once its job server
    answers, and end exactly the processes it started."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the head-node fixture tracks its processes through /proc (Linux only)")
    # A short path: Ray puts Unix sockets under it, and those are limited to about 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="wbc-rayhead-"))
    token = secrets.token_hex(32)  # the shape of Ray's own tokens (``ray get-auth-token``)
    token_path = temp_dir / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    env = _head_env(token_path)
    gcs_port, dashboard_port, client_port, agent_port = free_ports(4)
    command = [
        *ray_cli(), "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
        # Fixed by default (10001, 52365): another Ray on the machine may hold them.
        f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={agent_port}",
        f"--num-cpus={num_cpus}", "--num-gpus=0", "--disable-usage-stats",
        f"--temp-dir={temp_dir / 'ray'}", *extra_args,
    ]
    log_path = temp_dir / "ray-start.log"
    try:
        with log_path.open("w") as log:
            # A new session: the head's processes are told apart from any other Ray here.
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    head = HeadNode(dashboard_url=f"http://127.0.0.1:{dashboard_port}",
                    gcs_address=f"127.0.0.1:{gcs_port}", env=env, token=token,
                    temp_dir=temp_dir, pid=proc.pid)
    try:
        deadline = time.monotonic() + start_timeout
        while not head.answers():
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {proc.returncode}:\n"
                                   f"{_log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the job server at {head.dashboard_url} did not answer "
                                   f"within {start_timeout:.0f} s:\n{_log_tail(log_path)}")
            time.sleep(0.5)
        yield head
    finally:
        _stop(proc, temp_dir)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[HeadNode]:
    """A token-auth Ray head on 127.0.0.1 (2 CPUs) for one test module."""
    with running_head() as head:
        yield head


# ``ray start`` for a node joining a head on 127.0.0.1: Ray would swap the loopback address for
# the machine's routable one, and refuses to join with the head's
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; both are switched off in this process only.
_JOIN_ENTRY = """
import sys

import ray._private.ray_constants as ray_constants
import ray._private.services as services

services.resolve_ip_for_localhost = lambda host: host
ray_constants.ENABLE_RAY_CLUSTER = True
from ray.scripts.scripts import main

sys.argv = ["ray", *sys.argv[1:]]
main()
"""


@dataclass(frozen=True)
class WorkerNode:
    """A second node of a head's cluster, on the same machine."""

    pid: int  # the ``ray start --block`` process (under ``unshare`` when hiding a path)
    temp_dir: Path
    node_manager_port: int

    def processes(self) -> dict[int, int]:
        """This node's processes now: pid -> start time."""
        return started_by(self.pid)

    def raylet_pid(self) -> int:
        """The pid of this node's raylet."""
        for pid in self.processes():
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if name == "raylet":
                return pid
        raise RuntimeError(f"no raylet among the processes of the node started as {self.pid}")


def _alive_nodes(head: HeadNode) -> list[dict[str, Any]]:
    listing = head.ray("list", "nodes", "--address", head.dashboard_url, "--format", "json",
                       "--filter", "state=ALIVE", timeout=60)
    if listing.returncode != 0:
        return []
    try:
        return list(json.loads(listing.stdout))
    except json.JSONDecodeError:
        return []


@contextmanager
def running_worker(head: HeadNode, *, num_cpus: int = 1, hide: Path | None = None,
                   nodes: int = 2, start_timeout: float = 120.0) -> Iterator[WorkerNode]:
    """Join a second node to ``head`` on 127.0.0.1 with its own temp dir and free ports; yield
    it once the cluster counts ``nodes`` alive nodes, and end exactly the processes it
    started.

    ``hide``: a folder this node must not see. The node runs in its own mount namespace
    (``unshare -m``, root only) with an empty tmpfs mounted over that folder, so its processes
    find the folder empty while every other process sees the real one.
    """
    if hide is not None and (os.geteuid() != 0 or shutil.which("unshare") is None):
        pytest.skip("hiding a path from one node needs root and unshare(1)")
    temp_dir = Path(tempfile.mkdtemp(prefix="wbc-raynode-"))
    entry = temp_dir / "join_node.py"
    entry.write_text(_JOIN_ENTRY)
    node_manager_port, object_port, grpc_port, listen_port, metrics_port, env_port = (
        free_ports(6))
    command = [
        sys.executable, str(entry), "start", "--block",
        f"--address={head.gcs_address}", "--node-ip-address=127.0.0.1",
        f"--node-manager-port={node_manager_port}", f"--object-manager-port={object_port}",
        f"--dashboard-agent-grpc-port={grpc_port}",
        f"--dashboard-agent-listen-port={listen_port}", f"--metrics-export-port={metrics_port}",
        f"--runtime-env-agent-port={env_port}", f"--num-cpus={num_cpus}", "--num-gpus=0",
        "--disable-usage-stats", f"--temp-dir={temp_dir / 'ray'}",
    ]
    if hide is not None:
        hide.mkdir(parents=True, exist_ok=True)
        command = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs wbc-hidden "$0" && exec "$@"', str(hide), *command]
    log_path = temp_dir / "ray-start.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, env=head.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    worker = WorkerNode(pid=proc.pid, temp_dir=temp_dir, node_manager_port=node_manager_port)
    try:
        deadline = time.monotonic() + start_timeout
        while len(_alive_nodes(head)) < nodes:
            if proc.poll() is not None:
                raise RuntimeError(f"the joining ray start exited with {proc.returncode}:\n"
                                   f"{_log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the second node did not join within {start_timeout:.0f} "
                                   f"s:\n{_log_tail(log_path)}")
            time.sleep(1.0)
        yield worker
    finally:
        _stop(proc, temp_dir)
