"""`convert(ConvertArguments) -> ConversionResult`: stage 1 as a library call.

Checks go in order of cost (arguments, output folder, spec, teacher config, student shape, data) so bad input
fails before any weight is read; then the teacher is loaded, channels picked, the student subcloned and the folder
written atomically. LLaVA teachers, detected from their config, go to `convert_llava`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import transformers
from datasets import DatasetDict
from transformers import PretrainedConfig
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
)
from transformers.utils import logging

from ..data import load_image_dataset, pixel_batches, processor_for_size
from ..folders import check_output_folder
from ..model_cards.naming import hub_id, public_name
from ..model_cards.stage1 import stage1_card, teacher_license
from ..model_checks import load_config
from ..modeling_transmamba import TransMambaConfig
from .args import NEEDS_DATA, ConversionResult, ConvertArguments
from .attention_init import SSM_INITS
from .export import REPORT_NAME, write_model_folder
from .importance import select_indices
from .llava import is_multimodal
from .student_spec import parse_student_spec, student_config_for
from .subclone import subclone, summarise
from .teachers import Teacher, default_image_size, load_image_processor, load_teacher, load_teacher_config
from .vmamba import convert_vmamba, is_vmamba_spec

logger = logging.get_logger("transmamba.convert")


def _default_processor(teacher: Teacher):
    """The teacher has no preprocessor config (e.g. a bare saved model): ViT-style resize + normalise."""
    imagenet = teacher.model_type in ("deit", "dinov2")
    cls = getattr(transformers, "ViTImageProcessorPil", transformers.ViTImageProcessor)
    return cls(
        image_mean=IMAGENET_DEFAULT_MEAN if imagenet else IMAGENET_STANDARD_MEAN,
        image_std=IMAGENET_DEFAULT_STD if imagenet else IMAGENET_STANDARD_STD,
    )


def _labels(args: ConvertArguments, teacher_config, data) -> tuple[int | None, dict | None, str]:
    """(num_labels, id2label, why a fresh head would be made), decided from config and data only."""
    has_head = any("ImageClassification" in a for a in teacher_config.architectures or [])
    if has_head and args.num_labels in (None, teacher_config.num_labels):
        return None, teacher_config.id2label, "initialised (the teacher's head did not fit)"
    if args.num_labels:
        return args.num_labels, None, f"initialised ({args.num_labels} classes from --num-labels)"
    if data is not None:
        names = data["train"].features["label"].names
        return None, dict(enumerate(names)), f"initialised ({len(names)} classes of --data {args.data})"
    count = teacher_config.num_labels
    return count, None, f"initialised ({count} classes: the teacher has no head, and no --num-labels or --data)"


def _head_note(entry: dict, fresh: str) -> str:
    if entry["status"] == "initialised":
        return fresh
    return f"{entry['status']} from the teacher's {entry['source'][0].rsplit('.', 1)[0]}"


@dataclass
class _Checked:
    """Everything decided before the teacher's weights are read."""

    teacher_config: PretrainedConfig
    processor: object | None
    config: TransMambaConfig
    data: DatasetDict | None
    narrower: bool
    head_note: str


def image_teacher(args: ConvertArguments, parse_spec: Callable[[str], object]):
    """What every image-student converter checks and reads first: no LLaVA-only option, the student spec (by the
    family's ``parse_spec``), the teacher's config and processor; returns them with the teacher's MLP width and
    the image size the student takes."""
    vlm_only = args.vlm_only_options()
    if vlm_only:
        raise ValueError(f"{', '.join(vlm_only)} apply to LLaVA teachers only; drop them for an image teacher.")
    parse_spec(args.student)
    teacher_config = load_teacher_config(args.teacher)
    processor = load_image_processor(args.teacher)
    mlp_width = getattr(teacher_config, "intermediate_size", None) or int(
        teacher_config.hidden_size * teacher_config.mlp_ratio
    )
    return teacher_config, processor, mlp_width, default_image_size(teacher_config, processor)


def _check(args: ConvertArguments) -> _Checked:
    """All cheap checks of an image teacher, in order of cost; the data is loaded (not read) last."""
    teacher_config, processor, mlp_width, image_size = image_teacher(args, parse_student_spec)
    shape = student_config_for(teacher_config, args.student, image_size, mlp_width, None, None)
    if processor is None and shape.image_size == teacher_config.image_size:
        logger.warning(
            f"The teacher has no preprocessor_config.json: the student takes the image size of its config, "
            f"{image_size} px. Pass --student '{args.student},image_size=N' for another size."
        )
    narrower = shape.hidden_size < teacher_config.hidden_size or 0 < shape.mlp_hidden_size < mlp_width
    if narrower and args.importance in NEEDS_DATA and not args.data:
        raise ValueError(f"--importance {args.importance} needs images: pass --data (e.g. --data digits).")
    data = load_image_dataset(args.data, option="--data") if args.data else None
    num_labels, id2label, head_note = _labels(args, teacher_config, data)
    config = student_config_for(teacher_config, args.student, image_size, mlp_width, num_labels, id2label)
    return _Checked(teacher_config, processor, config, data, narrower, head_note)


