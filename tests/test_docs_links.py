"""The README and docs/: every relative link resolves, and the README stays short and opens with
the commands that install, run the main job and run the tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCUMENTS = sorted([README, REPO_ROOT / "results" / "README.md",
                    *(REPO_ROOT / "docs").glob("*.md")])
README_MAX_LINES = 150

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); the text may span lines and hold one level of brackets.
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def _prose(text: str) -> str:
    """The text outside fenced code blocks, with inline code spans blanked."""
    kept, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            kept.append("")
            continue
        kept.append("" if fenced else line)
    return _INLINE_CODE.sub("code", "\n".join(kept))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation other than
    '-' and '_' removed, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match is None:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    """The link targets of a Markdown file that point inside the repository."""
    targets = _LINK.findall(_prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not _EXTERNAL.match(t) and not t.startswith("/")]


def broken_links(path: Path) -> list[str]:
    """Each relative link of ``path`` whose file, or whose heading for an #anchor, is missing."""
    problems = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{target}: {resolved} does not exist")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    return problems


def first_code_block(path: Path) -> str:
    """The body of the first fenced code block of a Markdown file."""
    match = re.search(r"^```[^\n]*\n(.*?)^```", path.read_text(encoding="utf-8"),
                      re.MULTILINE | re.DOTALL)
    assert match, f"{path} has no fenced code block"
    return match.group(1)


def _commands(block: str) -> list[list[str]]:
    """Each line of a shell block as its commands, split on '&&'."""
    return [[part.strip() for part in line.split("&&")] for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_the_link_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## The `study run` step, in short\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#the-study-run-step-in-short) [self](#page) "
        "[web](https://example.org/x.md)\n![a picture\nover two lines](missing.png)\n"
        "[gone](other.md#no-such-heading) `[code](nowhere.md)`\n\n```\n[fenced](nowhere.md)\n```\n")
    assert broken_links(page) == [
        f"missing.png: {tmp_path / 'missing.png'} does not exist",
        "other.md#no-such-heading: no heading with anchor #no-such-heading in other.md",
    ]


def test_github_slugs() -> None:
    assert github_slug("Running the study: `study run`") == "running-the-study-study-run"
    assert github_slug("What the quick preset can answer, and what not") == (
        "what-the-quick-preset-can-answer-and-what-not")
    assert github_slug("(c) On a cluster from `cluster.yaml`") == "c-on-a-cluster-from-clusteryaml"
    assert github_slug("Using `wbc_train` [here](x.md)") == "using-wbc_train-here"


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, more than {README_MAX_LINES}: move detail to docs/")


def test_readme_opens_with_install_run_and_test_commands() -> None:
    commands = _commands(first_code_block(README))
    assert ["pip install -e .", "study run"] in commands, commands
    assert any("python -m pytest" in line for line in commands), commands


def test_ci_runs_the_readmes_test_command() -> None:
    test_commands = [part for line in _commands(first_code_block(README)) for part in line
                     if part.startswith("python -m pytest")]
    ci_lines = {line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()}
    assert test_commands and all(command in ci_lines for command in test_commands), (
        test_commands)
