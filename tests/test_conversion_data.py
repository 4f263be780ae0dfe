"""The shared image-dataset loader behind --data: embedded offline sets, local folders, fixed splits, batches."""

from __future__ import annotations

import pytest
import torch
from datasets import ClassLabel, DatasetDict, Image
from PIL import Image as PILImage
from transformers import BitImageProcessorPil, ViTImageProcessorPil

from transmamba.data import FASHION_MNIST_DIR, load_image_dataset, pixel_batches, processor_for_size


def _check_layout(data: DatasetDict, classes: int) -> None:
    assert set(data) == {"train", "test"}
    for split in data.values():
        assert list(split.features) == ["image", "label"]
        assert isinstance(split.features["image"], Image) and isinstance(split.features["label"], ClassLabel)
        assert split.features["label"].num_classes == classes


def test_digits_are_rgb_with_a_fixed_split():
    first, second = load_image_dataset("digits"), load_image_dataset("digits")
    _check_layout(first, 10)
    assert (len(first["train"]), len(first["test"])) == (1437, 360)
    assert first["test"]["label"] == second["test"]["label"]
    image = first["train"][0]["image"]
    assert image.mode == "RGB" and image.size == (8, 8)
    assert max(image.getextrema()[0]) > 200  # 0..16 values were stretched to 0..255


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package():
    data = load_image_dataset("fashion_mnist")
    _check_layout(data, 10)
    assert (len(data["train"]), len(data["test"])) == (60000, 10000)
    assert data["train"][0]["image"].size == (28, 28) and data["train"].features["label"].names[9] == "Ankle boot"


def test_local_image_folder_gets_a_test_split(tmp_path):
    for label, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / label).mkdir()
        for i in range(10):
            PILImage.new("RGB", (12, 10), colour).save(tmp_path / label / f"{i}.png")
    data = load_image_dataset(str(tmp_path))
    _check_layout(data, 2)
    assert len(data["train"]) + len(data["test"]) == 20 and len(data["test"]) == 2


def test_unknown_dataset_is_one_clear_error(monkeypatch):
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 at import
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="Cannot load dataset 'nobody/no-such-dataset': use digits, fashion_mnist"):
        load_image_dataset("nobody/no-such-dataset")


def test_batches_are_resized_to_the_student():
    data = load_image_dataset("digits")["train"]
    batches = pixel_batches(data, processor_for_size(ViTImageProcessorPil(), 40), batch_size=4, num_batches=3)
    assert [b["pixel_values"].shape for b in batches] == [torch.Size([4, 3, 40, 40])] * 3
    assert batches[0]["labels"].tolist() == data["label"][:4]
    crop = processor_for_size(BitImageProcessorPil(size={"shortest_edge": 256}, crop_size=224), 112)
    assert dict(crop.crop_size)["height"] == 112 and crop.size["shortest_edge"] == 128
    image = PILImage.new("RGB", (300, 200))
    assert crop(images=[image], return_tensors="pt")["pixel_values"].shape == (1, 3, 112, 112)
