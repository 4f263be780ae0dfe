"""What every command's `main` shares: parse typed arguments with `HfArgumentParser`, turn a ValueError (bad
input, found before any work) into one line on stderr and exit code 2, never a traceback.

Commands that also take every `transformers.TrainingArguments` option (`training_command_main`) answer ``--help``
with their own options and one paragraph about the rest: importing ``TrainingArguments`` imports torch and
accelerate (seconds to tens of seconds), which ``--help`` and an error in our own options should not wait for.
``--help-training`` prints the full list; a real run parses everything with the full parser."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any


def parser_for(
    dataclasses: tuple[type, ...], prog: str, description: str, epilog: str | None = None, *,
    allow_abbrev: bool = True, **defaults,
):  # fmt: skip
    """An `HfArgumentParser` over ``dataclasses``; both ``--work-dir`` and ``--work_dir`` spellings work."""
    import argparse

    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        dataclasses, prog=prog, description=description, epilog=epilog, allow_abbrev=allow_abbrev,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    if defaults:
        parser.set_defaults(**defaults)
    return parser


def parse(parser, argv: list[str] | None, prog: str, ours: type | None = None) -> tuple[Any, ...] | None:
    """The parsed dataclasses, or None after printing the `__post_init__` message of a bad value.

    ``ours``: the command's own dataclass, checked first on its own, so a bad value of ours is reported before
    the parser needs ``TrainingArguments`` (which imports torch). No abbreviations there: a `TrainingArguments`
    option such as ``--project`` must not be read as a prefix of one of ours (``--projection_dim``).
    """
    try:
        if ours is not None and not {"-h", "--help"} & set(sys.argv[1:] if argv is None else argv):
            parser_for((ours,), prog, "", allow_abbrev=False).parse_args_into_dataclasses(
                args=argv, return_remaining_strings=True
            )
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


def check_fraction(option: str, value: float) -> None:
    """A loss weight or share: one message unless it is in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{option} must be in [0, 1], got {value}.")


def check_positive(option: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{option} must be positive, got {value}.")


def check_choice(option: str, value: Any, choices: tuple | list) -> None:
    if value not in choices:
        raise ValueError(f"{option} {value!r}: choose one of {', '.join(choices)}.")


def option(default: Any = dataclasses.MISSING, help: str = "", **metadata: Any) -> Any:
    """A dataclass field that `HfArgumentParser` turns into an option with ``help`` (and e.g. ``choices``)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


HELP_TRAINING = "--help-training"
TRAINING_EXAMPLES = "--output_dir, --max_steps, --num_train_epochs, --learning_rate, --per_device_train_batch_size, " \
    "--use_cpu, --resume_from_checkpoint, --push_to_hub"  # fmt: skip


def training_parser(ours: type, prog: str, description: str, **defaults):
    """Our dataclass next to `TrainingArguments` (this imports torch): a real run's parser."""
    from transformers import TrainingArguments

    return parser_for((ours, TrainingArguments), prog, description, **defaults)


def training_epilog(prog: str, defaults: dict[str, Any]) -> str:
    """The ``--help`` paragraph that stands for the `TrainingArguments` options it does not list."""
    import textwrap

    changed = ", ".join(f"--{name}={value}" for name, value in defaults.items())
    text = (
        f"Every transformers.TrainingArguments option is accepted too ({TRAINING_EXAMPLES}, ...); this command's "
        f"defaults for them: {changed}. `{prog} {HELP_TRAINING}` lists them all (it imports torch, so it is slower)."
    )
    return textwrap.fill(text, width=100, break_on_hyphens=False, break_long_words=False)


def training_command_main(
    ours: type, prog: str, description: str, argv: list[str] | None, work: Callable[..., int], **defaults: Any
) -> int:
    """`command_main` for a command taking ``ours`` + every `TrainingArguments` option (``defaults`` are ours for
    them): ``--help`` lists ours quickly, ``--help-training`` everything, anything else is a run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if HELP_TRAINING in argv or {"-h", "--help"} & set(argv):  # printed and exit code 0, as argparse does
        full = HELP_TRAINING in argv
        parser = training_parser(ours, prog, description, **defaults) if full else parser_for(
            (ours,), prog, description, training_epilog(prog, defaults))  # fmt: skip
        parser.print_help()
        parser.exit()
    return command_main(lambda: training_parser(ours, prog, description, **defaults), argv, prog, work, ours)
