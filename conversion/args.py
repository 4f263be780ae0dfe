"""`transmamba convert`'s typed arguments and result. Light on purpose: `--help` and argument errors import no torch.

`ConvertArguments.__post_init__` rejects every value that is wrong on its own; what needs the teacher's config
(student shape, image-only vs LLaVA-only options) is checked by `convert` before any weight is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cli_support import option

IMPORTANCE_METHODS = ("magnitude", "activation", "finetune-delta")
NEEDS_DATA = ("activation", "finetune-delta")
MIXER_INITS = ("standard", "attention")
CONV_INITS = ("normal", "standard", "identity")
LLAVA_STUDENT_PRESET = "transllava"
VIDEO_STUDENT_PREFIX = "videomamba-"  # every `VIDEO_PRESETS` name


def check_push_options(push_to_hub: str | None, dry_run: bool) -> None:
    """`--push-to-hub`/`--dry-run` checks that every publishing command makes before any work."""
    if dry_run and not push_to_hub:
        raise ValueError("--dry-run lists what --push-to-hub would upload; pass --push-to-hub ORG/NAME too.")
    if push_to_hub:
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(push_to_hub)
        except ValueError as error:
            raise ValueError(f"--push-to-hub {push_to_hub!r} is not a repo id like org/name ({error}).") from None


def wants_video(argv: list[str]) -> bool:
    """Whether a `transmamba convert` command line names a video student (``--student videomamba-*``): read from
    the words alone, so that choosing the converter imports nothing (the video converter names its presets)."""
    for i, arg in enumerate(argv):
        spec = (
            arg.partition("=")[2]
            if arg.startswith("--student=")
            else (argv[i + 1] if arg == "--student" and i + 1 < len(argv) else None)
        )
        if spec is not None:
            return spec.split(",", 1)[0].strip().startswith(VIDEO_STUDENT_PREFIX)
    return False


def check_at_least(values: dict[str, int | float | None], minimum: int = 1) -> None:
    """One message naming every option below ``minimum`` (None means "not given" and passes)."""
    low = [name for name, value in values.items() if value is not None and value < minimum]
    if low:
        raise ValueError(f"{', '.join(low)} must be at least {minimum}.")


def parse_layer_list(text: str, option: str) -> list[int]:
    """``"4,8,12"`` -> ``[4, 8, 12]``; anything else is one message naming the option."""
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated layer indices like 4,8; got {text!r}.") from None
    if any(layer < 0 for layer in layers):
        raise ValueError(f"{option} takes layer indices >= 0; got {text!r}.")
    return layers


@dataclass
class ConvertArguments:
    """Stage 1: subclone ``teacher`` into a ``student`` and write the Hub-ready folder ``output``."""

    teacher: str = option(
        help="Hub id or local folder of a ViT-family model (ViT, DeiT, DINOv2), with or without a "
        "classification head, or of a LLaVA model (see below)."
    )
    student: str = option(
        help="student preset (pmamba-t/s/b, vim-t/s, hierarchical vmamba-t/s, video videomamba-t/s; transllava for "
        "LLaVA teachers), optionally "
        "with config overrides: 'pmamba-s,num_hidden_layers=6,hidden_size=256'. Patch size, "
        "channels, norm eps and activation come from the teacher; image_size defaults to the teacher's "
        "processor size. Width and depth may not exceed the teacher's. A video student has its own options "
        "(--inflation, --ssm-from a VideoMamba checkpoint): `transmamba convert --student videomamba-t --help`."
    )
    output: Path = option(
        help="folder to write (must not exist unless --overwrite); written to a hidden temporary "
        "sibling first and renamed when complete."
    )
    importance: str = option(
        "magnitude",
        choices=list(IMPORTANCE_METHODS),
        help="how a narrower student picks the teacher's channels: weight magnitude (no data), "
        "mean |activation| over --data, or the paper's finetune-delta (fine-tune the teacher "
        "briefly on --data, keep the least-moved weights). Unused when the student is as wide "
        "as the teacher.",
    )
    data: str | None = option(
        None,
        help="images for activation/finetune-delta: digits or fashion_mnist (offline), a "
        "local image folder (class_name/*.png), a save_to_disk folder or a Hub dataset id. A "
        "headless teacher also takes its label count from it.",
    )
    num_batches: int = option(
        8, help="batches of --data to use (activation: averaged; finetune-delta: one AdamW step each)."
    )
    batch_size: int = option(16, help="images per batch for --data.")
    finetune_lr: float = option(1e-4, help="AdamW learning rate of finetune-delta.")
    num_labels: int | None = option(
        None,
        help="classes of a fresh head (teacher without a head, or a different "
        "label count than its head). Default: the teacher head's labels, else --data's, "
        "else the teacher config's.",
    )
    base_model: str | None = option(
        None,
        help="Hub id to record as base_model in the card (default: --teacher when "
        "it is a Hub id, else the _name_or_path its config records when that is one).",
    )
    push_to_hub: str | None = option(
        None, help="after writing the folder, create this Hub repo (ORG/NAME) and upload it."
    )
    private: bool = option(False, help="make the --push-to-hub repo private.")
    dry_run: bool = option(
        False,
        help="with --push-to-hub: write the folder, then list the files and the target repo instead of uploading.",
    )
    overwrite: bool = option(
        False,
        help="replace an existing --output folder if it is empty or was written by "
        "transmamba (swapped in when complete); anything else is refused.",
    )
    seed: int = option(0, help="seed of the student's fresh parameters and of finetune-delta.")
    cross_mamba_layers: str = option(
        "",
        help="LLaVA teachers: comma-separated language-model layers whose mixer "
        "also reads the image tokens (Cross-Mamba), e.g. 4,8.",
    )
    mixer_init: str = option(
        "standard",
        choices=list(MIXER_INITS),
        help="SSM init: standard Mamba init (the paper) or attention (beyond the paper: x <- W_V, B <- W_K, "
        "C <- W_Q of the same teacher layer, identity conv; conversion/attention_init.py).",
    )
    conv_init: str | None = option(
        None,
        choices=list(CONV_INITS),
        help="LLaVA teachers: conv1d init, normal "
        "N(0, 1) (the paper; default with --mixer-init standard), identity (default with "
        "--mixer-init attention) or standard.",
    )
    ssm_from: str | None = option(
        None,
        help="LLaVA teachers: Hub id or folder of a transformers Mamba checkpoint of "
        "the student's mixer shape (the paper's Trans-LLaVA init).",
    )

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        for name in ("teacher", "student"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"--{name} is empty; pass a {name} (see --help).")
        if self.importance not in IMPORTANCE_METHODS:
            raise ValueError(f"--importance {self.importance!r}: choose one of {', '.join(IMPORTANCE_METHODS)}.")
        if self.mixer_init not in MIXER_INITS:
            raise ValueError(f"--mixer-init {self.mixer_init!r}: choose one of {', '.join(MIXER_INITS)}.")
        if self.conv_init is not None and self.conv_init not in CONV_INITS:
            raise ValueError(f"--conv-init {self.conv_init!r}: choose one of {', '.join(CONV_INITS)}.")
        check_at_least({"--num-batches": self.num_batches, "--batch-size": self.batch_size,
                        "--num-labels": self.num_labels})  # fmt: skip
        if not self.finetune_lr > 0:
            raise ValueError(f"--finetune-lr must be positive, got {self.finetune_lr}.")
        parse_layer_list(self.cross_mamba_layers, "--cross-mamba-layers")
        check_push_options(self.push_to_hub, self.dry_run)

    @property
    def cross_layers(self) -> list[int]:
        return parse_layer_list(self.cross_mamba_layers, "--cross-mamba-layers")

    def vlm_only_options(self) -> list[str]:
        """The LLaVA-only options that differ from their defaults."""
        given = {"--cross-mamba-layers": self.cross_mamba_layers, "--conv-init": self.conv_init,
                 "--ssm-from": self.ssm_from}  # fmt: skip
        return [flag for flag, value in given.items() if value]

    def image_only_options(self) -> list[str]:
        """The image-teacher-only options that differ from their defaults."""
        given = {"--data": self.data, "--num-labels": self.num_labels, "--importance": self.importance != "magnitude"}
        return [flag for flag, value in given.items() if value]


@dataclass
class ConversionResult:
    """What `convert` wrote: the folder, its report (also in the folder), and the student's config."""

    output: Path
    kind: str  # "image" or "vision-language"
    report: dict[str, Any]
    config: Any  # TransMambaConfig | TransLlavaMambaConfig
    num_parameters: int
    seconds: float
    summary: str  # the one line the CLI prints
