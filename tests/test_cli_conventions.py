"""Both command lines follow the usual conventions: help on every option, defaults shown, no
reST markup in --help, examples in the epilogs, -q/-v where Ray has logs to show, and one
meaning per option name."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

import pytest

from study.cli import build_parser as study_parser
from study.spec import PRESETS
from wbc.cli import CommandParser
from wbc.cli import build_parser as wbc_parser

PARSERS: dict[str, Callable[[], CommandParser]] = {"wbc": wbc_parser, "study": study_parser}
MAIN = {"wbc": ("synth", "check", "import", "decode", "segment", "predict", "evaluate", "export",
                "train"),
        "study": ("run", "report")}


def _parsers(parser: CommandParser) -> Iterator[CommandParser]:
    yield parser
    for sub, _ in parser.commands.values():
        yield from _parsers(sub)


def _all() -> Iterator[CommandParser]:
    for build in PARSERS.values():
        yield from _parsers(build())


def _options(parser: CommandParser) -> Iterator[argparse.Action]:
    for action in parser.options:
        if action.option_strings != ["-h", "--help"] and action.help != argparse.SUPPRESS:
            yield action


def test_every_parser_knows_its_options_and_commands() -> None:
    # What the tests below read is what --help prints: every option and command, no more.
    for parser in _all():
        text = parser.format_help()
        for action in parser.options:
            assert all(flag in text for flag in action.option_strings), (parser.prog, action)
        assert all(name in text for name in parser.commands), parser.prog
    assert sum(1 for _ in _all()) > len(MAIN["wbc"]) + len(MAIN["study"])
    assert any(a.option_strings == ["--lr"] for a in wbc_parser().commands["train"][0].options)


def test_every_option_and_command_has_help() -> None:
    missing = [f"{p.prog} {a.option_strings or a.dest}" for p in _all() for a in _options(p)
               if not (a.help or "").strip()]
    missing += [f"{p.prog} {name}" for p in _all() for name, (_, text) in p.commands.items()
                if not (text or "").strip()]
    assert missing == []


def test_help_shows_every_default_worth_showing() -> None:
    unsaid = []
    for parser in _all():
        for action in _options(parser):
            default = action.default
            if not action.option_strings or default in (None, False, [], argparse.SUPPRESS):
                continue
            if "default" not in (action.help or "") % {**vars(action), "default": default}:
                unsaid.append(f"{parser.prog} {action.option_strings[-1]}")
    assert unsaid == []


def test_help_text_has_no_none_default_or_rest_markup() -> None:
    for parser in _all():
        text = parser.format_help()
        assert "default: None" not in text, parser.prog
        for markup in ("``", ":func:", ":class:", ":mod:", ":meth:"):
            assert markup not in text, (parser.prog, markup)


def test_commands_and_main_subcommands_show_examples() -> None:
    for name, build in PARSERS.items():
        top = build()
        for parser in (top, *(top.commands[c][0] for c in MAIN[name])):
            epilog = parser.epilog or ""
            lines = [x for x in epilog.splitlines()[1:] if x.startswith("  ")]
            assert epilog.startswith("examples:") and 2 <= len(lines) <= 4, parser.prog
            text = parser.format_help()
            assert all(line in text for line in lines), parser.prog  # kept as written


def test_preset_choices_are_listed() -> None:
    text = study_parser().commands["run"][0].format_help()
    assert "{" + ",".join(PRESETS) + "}" in text


@pytest.mark.parametrize(("build", "argv"), [
    (study_parser, ["run"]), (wbc_parser, ["train"])])
def test_quiet_and_verbose_are_accepted_and_exclusive(
        build: Callable[[], argparse.ArgumentParser], argv: list[str]) -> None:
    parser = build()
    assert parser.parse_args([*argv, "-q"]).quiet
    assert parser.parse_args([*argv, "--verbose"]).verbose
    quiet_default = parser.parse_args(argv)
    assert not quiet_default.quiet and not quiet_default.verbose
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "-q", "-v"])


def test_data_commands_take_quiet() -> None:
    args = wbc_parser().parse_args(["check", "data", "-q", "--workers", "2"])
    assert args.quiet and args.workers == 2


def test_train_workers_and_decode_workers_are_two_options() -> None:
    args = wbc_parser().parse_args(["train", "--train-workers", "2", "--decode-workers", "3"])
    assert (args.train_workers, args.decode_workers) == (2, 3)
    default = wbc_parser().parse_args(["train"])
    assert (default.train_workers, default.decode_workers) == (1, None)


