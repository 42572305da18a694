"""The results folder and the study's inputs under attack: one owner per folder, nothing lost,
nothing mixed, a clear message (exit 2) instead of a traceback, and nothing written when a
check fails. Real Ray, real files, real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from study.results.owner import FolderBusy, own_folder, owner_of
from study.runner import StudyError, run_study
from study.spec import StudySpec
from wbc.training.pretrain import WeightsStore

TINY: dict[str, Any] = {
    "name": "tiny", "image_size": 32, "subsets": ["WBC_100"], "strategies": ["scratch"],
    "search_trials": 1, "startup_trials": 1, "epochs": 1, "grace_epochs": 1,
    "final_seeds": 1, "max_final_seeds": 0, "pretrain_epochs": 1,
    "train": {"batch_size": 16, "bn_recalibrate": 16, "min_epoch_images": 16,
              "color_jitter": 0.0, "warmup_epochs": 0.0},
}


def _spec(root: Path, **changes: Any) -> StudySpec:
    return StudySpec.from_dict({**StudySpec().to_dict(), **TINY, "data": str(root), **changes})


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_ADDRESS": "local"}
    return subprocess.run([sys.executable, "-m", "study", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _sets(root: Path) -> list[str]:
    sets = [f"--set={k}={json.dumps(v)}" for k, v in TINY.items() if k not in ("train", "name")]
    sets += [f"--set=train.{k}={json.dumps(v)}" for k, v in TINY["train"].items()]
    return ["--data", str(root), *sets]


def _holder(folder: Path) -> subprocess.Popen[str]:
    """Another process that owns ``folder`` until killed."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom study.results.owner import "
            "own_folder\nwith own_folder(Path(sys.argv[1]), command='study run'):\n"
            "    print('held', flush=True)\n    time.sleep(600)\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(folder)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


