"""`transmamba convert --student videomamba-t ...`: subclone an image ViT into a TransVideoMamba student.

The library call is `convert_video(VideoConvertArguments) -> Path`; the arguments and the thin CLI live in
`video_args.py` (light: no torch), which `conversion/cli.py` hands every ``--student videomamba-*`` call.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import PretrainedConfig
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..folders import check_output_folder
from ..model_cards.stage1 import teacher_license
from ..model_cards.video import video_student_card
from ..modeling_transmamba import VIDEO_PRESETS, TransMambaConfig, TransVideoMambaConfig
from .export import REPORT_NAME, write_model_folder
from .importance import select_indices
from .student_spec import parse_spec
from .subclone import summarise
from .subclone_video import subclone_video
from .teachers import default_image_size, load_image_processor, load_teacher, load_teacher_config
from .video_args import VideoConvertArguments
from .videomamba_ssm import copy_videomamba_ssm, read_videomamba_ssm


def parse_video_spec(spec: str) -> tuple[str, dict]:
    """``videomamba-t[,key=value...]`` -> (preset, overrides); see `parse_spec`."""
    return parse_spec(spec, VIDEO_PRESETS, TransMambaConfig, "video student", ("num_frames", "tubelet_size"))


def video_student_config(args: VideoConvertArguments, teacher_config: PretrainedConfig, image_size: int):
    """Preset, then the teacher's shape fields, then the overrides; refuses a student wider/deeper than the teacher."""
    preset, overrides = parse_video_spec(args.student)
    from_teacher = {
        k: getattr(teacher_config, k) for k in ("patch_size", "num_channels", "layer_norm_eps", "hidden_act")
    }
    clash = [k for k in from_teacher if k in overrides and overrides[k] != from_teacher[k]]
    if clash:
        raise ValueError(f"Student {', '.join(clash)} must be the teacher's ({from_teacher}); drop the override.")
    fields = {**VIDEO_PRESETS[preset], **from_teacher, "image_size": image_size, **overrides}
    if args.num_labels:
        fields["num_labels"] = args.num_labels
    if fields["hidden_size"] > teacher_config.hidden_size:
        raise ValueError(
            f"Student hidden_size {fields['hidden_size']} is wider than the teacher's {teacher_config.hidden_size}; "
            f"add hidden_size={teacher_config.hidden_size} (or less) to --student."
        )
    if fields["num_hidden_layers"] > teacher_config.num_hidden_layers:
        raise ValueError(
            f"Student num_hidden_layers {fields['num_hidden_layers']} is deeper than the teacher's "
            f"{teacher_config.num_hidden_layers}; add num_hidden_layers={teacher_config.num_hidden_layers} (or less)."
        )
    try:
        return TransVideoMambaConfig(**fields)
    except ValueError as error:
        raise ValueError(f"Student spec {args.student!r} is invalid: {error}") from None


def video_processor(teacher_processor, image_size: int):
    """VideoMAE's image processor (frames -> (frames, C, H, W)) with the teacher's normalisation, resizing frames to
    ``image_size`` square. The PIL variant: `transformers` 5 video processors need torchvision, absent here; it
    saves as the backend-neutral ``VideoMAEImageProcessor`` and loads with ``AutoImageProcessor``."""
    from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil

    mean = getattr(teacher_processor, "image_mean", None) or IMAGENET_DEFAULT_MEAN
    std = getattr(teacher_processor, "image_std", None) or IMAGENET_DEFAULT_STD
    return VideoMAEImageProcessorPil(
        size={"height": image_size, "width": image_size}, do_center_crop=False, image_mean=mean, image_std=std
    )


def convert_video(args: VideoConvertArguments) -> Path:
    """Cheap checks (output, spec, teacher config, shape), then load the teacher, subclone and write the folder."""
    started = time.perf_counter()
    check_output_folder(args.output, args.overwrite)
    teacher_config = load_teacher_config(args.teacher)
    teacher_processor = load_image_processor(args.teacher)
    image_size = args.image_size or default_image_size(teacher_config, teacher_processor)
    config = video_student_config(args, teacher_config, image_size)
    ssm = read_videomamba_ssm(args.ssm_from, config) if args.ssm_from else None
    teacher = load_teacher(args.teacher, teacher_config)
    # A narrower student keeps the channels with the largest weights (magnitude): no images needed.
    selection = select_indices(
        teacher, "magnitude", config.hidden_size, config.mlp_hidden_size, config.num_hidden_layers
    )
    student, tensors = subclone_video(teacher, config, selection, seed=args.seed, inflation=args.inflation)
    if ssm is not None:
        tensors.update(copy_videomamba_ssm(student, *ssm, source=args.ssm_from.name))
    ssm_init = f"from the VideoMamba checkpoint {args.ssm_from.name}" if ssm else "standard Mamba init"
    summary = summarise(tensors, student)
    report = {
        "format": "transmamba-video-subcloning-report/1",
        "teacher": {"source": args.teacher, "class": type(teacher.model).__name__, "hidden_size": teacher.hidden_size},
        "student": {
            "spec": args.student,
            "class": type(student).__name__,
            "num_frames": config.num_frames,
            "tubelet_size": config.tubelet_size,
            "image_size": image_size,
            "parameters": student.num_parameters(),
        },  # fmt: skip
        "inflation": args.inflation,
        "ssm_init": ssm_init,
        "importance": selection.method,
        "seed": args.seed,
        "summary": summary,
        "tensors": tensors,
    }
    card = video_student_card(
        teacher=args.teacher,
        teacher_class=type(teacher.model).__name__,
        base_model=args.base_model or (None if teacher.is_local else args.teacher),
        license=teacher_license(args.teacher),
        student_spec=args.student,
        config=config,
        num_parameters=student.num_parameters(),
        inflation=args.inflation,
        ssm_init=ssm_init,
        summary=summary,
        repo_id=args.push_to_hub,
    )
    processor = video_processor(teacher_processor, image_size)
    output = write_model_folder(args.output, student, processor, report, card, args.overwrite)
    print(f"wrote {output} in {time.perf_counter() - started:.1f}s: {student.num_parameters():,} params; details in "
          f"{REPORT_NAME}")  # fmt: skip
    return output
