"""What every command's `main` shares: parse typed arguments with `HfArgumentParser`, turn a ValueError (bad
input, found before any work) into one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any


def parser_for(dataclasses: tuple[type, ...], prog: str, description: str, epilog: str | None = None, **defaults):
    """An `HfArgumentParser` over ``dataclasses``; both ``--work-dir`` and ``--work_dir`` spellings work."""
    import argparse

    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        dataclasses, prog=prog, description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    if defaults:
        parser.set_defaults(**defaults)
    return parser


def parse(parser, argv: list[str] | None, prog: str, ours: type | None = None) -> tuple[Any, ...] | None:
    """The parsed dataclasses, or None after printing the `__post_init__` message of a bad value.

    ``ours``: the command's own dataclass, checked first on its own, so a bad value of ours is reported before
    the parser needs ``TrainingArguments`` (which imports torch).
    """
    try:
        if ours is not None and not {"-h", "--help"} & set(sys.argv[1:] if argv is None else argv):
            parser_for((ours,), prog, "").parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
        return parser().parse_args_into_dataclasses(args=argv)
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return None


def command_main(parser, argv: list[str] | None, prog: str, work: Callable[..., int], ours: type | None = None) -> int:
    """A command's whole `main`: parse (see `parse`), then ``work(*parsed)``; a ValueError from either is bad
    input, found before any work is lost: one message, exit code 2."""
    parsed = parse(parser, argv, prog, ours)
    if parsed is None:
        return 2
    try:
        return work(*parsed)
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2


def option(default: Any = dataclasses.MISSING, help: str = "", **metadata: Any) -> Any:
    """A dataclass field that `HfArgumentParser` turns into an option with ``help`` (and e.g. ``choices``)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})
