"""`transmamba convert`: stage 1 — subclone a ViT-family Transformer into a Mamba student, or a LLaVA
vision-language model into a TransLlavaMamba student, and export a Hub-ready folder (optionally pushed)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from datasets import DatasetDict
from transformers import AutoConfig, PretrainedConfig
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
)

from ..data import load_image_dataset, pixel_batches, processor_for_size
from ..model_cards.stage1 import GEMMA_NOTICE, stage1_card, stage1_vlm_card, teacher_license
from ..modeling_transmamba import TransMambaConfig
from .attention_init import SSM_INITS
from .export import REPORT_NAME, check_output, write_model_folder
from .hub import check_push_options, publish
from .importance import METHODS, NEEDS_DATA, select_indices
from .llava import CONV_INITS, MIXER_INITS, STUDENT_PRESET, is_multimodal, load_processor, parse_student, subclone_llava
from .student_spec import parse_student_spec, student_config_for
from .subclone import subclone, summarise
from .teachers import Teacher, default_image_size, load_image_processor, load_teacher, load_teacher_config
from .vmamba import convert_vmamba, is_vmamba_spec

EPILOG = """examples:
  transmamba convert --teacher facebook/deit-small-patch16-224 --student pmamba-s --output trans-pmamba-s
  transmamba convert --teacher ./my-vit --student "vim-t,num_hidden_layers=6" --importance activation \\
      --data digits --output out --push-to-hub me/trans-vim-t --dry-run
  transmamba convert --teacher llava-hf/llava-1.5-7b-hf --student "transllava,num_hidden_layers=16" \\
      --cross-mamba-layers 4,8,12 --mixer-init attention --output trans-llava-mamba

Video students (--student videomamba-t / videomamba-s) subclone an image teacher into a TransVideoMamba; their
options: `transmamba convert --student videomamba-t --help`.

LLaVA teachers (LlavaForConditionalGeneration with a LLaMA/Mistral/Qwen2 or Gemma-3 language model, or
Gemma3ForConditionalGeneration) are detected from their config. The student keeps the vision tower and projector
and replaces every language-model layer with a Mamba layer (embeddings, norms, MLPs, lm_head and o_proj -> out_proj
copied; the teacher's first n layers). Its spec is "transllava" plus overrides: num_hidden_layers, hidden_size
(narrower keeps the residual channels with the largest weight norms), state_size, expand, mixer_size (an integer,
or "attention" for the teacher's heads*head_dim), conv_kernel, time_step_rank. The SSM init (--ssm-from,
--mixer-init) is recorded in subcloning_report.json and the model card.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transmamba convert",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--teacher", required=True, help="Hub id or local folder of a ViT-family model (ViT, DeiT, DINOv2), with or "
        "without a classification head, or of a LLaVA model (see below).")  # fmt: skip
    add(
        "--student",
        required=True,
        help=f"student preset (pmamba-t/s/b, vim-t/s, hierarchical vmamba-t/s; {STUDENT_PRESET} for LLaVA "
        "teachers), optionally with config "
        "overrides: "
        "'pmamba-s,num_hidden_layers=6,hidden_size=256'. Patch size, channels, norm eps and activation come from the "
        "teacher; image_size defaults to the teacher's processor size. Width and depth may not exceed the teacher's.",
    )
    add(
        "--output",
        required=True,
        type=Path,
        help="folder to write (must not exist unless --overwrite); written to a "
        "hidden temporary sibling first and renamed when complete.",
    )
    add(
        "--importance",
        choices=METHODS,
        default="magnitude",
        help="how a narrower student picks the teacher's "
        "channels (one set for the residual stream, one per layer for MLP neurons): weight magnitude (no data), mean "
        "|activation| over --data, or the paper's finetune-delta (fine-tune the teacher briefly on --data, keep the "
        "least-moved weights). Unused when the student is as wide as the teacher. Default: magnitude.",
    )
    add(
        "--data",
        help="images for activation/finetune-delta: digits or fashion_mnist (offline, built in), a local "
        "image folder (class_name/*.png), or a Hub dataset id. A headless teacher also takes its label count from it.",
    )
    add(
        "--num-batches",
        type=int,
        default=8,
        help="batches of --data to use (activation: averaged; finetune-delta: one AdamW step each). Default: 8.",
    )
    add("--batch-size", type=int, default=16, help="images per batch for --data. Default: 16.")
    add("--finetune-lr", type=float, default=1e-4, help="AdamW learning rate of finetune-delta. Default: 1e-4.")
    add(
        "--num-labels",
        type=int,
        help="classes of a fresh head (teacher without a head, or a different label count "
        "than the teacher's head). Default: the teacher head's labels, else --data's, else the teacher config's.",
    )
    add(
        "--base-model",
        help="Hub id to record as base_model in the model card (default: --teacher when it is a Hub "
        "id; set it when --teacher is a local copy of a Hub model).",
    )
    add("--push-to-hub", metavar="ORG/NAME", help="after writing the folder, create the Hub repo and upload it.")
    add("--private", action="store_true", help="make the --push-to-hub repo private.")
    add(
        "--dry-run",
        action="store_true",
        help="with --push-to-hub: write the folder, then list the files and the target repo instead of uploading.",
    )
    add("--overwrite", action="store_true", help="replace an existing --output folder (swapped in when complete).")
    add("--seed", type=int, default=0, help="seed of the student's fresh parameters and of finetune-delta. Default: 0.")
    add(
        "--mixer-init",
        choices=MIXER_INITS,
        default="standard",
        help="SSM init: standard Mamba init (the paper) or attention (beyond the paper: x <- W_V, B <- W_K, "
        "C <- W_Q of the same teacher layer, identity conv; conversion/attention_init.py). Default: standard.",
    )
    vlm = parser.add_argument_group("LLaVA teachers only")
    vlm.add_argument(
        "--cross-mamba-layers",
        default="",
        help="comma-separated language-model layers whose mixer also reads the image tokens (Cross-Mamba), e.g. 4,8.",
    )
    vlm.add_argument(
        "--conv-init",
        choices=CONV_INITS,
        help="conv1d init: normal N(0, 1) (the paper; default with --mixer-init standard), identity (default with "
        "--mixer-init attention) or standard.",
    )
    vlm.add_argument(
        "--ssm-from",
        help="Hub id or folder of a `transformers` Mamba checkpoint of the student's mixer shape: x_proj, dt_proj, "
        "A_log and D of layer i come from its layer i (the paper's Trans-LLaVA init).",
    )
    return parser