@pytest.fixture(scope="module")
def done_study(ray_local: None, tiny_root: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Path:
    """A finished tiny study; tests copy it before changing anything."""
    results = tmp_path_factory.mktemp("done") / "tiny"
    record = run_study(_spec(tiny_root), results, quiet=True)
    assert record["status"] == "complete"
    return results


def _copy(results: Path, tmp_path: Path) -> Path:
    target = tmp_path / results.name
    shutil.copytree(results, target, symlinks=True)
    return target


# -- one owner per folder ---------------------------------------------------------------------

def test_a_folder_in_use_is_refused_naming_its_owner_and_a_dead_owner_is_taken_over(
        tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    holder = _holder(folder)
    try:
        with pytest.raises(FolderBusy, match=rf"in use by study run \(pid {holder.pid} on host "), \
                own_folder(folder):
            pass
        assert owner_of(folder)["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: the kernel lets go
        holder.wait()
    with own_folder(folder) as me:
        assert owner_of(folder)["pid"] == me["pid"] == os.getpid()
    assert owner_of(folder) == {}  # let go: no holder named


def test_a_refused_claim_leaves_the_holders_words_and_one_process_cannot_own_twice(
        tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / ".owner").write_text('{"pid": 1}\n')  # a dead holder's words: replaced
    with own_folder(folder, command="study run --resume") as me:
        written = (folder / ".owner").read_text()
        assert json.loads(written) == me and list(me) == ["command", "pid", "host", "since",
                                                          "argv"]
        with pytest.raises(FolderBusy, match=r"in use by study run --resume \(pid "), \
                own_folder(folder):
            pass
        code = ("import sys\nfrom pathlib import Path\nfrom study.results.owner import "
                "FolderBusy, own_folder\ntry:\n    with own_folder(Path(sys.argv[1])):\n"
                "        sys.exit(1)\nexcept FolderBusy:\n    sys.exit(3)\n")
        assert subprocess.run([sys.executable, "-c", code, str(folder)]).returncode == 3
        assert (folder / ".owner").read_text() == written  # contenders did not truncate it
    assert (folder / ".owner").read_text() == ""


def test_a_killed_owners_forked_child_does_not_keep_the_folder(tmp_path: Path) -> None:
    """A driver that forked (a decode pool) and was killed: its child must not hold the lock."""
    folder = tmp_path / "results"
    folder.mkdir()
    code = ("import os, sys, time\nfrom pathlib import Path\nfrom study.results.owner import "
            "own_folder\nwith own_folder(Path(sys.argv[1])):\n    child = os.fork()\n"
            "    if child == 0:\n        time.sleep(600)\n        os._exit(0)\n"
            "    print(child, flush=True)\n    time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout is not None
    child = int(holder.stdout.readline())
    try:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        with own_folder(folder) as me:
            assert owner_of(folder)["pid"] == me["pid"]
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_second_driver_and_a_second_resume_are_refused_and_lose_nothing(
        done_study: Path, tiny_root: Path, tmp_path: Path) -> None:
    results = _copy(done_study, tmp_path)
    before = {p.name: p.read_bytes() for p in results.iterdir() if p.is_file()}
    holder = _holder(results)
    try:
        with pytest.raises(StudyError, match=rf"pid {holder.pid}"):
            run_study(None, results, resume=True, quiet=True)
        new = tmp_path / "fresh"
        new.mkdir()
        busy = _holder(new)
        try:
            with pytest.raises(StudyError, match=rf"in use by .*pid {busy.pid}"):
                run_study(_spec(tiny_root), new, quiet=True)
            assert not (new / "study.json").exists()
        finally:
            busy.kill()
            busy.wait()
    finally:
        holder.kill()
        holder.wait()
    after = {p.name: p.read_bytes() for p in results.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != ".owner"} == \
        {k: v for k, v in before.items() if k != ".owner"}


def test_two_drivers_started_together_one_runs_the_other_is_refused(
        tiny_root: Path, tmp_path: Path) -> None:
    """Two `study run` on one --results at once: one study, every row of it; the other exits 2
    naming the first, and writes nothing."""
    results = tmp_path / "shared"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    env = {**os.environ, "RAY_ADDRESS": "local"}
    drivers = []
    for log, lr in zip(logs, ("0.001", "0.004"), strict=True):
        with log.open("w") as out:
            drivers.append(subprocess.Popen(
                [sys.executable, "-m", "study", "run", *_sets(tiny_root), "--results",
                 str(results), "--quiet", "--no-report", f"--set=space.lr_min={lr}",
                 f"--set=space.lr_max={lr}"], stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True))
    try:
        codes = [d.wait(timeout=400) for d in drivers]
    finally:
        for d in drivers:
            if d.poll() is None:
                os.killpg(d.pid, signal.SIGKILL)
    texts = [log.read_text() for log in logs]
    assert sorted(codes) == [0, 2], texts
    winner = codes.index(0)
    loser_text = texts[1 - winner]
    assert ("in use by" in loser_text or "already holds a study" in loser_text), loser_text
    assert "Traceback" not in loser_text
    trials = pd.read_parquet(results / "trials.parquet")
    lr = float(("0.001", "0.004")[winner])
    assert len(trials) == 2 and set(trials["lr"]) == {lr}  # the winner's rows, all of them
    record = json.loads((results / "study.json").read_text())
    assert len(record["sessions"]) == 1 and record["spec"]["space"]["lr_min"] == lr


# -- failed work ------------------------------------------------------------------------------

def test_a_study_whose_trials_all_fail_ends_failed_and_can_be_resumed_and_reported(
        ray_local: None, tiny_root: Path, tmp_path: Path) -> None:
    from study.report import write_report
    from wbc.datasets import scan_tree
    from wbc.datasets.cache import decode_samples
    from wbc.training.inputs import plan_cam16
    from wbc.training.pretrain import pretrain_config, pretrain_key

    spec = _spec(tiny_root, strategies=["pretrain"])
    results = tmp_path / "all-fail"
    plan = plan_cam16(scan_tree(tiny_root), image_size=spec.image_size)
    fingerprint = decode_samples([*plan.train, *plan.val, *plan.test], plan.image_size,
                                 name="CAM16").fingerprint
    key = pretrain_key(fingerprint, pretrain_config(spec.base_config(),
                                                    epochs=spec.pretrain_epochs,
                                                    lr=spec.pretrain_lr))
    # Intact weights of the wrong model: every pretrain trial fails to load them.
    WeightsStore(results).store("cam16", key, {"fc.weight": torch.zeros(3)}, {"val_accuracy": 1})
    record = run_study(spec, results, quiet=True)
    assert record["status"] == "failed"
    assert "every trial failed" in record["error"] and "WBC_100-pretrain" in record["error"]
    assert record["failed_cells"] == {"WBC_100-pretrain": 1}

    again = run_study(None, results, resume=True, quiet=True)  # retried, fails the same way
    assert again["status"] == "failed" and len(again["sessions"]) == 2
    path, report = write_report(results)
    assert any("WBC_100-pretrain: 1 trial(s) failed" in line for line in report.missing)
    assert "trial(s) failed" in path.read_text()


# -- resume: the data and the weights ---------------------------------------------------------

def test_resume_refuses_changed_data_unless_allowed_and_then_keeps_the_rows_apart(
        ray_local: None, done_study: Path, tmp_path: Path) -> None:
    from study.report import load_results, summarise

    results = _copy(done_study, tmp_path)
    changed = tmp_path / "tree"
    shutil.copytree(json.loads((results / "study.json").read_text())["spec"]["data"], changed)
    record = json.loads((results / "study.json").read_text())
    record["spec"]["data"] = str(changed)
    (results / "study.json").write_text(json.dumps(record))
    val = changed / "WBC_100/val/data"
    moved = sorted((val / "Neutrophil").iterdir())[:2]
    for path in moved:  # relabelled: two Neutrophils become Monocytes
        path.rename(val / "Monocyte" / f"moved-{path.name}")
    trials_before = (results / "trials.parquet").read_bytes()

    with pytest.raises(StudyError, match=r"data changed since this study started .*"
                                         r"val Monocyte 6 -> 8"):
        run_study(None, results, resume=True, quiet=True)
    assert (results / "trials.parquet").read_bytes() == trials_before
    assert json.loads((results / "study.json").read_text())["status"] == "failed"

    record = run_study(None, results, resume=True, quiet=True, allow_data_change=True)
    assert record["data"]["changes"][-1]["to"] == record["data"]["fingerprint"]
    report = summarise(load_results(results))
    assert report.results.set_aside == {record["data"]["changes"][-1]["from"]: 2}
    assert len(report.results.trials) == 0  # both ran on the data before the change
    assert any("ran on other data" in line for line in report.missing)


def test_corrupt_stored_weights_are_set_aside_and_made_again(tmp_path: Path) -> None:
    store = WeightsStore(tmp_path)
    made: list[int] = []

    def make() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        made.append(1)
        return {"w": torch.arange(1000, dtype=torch.float32)}, {"val_accuracy": 0.9}

    first, fresh = store.ensure("cam16", "k1", make)
    assert fresh and store.ensure("cam16", "k1", make) == (first, False) and len(made) == 1
    data = first.weights.read_bytes()
    first.weights.write_bytes(data[: len(data) // 2])  # truncated
    again, fresh = store.ensure("cam16", "k1", make)
    assert fresh and len(made) == 2 and "do not match the SHA-256" in store.rebuilt["k1"]
    assert torch.equal(torch.load(again.weights, weights_only=True)["w"], torch.arange(1000.))
    assert len(list((tmp_path / "pretrain").glob("cam16-k1.corrupt-*"))) == 1
    # Same size, other bytes (zeroed): caught by the checksum, not the size.
    again.weights.write_bytes(bytes(len(again.weights.read_bytes())))
    assert store.find("cam16", "k1") is None
    # An entry without a checksum (written by hand) is used only if it reads as weights.
    legacy = store.folder("cam16", "k2")
    legacy.mkdir(parents=True)
    (legacy / "model.pt").write_bytes(b"not a checkpoint")
    (legacy / "result.json").write_text('{"val_accuracy": 0.5}')
    assert store.find("cam16", "k2") is None
    _, fresh = store.ensure("cam16", "k2", make)
    assert fresh and "cannot be read as a PyTorch state dict" in store.rebuilt["k2"]


# -- path and file problems: exit 2, a message, nothing written -------------------------------

def test_results_paths_that_cannot_hold_a_study_exit_2_with_a_message(
        tiny_root: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for target, expected in ((a_file, "is a file; give a folder"),
                             (a_file / "sub", f"is under {a_file}, which is a file")):
        result = _cli("run", *_sets(tiny_root), "--results", str(target), "--quiet")
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
    assert a_file.read_text() == "x"
    no_cache = _cli("run", *_sets(tiny_root), "--results", str(tmp_path / "r"), "--cache-dir",
                    str(a_file / "cache"))
    assert no_cache.returncode == 2 and "the decode cache" in no_cache.stderr, no_cache.stderr
    assert not (tmp_path / "r").exists()
    missing = _cli("run", "--resume", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_read_only_results_folder_exits_2(tiny_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = _cli("run", *_sets(tiny_root), "--results", str(folder / "study"), "--quiet")
    finally:
        folder.chmod(0o755)
    assert result.returncode == 2 and "not writable" in result.stderr, result.stderr


def test_a_failed_data_check_leaves_nothing_so_the_corrected_run_is_accepted(
        tiny_root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-tree"
    shutil.copytree(tiny_root, broken)
    (broken / "WBC_100/val/data/Basophil" / "bad.png").write_bytes(b"\x89PNG not really")
    results = tmp_path / "results" / "study"
    with pytest.raises(StudyError, match="not usable"):
        run_study(_spec(broken), results, quiet=True)
    assert not results.exists()  # no study.json: the same command, fixed, is accepted
    with pytest.raises(StudyError, match="not usable"):
        run_study(_spec(broken), results, quiet=True)  # refused for the data, not the folder


def test_a_corrupt_record_or_parquet_file_stops_a_resume_before_ray_starts(
        done_study: Path, tmp_path: Path) -> None:
    truncated = _copy(done_study, tmp_path / "a")
    data = (truncated / "trials.parquet").read_bytes()
    (truncated / "trials.parquet").write_bytes(data[: len(data) // 2])
    started = time.monotonic()
    result = _cli("run", "--resume", str(truncated))
    assert result.returncode == 2, result.stderr
    assert "trials.parquet: not a readable Parquet file" in result.stderr
    assert "Traceback" not in result.stderr and time.monotonic() - started < 60

    broken = _copy(done_study, tmp_path / "b")
    (broken / "study.json").write_text('{"study": "tiny", "spec": {')  # cut off mid-write
    result = _cli("run", "--resume", str(broken))
    assert result.returncode == 2 and "study.json: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    report = _cli("report", str(broken))
    assert report.returncode == 2 and "Traceback" not in report.stderr, report.stderr


def test_a_report_folder_that_cannot_be_written_exits_2(done_study: Path, tmp_path: Path
                                                          ) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    result = _cli("report", str(done_study), "--out", str(a_file / "report"))
    assert result.returncode == 2, result.stderr
    assert str(a_file) in result.stderr and "Traceback" not in result.stderr


# -- the private Ray and a folder others can write --------------------------------------------

def test_resume_refuses_a_folder_others_can_write(done_study: Path, tmp_path: Path) -> None:
    results = _copy(done_study, tmp_path)
    state = next((results / "tune").glob("searcher-state-*.pkl"))
    state.chmod(0o666)
    with pytest.raises(StudyError, match=r"writable by every user: .*pickled Python objects"):
        run_study(None, results, resume=True, quiet=True)
    state.chmod(0o644)
    results.chmod(0o777)
    with pytest.raises(StudyError, match=rf"{results} is writable by every user"):
        run_study(None, results, resume=True, quiet=True)


_LISTENING = r"""
import json, os, socket, struct
from pathlib import Path
from study.local_ray import quiet_ray, start_ray
quiet_ray()  # as every command does, before Ray is imported
import ray

def listening_ips():
    # Every TCP port this process and its descendants (Ray's daemons, workers) listen on.
    parent = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parent[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    mine, grew = {os.getpid()}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in mine} - mine
        mine |= new
        grew = bool(new)
    inodes = set()
    for pid in mine:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            pass
    ips = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            words = b"".join(struct.pack("<I", w) for w in struct.unpack(f">{len(raw) // 4}I", raw))
            ips.add(socket.inet_ntop(family, words))
    return sorted(ips)

start_ray()
print(json.dumps({"ips": listening_ips(), "node": ray.nodes()[0]["NodeManagerAddress"]}))
ray.shutdown()
"""


def test_the_private_ray_listens_on_loopback_only_ignores_a_stale_cluster_and_keeps_its_token(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    try:
        # A head that is gone, as `ray start --head` leaves it when killed: never joined.
        (temp / "ray_current_cluster").write_text("127.0.0.1:1\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(HOME=str(home), RAY_TMPDIR=str(temp))
        result = subprocess.run([sys.executable, "-c", _LISTENING], capture_output=True,
                                text=True, timeout=180, env=env)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["node"] == "127.0.0.1"
    assert found["ips"] and {ip.removeprefix("::ffff:") for ip in found["ips"]} == \
        {"127.0.0.1"}, found  # IPv4 loopback, also as an IPv6-mapped address
    token = home / ".ray" / "auth_token"
    assert token.stat().st_mode & 0o777 == 0o600
