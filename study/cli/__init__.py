"""The command lines: ``study`` (``study_command``: run and report a study) and ``wbc train``
(``wbc_train``: one cell, added to ``wbc`` through its ``wbc.commands`` entry point).

Nothing here imports Ray at load time: ``wbc --help`` builds its parser from these modules.
"""

from __future__ import annotations

from study.cli.study_command import build_parser, main

__all__ = ["build_parser", "main"]
