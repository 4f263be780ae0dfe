"""`transmamba card <folder>`: regenerate a model folder's README.md from its stored, measured results."""

from __future__ import annotations

import argparse
import sys

from .card import RESULTS_NAME, write_card


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transmamba card",
        description=f"Rewrite FOLDER/README.md (YAML metadata, model-index, results table, method, data, budget, "
        f"how to load, limitations) from FOLDER/{RESULTS_NAME}, the measurements `transmamba run` stored. "
        "No number goes into the card that is not in that file.",
    )
    parser.add_argument("folder", help="model folder written by `transmamba run`")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = write_card(args.folder)
    except ValueError as error:
        print(f"transmamba card: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
