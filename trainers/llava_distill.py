"""Distilling a TransLlavaMamba from its LLaVA teacher: logits KD on answer tokens plus a layer-wise feature loss.

``L = α · CE(answers) + (1 − α) · (KD + β · feature)``:

- ``KD = T² · KL(p_teacher^T || p_student^T)`` averaged over the positions that predict an answer token (labels
  shifted as for a causal LM: position t predicts ``labels[t + 1]``), at temperature T.
- ``feature``: student layer i (of n) against a teacher layer (of m), chosen by ``feature_layers``: ``"spread"``
  takes ``round(i · m / n)``, the same relative depth; ``"inherited"`` takes layer i for i < n, the layer whose
  weights a first-n-layers subclone holds, so no inherited layer is asked to compute what a deeper one does. Either
  way the last student layer meets the teacher's last (both after the final norm, as ``output_hidden_states``
  returns them), and a student of the teacher's depth compares layer to layer. ``1 − cos`` (or MSE) averaged over
  the non-padding tokens (image, prompt and answer alike) and the layers; a trainable Linear calibrates student
  features into the teacher's width when the widths differ.
- ``CE``: the student's next-token loss on the answer tokens.

The wrapper computes everything trainable inside ``forward`` (DDP rule); the Trainer fetches the frozen
teacher's outputs through :meth:`LlavaDistillationModel.teacher_outputs`. Only the answer positions' logits are
ever materialised, for teacher and student: full-sequence logits of a 32k vocabulary over 600 tokens would
dominate memory.

Each micro-batch's loss is a mean over its own tokens, so with gradient accumulation micro-batches weigh equally
(as the image trainer's per-sample means do): exact when they hold equally many answer tokens, a reweighting of
tokens otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from .args import FEATURE_LAYERS
from .features import DistillLoss
from .vlm_lora import base_student
from .wrapper import DistillationModel, DistillationOutput

FEATURE_METRICS = ("cosine", "mse")


def answer_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, length) bool of the positions that predict an answer token, and those tokens (causal shift)."""
    next_labels = F.pad(labels[:, 1:], (0, 1), value=-100)
    scored = next_labels != -100
    return scored, next_labels[scored]


def answer_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · mean_rows KL(softmax(t/T) || softmax(s/T))`` over (rows, vocab) logits of the scored positions."""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    return kl.mean() * temperature**2


def matched_layers(student_layers: int, teacher_layers: int, mapping: str = "spread") -> list[int]:
    """Teacher hidden-state index for each student layer 1..n (index 0 is the embeddings, never compared)."""
    if mapping == "inherited":
        return [*range(1, student_layers), teacher_layers]
    return [round(i * teacher_layers / student_layers) for i in range(1, student_layers + 1)]


class AnswerDistillation(nn.Module):
    """The distillation terms of the module docstring; ``calibration`` holds the only trainable parts."""

    needs_teacher = True
    needs_last_hidden = False
    needs_directions = False

    def __init__(
        self,
        student_layers: int,
        teacher_layers: int,
        student_dim: int,
        teacher_dim: int,
        temperature: float = 2.0,
        feature_weight: float = 1.0,
        feature_metric: str = "cosine",
        feature_layers: str = "spread",
    ):
        super().__init__()
        if feature_metric not in FEATURE_METRICS:
            raise ValueError(f"feature_metric must be one of {', '.join(FEATURE_METRICS)}, got {feature_metric!r}.")
        if feature_layers not in FEATURE_LAYERS:
            raise ValueError(f"feature_layers must be one of {', '.join(FEATURE_LAYERS)}, got {feature_layers!r}.")
        if temperature <= 0 or feature_weight < 0:
            raise ValueError(f"Need temperature > 0 and feature_weight >= 0, got {temperature}, {feature_weight}.")
        if student_layers > teacher_layers:
            raise ValueError(f"The student ({student_layers} layers) is deeper than its teacher ({teacher_layers}).")
        self.layers = matched_layers(student_layers, teacher_layers, feature_layers)
        self.temperature, self.feature_weight, self.feature_metric = temperature, feature_weight, feature_metric
        same = student_dim == teacher_dim
        self.calibration = nn.ModuleList(
            nn.Identity() if same else nn.Linear(student_dim, teacher_dim) for _ in range(student_layers)
        )

    def feature_loss(self, student: tuple[torch.Tensor, ...], teacher: torch.Tensor, mask: torch.Tensor):
        """``student``: the n+1 hidden states; ``teacher``: (n, batch, length, dim) at the matched layers."""
        weights = mask.float() / mask.float().sum()
        per_layer = []
        for i, calibration in enumerate(self.calibration):
            mapped, target = calibration(student[i + 1]).float(), teacher[i].float()
            if self.feature_metric == "cosine":
                distance = 1.0 - F.cosine_similarity(mapped, target, dim=-1)
            else:
                distance = (mapped - target).pow(2).mean(-1)
            per_layer.append((distance * weights).sum())
        return torch.stack(per_layer)

    def forward(self, student_logits, student_hidden, teacher_logits, teacher_hidden, mask) -> DistillLoss:
        kd = answer_kd_loss(student_logits, teacher_logits, self.temperature)
        logs = {"kd_loss": kd.detach()}
        loss = kd
        if self.feature_weight > 0:
            per_layer = self.feature_loss(student_hidden, teacher_hidden, mask)
            feature = per_layer.mean()
            loss = loss + self.feature_weight * feature
            logs["feature_loss"] = feature.detach()
            logs.update({f"feature_loss/{i}": v.detach() for i, v in enumerate(per_layer)})
        return DistillLoss(loss, logs)


def answer_distiller(student_text: PretrainedConfig, teacher_text: PretrainedConfig, temperature: float,
                     feature_weight: float, feature_metric: str,
                     feature_layers: str = "spread") -> AnswerDistillation:  # fmt: skip
    """The distillation terms between two language models' configs; they must share one vocabulary."""
    if student_text.vocab_size != teacher_text.vocab_size:
        raise ValueError(
            f"Logits KD needs one vocabulary: the student has {student_text.vocab_size} tokens, the teacher "
            f"{teacher_text.vocab_size}. Convert the student from this teacher."
        )
    return AnswerDistillation(student_text.num_hidden_layers, teacher_text.num_hidden_layers,
                              student_text.hidden_size, teacher_text.hidden_size, temperature, feature_weight,
                              feature_metric, feature_layers)  # fmt: skip


