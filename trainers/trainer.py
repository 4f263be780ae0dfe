"""`DistillationTrainer`: a `transformers.Trainer` that distils a TransMamba student from a frozen teacher."""

from __future__ import annotations

import copy
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer
from transformers.utils import logging

from .wrapper import DistillationModel, capture_last_hidden_state

logger = logging.get_logger(__name__)

FULL_WEIGHTS_EVERY = 10  # training logs between two logs that carry every WSAB layer weight
README_PLACEHOLDER = """---
library_name: transformers
pipeline_tag: {pipeline_tag}
tags:
- transmamba
- mamba
- distillation
---

# TransMamba student

Distilled with transmamba ({distillation}). This card is a placeholder: the model-card step fills in the base
model, data and measured results.
"""


class DistillationTrainer(Trainer):
    """Trains a :class:`DistillationModel` (student + calibration MLPs) against ``teacher``.

    ``teacher`` may be None when every training batch carries the teacher's cached outputs.
    The teacher is frozen (eval mode, no grad), moved to the training device and kept on the Trainer, so it is
    never part of the optimizer or a checkpoint. Checkpoints hold the whole wrapper (student and calibration
    MLPs), so ``resume_from_checkpoint`` continues exactly; :meth:`save_model` (and :meth:`export_student`)
    writes a clean student that loads with ``from_pretrained``. Each logged ``loss`` is joined by the loss
    components averaged over the same logging interval.

    ``inherited_lr_scale`` multiplies the learning rate of the student tensors named in ``inherited`` (those
    subcloning took from the teacher). Why: the new SSM parameters start random, and at the full rate their early
    gradients overwrite the pretrained weights within a few dozen steps (the subcloned student's task loss was
    back at chance by step 20, no better than scratch); at a tenth of the rate the inherited weights adapt
    while the new ones learn.
    """

    # compute_loss returns a per-sample mean: the Trainer must divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args: Any,
        teacher: PreTrainedModel | None = None,
        inherited: Collection[str] = (),
        inherited_lr_scale: float = 1.0,
        **kwargs: Any,
    ):
        if not inherited_lr_scale > 0:
            raise ValueError(f"inherited_lr_scale must be positive, got {inherited_lr_scale}.")
        super().__init__(*args, **kwargs)
        self.inherited, self.inherited_lr_scale = frozenset(inherited), inherited_lr_scale
        if not isinstance(self.model, DistillationModel):
            raise ValueError("DistillationTrainer trains a DistillationModel (student + distiller); wrap the student.")
        self.teacher = teacher
        if teacher is not None:
            teacher.eval().requires_grad_(False)
            teacher.to(self.args.device)
        self._log_sums: dict[str, torch.Tensor] = {}
        self._log_steps = 0

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, with each of its parameter groups split into new and inherited tensors (an
        optimizer the caller passed in is left as it is)."""
        ours = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if not ours or self.inherited_lr_scale == 1.0 or not self.inherited:
            return optimizer
        names = {id(p): n.removeprefix("student.") for n, p in (model or self.model).named_parameters()}
        groups = []
        for group in optimizer.param_groups:
            settings = {key: value for key, value in group.items() if key != "params"}
            old = [p for p in group["params"] if names.get(id(p)) in self.inherited]
            new = [p for p in group["params"] if names.get(id(p)) not in self.inherited]
            scaled = group["lr"] * self.inherited_lr_scale
            groups += [{**settings, "params": new}, {**settings, "params": old, "lr": scaled}]
        optimizer.param_groups.clear()  # no step taken yet: regroup in place, same optimizer and settings
        for group in groups:
            if group["params"]:
                optimizer.add_param_group(group)
        return optimizer

    @torch.no_grad()
    def teacher_outputs(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Last-layer tokens (the teacher's base model output, after its final norm) and logits, if any."""
        with capture_last_hidden_state(self.teacher.base_model) as box:
            out = self.teacher(pixel_values=pixel_values)
        return {"teacher_tokens": box["last"], "teacher_logits": getattr(out, "logits", None)}

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        # Batches may carry precomputed teacher outputs (a frozen teacher on a deterministic input pipeline); then
        # the teacher is never needed, and may be None.
        cached = any(k.startswith("teacher_") for k in inputs)
        needs = self.accelerator.unwrap_model(model).needs_teacher
        if model.training and not cached and self.teacher is None and needs:
            raise ValueError(
                "This distillation needs the teacher's outputs: pass teacher=... to DistillationTrainer, or batches "
                "that carry cached teacher_tokens / teacher_logits."
            )
        if model.training and self.teacher is not None and not cached:
            # A wrapper that knows its teacher's inputs (e.g. the VLM one) fetches the outputs it needs itself.
            hook = getattr(self.accelerator.unwrap_model(model), "teacher_outputs", None)
            extra = hook(self.teacher, inputs) if hook is not None else self.teacher_outputs(inputs["pixel_values"])
            inputs = {**inputs, **extra}
        outputs = model(**inputs)
        if model.training and outputs.logs:
            self._accumulate(outputs.logs)
        return (outputs.loss, {"logits": outputs.logits}) if return_outputs else outputs.loss

    def _accumulate(self, logs: dict[str, torch.Tensor]) -> None:
        for key, value in logs.items():
            self._log_sums[key] = self._log_sums.get(key, 0.0) + value.float()
        self._log_steps += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the components' means since the last training log to a training log (the one with ``loss``)."""
        if "loss" in logs and self._log_steps:
            keys = sorted(self._log_sums)
            means = torch.stack([self._log_sums[k] for k in keys]) / self._log_steps
            if self.accelerator.num_processes > 1:
                means = self.accelerator.reduce(means, reduction="mean")
            logs.update({k: round(v, 6) for k, v in zip(keys, means.tolist(), strict=True)})
            self._log_sums, self._log_steps = {}, 0
            self._compact_layer_weights(logs)
        super().log(logs, start_time)

    def _compact_layer_weights(self, logs: dict[str, float]) -> None:
        """WSAB's per-layer weights (layers x directions keys) become, per direction, the largest weight, its layer
        and the weights' entropy; the full weights stay in every ``FULL_WEIGHTS_EVERY``-th log and the last one."""
        weights: dict[str, dict[int, float]] = {}
        for key in [k for k in logs if k.startswith("layer_weight/")]:
            _, direction, layer = key.split("/")
            weights.setdefault(direction, {})[int(layer)] = logs[key]
        step, every = self.state.global_step, FULL_WEIGHTS_EVERY * max(1, int(self.args.logging_steps or 1))
        keep_full = step % every == 0 or step == self.state.max_steps
        for direction, by_layer in weights.items():
            values = torch.tensor([by_layer[i] for i in sorted(by_layer)])
            logs[f"layer_weight_max/{direction}"] = round(values.max().item(), 4)
            logs[f"layer_weight_argmax/{direction}"] = int(values.argmax())
            logs[f"layer_weight_entropy/{direction}"] = round(-(values * values.clamp_min(1e-12).log()).sum().item(), 4)
            if not keep_full:
                for layer in by_layer:
                    del logs[f"layer_weight/{direction}/{layer}"]

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints keep the wrapper; the final model (``save_model()``, ``push_to_hub``) is the clean student.

        The Trainer's checkpoint calls are the internal calls that name a folder; ``push_to_hub`` names none.
        """
        if _internal_call and output_dir is not None:
            super().save_model(output_dir, _internal_call=True)
        else:
            self.export_student(output_dir)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Checkpoints of the wrapper go through safetensors, which refuses tensors that share memory (tied
        embeddings and ``lm_head``, as in Gemma): keep one name per tensor; resuming loads non-strictly and the
        tie restores the other."""
        if state_dict is None and not isinstance(self.model, PreTrainedModel):
            state_dict, seen = {}, set()
            for key, value in self.model.state_dict().items():
                if (value.data_ptr(), value.shape) not in seen or value.numel() == 0:
                    seen.add((value.data_ptr(), value.shape))
                    state_dict[key] = value
        super()._save(output_dir, state_dict)

    def _issue_warnings_after_load(self, load_result) -> None:
        """Warn about missing checkpoint keys, except the tied names :meth:`_save` left out (restored by the tie)."""
        tensors = self.model.state_dict()
        absent = set(load_result.missing_keys)
        loaded = {value.data_ptr() for key, value in tensors.items() if key not in absent}
        missing = [key for key in load_result.missing_keys if tensors[key].data_ptr() not in loaded]
        if missing:
            logger.warning("There were missing keys in the checkpoint model loaded: %s.", missing)
        if load_result.unexpected_keys:
            logger.warning("There were unexpected keys in the checkpoint: %s.", load_result.unexpected_keys)

    def export_student(self, output_dir: str | None = None) -> str:
        """Write the student alone (code, config, weights; LoRA merged), the image processor and a card stub."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        state = self.accelerator.get_state_dict(self.model)  # collective: gathers FSDP/DeepSpeed shards
        if self.args.should_save:
            wrapper = self.accelerator.unwrap_model(self.model)
            student = wrapper.student
            if hasattr(student, "merge_and_unload"):  # PEFT: fold the adapters into a copy, save a plain student
                copy.deepcopy(student).merge_and_unload().save_pretrained(output_dir)
            else:
                prefix = "student."
                weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                student.save_pretrained(output_dir, state_dict=weights)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
            readme = Path(output_dir, "README.md")
            if not readme.exists():
                readme.write_text(
                    README_PLACEHOLDER.format(
                        distillation=type(wrapper.distiller).__name__,
                        pipeline_tag=getattr(wrapper, "pipeline_tag", "image-classification"),
                    )
                )
        self.accelerator.wait_for_everyone()
        return os.fspath(output_dir)
