"""One place that turns a student, a distillation name and data into a ready `DistillationTrainer`.

`transmamba train`, `transmamba run` and the paper-table experiments all train students this way, so a student
trained by any of them saw the same loss, wrapper and trainer.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from torch import nn
from transformers import PreTrainedModel, TrainingArguments

from .trainer import DistillationTrainer
from .wrapper import DistillationModel, build_distiller


def build_trainer(
    student: nn.Module,
    distillation: str,
    training_args: TrainingArguments,
    train_dataset: Any,
    *,
    alpha: float = 0.5,
    teacher: PreTrainedModel | None = None,
    teacher_dim: int | None = None,
    distiller_options: dict[str, Any] | None = None,
    inherited: Collection[str] = (),
    inherited_lr_scale: float = 1.0,
    **trainer_kwargs: Any,
) -> DistillationTrainer:
    """``teacher`` may be None when the batches carry cached teacher outputs; then give ``teacher_dim``.

    ``distillation="none"`` trains on the task loss alone (alpha is then 1). ``trainer_kwargs`` go to the
    Trainer (eval_dataset, processing_class, compute_metrics, callbacks). ``inherited_lr_scale`` scales the
    learning rate of the student tensors named in ``inherited`` (`conversion.export.inherited_parameters`).
    """
    if teacher_dim is None:
        teacher_dim = getattr(teacher.config, "hidden_size", 0) if teacher is not None else 0
    distiller = build_distiller(distillation, student.config, teacher_dim, **(distiller_options or {}))
    model = DistillationModel(student, distiller, alpha if distillation != "none" else 1.0)
    return DistillationTrainer(
        model=model, args=training_args, train_dataset=train_dataset, teacher=teacher, inherited=inherited,
        inherited_lr_scale=inherited_lr_scale, **trainer_kwargs
    )  # fmt: skip


def train_and_export(trainer: DistillationTrainer, resume_from_checkpoint: str | None = None) -> dict[str, float]:
    """Train (from ``resume_from_checkpoint`` when given), write the clean student to ``output_dir`` first, then
    the final metrics: the last evaluation when it ran at the final step, else one evaluation now."""
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_model()
    final = [e for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == trainer.state.global_step]
    if final:
        return {k: v for k, v in final[-1].items() if k.startswith("eval_")}
    return trainer.evaluate()