def _default_processor(teacher: Teacher):
    """The teacher has no preprocessor config (e.g. a bare saved model): ViT-style resize + normalise."""
    imagenet = teacher.model_type in ("deit", "dinov2")
    cls = getattr(transformers, "ViTImageProcessorPil", transformers.ViTImageProcessor)
    return cls(
        image_mean=IMAGENET_DEFAULT_MEAN if imagenet else IMAGENET_STANDARD_MEAN,
        image_std=IMAGENET_DEFAULT_STD if imagenet else IMAGENET_STANDARD_STD,
    )


def _labels(args, teacher_config, data) -> tuple[int | None, dict | None, str]:
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


def _check_common(args: argparse.Namespace) -> None:
    """Checks shared by image and LLaVA teachers: publishing arguments and the output folder."""
    check_push_options(args.push_to_hub, args.dry_run)
    if args.num_batches < 1 or args.batch_size < 1 or (args.num_labels is not None and args.num_labels < 1):
        raise ValueError("--num-batches, --batch-size and --num-labels must be at least 1.")
    check_output(args.output, args.overwrite)


def _check(args: argparse.Namespace) -> _Checked:
    """All cheap checks, in order of cost: arguments, output, spec, teacher config, student shape, then data."""
    _check_common(args)
    vlm_only = [flag for flag, value in _vlm_options(args).items() if value]
    if vlm_only:
        raise ValueError(f"{', '.join(vlm_only)} apply to LLaVA teachers only; drop them for an image teacher.")
    parse_student_spec(args.student)
    teacher_config = load_teacher_config(args.teacher)
    processor = load_image_processor(args.teacher)
    mlp_width = getattr(teacher_config, "intermediate_size", None) or int(
        teacher_config.hidden_size * teacher_config.mlp_ratio
    )
    image_size = default_image_size(teacher_config, processor)
    shape = student_config_for(teacher_config, args.student, image_size, mlp_width, None, None)
    narrower = shape.hidden_size < teacher_config.hidden_size or 0 < shape.mlp_hidden_size < mlp_width
    if narrower and args.importance in NEEDS_DATA and not args.data:
        raise ValueError(f"--importance {args.importance} needs images: pass --data (e.g. --data digits).")
    data = load_image_dataset(args.data) if args.data else None
    num_labels, id2label, head_note = _labels(args, teacher_config, data)
    config = student_config_for(teacher_config, args.student, image_size, mlp_width, num_labels, id2label)
    return _Checked(teacher_config, processor, config, data, narrower, head_note)


