"""Training inputs: dataset columns and splits, on-the-fly image transforms, the accuracy metric."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Image
from transformers import EvalPrediction

EVAL_SPLITS = ("validation", "test")


def _pick_column(dataset: Dataset, name: str, feature_type: type, what: str, option: str) -> str:
    """``name`` if present, else the only column of ``feature_type``; otherwise a ValueError naming the option."""
    if name in dataset.column_names:
        return name
    typed = [col for col, feature in dataset.features.items() if isinstance(feature, feature_type)]
    if len(typed) == 1:
        return typed[0]
    raise ValueError(
        f"The dataset has no {what} column {name!r} (columns: {', '.join(dataset.column_names)}); pass {option} COLUMN."
    )


def resolve_columns(dataset: Dataset, image_column: str, label_column: str) -> tuple[str, str]:
    """The image and label columns, found by name or, failing that, by feature type."""
    image = _pick_column(dataset, image_column, Image, "image", "--image-column")
    label = _pick_column(dataset, label_column, ClassLabel, "label", "--label-column")
    return image, label


def num_classes(dataset: Dataset, label_column: str) -> int:
    """Class count from the ClassLabel feature, or from the largest integer label."""
    feature = dataset.features[label_column]
    if isinstance(feature, ClassLabel):
        return feature.num_classes
    return int(max(dataset[label_column])) + 1


def pick_splits(data: DatasetDict, train_split: str, eval_split: str | None, seed: int) -> tuple[Dataset, Dataset]:
    """Train and eval splits; without an eval split, 10% of the train split is held out (fixed seed)."""
    if train_split not in data:
        raise ValueError(f"The dataset has no split {train_split!r} (splits: {', '.join(data)}); pass --train-split.")
    if eval_split is not None and eval_split not in data:
        raise ValueError(f"The dataset has no split {eval_split!r} (splits: {', '.join(data)}); pass --eval-split.")
    eval_split = eval_split or next((s for s in EVAL_SPLITS if s in data), None)
    if eval_split is not None:
        return data[train_split], data[eval_split]
    held_out = data[train_split].train_test_split(test_size=0.1, seed=seed)
    return held_out["train"], held_out["test"]


def image_transform(processor, image_column: str, label_column: str, num_channels: int) -> Callable[[dict], dict]:
    """Batch transform for ``Dataset.with_transform``: images -> ``pixel_values`` with the teacher's processor."""
    mode = {1: "L", 3: "RGB"}[num_channels]

    def transform(batch: dict) -> dict:
        images = [image.convert(mode) for image in batch[image_column]]
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": torch.as_tensor(batch[label_column], dtype=torch.long)}

    return transform


def accuracy(prediction: EvalPrediction) -> dict[str, float]:
    """Top-1 accuracy with numpy: no metric download, works offline."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": float((np.argmax(logits, axis=-1) == prediction.label_ids).mean())}
