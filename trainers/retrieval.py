"""Text-video retrieval training (CLIP4Clip-style): metrics, the input transform, the model built from two
towers, the distillation wrapper and a `Trainer` that evaluates R@K over the whole held-out split."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel, Trainer
from transformers.utils import ModelOutput
from transmamba.modeling_transmamba import (
    TransMambaForVideoTextRetrieval,
    TransVideoMambaConfig,
    TransVideoTextRetrievalConfig,
)

from transmamba.video_data import clip_frames

from .retrieval_args import DISTILL_TARGETS


def retrieval_ranks(similarity: np.ndarray) -> np.ndarray:
    """1-based rank of the true match (the diagonal) in each row of a (queries, items) similarity matrix.

    Ties count against the query (an item scored equal to the match ranks ahead of it), so a constant matrix
    does not look perfect.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"Retrieval needs a square (queries, items) similarity matrix, got {similarity.shape}.")
    truth = np.diag(similarity)[:, None]
    return (similarity >= truth).sum(1)


def retrieval_metrics(similarity: np.ndarray, prefix: str = "") -> dict[str, float]:
    """R@1/R@5/R@10 (percent), median and mean rank of the diagonal, as MSR-VTT/DiDeMo papers report them."""
    ranks = retrieval_ranks(similarity)
    out = {f"R@{k}": float((ranks <= k).mean() * 100) for k in (1, 5, 10)}
    out.update({"MedianR": float(np.median(ranks)), "MeanR": float(ranks.mean())})
    return {f"{prefix}{k}": v for k, v in out.items()}


def text_video_metrics(text_embeds: torch.Tensor, video_embeds: torch.Tensor) -> dict[str, float]:
    """Text->video metrics (``t2v_*``, the number papers' tables lead with) and video->text (``v2t_*``)."""
    sim = (F.normalize(text_embeds.float(), dim=-1) @ F.normalize(video_embeds.float(), dim=-1).t()).numpy()
    return {**retrieval_metrics(sim, "t2v_"), **retrieval_metrics(sim.T, "v2t_")}


