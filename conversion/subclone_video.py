"""Image ViT teacher -> TransVideoMamba student: the image subcloning, plus a tubelet inflated from the patch
embedding and temporal positions that start at zero.

Choices:
- Tubelet inflation ``centre`` (default, VideoMamba's choice): the teacher's 2-D kernel goes into the middle
  time slice ``tubelet_size // 2`` of the Conv3d kernel, the other slices are zero, so each tubelet embeds its
  middle frame exactly as the teacher embeds that frame. ``mean`` repeats the kernel over time divided by
  ``tubelet_size`` (the tubelet's frame average). On a static clip both equal the teacher's patch embedding.
- Spatial positions: the teacher's ``[cls, grid]`` table (grid resized bicubically when the student's differs).
- Temporal positions: zero, so a static clip enters the blocks exactly as the teacher's frames do.
- Norms, MLPs, the attention output projection -> ``out_proj``, and the head: as for image students
  (``subclone.py``); the SSM keeps the standard Mamba init.
"""

from __future__ import annotations

import torch

from ..modeling_transmamba import TransMambaForVideoClassification, TransVideoMambaConfig
from .importance import Selection
from .subclone import _Plan, _positions, _Writer, blocks_and_head
from .teachers import Teacher
from .video_args import INFLATIONS


def inflate_patch_kernel(weight: torch.Tensor, tubelet_size: int, inflation: str = "centre") -> torch.Tensor:
    """(out, in, p, p) -> (out, in, tubelet_size, p, p) by ``centre`` or ``mean`` inflation (see module doc)."""
    if inflation not in INFLATIONS:
        raise ValueError(f"Unknown tubelet inflation {inflation!r}; choose one of {', '.join(INFLATIONS)}.")
    if inflation == "mean":
        return weight[:, :, None].repeat(1, 1, tubelet_size, 1, 1) / tubelet_size
    kernel = weight.new_zeros(weight.shape[0], weight.shape[1], tubelet_size, *weight.shape[2:])
    kernel[:, :, tubelet_size // 2] = weight
    return kernel


def _video_embeddings(w: _Writer, plan: _Plan, inflation: str) -> None:
    teacher, config, r, narrow, src = plan.teacher, plan.config, plan.r, plan.narrow, plan.source
    proj, prefix = teacher.patch_projection, "transmamba.embeddings"
    kernel = inflate_patch_kernel(proj.weight[r], config.tubelet_size, inflation)
    note = f"2-D patch kernel inflated to a {config.tubelet_size}-frame tubelet ({inflation})"
    w.put(f"{prefix}.patch_embeddings.projection.weight", kernel, [proj.weight], True, src, note)
    w.put(f"{prefix}.patch_embeddings.projection.bias", proj.bias[r], [proj.bias], narrow, src)
    w.put(f"{prefix}.cls_token", teacher.cls_token[..., r], [teacher.cls_token], narrow, src)
    positions, resized = _positions(teacher, r, config)
    dropped = "teacher's distillation-token position dropped" if teacher.num_prefix_tokens > 1 else None
    note = "; ".join(x for x in ("spatial positions, shared by every frame", dropped, resized) if x)
    w.put(f"{prefix}.position_embeddings", positions, [teacher.position_embeddings], True, src, note)
    w.entries[f"{prefix}.temporal_position_embeddings"] = {
        "status": "initialised",
        "note": "zero: a static clip starts as the teacher's frames",
    }


@torch.no_grad()
def subclone_video(
    teacher: Teacher, config: TransVideoMambaConfig, selection: Selection, seed: int = 0, inflation: str = "centre"
) -> tuple[TransMambaForVideoClassification, dict[str, dict]]:
    """Build the video student (standard init, seeded) and fill every tensor with a teacher counterpart.

    Returns (student, report) like :func:`subclone.subclone`.
    """
    torch.manual_seed(seed)
    student = TransMambaForVideoClassification(config).eval()
    w, plan = _Writer(student, teacher), _Plan(teacher, config, selection)
    _video_embeddings(w, plan, inflation)
    blocks_and_head(w, plan, teacher, config)
    return student, w.report()


def teacher_video_tokens(frame_tokens: torch.Tensor, batch: int, tubelet_size: int, num_patches: int) -> torch.Tensor:
    """The WSAB target in the student's scan order: the teacher's per-frame tokens as ``[cls, (t n)]``.

    ``frame_tokens`` is the teacher's last layer on every frame, (batch * frames, prefix + n, dim), frames of one
    clip consecutive. Patch tokens of the frames in one tubelet are averaged (tubelet 1: the frames' own tokens);
    the class token is the clip's mean class token (the student has one class token for the whole clip); any
    other prefix tokens (DeiT's distillation token, registers) are dropped: the last ``num_patches`` are the grid.
    """
    frames = frame_tokens.shape[0] // batch
    if frames * batch != frame_tokens.shape[0] or frames % tubelet_size:
        raise ValueError(
            f"{frame_tokens.shape[0]} teacher frames do not split into {batch} clips of whole {tubelet_size}-frame "
            "tubelets."
        )
    tokens = frame_tokens.view(batch, frames, *frame_tokens.shape[1:])
    cls = tokens[:, :, 0].mean(1, keepdim=True)
    patches = tokens[:, :, tokens.shape[2] - num_patches :]
    patches = patches.view(batch, frames // tubelet_size, tubelet_size, *patches.shape[2:]).mean(2)
    return torch.cat([cls, patches.flatten(1, 2)], dim=1)
