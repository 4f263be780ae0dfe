"""`transmamba train`: stage 2, distil a converted TransMamba student from its Transformer teacher.

Runs as ``transmamba train ...`` and as ``accelerate launch -m transmamba.trainers.train ...`` (DDP, FSDP or
DeepSpeed come from the accelerate config; there is no distributed code here). ``--help`` lists our options
(quickly: no torch) and ``--help-training`` every ``TrainingArguments`` option too. The library call is
``train(DistillationArguments, TrainingArguments) -> TrainResult``: inputs are checked (every split's labels
included) before any weight loads, a killed run resumes from its newest complete checkpoint, and the student is
saved before the final evaluation.
"""

from __future__ import annotations

import logging
import sys

from transmamba.cli_support import training_command_main, training_parser

from .args import DistillationArguments, TrainResult

logger = logging.getLogger("transmamba.train")
LORA_TARGETS = ["in_proj", "out_proj", "fc1", "fc2"]


PROG = "transmamba train"
# Defaults for this command: accuracy every epoch, the student folder as output, no trackers unless asked.
TRAINING_DEFAULTS = {"output_dir": "transmamba-student", "eval_strategy": "epoch", "report_to": "none"}


def build_parser():
    """The full parser (our options + `TrainingArguments`; imports torch)."""
    return training_parser(DistillationArguments, PROG, __doc__.splitlines()[0], **TRAINING_DEFAULTS)


def load_student_config(name: str):
    """The student's config, vetted (values, weights complete and matching) before anything loads."""
    from transmamba.modeling_transmamba import TransMambaConfig, TransVMambaConfig

    from transmamba.model_checks import check_student_weights, load_config

    config = load_config(name, "--student")
    if config.model_type == "transllava_mamba":
        raise ValueError(f"--student {name!r} is a TransLlavaMamba (vision-language): use `transmamba train-vlm`.")
    if not isinstance(config, (TransMambaConfig, TransVMambaConfig)):
        raise ValueError(
            f"--student {name!r} is a {config.model_type!r} model, not a TransMamba model; convert the teacher "
            "first with `transmamba convert` and pass its output folder."
        )
    check_student_weights(name, config)
    return config


def load_teacher(name: str):
    """The teacher with its classification head when it has one (needed for logits distillation)."""
    from transformers import AutoModel, AutoModelForImageClassification

    from transmamba.model_checks import check_weights, load_config

    config = load_config(name, "--teacher")
    check_weights(name, "--teacher")
    with_head = any(arch.endswith("ForImageClassification") for arch in config.architectures or [])
    return (AutoModelForImageClassification if with_head else AutoModel).from_pretrained(name)


def load_data(spec: str):
    """What ``transmamba.data`` accepts (offline sets, an imagefolder or save_to_disk folder, a Hub id), as stored."""
    from transmamba.data import load_dataset_dict

    return load_dataset_dict(spec, "--dataset")


def check_pair(teacher, student_config, pixel_values, distillation: str) -> None:
    """Fail before training when teacher, student and images disagree (one processed image, one teacher forward)."""
    import torch

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
    from transmamba.modeling_transmamba import TransVMambaConfig

    teacher_patch = getattr(teacher.config, "patch_size", None)
    if teacher_patch != student_config.patch_size and not isinstance(student_config, TransVMambaConfig):
        raise ValueError(
            f"Feature distillation compares token grids: the teacher's patch size {teacher_patch} differs from the "
            f"student's {student_config.patch_size}; convert the student from this teacher (same patch size)."
        )


def add_lora(student, args: DistillationArguments):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=LORA_TARGETS,
        modules_to_save=["classifier"],
    )
    return get_peft_model(student, config)


def _data(args: DistillationArguments, data, num_labels: int, seed: int):
    """Train and eval splits with their columns, every split's labels checked and unlabelled rows dropped first."""
    from transmamba.data import check_classes, clean_labels

    from .inputs import num_classes, pick_splits, resolve_columns

    data = data if data is not None else load_data(args.dataset)
    first = data[args.train_split] if args.train_split in data else next(iter(data.values()))
    image_col, label_col = resolve_columns(first, args.image_column, args.label_column)
    classes = num_classes(first, label_col)
    check_classes(classes, f"--dataset {args.dataset}")
    if classes != num_labels:
        raise ValueError(
            f"The dataset has {classes} classes but the student has {num_labels} labels; convert "
            f"the student with {classes} labels (or pick the matching --label-column)."
        )
    data = clean_labels(data, label_col, num_labels, f"--dataset {args.dataset}")
    train_data, eval_data = pick_splits(data, args.train_split, args.eval_split, seed)
    if args.max_train_samples is not None:
        train_data = train_data.select(range(min(args.max_train_samples, len(train_data))))
    if args.max_eval_samples is not None:
        eval_data = eval_data.select(range(min(args.max_eval_samples, len(eval_data))))
    return train_data, eval_data, image_col, label_col


def train(args: DistillationArguments, training_args, data=None) -> TrainResult:
    """Check inputs, build teacher/student/loss, train (resuming), save the student, evaluate, write its card.

    ``data`` replaces ``args.dataset`` (for callers that already hold a DatasetDict).
    """
    from transformers import AutoModelForImageClassification, set_seed
    from transmamba.conversion.export import inherited_parameters
    from transmamba.modeling_transmamba import TransVideoMambaConfig

    from transmamba.model_checks import load_config

    from .build import build_trainer, train_and_export
    from .inputs import accuracy, image_transform
    from .preflight import check_training_output, image_processor
    from .train_results import save_results, train_results

    resume = check_training_output(training_args)
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
    teacher_config = load_config(args.teacher, "--teacher")
    train_data, eval_data, image_col, label_col = _data(args, data, student_config.num_labels, training_args.seed)
    sizes = {"train_split": args.train_split, "eval_split": args.eval_split or "held out", "train_size":
             len(train_data), "eval_size": len(eval_data), "num_labels": student_config.num_labels}  # fmt: skip
    processor = image_processor(args.teacher, args.student)
    transform = image_transform(processor, image_col, label_col, student_config.num_channels)
    train_data, eval_data = train_data.with_transform(transform), eval_data.with_transform(transform)
    teacher = load_teacher(args.teacher) if args.distillation != "none" else None
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
        inherited=() if args.lora else inherited_parameters(args.student),
        inherited_lr_scale=args.inherited_lr_scale,
        eval_dataset=eval_data,
        processing_class=processor,
        compute_metrics=accuracy,
    )
    metrics = train_and_export(trainer, resume)
    plain = student.get_base_model() if args.lora else student
    if training_args.should_save:
        save_results(training_args.output_dir, train_results(args, training_args, trainer, plain, teacher_config,
                                                             sizes, metrics))  # fmt: skip
        print(f"transmamba train: saved the student to {training_args.output_dir} "
              f"(eval accuracy {metrics.get('eval_accuracy', float('nan')):.4f}; card: README.md)")  # fmt: skip
    return TrainResult(training_args.output_dir, metrics, resume, trainer)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on bad input (found before training; nothing written)."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    return training_command_main(DistillationArguments, PROG, __doc__.splitlines()[0], argv, _command,
                                 **TRAINING_DEFAULTS)  # fmt: skip


def _command(args: DistillationArguments, training_args) -> int:
    train(args, training_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
