"""`transmamba <command>`: one entry point; each command lives in its own module with a `main(argv)`."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("transmamba.demo", "build a student, run it on an image and print its figures"),
    "convert": ("transmamba.conversion.cli", "stage 1: subclone a ViT-family Transformer into a Mamba student"),
    "train": ("transmamba.trainers.train", "stage 2: distil a converted student from its teacher (WSAB)"),
    "train-vlm": ("transmamba.trainers.train_vlm", "distil a TransLlavaMamba (Mamba LM) from its LLaVA teacher"),
    "train-retrieval": ("transmamba.trainers.train_retrieval", "train a TransVideoMamba for text-video retrieval"),
    "convert-lm": ("transmamba.conversion.convert_lm", "convert a Transformer LM into a TransMamba-switch LM"),
    "train-lm": ("transmamba.trainers.train_lm", "train a TransMamba-switch LM (from scratch or distilled)"),
    "run": ("transmamba.run", "the whole pipeline: teacher, convert, train, evaluate, card, optional push"),
    "card": ("transmamba.model_cards.cli", "regenerate a model folder's card from its stored results"),
}


def _usage() -> str:
    lines = ["usage: transmamba <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run `transmamba <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"transmamba: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
