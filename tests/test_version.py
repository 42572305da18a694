"""``--version`` of both commands prints the installed project's version."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from study.cli import main as study_main
from wbc.cli import main as wbc_main


@pytest.mark.parametrize(("main", "prog"), [(wbc_main, "wbc"), (study_main, "study")])
def test_version_prints_the_installed_version(main: object, prog: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])  # type: ignore[operator]
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} {version('wbc-study')}"