def retrieval_transform(processor, tokenizer, num_frames: int, video_column: str, caption_column: str,
                        max_length: int = 32):  # fmt: skip
    """A `datasets` batch transform: clips -> ``pixel_values`` (batch, frames, C, H, W); captions -> tokens."""

    def transform(batch: dict[str, list]) -> dict[str, torch.Tensor]:
        clips = [clip_frames(video, num_frames) for video in batch[video_column]]
        pixels = processor(clips, return_tensors="pt")["pixel_values"]
        tokens = tokenizer(list(batch[caption_column]), padding="max_length", truncation=True,
                           max_length=max_length, return_tensors="pt")  # fmt: skip
        return {"pixel_values": pixels, "input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    return transform


def build_retrieval_model(
    video_tower: PreTrainedModel | None, text_encoder: str, projection_dim: int = 256,
    vision_config: TransVideoMambaConfig | None = None, freeze_text_model: bool = True,
) -> TransMambaForVideoTextRetrieval:  # fmt: skip
    """Retrieval model from a (converted) TransVideoMamba student and a pretrained text encoder; with
    ``video_tower=None`` the video tower is freshly initialised from ``vision_config`` (the scratch baseline)."""
    vision_config = video_tower.config if video_tower is not None else vision_config
    text = AutoModel.from_pretrained(text_encoder)
    config = TransVideoTextRetrievalConfig(
        vision_config=vision_config.to_dict(),
        text_config=AutoConfig.from_pretrained(text_encoder).to_dict(),
        projection_dim=projection_dim,
        freeze_text_model=freeze_text_model,
    )
    model = TransMambaForVideoTextRetrieval(config)
    missing = model.text_model.load_state_dict(text.state_dict(), strict=False).missing_keys
    if missing:
        raise ValueError(f"Text encoder {text_encoder!r} does not fit the text tower (missing {missing[:3]}...).")
    if video_tower is not None:
        base = video_tower.base_model if hasattr(video_tower, "base_model") else video_tower
        model.video_model.load_state_dict(base.state_dict())
    return model


@dataclass
class RetrievalTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    logs: dict[str, torch.Tensor] | None = None


class RetrievalDistillation(nn.Module):
    """Retrieval model + a calibration MLP: ``loss = InfoNCE + β · (1 − cos(P(student), teacher))``.

    Two targets (``target``), both from the image teacher's pooled per-frame features:

    - ``"video"``: their mean over all frames (CLIP4Clip's meanP) against the student's pooled feature. The mean
      is the same for a clip played forwards or backwards, so it says nothing of a motion's direction.
    - ``"frames"``: one per tubelet: the mean of the student's tokens of tubelet i against the teacher's features
      of that tubelet's frames, averaged over tubelets, so the order of the frames survives.

    The calibration MLP trains with the model but is not part of the exported retrieval model.
    """

    def __init__(self, model: TransMambaForVideoTextRetrieval, teacher_dim: int = 0, beta: float = 0.0,
                 target: str = "video"):  # fmt: skip
        super().__init__()
        if beta < 0:
            raise ValueError(f"The distillation weight must be >= 0, got {beta}.")
        if target not in DISTILL_TARGETS:
            raise ValueError(f"The distillation target must be one of {', '.join(DISTILL_TARGETS)}, got {target!r}.")
        self.model, self.beta, self.target = model, beta, target
        width = model.config.vision_config.hidden_size
        self.calibration = (
            nn.Sequential(nn.Linear(width, teacher_dim), nn.GELU(), nn.Linear(teacher_dim, teacher_dim))
            if beta
            else None
        )

    @property
    def needs_teacher(self) -> bool:
        return self.calibration is not None

    def student_features(self, out, tubelets: int) -> torch.Tensor:
        """(batch, dim) pooled feature for the ``"video"`` target, (batch, tubelets, dim) for ``"frames"``."""
        if self.target == "video":
            return out.video_pooled
        return out.video_last_hidden_state[:, 1:].unflatten(1, (tubelets, -1)).mean(2)  # drop cls: [cls, (t n)]

    def teacher_target(self, frame_features: torch.Tensor) -> torch.Tensor:
        """The teacher's (batch, frames, dim) per-frame features as this target's shape."""
        if self.target == "video":
            return frame_features.mean(1)
        tubelet = self.model.config.vision_config.tubelet_size
        return frame_features.unflatten(1, (-1, tubelet)).mean(2)

    def forward(self, pixel_values, input_ids, attention_mask=None, teacher_frames=None) -> RetrievalTrainingOutput:
        """``teacher_frames``: the teacher's (batch, frames, dim) pooled per-frame features."""
        out = self.model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
        logs = {"info_nce": out.loss.detach()}
        loss = out.loss
        if self.training and self.calibration is not None and teacher_frames is not None:
            target = self.teacher_target(teacher_frames).float()
            student = self.calibration(self.student_features(out, target.shape[1])).float()
            cos = F.cosine_similarity(student, target, dim=-1)
            distill = (1.0 - cos).mean()
            loss = loss + self.beta * distill
            logs["distill_loss"] = distill.detach()
        return RetrievalTrainingOutput(loss=loss, text_embeds=out.text_embeds, video_embeds=out.video_embeds, logs=logs)


@torch.no_grad()
def teacher_frame_features(teacher: PreTrainedModel, pixel_values: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """(batch, frames, dim): the image teacher's feature of each frame, pooled as the student pools: the mean of
    its tokens after the final norm ("mean"), or its class token ("cls")."""
    batch, frames = pixel_values.shape[:2]
    tokens = teacher(pixel_values=pixel_values.flatten(0, 1)).last_hidden_state
    pooled = tokens.mean(1) if pooling == "mean" else tokens[:, 0]
    return pooled.view(batch, frames, -1)


class RetrievalTrainer(Trainer):
    """Trains a :class:`RetrievalDistillation`; ``evaluate`` embeds the whole eval split and reports R@K/MeanR
    (a retrieval metric needs every pair, not per-batch logits); ``save_model`` writes the clean retrieval model."""

    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, teacher: PreTrainedModel | None = None, tokenizer=None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(self.model, RetrievalDistillation):
            raise ValueError("RetrievalTrainer trains a RetrievalDistillation; wrap the retrieval model.")
        self.teacher, self.tokenizer = teacher, tokenizer
        if teacher is not None:
            teacher.eval().requires_grad_(False).to(self.args.device)
        self._logs: dict[str, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and self.accelerator.unwrap_model(model).needs_teacher and "teacher_frames" not in inputs:
            if self.teacher is None:  # batches may carry precomputed teacher features instead of a teacher
                raise ValueError("Distillation (beta > 0) needs a teacher or batches with teacher_frames.")
            pooling = self.accelerator.unwrap_model(model).model.config.video_pooling
            inputs = {
                **inputs,
                "teacher_frames": teacher_frame_features(self.teacher, inputs["pixel_values"], pooling),
            }
        outputs = model(**inputs)
        if model.training:
            for key, value in outputs.logs.items():
                self._logs.setdefault(key, []).append(value.item())
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._logs:
            logs.update({k: round(float(np.mean(v)), 6) for k, v in self._logs.items()})
            self._logs = {}
        super().log(logs, start_time)

    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        model = self.accelerator.unwrap_model(self.model).model
        was_training = model.training
        model.eval()
        texts, videos, losses = [], [], []
        for batch in self.get_eval_dataloader(eval_dataset):
            batch = self._prepare_inputs(batch)
            out = model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                        attention_mask=batch.get("attention_mask"))  # fmt: skip
            texts.append(out.text_embeds.cpu())
            videos.append(out.video_embeds.cpu())
            losses.append(out.loss.item())
        model.train(was_training)
        metrics = text_video_metrics(torch.cat(texts), torch.cat(videos))
        metrics["loss"] = float(np.mean(losses))
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if _internal_call and output_dir is not None:
            super().save_model(output_dir, _internal_call=True)
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save:
            self.accelerator.unwrap_model(self.model).model.save_pretrained(output_dir)
            for extra in (self.processing_class, self.tokenizer):
                if extra is not None:
                    extra.save_pretrained(output_dir)
        self.accelerator.wait_for_everyone()
        return os.fspath(output_dir)
