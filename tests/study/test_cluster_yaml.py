"""cluster.yaml: a valid Ray cluster-launcher config that keeps the dashboard private, turns token
auth on, has GPU workers and installs the project as pyproject.toml pins it.

Validation is offline, through Ray's public autoscaler SDK and schema: ``fillout_defaults``
merges the AWS defaults file and the result is checked against ``ray/autoscaler/ray-schema.json``
(the schema ``ray up`` checks), the head type against the node types; nothing calls AWS.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import socket
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler.sdk import fillout_defaults

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO_ROOT / "cluster.yaml"
SCHEMA = Path(ray.autoscaler.__file__).with_name("ray-schema.json")


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """cluster.yaml as parsed; any network connection in the test fails it."""

    def no_network(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("cluster.yaml validation tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _validate(config: dict[str, Any]) -> dict[str, Any]:
    prepared = fillout_defaults(copy.deepcopy(config))
    jsonschema.validate(prepared, json.loads(SCHEMA.read_text()))
    if prepared["head_node_type"] not in prepared["available_node_types"]:
        raise ValueError(f"head_node_type {prepared['head_node_type']!r} is not a node type")
    return prepared


def _ray_start(commands: list[str]) -> list[str]:
    """The arguments of the one ``ray start`` among ``commands``."""
    starts = [c for c in commands if "ray start" in c]
    assert len(starts) == 1, commands
    words = shlex.split(starts[0].split(";")[-1])
    return words[words.index("start") + 1:]


def _flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name:
            return args[i + 1]
    return None


def test_cluster_yaml_validates_offline(config: dict[str, Any]) -> None:
    prepared = _validate(config)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["available_node_types"][prepared["head_node_type"]].get("max_workers",
                                                                            0) == 0


def test_dashboard_listens_on_loopback_only(config: dict[str, Any]) -> None:
    head = _ray_start(config["head_start_ray_commands"])
    assert "--head" in head
    assert _flag(head, "--dashboard-host") == "127.0.0.1"
    assert "0.0.0.0" not in yaml.safe_dump(config)


def test_token_auth_on_every_node(config: dict[str, Any]) -> None:
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[key] if "ray start" in c)
        assert re.search(r"\bRAY_AUTH_MODE=token\s+ray start\b", start), start
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    # Ray reads the token from ~/.ray/auth_token; the same file reaches every node.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_gpu_workers_autoscale_from_zero(config: dict[str, Any]) -> None:
    head_type = config["head_node_type"]
    gpu_types = {name: spec for name, spec in config["available_node_types"].items()
                 if name != head_type and spec["resources"].get("GPU", 0) >= 1}
    assert gpu_types
    for spec in gpu_types.values():
        assert spec.get("min_workers", 0) == 0
        assert spec["max_workers"] >= 1
    assert config["available_node_types"][head_type]["resources"].get("GPU", 0) == 0


def test_project_is_synced_and_installed_from_the_lock_ci_uses(config: dict[str, Any]) -> None:
    remote = next(r for r, local in config["file_mounts"].items() if local == ".")
    setup = " ; ".join(config["setup_commands"])
    assert f"pip install --no-cache-dir -c {remote}/requirements/lock.txt -e {remote}" in setup
    # CI installs from the same lock.
    assert "-c requirements/lock.txt" in (REPO_ROOT / ".ci" / "run").read_text()
    lock = dict(line.split("==") for line in
                (REPO_ROOT / "requirements" / "lock.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    # The lock satisfies pyproject.toml's torch range and pins Ray as the images do.
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    pins = {}
    for dep in pyproject["project"]["dependencies"]:
        match = re.fullmatch(r"(torch|torchvision)>=[\d.]+,<=([\d.]+)", dep.replace(" ", ""))
        if match:
            pins[match[1]] = match[2]
    assert set(pins) == {"torch", "torchvision"}
    for package, version in pins.items():
        assert lock[package] == version
    image_ray = re.search(r"rayproject/ray:([\d.]+)-", config["docker"]["worker_image"])
    assert image_ray is not None and lock["ray"] == image_ray[1]


def test_gpu_workers_get_the_gpu_and_refuse_an_old_driver(config: dict[str, Any]) -> None:
    worker = config["available_node_types"]["gpu_worker"]
    assert "--gpus all" in worker["docker"]["worker_run_options"]
    checks = " ; ".join(worker["worker_setup_commands"])
    assert "580" in checks and "torch.cuda.is_available()" in checks


@pytest.mark.parametrize(("break_it", "error"), [
    (lambda c: c.update(head_start_ray_command=c.pop("head_start_ray_commands")),
     jsonschema.ValidationError),
    (lambda c: c["available_node_types"]["gpu_worker"].update(
        min_worker=c["available_node_types"]["gpu_worker"].pop("min_workers")),
     jsonschema.ValidationError),
    (lambda c: c["docker"].update(run_option=c["docker"].pop("run_options")),
     jsonschema.ValidationError),
    (lambda c: c.update(head_node_type="cpu_head"), ValueError),
], ids=["top-level-key", "node-type-key", "docker-key", "unknown-head-type"])
def test_broken_copy_fails_validation(config: dict[str, Any], break_it: Any,
                                      error: type[Exception]) -> None:
    broken = copy.deepcopy(config)
    break_it(broken)
    with pytest.raises(error):
        _validate(broken)
