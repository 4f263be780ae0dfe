"""WSAB for hierarchical (VMamba-style) students, whose blocks see the image on four different token grids.

The isotropic WSAB (``wsab.py``) compares every student layer with the teacher's last-layer tokens on one shared
grid. Here stage s has its own grid (side ``image / (patch * 2**s)``) and width, so:

- **Teacher tokens per stage.** The teacher's patch tokens (prefix tokens dropped: a hierarchical student has no
  class token) are laid out on the teacher's grid and resampled to each stage's grid: area-averaged
  (``adaptive_avg_pool2d``) when the stage grid is coarser, bilinearly interpolated when finer. Averaging keeps
  a coarse token the mean of the teacher tokens it covers; interpolation is the smooth choice for finer grids.
- **Calibration.** One MLP per student layer, ``P_l = MLP(zero_pad(x, D_t))`` from that layer's stage width.
- **Order.** Each block's per-direction outputs come in their scan's order (row-major, column-major and the
  reverses, on the stage grid); the resampled teacher tokens are permuted into the same orders.
- **Weights and loss** are the paper's, over *all* blocks of all stages at once:
  ``s_{l,d} = mean_tokens cos(P_l(S_{l,d}), π_d(T_s))``, ``w_{·,d} = softmax_l(g(s_{·,d}).detach() / τ)``,
  ``L = Σ_d Σ_l w_{l,d} (1 − s_{l,d})``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transmamba.modeling_transmamba.scan_orders import scan_permutations

from .baselines import LogitsDistillation, NoDistillation
from .features import Calibration, DistillLoss, StudentFeatures, TeacherFeatures
from .wsab import WEIGHTINGS, adaptive_layer_weights, checked_direction_outputs

# Tokens before the patch grid, most likely first: class (ViT, DINOv2), class + distillation (DeiT), none,
# class + 4 registers (DINOv2 with registers).
PREFIXES = (1, 2, 0, 5)


def teacher_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(batch, prefix + side², dim) -> (batch, dim, side, side): the patch tokens on the teacher's grid."""
    count = tokens.shape[1]
    for prefix in PREFIXES:
        side = math.isqrt(max(count - prefix, 0))
        if side > 0 and side * side == count - prefix:
            patches = tokens[:, prefix:]
            return patches.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
    raise ValueError(f"The teacher's {count} tokens do not end in a square patch grid; cannot map them to stages.")


def resample(grid: torch.Tensor, side: int) -> torch.Tensor:
    """Teacher grid -> (batch, side², dim) in raster order: area average when coarser, bilinear when finer."""
    if grid.shape[-1] >= side:
        out = F.adaptive_avg_pool2d(grid.float(), side)
    else:
        out = F.interpolate(grid.float(), size=(side, side), mode="bilinear", align_corners=False)
    return out.flatten(2).transpose(1, 2)


class HierarchicalWSABLoss(nn.Module):
    """Per-block, per-direction cosine distillation against the teacher's tokens resampled to each stage's grid."""

    needs_directions = True
    needs_last_hidden = False
    needs_teacher = True

    def __init__(
        self,
        stage_widths: list[int],
        depths: list[int],
        stage_sides: list[int],
        teacher_dim: int,
        directions: list[str],
        tau: float = 1.0,
        weighting: str = "misaligned",
    ):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"Unknown WSAB weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}.")
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}.")
        self.directions, self.tau, self.weighting = list(directions), tau, weighting
        self.layer_stage = [stage for stage, depth in enumerate(depths) for _ in range(depth)]
        self.stage_sides = list(stage_sides)
        self.calibration = nn.ModuleList(Calibration(stage_widths[s], teacher_dim) for s in self.layer_stage)
        for stage, side in enumerate(stage_sides):
            self.register_buffer(f"perm_{stage}", scan_permutations(self.directions, side, side), persistent=False)

    @classmethod
    def for_config(cls, config, teacher_dim: int, **options) -> HierarchicalWSABLoss:
        sides = [config.stage_grid(s) for s in range(config.num_stages)]
        return cls(config.hidden_sizes, config.depths, sides, teacher_dim, config.scan_directions, **options)

    def forward(self, student: StudentFeatures, teacher: TeacherFeatures) -> DistillLoss:
        layers = checked_direction_outputs(student, len(self.calibration), "blocks")
        grid = teacher_grid(teacher.tokens)
        targets = {}
        for stage, side in enumerate(self.stage_sides):
            if stage in self.layer_stage:
                tokens = F.normalize(resample(grid, side), dim=-1)
                targets[stage] = tokens[:, getattr(self, f"perm_{stage}")]  # (batch, directions, length, dim)
        sims = []
        for index, shares in enumerate(layers):
            target = targets[self.layer_stage[index]]
            if shares.shape[2] != target.shape[2]:
                raise ValueError(
                    f"Block {index} has {shares.shape[2]} tokens but its stage grid has {target.shape[2]}; train at "
                    "the image size the student was built for."
                )
            calibrated = F.normalize(self.calibration[index](shares).float(), dim=-1)
            sims.append((calibrated * target).sum(-1).mean(-1).mean(0))  # (directions,)
        sims = torch.stack(sims)
        weights = adaptive_layer_weights(sims, self.weighting, self.tau)
        per_direction = (weights * (1.0 - sims)).sum(0)
        logs = {f"distill_loss/{d}": per_direction[k].detach() for k, d in enumerate(self.directions)}
        for k, d in enumerate(self.directions):
            logs.update({f"layer_weight/{d}/{i}": weights[i, k] for i in range(weights.shape[0])})
        return DistillLoss(per_direction.sum(), logs)


def build_hierarchical_distiller(name: str, config, teacher_dim: int, **options) -> nn.Module:
    """``--distillation`` for a hierarchical student: wsab, logits or none (feature KD needs one token grid);
    ``build_distiller`` composes wsab+logits from the first two."""
    if name == "wsab":
        return HierarchicalWSABLoss.for_config(
            config, teacher_dim, tau=options.get("tau", 1.0), weighting=options.get("weighting", "misaligned")
        )
    if name == "logits":
        return LogitsDistillation(options.get("temperature", 2.0))
    if name == "none":
        return NoDistillation()
    raise ValueError(
        f"Distillation {name!r} is not available for hierarchical students (feature KD compares one token grid); "
        "choose wsab, wsab+logits, logits or none."
    )
