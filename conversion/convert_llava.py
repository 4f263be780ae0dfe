"""The LLaVA branch of `convert`: check the options, subclone (which vets the teacher before loading it), write the
folder with the teacher's processor."""

from __future__ import annotations

import time

import torch

from ..model_cards.naming import hub_id, public_name
from ..model_cards.stage1 import GEMMA_NOTICE, stage1_vlm_card, teacher_license
from .args import ConversionResult, ConvertArguments
from .export import REPORT_NAME, write_model_folder
from .llava import load_processor, parse_student, subclone_llava


def convert_llava(args: ConvertArguments) -> ConversionResult:
    started = time.perf_counter()
    image_only = args.image_only_options()
    if image_only:
        raise ValueError(
            f"{', '.join(image_only)} apply to image teachers only; a narrower LLaVA language model keeps the "
            "residual channels with the largest weight norms (magnitude), no data needed."
        )
    fields = parse_student(args.student)
    torch.manual_seed(args.seed)
    student, subclone_report = subclone_llava(
        args.teacher,
        **fields,
        cross_mamba_layers=args.cross_layers,
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
    base_model = hub_id(args.teacher, args.base_model)
    card = stage1_vlm_card(
        teacher=public_name(args.teacher, base_model),
        teacher_class=subclone_report["teacher_class"],
        base_model=base_model,
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
    seconds = time.perf_counter() - started
    summary = (
        f"wrote {output} in {seconds:.1f}s: {text.num_hidden_layers} Mamba layers, width {text.hidden_size}, "
        f"{student.num_parameters():,} params; SSM init: {subclone_report['ssm_init']}; details in {REPORT_NAME}"
    )
    return ConversionResult(
        output, "vision-language", report, student.config, student.num_parameters(), round(seconds, 2), summary
    )
