"""What the distillation losses compare: student/teacher feature containers, token alignment, calibration MLPs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transmamba.modeling_transmamba.modeling_transmamba import cls_token_index


@dataclass
class StudentFeatures:
    """One student forward. ``direction_outputs``: per layer (batch, directions, length, hidden), scan order."""

    logits: torch.Tensor
    last_hidden_state: torch.Tensor | None = None
    direction_outputs: tuple[torch.Tensor, ...] | None = None


@dataclass
class TeacherFeatures:
    """One frozen teacher forward: last-layer tokens (after its final norm) and, if it has a head, its logits."""

    tokens: torch.Tensor | None = None
    logits: torch.Tensor | None = None


@dataclass
class DistillLoss:
    """A distillation loss and the detached values worth logging (name -> scalar tensor)."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor]


def align_teacher_tokens(tokens: torch.Tensor, num_patches: int, student_has_cls: bool) -> torch.Tensor:
    """Put a ViT-style teacher sequence into the student's raster token order.

    Teachers lay out ``[cls, (distillation / register tokens), patch_0 .. patch_{N-1}]``: the class token first,
    the N patch tokens last. A PlainMamba student has patches only (every prefix token is dropped); a ViM student
    has the class token in the middle, at ``N // 2``, so the teacher's is moved there.
    """
    if tokens.shape[1] < num_patches + int(student_has_cls):
        raise ValueError(
            f"The teacher returned {tokens.shape[1]} tokens but the student has {num_patches} patches; teacher and "
            "student must cut images into the same patch grid (same patch size and image size)."
        )
    patches = tokens[:, tokens.shape[1] - num_patches :]
    if not student_has_cls:
        return patches
    middle = cls_token_index(num_patches)
    return torch.cat([patches[:, :middle], tokens[:, :1], patches[:, middle:]], dim=1)


class Calibration(nn.Module):
    """``P(x) = MLP(zero_pad(x, D_teacher))``: maps student features into the teacher's feature space.

    Zero-padding x to the teacher width and applying a Linear is the same function as a Linear on the unpadded
    x (the padded inputs multiply weights that never matter), so the pad is folded into the first Linear and
    never materialised. Hidden width = teacher width, GELU.
    """

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(student_dim, teacher_dim)
        self.fc2 = nn.Linear(teacher_dim, teacher_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))
