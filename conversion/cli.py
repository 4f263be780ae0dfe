"""`transmamba convert`: stage 1 — subclone a ViT-family Transformer into a Mamba student, or a LLaVA
vision-language model into a TransLlavaMamba student, and export a Hub-ready folder (optionally pushed).
The work is `transmamba.conversion.convert.convert(ConvertArguments)`; this module only parses and prints."""

from __future__ import annotations

import sys

from ..cli_support import command_main, parser_for
from .args import ConvertArguments, wants_video

PROG = "transmamba convert"
EPILOG = """examples:
  transmamba convert --teacher facebook/deit-small-patch16-224 --student pmamba-s --output trans-pmamba-s
  transmamba convert --teacher ./my-vit --student "vim-t,num_hidden_layers=6" --importance activation \\
      --data digits --output out --push-to-hub me/trans-vim-t --dry-run
  transmamba convert --teacher llava-hf/llava-1.5-7b-hf --student "transllava,num_hidden_layers=16" \\
      --cross-mamba-layers 4,8,12 --mixer-init attention --output trans-llava-mamba

Video students (--student videomamba-t / videomamba-s) subclone an image teacher into a TransVideoMamba; their
options: `transmamba convert --student videomamba-t --help`. Hierarchical students (--student vmamba-t/s) take the
teacher's blocks into the stage whose stride matches its patch size (conversion/vmamba.py).

LLaVA teachers (LlavaForConditionalGeneration with a LLaMA/Mistral/Qwen2 or Gemma-3 language model, or
Gemma3ForConditionalGeneration) are detected from their config. The student keeps the vision tower and projector
and replaces every language-model layer with a Mamba layer (embeddings, norms, MLPs, lm_head and o_proj -> out_proj
copied; the teacher's first n layers). Its spec is "transllava" plus overrides: num_hidden_layers, hidden_size
(narrower keeps the residual channels with the largest weight norms), state_size, expand, mixer_size (an integer,
or "attention" for the teacher's heads*head_dim), conv_kernel, time_step_rank. The SSM init (--ssm-from,
--mixer-init) is recorded in subcloning_report.json and the model card.
"""


def build_parser():
    return parser_for((ConvertArguments,), PROG, __doc__, EPILOG)


def convert_and_publish(args: ConvertArguments) -> int:
    from .convert import convert
    from .hub import publish_if_asked

    result = convert(args)
    print(result.summary)
    return publish_if_asked(result.output, args, PROG, "TransMamba stage-1 student")


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on bad input (nothing written), 1 when only the push failed (the folder is complete)."""
    if wants_video(sys.argv[1:] if argv is None else argv):  # --student videomamba-*: its own typed converter
        from .video_args import main as convert_video_main

        return convert_video_main(argv)
    return command_main(build_parser, argv, PROG, convert_and_publish)


if __name__ == "__main__":
    sys.exit(main())
