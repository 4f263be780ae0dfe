"""`transmamba convert-lm`: turn a pretrained Transformer LM (LLaMA, Mistral, Qwen2, Gemma-3) into TransMamba-switch.

The output is a Hub-ready folder: code, config, safetensors, tokenizer, report, card.

``--transpoints`` takes ``2048`` (every layer), ``0,128,512`` (one per layer) or ``cycle`` / ``cycle:0,128,512``
(cycled across layers; plain ``cycle`` is the paper's [0, 128, 256, ..., 8192]).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..cli_support import check_positive, command_main, parser_for
from ..folders import check_output_folder

PROG = "transmamba convert-lm"


def parse_transpoints(spec: str) -> tuple[int | list[int] | str, list[int] | None]:
    """``"2048"`` -> 2048; ``"0,128"`` -> [0, 128]; ``"cycle"`` / ``"cycle:0,128"`` -> ("cycle", values)."""
    spec = spec.strip()
    try:
        if spec.startswith("cycle"):
            values = spec.partition(":")[2]
            return "cycle", [int(v) for v in values.split(",")] if values else None
        if "," in spec:
            return [int(v) for v in spec.split(",")], None
        return int(spec), None
    except ValueError:
        raise ValueError(
            f"--transpoints {spec!r} is not a TransPoint schedule: give an integer (2048), a comma-separated list "
            "with one integer per layer (0,128,512), or cycle / cycle:0,128,512."
        ) from None


@dataclass
class ConvertLMArguments:
    teacher: str = field(metadata={"help": "Hub id or folder of a LLaMA/Mistral/Qwen2 or Gemma-3 causal LM."})
    output: str = field(metadata={"help": "Folder to write the switching model to."})
    transpoints: str = field(
        default="cycle", metadata={"help": "TransPoint schedule: 2048 | 0,128,512 (per layer) | cycle[:values]."}
    )
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file name inside --teacher, if any."})
    ssm_chunk_size: int = field(default=64, metadata={"help": "Chunk length of the chunked SSD scan."})
    repo_id: str | None = field(default=None, metadata={"help": "Hub repo named in the card's loading snippet."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing --output folder."})

    def __post_init__(self) -> None:
        self.schedule, self.cycle = parse_transpoints(self.transpoints)
        check_positive("--ssm_chunk_size", self.ssm_chunk_size)
        check_output_folder(Path(self.output), self.overwrite)


def run(args: ConvertLMArguments) -> Path:
    """Convert, then write the folder (weights, tokenizer, report, card) atomically; returns the folder."""
    from transformers import AutoTokenizer

    from ..model_cards.stage1 import GEMMA_NOTICE, teacher_license
    from ..model_cards.switch_lm import switch_lm_card
    from .export import write_model_folder
    from .switch_lm import convert_lm

    student, report = convert_lm(
        args.teacher, args.schedule, args.cycle, gguf_file=args.gguf_file, ssm_chunk_size=args.ssm_chunk_size
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            args.teacher, **({"gguf_file": args.gguf_file} if args.gguf_file else {})
        )
    except (OSError, ValueError, TypeError, KeyError):
        tokenizer = None
    gemma = report["teacher_model_type"].startswith("gemma")
    card = switch_lm_card(
        config=student.config,
        num_parameters=student.num_parameters(),
        source=f"`{args.teacher}` ({report['teacher_class']})",
        status="> **Converted, not trained.** Every tensor but Δ, A and the SSM output norm is the teacher's; with "
        "every TransPoint at or past the sequence length the model computes the teacher's function exactly. Tokens "
        "past a TransPoint need recovery: distil it with `transmamba train-lm --teacher ...`.",
        base_model=None if Path(args.teacher).exists() else args.teacher,
        license=teacher_license(args.teacher),
        repo_id=args.repo_id,
        ssm_init=report["ssm_init"],
        gemma=gemma,
        rows={"GQA": report["gqa"]},
    )
    return write_model_folder(
        Path(args.output), student, tokenizer, report, card, args.overwrite, {"NOTICE": GEMMA_NOTICE} if gemma else None
    )


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on bad input (nothing written)."""
    return command_main(lambda: parser_for((ConvertLMArguments,), PROG, __doc__), argv, PROG, _command)


def _command(args: ConvertLMArguments) -> int:
    print(f"wrote {run(args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
