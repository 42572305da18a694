"""Docstrings and comments point somewhere: every file of the repository that a Python file
names (``docs/study.md``, ``benchmarks/replication.py``, ``study/sequential.py``) exists, and
none names a document the repository does not hold (a design note or style guide kept
elsewhere), as tests/test_docs_links.py checks the Markdown links."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"(?<![\w/.<-])((?:docs|benchmarks|study|wbc|tests|requirements|docker)"
                       r"/[\w./-]*\.(?:md|py|sh|txt|toml|yaml))\b")
ELSEWHERE = re.compile(r"\bDESIGN\.md\b|\bSTYLE\.md\b|house style", re.IGNORECASE)


def _python_files() -> list[Path]:
    return [p for p in sorted(ROOT.rglob("*.py"))
            if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]


def test_every_file_a_docstring_names_exists() -> None:
    this = Path(__file__).resolve()
    missing = [f"{path.relative_to(ROOT)}:{n}: {ref}"
               for path in _python_files() if path.resolve() != this
               for n, line in enumerate(path.read_text().splitlines(), 1)
               for ref in REFERENCE.findall(line) if not (ROOT / ref).exists()]
    assert not missing, "references to files that do not exist: " + "; ".join(missing)


def test_no_docstring_names_a_document_kept_elsewhere() -> None:
    this = Path(__file__).resolve()
    found = [f"{path.relative_to(ROOT)}:{n}"
             for path in _python_files() if path.resolve() != this
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if ELSEWHERE.search(line)]
    assert not found, "documents the repository does not hold: " + "; ".join(found)


def test_the_check_finds_a_missing_file() -> None:
    assert REFERENCE.findall("see docs/nowhere.md and study/spec.py") == [
        "docs/nowhere.md", "study/spec.py"]
    assert not (ROOT / "docs/nowhere.md").exists()
