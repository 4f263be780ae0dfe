"""The module the Trainer trains: the student plus the distillation loss's trainable parts (calibration MLPs).

Everything trainable runs inside ``forward`` so DDP/FSDP see one module and one forward per step (calling the
calibration MLPs from ``compute_loss`` would break DDP's gradient hooks). The frozen teacher stays outside: its
outputs come in as arguments.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .args import DISTILLATIONS
from .baselines import FeatureDistillation, LogitsDistillation, NoDistillation
from .combined import WSABLogitsDistillation
from .features import StudentFeatures, TeacherFeatures
from .wsab import WSABLoss
from .wsab_hierarchical import build_hierarchical_distiller


@dataclass
class DistillationOutput(ModelOutput):
    """``loss`` = α·task + (1 − α)·distillation while training, the task loss alone in eval mode."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    logs: dict[str, torch.Tensor] | None = None


@contextmanager
def capture_last_hidden_state(module: nn.Module):
    """Yield a dict that receives ``module``'s first output (a base model's ``last_hidden_state``) when it runs."""
    box: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda _module, _args, output: box.__setitem__("last", output[0]))
    try:
        yield box
    finally:
        handle.remove()


def build_distiller(name: str, student_config, teacher_dim: int, **options) -> nn.Module:
    """The loss named by ``--distillation``; ``options``: tau, weighting, cls_weight, temperature, feature_metric,
    logits_weight."""
    if name == "wsab+logits":  # the flat or the hierarchical WSAB, whichever the student needs
        wsab = build_distiller("wsab", student_config, teacher_dim, **options)
        logits = build_distiller("logits", student_config, teacher_dim, **options)
        return WSABLogitsDistillation(wsab, logits, options.get("logits_weight", 1.0))
    if getattr(student_config, "model_type", None) == "transvmamba":  # hierarchical: one grid per stage
        return build_hierarchical_distiller(name, student_config, teacher_dim, **options)
    grid = (student_config.grid_size, student_config.grid_size)
    if name == "wsab":
        return WSABLoss(
            student_config.num_hidden_layers,
            student_config.hidden_size,
            teacher_dim,
            student_config.scan_directions,
            grid,
            student_config.use_cls_token,
            tau=options.get("tau", 1.0),
            weighting=options.get("weighting", "misaligned"),
            cls_weight=options.get("cls_weight"),
        )
    if name == "feature":
        return FeatureDistillation(
            student_config.hidden_size,
            teacher_dim,
            grid[0] * grid[1],
            student_config.use_cls_token,
            options.get("feature_metric", "cosine"),
        )
    if name == "logits":
        return LogitsDistillation(options.get("temperature", 2.0))
    if name == "none":
        return NoDistillation()
    raise ValueError(f"Unknown distillation {name!r}; choose one of {', '.join(DISTILLATIONS)}.")


def find_base_model(student: nn.Module) -> nn.Module:
    """The student's encoder (``TransMambaModel``), also inside a PEFT wrapper."""
    for module in student.modules():
        if type(module).__name__ in ("TransMambaModel", "TransVMambaModel"):
            return module
    raise ValueError(f"{type(student).__name__} holds no TransMambaModel; the student must be a TransMamba model.")


class DistillationModel(nn.Module):
    """Student + distiller. ``forward`` takes the teacher's outputs (computed by the Trainer, without grad)."""

    def __init__(self, student: nn.Module, distiller: nn.Module, alpha: float):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha weighs the task loss against distillation and must be in [0, 1], got {alpha}.")
        self.student, self.distiller, self.alpha = student, distiller, alpha
        if distiller.needs_last_hidden:
            find_base_model(student)  # fail now, not at the first step

    @property
    def needs_teacher(self) -> bool:
        return self.distiller.needs_teacher

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        teacher_tokens: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
    ) -> DistillationOutput:
        distill = self.training and self.needs_teacher and (teacher_tokens is not None or teacher_logits is not None)
        capture = distill and self.distiller.needs_last_hidden
        with capture_last_hidden_state(find_base_model(self.student)) if capture else nullcontext({}) as box:
            out = self.student(
                pixel_values=pixel_values, output_direction_outputs=distill and self.distiller.needs_directions
            )
        task = F.cross_entropy(out.logits.float(), labels) if labels is not None else None
        if not distill:
            logs = {"task_loss": task.detach()} if self.training and task is not None else None
            return DistillationOutput(loss=task, logits=out.logits, logs=logs)
        student = StudentFeatures(out.logits, box.get("last"), out.direction_outputs)
        result = self.distiller(student, TeacherFeatures(teacher_tokens, teacher_logits))
        loss = (1.0 - self.alpha) * result.loss
        logs = {"distill_loss": result.loss.detach(), **result.logs}
        if task is not None:
            loss = loss + self.alpha * task
            logs["task_loss"] = task.detach()
        return DistillationOutput(loss=loss, logits=out.logits, logs=logs)