def _report(args, checked: _Checked, teacher: Teacher, selection, student, tensors: dict, processor) -> dict:
    config = checked.config
    return {
        "format": "transmamba-subcloning-report/1",
        "teacher": {
            "source": public_name(args.teacher, hub_id(args.teacher)),
            "class": type(teacher.model).__name__,
            "hidden_size": teacher.hidden_size,
            "num_hidden_layers": len(teacher.blocks),
            "mlp_hidden_size": teacher.mlp_hidden_size,
            "patch_size": teacher.patch_size,
            "position_grid": teacher.position_grid,
        },
        "student": {
            "spec": args.student,
            "class": type(student).__name__,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "mlp_hidden_size": config.mlp_hidden_size,
            "mixer_width": config.intermediate_size,
            "image_size": config.image_size,
            "grid": config.grid_size,
            "parameters": student.num_parameters(),
        },
        "importance": {
            "method": selection.method,
            "requested": args.importance,
            "data": public_name(args.data) if selection.method in NEEDS_DATA else None,
            **selection.details,
            "residual_indices": selection.residual.tolist(),
            "mlp_indices": [m.tolist() for m in selection.mlp] if selection.mlp is not None else "all",
        },
        "head": _head_note(tensors["classifier.weight"], checked.head_note),
        "image_processor": f"{'teacher' if teacher.image_processor else 'default'} {type(processor).__name__}, "
        f"resized to {config.image_size}",
        "seed": args.seed,
        "mixer_init": SSM_INITS[args.mixer_init],
        "summary": summarise(tensors, student),
        "tensors": tensors,
    }


def _is_llava_teacher(source: str) -> bool:
    """A cheap config read; anything unreadable goes down the image path, whose checks explain the problem."""
    try:
        return is_multimodal(load_config(source, "Teacher"))
    except ValueError:
        return False


def convert(args: ConvertArguments) -> ConversionResult:
    """Check everything cheap first, then load the teacher, pick channels, subclone and write the folder."""
    check_output_folder(args.output, args.overwrite)
    if _is_llava_teacher(args.teacher):
        from .convert_llava import convert_llava

        return convert_llava(args)
    if is_vmamba_spec(args.student):  # hierarchical students: conversion/vmamba.py
        return convert_vmamba(args)
    started = time.perf_counter()
    checked = _check(args)
    config = checked.config
    teacher = load_teacher(args.teacher, checked.teacher_config)
    processor = processor_for_size(checked.processor or _default_processor(teacher), config.image_size)
    batches = None
    if checked.narrower and args.importance in NEEDS_DATA:
        train = checked.data["train"]
        batches = pixel_batches(train, processor, args.batch_size, args.num_batches, config.num_channels)
    selection = select_indices(
        teacher,
        args.importance,
        config.hidden_size,
        config.mlp_hidden_size,
        config.num_hidden_layers,
        batches,
        lr=args.finetune_lr,
        seed=args.seed,
    )
    student, tensors = subclone(teacher, config, selection, seed=args.seed, mixer_init=args.mixer_init)
    report = _report(args, checked, teacher, selection, student, tensors, processor)
    return export_image_student(args, teacher, config, student, selection, report, processor, started)


def export_image_student(
    args: ConvertArguments, teacher: Teacher, config, student, selection, report: dict, processor, started: float,
    **card_options,
) -> ConversionResult:
    """Card, atomic folder and result of an image student (isotropic here, hierarchical in `vmamba.py`)."""
    base_model = hub_id(args.teacher, args.base_model)
    card = stage1_card(
        teacher=public_name(args.teacher, base_model),
        teacher_class=type(teacher.model).__name__,
        base_model=base_model,
        license=teacher_license(args.teacher),
        student_spec=args.student,
        config=config,
        num_parameters=student.num_parameters(),
        importance=selection.method if selection.method == "identity" else f"{selection.method} (residual + MLP)",
        data=report["importance"]["data"],
        summary=report["summary"],
        repo_id=args.push_to_hub,
        **card_options,
    )
    report["seconds_before_write"] = round(time.perf_counter() - started, 2)
    output = write_model_folder(args.output, student, processor, report, card, args.overwrite)
    seconds = time.perf_counter() - started
    counts = ", ".join(f"{s} {v['tensors']} tensors / {v['parameters']:,} params" for s, v in report["summary"].items())
    summary = f"wrote {output} in {seconds:.1f}s: {counts}; details in {REPORT_NAME}"
    return ConversionResult(output, "image", report, config, student.num_parameters(), round(seconds, 2), summary)
