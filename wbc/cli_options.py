"""Command-line options made from the config dataclasses: one source for the defaults, the
choices and the help of every training setting.

``add_config_options(parser, TrainConfig)`` adds ``--lr``, ``--aug-factor``, ... for every leaf
field (help from the field's ``setting(..., help=...)``, choices from its ``Literal``, the
default from the dataclass); ``config_from_options(args, TrainConfig)`` builds the config back
from the parsed arguments, so nothing between the command line and the config restates them. ``UserError`` and
``examples`` are the other pieces every command shares (``wbc.cli`` re-exports them).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from wbc.config import TrainConfig

__all__ = ["UserError", "add_config_options", "config_fields", "config_from_options", "examples"]


class UserError(Exception):
    """A mistake in what the user asked for; printed without a traceback."""


def examples(*commands: str) -> str:
    """An epilog of example command lines."""
    return "examples:\n" + "\n".join(f"  {command}" for command in commands)


def config_fields(cls: type = TrainConfig) -> Iterator[tuple[str, Any, dataclasses.Field]]:
    """(flat name, type hint, field) of every leaf setting of ``cls``, sections expanded."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield from config_fields(hint)
        else:
            yield f.name, hint, f


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


def _add(parser: argparse.ArgumentParser, name: str, hint: Any, f: dataclasses.Field) -> None:
    flag = "--" + name.replace("_", "-")
    default = _default(f)
    help_text = f.metadata.get("help", "")
    optional = get_origin(hint) is Union or type(None) in get_args(hint)
    base = next((a for a in get_args(hint) if a is not type(None)), hint) if optional else hint
    if get_origin(base) is Literal:
        parser.add_argument(flag, dest=name, choices=get_args(base), default=default,
                            help=f"{help_text} (default: %(default)s)")
    elif base is bool and optional:
        # A switch that may also be left to the strategy: on, off, or not given.
        parser.add_argument(flag, dest=name, type=_on_off, default=default, metavar="{on,off}",
                            help=f"{help_text}")
    elif base is bool:
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                            default=default, help=f"{help_text} (default: %(default)s)")
    else:
        kind = base if base in (int, float, str) else str
        parser.add_argument(flag, dest=name, type=kind, default=default,
                            help=f"{help_text} (default: %(default)s)")


def add_config_options(parser: argparse.ArgumentParser, cls: type = TrainConfig, *,
                       exclude: tuple[str, ...] = (), choices: dict[str, tuple[str, ...]] | None
                       = None) -> None:
    """Add one option per leaf setting of ``cls`` (except ``exclude``) to ``parser``.
    ``choices`` restricts free-text settings (``strategy``: the registered names)."""
    for name, hint, f in config_fields(cls):
        if name in exclude:
            continue
        if choices and name in choices:
            parser.add_argument("--" + name.replace("_", "-"), dest=name,
                                choices=choices[name], default=_default(f),
                                help=f"{f.metadata.get('help', '')} (default: %(default)s)")
        else:
            _add(parser, name, hint, f)


def config_from_options(args: argparse.Namespace, cls: type = TrainConfig,
                        **overrides: Any) -> Any:
    """The config ``cls`` from parsed options (``TrainConfig.from_flat`` validates it)."""
    values = {name: getattr(args, name) for name, _, _ in config_fields(cls)
              if hasattr(args, name)}
    values.update(overrides)
    if cls is TrainConfig:
        return TrainConfig.from_flat(values)
    return cls(**values)
