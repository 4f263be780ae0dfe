"""`transmamba card <folder>`: regenerate a model folder's README.md from its stored, measured results.

The library call is `card(CardArguments) -> Path`. `CardArguments` reads and checks the stored results (cheap: one
JSON file), so a folder without them is one message before the card code (and torch) is imported.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..cli_support import command_main, option, parser_for
from .results import RESULTS_NAME, RunResults

PROG = "transmamba card"
DESCRIPTION = f"""Rewrite FOLDER/README.md (YAML metadata, model-index, results table, method, data, budget,
how to load, limitations) from FOLDER/{RESULTS_NAME}, the measurements `transmamba run` or
`train` stored. No number goes into the card that is not in that file.

  transmamba card FOLDER    (the same as --folder FOLDER)"""


@dataclass
class CardArguments:
    folder: Path = option(help=f"Model folder written by `transmamba run` or `train` (holds {RESULTS_NAME}).")

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        RunResults.load(self.folder)  # a ValueError naming what is missing or wrong, and which command writes it


def card(args: CardArguments) -> Path:
    """The rewritten README.md of ``args.folder``."""
    from .card import write_card

    return write_card(args.folder)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on a folder without valid stored results (nothing written)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):  # the positional spelling: `transmamba card FOLDER`
        argv = ["--folder", *argv]
    return command_main(lambda: parser_for((CardArguments,), PROG, DESCRIPTION), argv, PROG, _command)


def _command(args: CardArguments) -> int:
    print(f"wrote {card(args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
