"""One place that turns a student, a distillation name and data into a ready `DistillationTrainer`.

`transmamba train`, `transmamba run` and the paper-table experiments all train students this way, so a student
trained by any of them saw the same loss, wrapper and trainer.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import IntervalStrategy, PreTrainedModel, TrainingArguments

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
    **trainer_kwargs: Any,
) -> DistillationTrainer:
    """``teacher`` may be None when the batches carry cached teacher outputs; then give ``teacher_dim``.

    ``distillation="none"`` trains on the task loss alone (alpha is then 1). ``trainer_kwargs`` go to the
    Trainer (eval_dataset, processing_class, compute_metrics, callbacks).
    """
    if teacher_dim is None:
        teacher_dim = getattr(teacher.config, "hidden_size", 0) if teacher is not None else 0
    distiller = build_distiller(distillation, student.config, teacher_dim, **(distiller_options or {}))
    model = DistillationModel(student, distiller, alpha if distillation != "none" else 1.0)
    return DistillationTrainer(
        model=model, args=training_args, train_dataset=train_dataset, teacher=teacher, **trainer_kwargs
    )


def train_and_export(trainer: DistillationTrainer) -> DistillationTrainer:
    """Train (resuming when asked), write the clean student to ``output_dir``, evaluate once if no eval ran."""
    trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    trainer.save_model()
    if trainer.args.eval_strategy == IntervalStrategy.NO:
        trainer.evaluate()
    return trainer
