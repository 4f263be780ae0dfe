"""Recovering a converted TransMamba-switch model: distillation from the Transformer LM it was converted from.

``L = α · CE(next token) + (1 − α) · (KD + β · feature)``, with the terms of :mod:`llava_distill` (one
implementation): ``KD = T² · KL(p_teacher^T || p_student^T)`` over every position that has a next token, and the
layer-wise feature loss between student layer i and teacher layer ``round(i · m / n)`` (1 − cos or MSE). A
converted student has the teacher's depth and width, so layer i meets layer i and no calibration is trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from .llava_distill import LanguageDistillationModel, answer_positions, mixed_loss
from .wrapper import DistillationOutput


class SwitchDistillationModel(LanguageDistillationModel):
    """TransMamba-switch student + :class:`AnswerDistillation` on all next-token positions."""

    pipeline_tag = "text-generation"

    @staticmethod
    def text_configs(student: nn.Module, teacher_config: PretrainedConfig):
        if type(student).__name__ != "TransMambaSwitchForCausalLM":
            raise ValueError(f"The student is a {type(student).__name__}; convert the teacher with convert-lm first.")
        return student.config, teacher_config

    @torch.no_grad()
    def teacher_outputs(self, teacher: nn.Module, inputs: dict) -> dict[str, torch.Tensor]:
        """The frozen teacher's logits at the scored positions and its hidden states at the matched layers."""
        out = teacher(input_ids=inputs["input_ids"], output_hidden_states=True, use_cache=False, return_dict=True)
        scored, _ = answer_positions(inputs["labels"])
        hidden = torch.stack([out.hidden_states[i] for i in self.distiller.layers])
        return {"teacher_logits": out.logits[scored], "teacher_hidden": hidden}

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
        teacher_hidden: torch.Tensor | None = None,
    ) -> DistillationOutput:
        distill = self.training and teacher_logits is not None
        out = self.student.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            use_cache=False,
            output_hidden_states=distill and self.distiller.feature_weight > 0,
            return_dict=True,
        )
        scored, targets = answer_positions(labels)
        logits = self.student.lm_head(out.last_hidden_state[scored])
        cap = self.student.config.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        task = F.cross_entropy(logits.float(), targets)
        if not distill:
            return DistillationOutput(loss=task, logs={"task_loss": task.detach()} if self.training else None)
        mask = torch.ones_like(input_ids, dtype=torch.bool)
        return mixed_loss(self, task, logits, out.hidden_states, teacher_logits, teacher_hidden, mask)
