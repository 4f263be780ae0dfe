"""Builders shared by the training tests: a tiny real ViT teacher, a tiny TransMamba student, digits data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil
from transmamba.modeling_transmamba import TransMambaConfig, TransMambaForImageClassification

IMAGE, PATCH = 16, 4


def save_teacher(folder: Path, image_size: int = IMAGE, patch_size: int = PATCH, num_labels: int = 10) -> str:
    """A 2-layer ViT classifier (hidden 32) with its image processor, saved like a Hub checkpoint."""
    config = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=num_labels,
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return str(folder)


def student_config(preset: str = "pmamba-t", **overrides) -> TransMambaConfig:
    values = dict(
        image_size=IMAGE,
        patch_size=PATCH,
        hidden_size=16,
        num_hidden_layers=2,
        state_size=4,
        time_step_rank=2,
        num_labels=10,
        scan_backend="sequential",
    )
    return TransMambaConfig.from_preset(preset, **{**values, **overrides})


def save_student(folder: Path, preset: str = "pmamba-t", **overrides) -> str:
    TransMambaForImageClassification(student_config(preset, **overrides)).save_pretrained(folder)
    return str(folder)


def digits(test_size: int = 297) -> DatasetDict:
    """scikit-learn's 1,797 real 8x8 handwritten digits as an image/label DatasetDict (fixed split)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = [PILImage.fromarray((image * 255 / 16).astype(np.uint8), mode="L") for image in bunch.images]
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(10)])})
    full = Dataset.from_dict({"image": images, "label": bunch.target.tolist()}, features=features)
    return full.train_test_split(test_size=test_size, shuffle=False)