def _report(args, checked: _Checked, teacher: Teacher, selection, student, tensors: dict, processor) -> dict:
    config = checked.config
    return {
        "format": "transmamba-subcloning-report/1",
        "teacher": {
            "source": args.teacher,
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
            "data": args.data if selection.method in NEEDS_DATA else None,
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


def _vlm_options(args: argparse.Namespace) -> dict:
    """The LLaVA-only options that differ from their defaults."""
    return {
        "--cross-mamba-layers": args.cross_mamba_layers,
        "--conv-init": args.conv_init,
        "--ssm-from": args.ssm_from,
    }


def _is_llava_teacher(source: str) -> bool:
    """A cheap config read; anything unreadable goes down the image path, whose checks explain the problem."""
    try:
        return is_multimodal(AutoConfig.from_pretrained(source))
    except (OSError, ValueError, KeyError):
        return False


def _cross_layers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--cross-mamba-layers takes comma-separated layer indices like 4,8; got {text!r}.") from None


def convert_llava(args: argparse.Namespace) -> Path:
    """The LLaVA branch: check the options, subclone (which vets the teacher before loading it), write the folder."""
    started = time.perf_counter()
    _check_common(args)
    image_only = {
        "--data": args.data,
        "--num-labels": args.num_labels,
        "--importance": args.importance != "magnitude" and args.importance,
    }
    if any(image_only.values()):
        raise ValueError(
            f"{', '.join(k for k, v in image_only.items() if v)} apply to image teachers only; a narrower LLaVA "
            "language model keeps the residual channels with the largest weight norms (magnitude), no data needed."
        )
    fields = parse_student(args.student)
    torch.manual_seed(args.seed)
    student, subclone_report = subclone_llava(
        args.teacher,
        **fields,
        cross_mamba_layers=_cross_layers(args.cross_mamba_layers),
        mixer_init=args.mixer_init,
        conv_init=args.conv_init,
        ssm_from=args.ssm_from,
    )
    processor = load_processor(args.teacher)
    text = student.config.text_config
    report = {
        "format": "transmamba-llava-subcloning-report/1",
        "student": {
            "spec": args.student,
            "class": type(student).__name__,
            "num_hidden_layers": text.num_hidden_layers,
            "hidden_size": text.hidden_size,
            "mixer_width": text.mixer_size,
            "state_size": text.state_size,
            "parameters": student.num_parameters(),
        },
        **subclone_report,
        "processor": type(processor).__name__ if processor is not None else "none (the teacher ships none)",
        "seed": args.seed,
    }
    is_local = Path(args.teacher).is_dir()
    card = stage1_vlm_card(
        teacher=args.teacher,
        teacher_class=subclone_report["teacher_class"],
        base_model=args.base_model or (None if is_local else args.teacher),
        license=teacher_license(args.teacher),
        student_spec=args.student,
        config=student.config,
        num_parameters=student.num_parameters(),
        report=subclone_report,
        repo_id=args.push_to_hub,
    )
    report["seconds_before_write"] = round(time.perf_counter() - started, 2)
    notice = {"NOTICE": GEMMA_NOTICE} if subclone_report["teacher_text_model"].startswith("gemma") else None
    output = write_model_folder(args.output, student, processor, report, card, args.overwrite, notice)
    print(
        f"wrote {output} in {time.perf_counter() - started:.1f}s: {text.num_hidden_layers} Mamba layers, width "
        f"{text.hidden_size}, {student.num_parameters():,} params; SSM init: {subclone_report['ssm_init']}; details "
        f"in {REPORT_NAME}"
    )
    return output


def convert(args: argparse.Namespace) -> Path:
    """Check everything cheap first, then load the teacher, pick channels, subclone and write the folder."""
    if _is_llava_teacher(args.teacher):
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
    card = stage1_card(
        teacher=args.teacher,
        teacher_class=type(teacher.model).__name__,
        base_model=args.base_model or (None if teacher.is_local else args.teacher),
        license=teacher_license(args.teacher),
        student_spec=args.student,
        config=config,
        num_parameters=student.num_parameters(),
        importance=selection.method if selection.method == "identity" else f"{selection.method} (residual + MLP)",
        data=report["importance"]["data"],
        summary=report["summary"],
        repo_id=args.push_to_hub,
    )
    report["seconds_before_write"] = round(time.perf_counter() - started, 2)
    output = write_model_folder(args.output, student, processor, report, card, args.overwrite)
    counts = ", ".join(f"{s} {v['tensors']} tensors / {v['parameters']:,} params" for s, v in report["summary"].items())
    print(f"wrote {output} in {time.perf_counter() - started:.1f}s: {counts}; details in {REPORT_NAME}")
    return output


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on bad input (nothing written), 1 when only the push failed (the folder is complete)."""
    from .convert_video import main as convert_video_main
    from .convert_video import wants_video

    if wants_video(sys.argv[1:] if argv is None else argv):  # --student videomamba-*: its own typed converter
        return convert_video_main(argv)
    args = build_parser().parse_args(argv)
    try:
        output = convert(args)
    except ValueError as error:
        print(f"transmamba convert: error: {error}", file=sys.stderr)
        return 2
    if args.push_to_hub:
        message = "TransMamba stage-1 student"
        return publish(output, args.push_to_hub, args.private, args.dry_run, "transmamba convert", message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
