"""`transmamba train` for a TransVideoMamba student: video classification, distilled from an image teacher.

Reached through `transmamba train --student VIDEO_FOLDER ...` (same `DistillationArguments`); the teacher runs
on every frame and WSAB compares each student layer's forward/backward outputs with the teacher's per-frame
tokens laid out as ``[cls, (t n)]`` (the scan order), reversed for the backward scan.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoModel, PreTrainedModel, TrainingArguments
from transmamba.conversion.subclone_video import teacher_video_tokens
from transmamba.modeling_transmamba import TransMambaForVideoClassification, TransVideoMambaConfig

from transmamba.video_data import clip_frames, load_video_dataset, require_columns

from .args import DistillationArguments, TrainResult
from .baselines import NoDistillation
from .build import train_and_export
from .inputs import accuracy
from .trainer import DistillationTrainer
from .wrapper import DistillationModel, capture_last_hidden_state
from .wsab import WSABLoss

VIDEO_DISTILLATIONS = ("wsab", "none")
IMAGE_TO_VIDEO = {"digits": "moving_digits", "fashion_mnist": "moving_fashion_mnist"}


class VideoWSABLoss(WSABLoss):
    """WSAB over ``[cls, (t n)]``: the class token is first (not in the middle), targets come pre-arranged."""

    def __init__(self, config: TransVideoMambaConfig, teacher_dim: int, **options):
        grid = (config.temporal_size * config.grid_size, config.grid_size)
        super().__init__(config.num_hidden_layers, config.hidden_size, teacher_dim, config.scan_directions, grid,
                         True, **options)  # fmt: skip
        self.is_cls = self.perm == 0

    def align(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] != self.num_patches + 1:
            raise ValueError(
                f"Video WSAB expects [cls, (t n)] teacher tokens ({self.num_patches + 1}), got {tokens.shape[1]}."
            )
        return tokens


class VideoDistillationModel(DistillationModel):
    """Knows its teacher's inputs: every frame of the clip, then the tokens rearranged into the scan order."""

    pipeline_tag = "video-classification"

    @torch.no_grad()
    def teacher_outputs(self, teacher: PreTrainedModel, inputs: dict) -> dict[str, torch.Tensor]:
        pixels = inputs["pixel_values"]
        with capture_last_hidden_state(teacher.base_model) as box:
            teacher(pixel_values=pixels.flatten(0, 1))
        config = self.student.config
        tokens = teacher_video_tokens(box["last"], pixels.shape[0], config.tubelet_size, config.grid_size**2)
        return {"teacher_tokens": tokens}


def video_transform(processor, video_column: str, label_column: str, num_frames: int):
    def transform(batch: dict[str, list]) -> dict[str, torch.Tensor]:
        clips = [clip_frames(video, num_frames) for video in batch[video_column]]
        pixels = processor(clips, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": torch.tensor(batch[label_column])}

    return transform


def run_video(args: DistillationArguments, training_args: TrainingArguments, config: TransVideoMambaConfig, data=None):
    """Video counterpart of `train.train`: check, build, train, evaluate, export."""
    if args.distillation not in VIDEO_DISTILLATIONS:
        raise ValueError(
            f"Video students support --distillation {' or '.join(VIDEO_DISTILLATIONS)}, got {args.distillation!r}."
        )
    spec = IMAGE_TO_VIDEO.get(args.dataset, args.dataset)
    data = data if data is not None else load_video_dataset(spec, seed=training_args.seed)
    video_column = "video" if args.image_column == "image" else args.image_column
    for split in ("train", "test"):
        require_columns(data[split], {"video": video_column, "label": args.label_column}, spec)
    train, test = data["train"], data[args.eval_split or "test"]
    classes = (
        len(train.features[args.label_column].names) if hasattr(train.features[args.label_column], "names") else None
    )
    if classes is not None and classes != config.num_labels:
        raise ValueError(
            f"The dataset has {classes} classes but the student has {config.num_labels} labels; convert the student "
            f"with --num-labels {classes}."
        )
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples is not None:
        test = test.select(range(min(args.max_eval_samples, len(test))))
    processor = AutoImageProcessor.from_pretrained(args.student)
    transform = video_transform(processor, video_column, args.label_column, config.num_frames)
    teacher = AutoModel.from_pretrained(args.teacher) if args.distillation == "wsab" else None
    student = TransMambaForVideoClassification.from_pretrained(args.student)
    if teacher is not None:
        distiller = VideoWSABLoss(config, teacher.config.hidden_size, tau=args.tau, weighting=args.weighting,
                                  cls_weight=args.cls_weight)  # fmt: skip
    else:
        distiller = NoDistillation()
    model = VideoDistillationModel(student, distiller, args.alpha if teacher is not None else 1.0)
    trainer = DistillationTrainer(
        model=model, args=training_args, train_dataset=train.with_transform(transform),
        eval_dataset=test.with_transform(transform), teacher=teacher, processing_class=processor,
        compute_metrics=accuracy,
    )  # fmt: skip
    metrics = train_and_export(trainer)
    return TrainResult(Path(training_args.output_dir), metrics, None, trainer)