def mixed_loss(model: DistillationModel, task: torch.Tensor, logits: torch.Tensor, hidden_states, teacher_logits,
               teacher_hidden, mask: torch.Tensor) -> DistillationOutput:  # fmt: skip
    """``alpha * task + (1 - alpha) * distillation`` at the scored positions, with both terms logged."""
    result = model.distiller(logits, hidden_states, teacher_logits, teacher_hidden, mask)
    loss = model.alpha * task + (1.0 - model.alpha) * result.loss
    logs = {"task_loss": task.detach(), "distill_loss": result.loss.detach(), **result.logs}
    return DistillationOutput(loss=loss, logs=logs)


def _check_student(student: nn.Module) -> None:
    if type(student).__name__ != "TransLlavaMambaForConditionalGeneration":
        raise ValueError(
            f"The student is a {type(student).__name__}, not a TransLlavaMambaForConditionalGeneration; convert the "
            "LLaVA teacher first (transmamba.conversion.llava.subclone_llava) and pass its output folder."
        )


class LanguageDistillationModel(DistillationModel):
    """A language-model student + :class:`AnswerDistillation` toward a teacher of the same vocabulary; a subclass
    says which student it takes and where the two language models' configs are (`text_configs`)."""

    def __init__(
        self,
        student: nn.Module,
        teacher_config: PretrainedConfig,
        alpha: float = 0.5,
        temperature: float = 2.0,
        feature_weight: float = 1.0,
        feature_metric: str = "cosine",
        feature_layers: str = "spread",
    ):
        text, teacher_text = self.text_configs(student, teacher_config)
        distiller = answer_distiller(text, teacher_text, temperature, feature_weight, feature_metric, feature_layers)
        super().__init__(student, distiller, alpha)

    @property
    def needs_teacher(self) -> bool:
        """At alpha 1 the loss is the answer CE alone: the teacher's outputs would be computed and never used."""
        return self.alpha < 1.0

    @staticmethod
    def text_configs(student: nn.Module, teacher_config: PretrainedConfig):
        """(student's, teacher's) language-model config; a ValueError for a student of the wrong kind."""
        raise NotImplementedError


class LlavaDistillationModel(LanguageDistillationModel):
    """TransLlavaMamba student + :class:`AnswerDistillation`; ``forward`` takes the teacher's answer logits and
    matched hidden states (from :meth:`teacher_outputs`) and returns the mixed loss while training, the answer
    CE in eval mode.
    """

    pipeline_tag = "image-text-to-text"

    @staticmethod
    def text_configs(student: nn.Module, teacher_config: PretrainedConfig):
        _check_student(base_student(student))
        return base_student(student).config.text_config, teacher_config.text_config

    @torch.no_grad()
    def teacher_outputs(self, teacher: nn.Module, inputs: dict) -> dict[str, torch.Tensor]:
        """The frozen teacher's logits at the answer positions and its hidden states at the matched layers."""
        out = teacher.model(
            input_ids=inputs["input_ids"],
            pixel_values=inputs["pixel_values"],
            attention_mask=inputs.get("attention_mask"),
            output_hidden_states=True,
            use_cache=False,
            return_dict=True,
        )
        scored, _ = answer_positions(inputs["labels"])
        hidden = torch.stack([out.hidden_states[i] for i in self.distiller.layers])
        return {"teacher_logits": teacher.lm_head(out.last_hidden_state[scored]), "teacher_hidden": hidden}

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
        teacher_hidden: torch.Tensor | None = None,
    ) -> DistillationOutput:
        distill = self.training and teacher_logits is not None
        student = base_student(self.student)  # a PeftModel's adapters live inside its base model
        out = student.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            output_hidden_states=distill and self.distiller.feature_weight > 0,
            use_cache=False,
            return_dict=True,
        )
        scored, targets = answer_positions(labels)
        logits = student.lm_head(out.last_hidden_state[scored])
        task = F.cross_entropy(logits.float(), targets)
        if not distill:
            return DistillationOutput(loss=task, logs={"task_loss": task.detach()} if self.training else None)
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        return mixed_loss(self, task, logits, out.hidden_states, teacher_logits, teacher_hidden, mask.bool())
