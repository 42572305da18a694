"""The commit a study records: dirty only when the code differs from it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from study import provenance


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_rewritten_results_leave_the_commit_clean_and_changed_code_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wbc").mkdir()
    (tmp_path / "results" / "quick").mkdir(parents=True)
    (tmp_path / "wbc" / "core.py").write_text("x = 1\n")
    (tmp_path / "results" / "quick" / "report.md").write_text("old\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.org", "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "c")
    head = _git(tmp_path, "rev-parse", "HEAD")
    monkeypatch.setattr(provenance, "_ROOT", tmp_path)
    assert provenance.git_commit() == head
    # Regenerating the reference results (even moving the folder away) is not a code change.
    shutil.rmtree(tmp_path / "results" / "quick")
    assert provenance.git_commit() == head
    (tmp_path / "wbc" / "core.py").write_text("x = 2\n")
    assert provenance.git_commit() == f"{head}-dirty"
