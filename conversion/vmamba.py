"""Subcloning an isotropic ViT into a hierarchical (VMamba-style) student, and its `transmamba convert` branch.

The paper subclones into isotropic students only and its code has no hierarchical recipe, so this one is ours:

- **One teacher stage.** The teacher has one width and one token grid (stride = its patch size); the student has
  four. The teacher's blocks go into the stage whose stride is nearest the teacher's patch size (in log scale),
  among the stages no wider than the teacher (stride 16 <-> VMamba's stage 3 for DeiT/ViT-16 and DINOv2-14;
  for a 192-wide DeiT-T, stage 2). That stage's tokens see the image at the teacher's scale, so the teacher's
  per-token MLPs and output projections meet features at the resolution they were trained on.
- **Which blocks.** Stage block i takes teacher block i (the paper's depth rule: the first n layers).
- **What is copied** per block, as for the isotropic students (``subclone.py``): both LayerNorms, the MLP and
  the attention output projection -> the mixer's ``out_proj`` (input columns into the first mixer channels, the
  rest zero; DINOv2 layer scales folded in). A narrower stage keeps the teacher's most important residual
  channels and MLP neurons (``--importance``), one residual index set for the whole stage.
- **Initialised:** the stem, the other stages, the patch merges, every SS2D mixer's in_proj/conv/SSM/out-norm,
  the final norm and the head (their widths have no teacher counterpart; no position embeddings exist).
"""

from __future__ import annotations

import math
import time

import torch
from transformers import PretrainedConfig

from ..data import load_image_dataset, pixel_batches, processor_for_size
from ..model_cards.naming import hub_id, public_name
from ..modeling_transmamba import VMAMBA_PRESETS, TransVMambaConfig, TransVMambaForImageClassification
from .args import ConversionResult, ConvertArguments
from .importance import NEEDS_DATA, Selection, select_indices
from .student_spec import _split_top_level, labelled_config, parse_spec, teacher_fields
from .subclone import _mixer_out, _mlp, _norm, _Plan, _Writer, summarise
from .teachers import Teacher, load_teacher

COPIED_PARTS = "In one stage (the one at the teacher's stride): norms, MLPs and the attention output projections"


def is_vmamba_spec(spec: str) -> bool:
    return _split_top_level(spec)[0].strip() in VMAMBA_PRESETS


def parse_vmamba_spec(spec: str) -> tuple[str, dict]:
    """``vmamba-t[,key=value...]`` -> (preset, overrides); see `parse_spec`."""
    return parse_spec(spec, VMAMBA_PRESETS, TransVMambaConfig, "VMamba")


def teacher_stage(config: TransVMambaConfig, teacher_width: int, teacher_patch: int) -> int:
    """The stage that takes the teacher's blocks: stride nearest the teacher's patch size, width <= the teacher's."""
    fits = [i for i, width in enumerate(config.hidden_sizes) if width <= teacher_width]
    if not fits:
        raise ValueError(
            f"Every student stage is wider than the teacher ({config.hidden_sizes} vs {teacher_width}); subcloning "
            f"keeps a subset of the teacher's channels: use hidden_sizes with a stage of width <= {teacher_width}."
        )
    strides = config.stage_strides()
    return min(fits, key=lambda i: (abs(math.log2(strides[i] / teacher_patch)), -config.hidden_sizes[i]))


def vmamba_config_for(
    teacher_config: PretrainedConfig,
    spec: str,
    image_size: int,
    mlp_width: int,
    num_labels: int | None = None,
    id2label: dict | None = None,
) -> TransVMambaConfig:
    """Preset, then the teacher's image size/channels/eps/activation, then the user's overrides; shape checks."""
    preset, overrides = parse_vmamba_spec(spec)
    from_teacher = teacher_fields(teacher_config, image_size, ("num_channels", "layer_norm_eps", "hidden_act"))
    config = labelled_config(TransVMambaConfig, {**VMAMBA_PRESETS[preset], **from_teacher, **overrides}, spec,
                             num_labels, id2label)  # fmt: skip
    stage = teacher_stage(config, teacher_config.hidden_size, teacher_config.patch_size)
    depth, width = config.depths[stage], config.hidden_sizes[stage]
    if depth > teacher_config.num_hidden_layers:
        raise ValueError(
            f"Stage {stage + 1} (the one at the teacher's stride) has {depth} blocks but the teacher only "
            f"{teacher_config.num_hidden_layers}; lower depths[{stage}] to at most {teacher_config.num_hidden_layers}."
        )
    if int(width * config.mlp_ratio) > mlp_width:
        raise ValueError(
            f"Stage {stage + 1}'s MLP width {int(width * config.mlp_ratio)} exceeds the teacher's {mlp_width}; "
            f"lower mlp_ratio to at most {mlp_width / width:g}."
        )
    return config


