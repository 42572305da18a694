"""Both command lines follow the usual conventions: help on every option, defaults shown, no
reST markup in --help, examples in the epilogs, -q/-v where Ray has logs to show, and one
meaning per option name."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

import pytest

from study.cli import build_parser as study_parser
from study.spec import PRESETS
from wbc.cli import build_parser as wbc_parser

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {"wbc": wbc_parser,
                                                             "study": study_parser}
MAIN = {"wbc": ("synth", "check", "import", "decode", "segment", "predict", "evaluate", "export",
                "train"),
        "study": ("run", "report")}


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def _all() -> Iterator[argparse.ArgumentParser]:
    for build in PARSERS.values():
        yield from _parsers(build())


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) \
                and action.help != argparse.SUPPRESS:
            yield action


def test_every_option_and_command_has_help() -> None:
    missing = [f"{p.prog} {a.option_strings or a.dest}" for p in _all() for a in _options(p)
               if not (a.help or "").strip()]
    for parser in _all():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{parser.prog} {c.dest}" for c in action._choices_actions
                            if not (c.help or "").strip()]
    assert missing == []


def test_help_shows_every_default_worth_showing() -> None:
    unsaid = []
    for parser in _all():
        formatter = parser._get_formatter()
        for action in _options(parser):
            default = action.default
            if not action.option_strings or default in (None, False, [], argparse.SUPPRESS):
                continue
            if "default" not in formatter._expand_help(action):
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
        subs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
        for parser in (top, *(subs.choices[c] for c in MAIN[name])):
            epilog = parser.epilog or ""
            lines = [x for x in epilog.splitlines()[1:] if x.startswith("  ")]
            assert epilog.startswith("examples:") and 2 <= len(lines) <= 4, parser.prog
            text = parser.format_help()
            assert all(line in text for line in lines), parser.prog  # kept as written


def test_preset_choices_are_listed() -> None:
    subs = next(a for a in study_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = subs.choices["run"].format_help()
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


