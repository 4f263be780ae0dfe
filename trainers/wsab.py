"""WSAB: the paper's adaptive bidirectional distillation, as a plain ``nn.Module`` usable without the Trainer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transmamba.modeling_transmamba.modeling_transmamba import cls_token_index
from transmamba.modeling_transmamba.scan_orders import scan_permutations

from .args import WEIGHTINGS
from .features import Calibration, DistillLoss, StudentFeatures, TeacherFeatures, align_teacher_tokens


def adaptive_layer_weights(sims: torch.Tensor, weighting: str, tau: float) -> torch.Tensor:
    """(layers, directions) softmax over layers of the detached similarities (see ``WSABLoss``)."""
    sims = sims.detach()
    if weighting == "uniform":
        return torch.full_like(sims, 1.0 / sims.shape[0])
    score = 1.0 - sims if weighting == "misaligned" else sims
    return torch.softmax(score / tau, dim=0)


def checked_direction_outputs(student: StudentFeatures, count: int, unit: str) -> tuple:
    """The student's per-block direction outputs, which every WSAB loss needs one of per calibrated block."""
    layers = student.direction_outputs
    if layers is None or len(layers) != count:
        raise ValueError(
            f"WSAB needs the direction outputs of all {count} student {unit}; call the student with "
            "output_direction_outputs=True."
        )
    return layers


class WSABLoss(nn.Module):
    """Per-layer, per-direction cosine distillation of every student layer against the teacher's last layer.

    For student layer l and scan direction d, with ``S_{l,d}`` that direction's share of the mixer output (in its
    scan order) and ``T`` the teacher's last-layer tokens after its final norm (normalised features are a steadier
    target than the raw residual stream, whose few outlier channels would dominate a cosine):

    - ``s_{l,d} = (1 - λ) · mean_patches cos(P_l(S_{l,d}), π_d(T)) + λ · cos_cls`` where ``π_d`` puts the teacher's
      tokens into direction d's scan order (reversed for a backward scan, the zig-zag orders for PlainMamba), so
      patch tokens meet patch tokens and the class token meets only the class token. ``λ = cls_weight``; its
      default ``1 / (patches + 1)`` makes s the plain mean over all tokens. Without a class token, λ = 0.
      s is averaged over the batch.
    - ``w_{·,d} = softmax_l(g(s_{·,d}).detach() / τ)`` with ``g(s) = 1 - s`` (``weighting="misaligned"``, the
      default): the less aligned a layer, the more weight, as the paper intends. ``"aligned"`` (``g(s) = s``) is
      the opposite sign for ablation, ``"uniform"`` gives every layer ``1 / layers``.
    - ``L_d = Σ_l w_{l,d} (1 - s_{l,d})`` and the loss is ``Σ_d L_d``; the caller mixes it with the task loss as
      ``α · L_task + (1 - α) · Σ_d L_d``.
    """

    needs_directions = True
    needs_last_hidden = False
    needs_teacher = True

    def __init__(
        self,
        num_layers: int,
        student_dim: int,
        teacher_dim: int,
        directions: list[str],
        grid: tuple[int, int],
        use_cls_token: bool,
        tau: float = 1.0,
        weighting: str = "misaligned",
        cls_weight: float | None = None,
    ):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"Unknown WSAB weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}.")
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}.")
        self.directions = list(directions)
        self.tau, self.weighting = tau, weighting
        self.num_patches, self.use_cls_token = grid[0] * grid[1], use_cls_token
        self.calibration = nn.ModuleList(Calibration(student_dim, teacher_dim) for _ in range(num_layers))
        perm = scan_permutations(self.directions, grid[0], grid[1], self.num_patches + int(use_cls_token))
        is_cls = perm == cls_token_index(self.num_patches) if use_cls_token else torch.zeros_like(perm, dtype=bool)
        self.cls_weight = (cls_weight if cls_weight is not None else 1 / (self.num_patches + 1)) * use_cls_token
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("is_cls", is_cls, persistent=False)

    def similarity(self, layer: int, direction_outputs: torch.Tensor, teacher_scan: torch.Tensor) -> torch.Tensor:
        """s_{l,·} for one layer: (directions,) from (batch, directions, length, hidden) student contributions."""
        calibrated = F.normalize(self.calibration[layer](direction_outputs).float(), dim=-1)
        cos = (calibrated * teacher_scan).sum(-1)  # (batch, directions, length)
        patches = cos.masked_fill(self.is_cls, 0.0).sum(-1) / self.num_patches
        per_sample = patches
        if self.use_cls_token:
            per_sample = (1 - self.cls_weight) * patches + self.cls_weight * cos.masked_fill(~self.is_cls, 0.0).sum(-1)
        return per_sample.mean(0)

    def layer_weights(self, sims: torch.Tensor) -> torch.Tensor:
        return adaptive_layer_weights(sims, self.weighting, self.tau)

    def align(self, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher tokens -> the student's token order (a subclass with another layout overrides this)."""
        return align_teacher_tokens(tokens, self.num_patches, self.use_cls_token)

    def forward(self, student: StudentFeatures, teacher: TeacherFeatures) -> DistillLoss:
        layers = checked_direction_outputs(student, len(self.calibration), "layers")
        target = self.align(teacher.tokens)
        teacher_scan = F.normalize(target.float(), dim=-1)[:, self.perm]  # (batch, directions, length, teacher dim)
        sims = torch.stack([self.similarity(i, out, teacher_scan) for i, out in enumerate(layers)])
        weights = self.layer_weights(sims)
        per_direction = (weights * (1.0 - sims)).sum(0)
        logs = {f"distill_loss/{d}": per_direction[k].detach() for k, d in enumerate(self.directions)}
        for k, d in enumerate(self.directions):
            logs.update({f"layer_weight/{d}/{i}": weights[i, k] for i in range(weights.shape[0])})
        return DistillLoss(per_direction.sum(), logs)
