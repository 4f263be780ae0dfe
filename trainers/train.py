"""`transmamba train`: stage 2, distil a converted TransMamba student from its Transformer teacher.

Runs as ``transmamba train ...`` and as ``accelerate launch -m transmamba.trainers.train ...`` (DDP, FSDP or
DeepSpeed come from the accelerate config; there is no distributed code here). ``--help`` lists our options
first, then every ``TrainingArguments`` option.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from datasets import DatasetDict, load_from_disk
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    HfArgumentParser,
    PreTrainedModel,
    TrainingArguments,
    set_seed,
)
from transmamba.modeling_transmamba import (
    TransMambaConfig,
    TransVideoMambaConfig,
    TransVMambaConfig,
)

from .args import DistillationArguments
from .build import build_trainer, train_and_export
from .inputs import accuracy, image_transform, num_classes, pick_splits, resolve_columns

logger = logging.getLogger("transmamba.train")
LORA_TARGETS = ["in_proj", "out_proj", "fc1", "fc2"]


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser(
        (DistillationArguments, TrainingArguments), prog="transmamba train", description=__doc__.splitlines()[0]
    )
    # Defaults for this command: accuracy every epoch, the student folder as output, no trackers unless asked.
    parser.set_defaults(output_dir="transmamba-student", eval_strategy="epoch", report_to="none")
    return parser


def load_student_config(name: str) -> TransMambaConfig:
    config = AutoConfig.from_pretrained(name)
    if config.model_type == "transllava_mamba":
        raise ValueError(f"--student {name!r} is a TransLlavaMamba (vision-language): use `transmamba train-vlm`.")
    if not isinstance(config, (TransMambaConfig, TransVMambaConfig)):
        raise ValueError(
            f"--student {name!r} is a {config.model_type!r} model, not a TransMamba model; convert the teacher "
            "first with `transmamba convert` and pass its output folder."
        )
    return config


def load_teacher(name: str) -> PreTrainedModel:
    """The teacher with its classification head when it has one (needed for logits distillation)."""
    config = AutoConfig.from_pretrained(name)
    with_head = any(arch.endswith("ForImageClassification") for arch in config.architectures or [])
    return (AutoModelForImageClassification if with_head else AutoModel).from_pretrained(name)


def load_data(spec: str) -> DatasetDict:
    """A folder written by ``DatasetDict.save_to_disk``, else whatever ``transmamba.data`` accepts."""
    if Path(spec, "dataset_dict.json").is_file():
        return load_from_disk(spec)
    from transmamba.data import load_image_dataset  # imported at run time: only this path needs it

    return load_image_dataset(spec)


def check_pair(
    teacher: PreTrainedModel | None, student_config: TransMambaConfig, pixel_values: torch.Tensor, distillation: str
) -> None:
    """Fail before training when teacher, student and images disagree (one processed image, one teacher forward)."""
    size = student_config.image_size
    if tuple(pixel_values.shape[-2:]) != (size, size):
        raise ValueError(
            f"The teacher's image processor makes {tuple(pixel_values.shape[-2:])} images but the student expects "
            f"{size}x{size}; convert the student with the teacher's image size, or save a processor with "
            f"size {size} in the teacher folder."
        )
    if teacher is None:
        return
    try:
        with torch.no_grad():
            out = teacher(pixel_values=pixel_values)
    except ValueError as error:
        raise ValueError(f"The teacher cannot read the student's {size}x{size} images: {error}") from error
    if distillation in ("logits", "wsab+logits"):
        logits = getattr(out, "logits", None)
        if logits is None or logits.shape[-1] != student_config.num_labels:
            have = "no classification head" if logits is None else f"{logits.shape[-1]} labels"
            raise ValueError(
                f"Logits distillation needs a teacher with the student's {student_config.num_labels} labels; the "
                f"teacher has {have}. Fine-tune the teacher's head first or use --distillation wsab/feature."
            )
    if distillation == "logits":
        return
    teacher_patch = getattr(teacher.config, "patch_size", None)
    if teacher_patch != student_config.patch_size and not isinstance(student_config, TransVMambaConfig):
        raise ValueError(
            f"Feature distillation compares token grids: the teacher's patch size {teacher_patch} differs from the "
            f"student's {student_config.patch_size}; convert the student from this teacher (same patch size)."
        )


def add_lora(student: PreTrainedModel, args: DistillationArguments) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=LORA_TARGETS,
        modules_to_save=["classifier"],
    )
    return get_peft_model(student, config)


def run(args: DistillationArguments, training_args: TrainingArguments, data: DatasetDict | None = None):
    """Check inputs, build teacher/student/loss, train, evaluate, export the student to ``output_dir``.

    ``data`` replaces ``args.dataset`` (for callers that already hold a DatasetDict). Returns the trainer.
    """
    training_args.remove_unused_columns = False  # the transform needs the raw image column
    training_args.label_names = ["labels"]
    if training_args.ddp_find_unused_parameters is None:
        # Every parameter gets a gradient unless alpha = 0 leaves the head (and WSAB the last MLP) out of the loss.
        training_args.ddp_find_unused_parameters = args.alpha == 0
    logger.warning(
        "transmamba train: process %d/%d, device %s",
        training_args.process_index,
        training_args.world_size,
        training_args.device,
    )
    set_seed(training_args.seed)

    student_config = load_student_config(args.student)
    if isinstance(student_config, TransVideoMambaConfig):  # video students: own data, transform and WSAB targets
        from .train_video import run_video

        return run_video(args, training_args, student_config, data)
    data = data if data is not None else load_data(args.dataset)
    train_data, eval_data = pick_splits(data, args.train_split, args.eval_split, training_args.seed)
    image_col, label_col = resolve_columns(train_data, args.image_column, args.label_column)
    classes = num_classes(train_data, label_col)
    if classes != student_config.num_labels:
        raise ValueError(
            f"The dataset has {classes} classes but the student has {student_config.num_labels} labels; convert "
            f"the student with {classes} labels (or pick the matching --label-column)."
        )
    if args.max_train_samples is not None:
        train_data = train_data.select(range(min(args.max_train_samples, len(train_data))))
    if args.max_eval_samples is not None:
        eval_data = eval_data.select(range(min(args.max_eval_samples, len(eval_data))))

    teacher = load_teacher(args.teacher) if args.distillation != "none" else None
    processor = AutoImageProcessor.from_pretrained(args.teacher)
    transform = image_transform(processor, image_col, label_col, student_config.num_channels)
    train_data, eval_data = train_data.with_transform(transform), eval_data.with_transform(transform)
    check_pair(teacher, student_config, train_data[0]["pixel_values"][None], args.distillation)

    student = AutoModelForImageClassification.from_pretrained(args.student)  # our registered classes
    if args.lora:
        student = add_lora(student, args)
    options = {"tau": args.tau, "weighting": args.weighting, "cls_weight": args.cls_weight,
               "temperature": args.temperature, "feature_metric": args.feature_metric,
               "logits_weight": args.logits_weight}  # fmt: skip
    trainer = build_trainer(
        student,
        args.distillation,
        training_args,
        train_data,
        alpha=args.alpha,
        teacher=teacher,
        distiller_options=options,
        eval_dataset=eval_data,
        processing_class=processor,
        compute_metrics=accuracy,
    )
    return train_and_export(trainer)


def main(argv: list[str] | None = None) -> int:
    args, training_args = build_parser().parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    run(args, training_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
