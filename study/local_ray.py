"""Which Ray a study talks to, and what it trusts.

``start_ray()`` joins the cluster named by ``RAY_ADDRESS`` (``ray job submit`` sets it) or else
starts a private Ray for this driver alone: ``address="local"``, so a ``ray_current_cluster``
file left in Ray's temp dir by another (possibly dead, possibly someone else's) head is never
followed, and every server on the node IP ``127.0.0.1``, so nothing listens beyond loopback
(GCS, raylet, object manager, dashboard and its agents, metrics): ``quiet_ray`` sets Ray's
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before Ray is imported (a process that imported Ray
first is told how to keep it on loopback). Token auth, which Ray 2.60
turns on for a local cluster, keeps its token in ``~/.ray/auth_token``; Ray writes that file with
the process umask (often 0644), so it is created 0600 here first, and tightened when found
readable by others.

``untrusted(results)`` is checked before a resume. Resuming restores Ray Tune's experiment
state, which includes the searchers as Python pickles (``searcher-state-*.pkl``, cloudpickle
in ``experiment_state-*.json``): whoever can write those files can run code as whoever resumes
the study. A results folder, or any file of its Tune state, that other users may write (or that
another user owns) is refused, with the fix.

``quiet_ray(verbose=...)``, called by the commands before Ray is imported, sets how much of
Ray's own output a run shows. By default: none of its workers' output (their errors reach the
driver as exceptions) and no warning a user cannot act on (Tune's "performance bottleneck" and
TensorBoard-logger ones); verbose: all of it, Ray's loggers at INFO. Either way no colour
codes when standard error is not a terminal.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import sys
from pathlib import Path

__all__ = ["LOOPBACK", "TOKEN_FILE", "quiet_ray", "start_ray", "untrusted", "worker_setup"]

TOKEN_FILE = Path.home() / ".ray" / "auth_token"
# Read by Ray when ray.tune is imported: Tune's warn_if_slow threshold, whose "may be a
# performance bottleneck" warnings on a busy 2-core machine name nothing a user can change.
_SLOW_WARNING_ENV = "TUNE_WARN_THRESHOLD_S"
# Warns once that a list-valued result (confusion matrix, epoch history, excluded files) is no
# TensorBoard histogram; the results folder keeps every value.
_TBX_LOGGER = "ray.tune.logger.tensorboardx"
# Ray's switch for clusters of one machine: "0" keeps every address it hands out loopback.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"
_verbose = False
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def quiet_ray(*, verbose: bool = False) -> None:
    """How much of Ray's own output this process shows (see the module docstring). Call it
    before ``ray`` is imported: Ray reads some of these settings at import."""
    global _verbose
    _verbose = verbose
    if os.environ.get("RAY_ADDRESS", "local") == "local" and "ray" not in sys.modules:
        # A private Ray (start_ray): its token auth said, not left to Ray's default, which is
        # the same auth with a warning on every run that Ray turned it on. Ray reads the mode
        # at import, hence here; once a caller has imported Ray (a notebook, a script), this
        # process keeps the mode Ray read then, and so must the cluster it starts, which takes
        # its settings from this environment: a mode set now would be the cluster's alone.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        # Every server of a private Ray on 127.0.0.1: Ray otherwise swaps a loopback node
        # address for the machine's routable one (this switch, meant for one-machine clusters
        # on macOS and Windows, keeps the addresses it hands out loopback), read at import.
        os.environ.setdefault(_LOOPBACK_ENV, "0")
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # "(pid=...)" prefixes uncoloured
        if verbose:
            # Ray marks a deduplicated line "[repeated Nx]" in colour, whatever the above.
            os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if verbose:
        logging.getLogger(_TBX_LOGGER).setLevel(logging.NOTSET)
        return
    os.environ.setdefault(_SLOW_WARNING_ENV, "1e9")
    logging.getLogger(_TBX_LOGGER).setLevel(logging.ERROR)


class _Plain(logging.Filter):
    """Ray's own log lines without their colour codes (standard error is not a terminal)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _ANSI.sub("", record.getMessage()), ()
        return True


def worker_setup() -> None:
    """Run by every worker process of a private Ray (``worker_process_setup_hook``): name this
    cluster in ``RAY_ADDRESS``. Ray Train's placement-group cleaner looks its cluster up by
    address, and without one finds every Ray on the machine; with another running (someone's
    ``ray start``) it fails ("Found multiple active Ray instances") and cleans nothing up."""
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


def _private_token() -> None:
    """Make sure the token Ray's private cluster uses is readable by this user alone."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
            os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    path = TOKEN_FILE
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        info = path.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            path.chmod(0o600)
        return
    except OSError:
        return  # a read-only home: Ray says what it needs itself
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))


def start_ray(*, log_to_driver: bool | None = None) -> None:
    """Connect to ``RAY_ADDRESS``'s cluster, or start a private one on loopback.
    ``log_to_driver`` (default: as ``quiet_ray`` set, off unless verbose): print the workers'
    output here."""
    import ray

    if ray.is_initialized():
        return
    if log_to_driver is None:
        log_to_driver = _verbose
    if _verbose and not sys.stderr.isatty():
        for handler in logging.getLogger("ray").handlers:
            handler.addFilter(_Plain())
    level = logging.INFO if _verbose else logging.WARNING
    address = os.environ.get("RAY_ADDRESS", "local")
    if address != "local":
        ray.init(address=address, logging_level=level, log_to_driver=log_to_driver,
                 include_dashboard=None)
        return
    _private_token()
    import ray.util

    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:
        print(f"Ray was imported before study, so this private Ray listens on {node_ip}, not "
              f"on {LOOPBACK} alone (it reads {_LOOPBACK_ENV} at import): import study.cli, or "
              f"call study.local_ray.quiet_ray(), before ray, or set {_LOOPBACK_ENV}=0 in the "
              "environment", file=sys.stderr)
    ray.init(address="local", dashboard_host=LOOPBACK, logging_level=level,
             log_to_driver=log_to_driver, include_dashboard=None,
             runtime_env={"worker_process_setup_hook": f"{__name__}.worker_setup"})


def _loose(path: Path, info: os.stat_result) -> str | None:
    if info.st_uid not in (os.getuid(), 0):
        return f"{path} belongs to another user (uid {info.st_uid})"
    if info.st_mode & stat.S_IWOTH:
        return f"{path} is writable by every user"
    return None


def untrusted(results: Path) -> str | None:
    """Why resuming from ``results`` could run another user's code, or None."""
    paths = [results, results / "study.json"]
    for folder, dirs, files in os.walk(results / "tune"):  # every pickle Tune may load
        paths += [Path(folder) / name for name in (*dirs, *files)]
    for path in paths:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        reason = _loose(path, info)
        if reason is not None:
            return (f"{reason}: resuming restores Ray Tune's state from this folder, which "
                    "includes pickled Python objects, so whoever can write it can run code as "
                    f"you. If you trust its contents, make it yours alone (`chmod -R go-w "
                    f"{results}`, and copy it if another user owns it), then resume")
    return None
