"""WSAB plus logits KD: the paper's feature loss and the teacher head's soft labels in one distillation loss.

The paper's released code trains with heavy logits KD rather than a cosine WSAB, and at small budgets the
teacher's logits carry the most usable signal (BENCHMARKS.md, issue 8); this keeps both:
``L_distill = L_WSAB + logits_weight * T^2 KL(softmax(teacher / T) || softmax(student / T))``, mixed with the task
loss by the wrapper as ``alpha * L_task + (1 - alpha) * L_distill``.
"""

from __future__ import annotations

from torch import nn

from .baselines import LogitsDistillation
from .features import DistillLoss, StudentFeatures, TeacherFeatures
from .wsab import WSABLoss


class WSABLogitsDistillation(nn.Module):
    """``wsab + logits_weight * logits``; logs both parts (``wsab_loss``, ``kd_loss``) and WSAB's own logs."""

    needs_directions = True
    needs_last_hidden = False
    needs_teacher = True

    def __init__(self, wsab: WSABLoss, logits: LogitsDistillation, logits_weight: float = 1.0):
        super().__init__()
        if logits_weight < 0:
            raise ValueError(f"logits_weight must be at least 0, got {logits_weight}.")
        self.wsab, self.logits, self.logits_weight = wsab, logits, logits_weight

    def forward(self, student: StudentFeatures, teacher: TeacherFeatures) -> DistillLoss:
        if teacher.logits is None:
            raise ValueError("wsab+logits needs the teacher's logits: the teacher must have a classification head.")
        wsab = self.wsab(student, teacher)
        kd = self.logits(student, teacher)
        logs = {**wsab.logs, "wsab_loss": wsab.loss.detach(), "kd_loss": kd.loss.detach()}
        return DistillLoss(wsab.loss + self.logits_weight * kd.loss, logs)
