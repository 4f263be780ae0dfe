"""The paper's Table 5 baselines behind WSAB's interface: last-layer features, logits (temperature KD), none."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .args import FEATURE_METRICS
from .features import Calibration, DistillLoss, StudentFeatures, TeacherFeatures, align_teacher_tokens


class FeatureDistillation(nn.Module):
    """The student's last hidden state (after its final norm), calibrated, against the teacher's last tokens.

    Tokens are aligned as in WSAB (patch with patch, class with class); ``metric="cosine"`` gives
    ``1 - mean cos``, ``"mse"`` the mean squared error.
    """

    needs_directions = False
    needs_last_hidden = True
    needs_teacher = True

    def __init__(self, student_dim: int, teacher_dim: int, num_patches: int, use_cls_token: bool, metric: str):
        super().__init__()
        if metric not in FEATURE_METRICS:
            raise ValueError(f"Unknown feature metric {metric!r}; choose one of {', '.join(FEATURE_METRICS)}.")
        self.calibration = Calibration(student_dim, teacher_dim)
        self.num_patches, self.use_cls_token, self.metric = num_patches, use_cls_token, metric

    def forward(self, student: StudentFeatures, teacher: TeacherFeatures) -> DistillLoss:
        target = align_teacher_tokens(teacher.tokens, self.num_patches, self.use_cls_token).float()
        calibrated = self.calibration(student.last_hidden_state).float()
        if self.metric == "cosine":
            loss = 1.0 - F.cosine_similarity(calibrated, target, dim=-1).mean()
        else:
            loss = F.mse_loss(calibrated, target)
        return DistillLoss(loss, {})


class LogitsDistillation(nn.Module):
    """Hinton's KD: ``T² · KL(softmax(teacher / T) ‖ softmax(student / T))``, averaged over the batch."""

    needs_directions = False
    needs_last_hidden = False
    needs_teacher = True

    def __init__(self, temperature: float):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.temperature = temperature

    def forward(self, student: StudentFeatures, teacher: TeacherFeatures) -> DistillLoss:
        t = self.temperature
        log_student = F.log_softmax(student.logits.float() / t, dim=-1)
        log_teacher = F.log_softmax(teacher.logits.float() / t, dim=-1)
        loss = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * t * t
        return DistillLoss(loss, {})


class NoDistillation(nn.Module):
    """Task loss only (the student trained alone): the teacher is never run."""

    needs_directions = False
    needs_last_hidden = False
    needs_teacher = False

    def forward(self, student: StudentFeatures, teacher: TeacherFeatures) -> DistillLoss:
        return DistillLoss(student.logits.new_zeros(()), {})
