"""`transmamba run`'s typed arguments. Light on purpose: `--help` and argument errors import no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .cli_support import option
from .conversion.args import check_at_least, check_push_options

TEACHER_TUNES = ("all", "head")


@dataclass
class RunArguments:
    """The whole pipeline: data, teacher, convert, cached teacher outputs, scratch and TransMamba students, card."""

    dataset: str | None = option(
        None,
        help="fashion_mnist, digits, a local image folder, a save_to_disk folder or a "
        "Hub dataset id. Default: fashion_mnist when /usr/share/datasets/fashion-mnist "
        "exists (apt-get install dataset-fashion-mnist), else digits.",
    )
    teacher: str | None = option(
        None,
        help="Hub id or folder of a ViT-family image classifier. Default: train a "
        "small ViT here (--teacher-width/--teacher-layers/--patch-size). A teacher without a "
        "head for the data's classes gets one and is fine-tuned for --teacher-steps.",
    )
    student: str | None = option(
        None, help="student spec for `transmamba convert` (default: pmamba-t as wide and deep as the teacher)"
    )
    work_dir: Path = option(Path("transmamba-run"), help="stage folders (default ./transmamba-run)")
    output: Path | None = option(None, help="model folder to export (default WORK_DIR/model)")
    train_size: int = option(5000, help="training images used (at most; fewer when the data has fewer)")
    eval_size: int = option(2000, help="evaluation images (at most)")
    image_size: int | None = option(
        None, help="image side (default 28 for the built-in teacher, the teacher processor's size for --teacher)"
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
    teacher_learning_rate: float = option(1e-3, help="AdamW learning rate of the teacher")
    alpha: float = option(0.5, help="WSAB: L = alpha * task + (1 - alpha) * distillation")
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
        if self.teacher is None and size % self.patch_size:
            raise ValueError(f"--image-size {size} must be a multiple of --patch-size {self.patch_size}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {self.alpha}.")
        for name in ("learning_rate", "teacher_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}.")
        if self.teacher_tune not in TEACHER_TUNES:
            raise ValueError(f"--teacher-tune {self.teacher_tune!r}: choose one of {', '.join(TEACHER_TUNES)}.")
        if self.work_dir.exists() and not self.work_dir.is_dir():
            raise ValueError(f"--work-dir {self.work_dir} is a file; choose a folder.")
        check_push_options(self.push_to_hub, self.dry_run)

    @property
    def model_folder(self) -> Path:
        return (self.output or self.work_dir / "model").absolute()
