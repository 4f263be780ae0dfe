"""`transmamba convert --student videomamba-*`'s typed arguments and thin CLI. Light on purpose: ``--help`` and
the cheap argument checks import no torch; the spec check and the work (`convert_video.py`) import the models."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..cli_support import command_main, parser_for
from .args import check_push_options

PROG = "transmamba convert"
INFLATIONS = ("centre", "mean")  # how a 2-D patch kernel becomes a tubelet kernel (subclone_video.py)


@dataclass
class VideoConvertArguments:
    teacher: str = field(metadata={"help": "Hub id or folder of a ViT-family image model (ViT, DeiT, DINOv2)."})
    student: str = field(
        metadata={
            "help": "videomamba-t or videomamba-s, optionally with config overrides: "
            "'videomamba-t,num_hidden_layers=6,num_frames=16,tubelet_size=2'. Patch size, channels, norm eps and "
            "activation come from the teacher; width and depth may not exceed the teacher's."
        }
    )
    output: Path = field(metadata={"help": "Folder to write (must not exist unless --overwrite); written atomically."})
    image_size: int | None = field(
        default=None, metadata={"help": "Frame size (default: the teacher processor's size)."}
    )
    num_labels: int | None = field(default=None, metadata={"help": "Classes of a fresh video head (default: 2)."})
    inflation: str = field(
        default="centre",
        metadata={
            "help": "Tubelet inflation of the 2-D patch kernel: centre (VideoMamba) or mean.",
            "choices": list(INFLATIONS),
        },  # fmt: skip
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing --output folder."})
    seed: int = field(default=0, metadata={"help": "Seed of the student's fresh parameters."})
    base_model: str | None = field(default=None, metadata={"help": "Hub id to record as base_model in the card."})
    ssm_from: Path | None = field(
        default=None,
        metadata={
            "help": "A pretrained VideoMamba checkpoint (OpenGVLab's .pth, or .safetensors) whose SSM tensors (conv, "
            "x_proj, dt_proj, A, D of both directions) replace the standard Mamba init, as the paper does for "
            "retrieval; the rest is still subcloned from --teacher (conversion/videomamba_ssm.py)."
        },
    )
    push_to_hub: str | None = field(
        default=None, metadata={"help": "After writing the folder, create this Hub repo (ORG/NAME) and upload it."}
    )
    private: bool = field(default=False, metadata={"help": "Make the --push-to-hub repo private."})
    dry_run: bool = field(
        default=False,
        metadata={"help": "With --push-to-hub: write the folder, then list the files and the target repo instead."},
    )

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if self.inflation not in INFLATIONS:
            raise ValueError(f"--inflation must be one of {', '.join(INFLATIONS)}, got {self.inflation!r}.")
        if (self.num_labels is not None and self.num_labels < 1) or (
            self.image_size is not None and self.image_size < 1
        ):
            raise ValueError("--num-labels and --image-size must be at least 1.")
        check_push_options(self.push_to_hub, self.dry_run)
        self.ssm_from = Path(self.ssm_from) if self.ssm_from is not None else None
        from .convert_video import parse_video_spec  # the presets and config fields: imports the models

        parse_video_spec(self.student)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on bad input (one message, nothing written), 1 when only the push failed."""
    description = "Subclone an image ViT into a TransVideoMamba student (--student videomamba-t / videomamba-s)."
    return command_main(lambda: parser_for((VideoConvertArguments,), PROG, description), argv, PROG, _command)


def _command(args: VideoConvertArguments) -> int:
    from .convert_video import convert_video
    from .hub import publish_if_asked

    return publish_if_asked(convert_video(args), args, PROG, "TransVideoMamba student")


if __name__ == "__main__":
    sys.exit(main())