@torch.no_grad()
def subclone_vmamba(teacher: Teacher, config: TransVMambaConfig, selection: Selection, seed: int = 0):
    """Build the student (standard init, seeded) and copy the teacher's blocks into ``teacher_stage``.

    Returns (student, report, stage): report maps every student state-dict key to copied / sliced / initialised.
    """
    torch.manual_seed(seed)
    student = TransVMambaForImageClassification(config).eval()
    stage = teacher_stage(config, teacher.hidden_size, teacher.patch_size)
    writer, plan = _Writer(student, teacher), _Plan(teacher, config.stage_mixer_config(stage), selection)
    for i in range(config.depths[stage]):
        block, prefix = teacher.blocks[i], f"vmamba.encoder.stages.{stage}.layers.{i}"
        _norm(writer, plan, f"{prefix}.layernorm_before", block.norm_before)
        _mixer_out(writer, plan, i, prefix=f"{prefix}.mixer.out_proj")
        if config.mlp_ratio > 0:
            _norm(writer, plan, f"{prefix}.layernorm_after", block.norm_after)
            _mlp(writer, plan, i, prefix=f"{prefix}.mlp")
    return student, writer.report(), stage


def convert_vmamba(args: ConvertArguments) -> ConversionResult:
    """`transmamba convert --student vmamba-t ...`: the same checks, importance, report, card and folder as the
    isotropic branch (`convert.py`, which dispatches here), with the hierarchical recipe above."""
    from .convert import _default_processor, _labels, export_image_student, image_teacher  # convert imports us

    started = time.perf_counter()
    teacher_config, processor, mlp_width, image_size = image_teacher(args, parse_vmamba_spec)
    shape = vmamba_config_for(teacher_config, args.student, image_size, mlp_width)
    stage = teacher_stage(shape, teacher_config.hidden_size, teacher_config.patch_size)
    width, mlp = shape.hidden_sizes[stage], int(shape.hidden_sizes[stage] * shape.mlp_ratio)
    narrower = width < teacher_config.hidden_size or 0 < mlp < mlp_width
    if narrower and args.importance in NEEDS_DATA and not args.data:
        raise ValueError(f"--importance {args.importance} needs images: pass --data (e.g. --data digits).")
    data = load_image_dataset(args.data, option="--data") if args.data else None
    num_labels, id2label, head_note = _labels(args, teacher_config, data)
    config = vmamba_config_for(teacher_config, args.student, image_size, mlp_width, num_labels, id2label)

    teacher = load_teacher(args.teacher, teacher_config)
    processor = processor_for_size(processor or _default_processor(teacher), config.image_size)
    batches = None
    if narrower and args.importance in NEEDS_DATA:
        batches = pixel_batches(data["train"], processor, args.batch_size, args.num_batches, config.num_channels)
    depth = config.depths[stage]
    selection = select_indices(
        teacher, args.importance, width, mlp, depth, batches, lr=args.finetune_lr, seed=args.seed
    )
    student, tensors, stage = subclone_vmamba(teacher, config, selection, seed=args.seed)
    summary = summarise(tensors, student)
    report = {
        "format": "transmamba-subcloning-report/1",
        "teacher": {"source": public_name(args.teacher, hub_id(args.teacher)), "class": type(teacher.model).__name__,
                    "hidden_size": teacher.hidden_size,
                    "num_hidden_layers": len(teacher.blocks), "patch_size": teacher.patch_size},  # fmt: skip
        "student": {"spec": args.student, "class": type(student).__name__, "hidden_sizes": config.hidden_sizes,
                    "depths": config.depths, "strides": config.stage_strides(), "image_size": config.image_size,
                    "parameters": student.num_parameters()},  # fmt: skip
        "recipe": f"teacher blocks 0..{depth - 1} -> stage {stage + 1} (stride {config.stage_strides()[stage]}, "
        f"width {width}); everything else initialised (see conversion/vmamba.py)",
        "importance": {"method": selection.method, "requested": args.importance,
                       "data": public_name(args.data) if selection.method in NEEDS_DATA else None, **selection.details,
                       "residual_indices": selection.residual.tolist(),
                       "mlp_indices": [m.tolist() for m in selection.mlp] if selection.mlp is not None else "all"},
        "head": head_note,
        "seed": args.seed,
        "summary": summary,
        "tensors": tensors,
    }  # fmt: skip
    copied = f"{COPIED_PARTS} (stage {stage + 1}, teacher blocks 0..{depth - 1})"
    return export_image_student(args, teacher, config, student, selection, report, processor, started,
                                copied_parts=copied)  # fmt: skip
