"""Image datasets for every command: one spec string -> a `datasets.DatasetDict` with ``image``/``label`` columns
and fixed ``train``/``test`` splits, and the batches a model eats.

Specs: ``digits`` (scikit-learn's 1,797 8x8 digits, embedded, offline), ``fashion_mnist`` (the Debian package
``dataset-fashion-mnist`` when installed, else the Hub copy), a local folder (``imagefolder`` layout:
``class_name/image.png``), or any Hub dataset id.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HUB = "zalando-datasets/fashion_mnist"
FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                        "Ankle boot"]  # fmt: skip
SPLIT_SEED = 0


def _digits() -> DatasetDict:
    """scikit-learn's digits (values 0..16) as RGB PIL images, 80/20 split with a fixed seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    rgb = np.repeat(pixels[..., None], 3, axis=-1)
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(10)])})
    full = Dataset.from_dict({"image": list(rgb), "label": digits.target.tolist()}, features=features)
    return full.train_test_split(test_size=0.2, seed=SPLIT_SEED, stratify_by_column="label")


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian magic with the number of dims, then the sizes, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    _, _, dtype, dims = struct.unpack(">BBBB", data[:4])
    if dtype != 0x08:
        raise ValueError(f"{path}: expected unsigned-byte IDX data, got type {dtype:#x}.")
    shape = struct.unpack(f">{dims}I", data[4 : 4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fashion_examples(images: str, labels: str) -> Iterator[dict]:
    for image, label in zip(_read_idx(Path(images)), _read_idx(Path(labels)), strict=True):
        yield {"image": image, "label": int(label)}


def _fashion_mnist() -> DatasetDict:
    """Fashion-MNIST's own 60k/10k split, 28x28 grayscale; cached by `datasets` after the first build."""
    features = Features({"image": Image(), "label": ClassLabel(names=FASHION_MNIST_LABELS)})
    if FASHION_MNIST_DIR.is_dir():
        splits = {}
        for split, stem in (("train", "train"), ("test", "t10k")):
            files = {k: str(FASHION_MNIST_DIR / f"{stem}-{k}-idx{3 if k == 'images' else 1}-ubyte.gz")
                     for k in ("images", "labels")}  # fmt: skip
            splits[split] = Dataset.from_generator(_fashion_examples, features=features, gen_kwargs=files)
        return DatasetDict(splits)
    try:
        return _normalise(load_dataset(FASHION_MNIST_HUB), FASHION_MNIST_HUB)
    except Exception as error:  # noqa: BLE001 - any Hub failure gets the same fix
        raise ValueError(
            "fashion_mnist needs the Debian package (`apt-get install dataset-fashion-mnist`, files in "
            f"{FASHION_MNIST_DIR}) or the Hub dataset {FASHION_MNIST_HUB} (online); neither is available ({error})."
        ) from None


def _normalise(data: DatasetDict, spec: str) -> DatasetDict:
    """Rename the first image and class-label columns to image/label; add a fixed test split if there is none."""
    if not isinstance(data, DatasetDict) or "train" not in data:
        raise ValueError(f"Dataset {spec!r} has no train split.")
    features = data["train"].features
    image = next((name for name, f in features.items() if isinstance(f, Image)), None)
    label = next((name for name, f in features.items() if isinstance(f, ClassLabel)), None)
    if image is None or label is None:
        raise ValueError(f"Dataset {spec!r} needs an image column and a class-label column; it has {list(features)}.")
    data = DatasetDict({k: v.select_columns([image, label]) for k, v in data.items()})
    data = data.rename_columns({k: v for k, v in ((image, "image"), (label, "label")) if k != v})
    if "test" not in data:
        split = data["train"].train_test_split(test_size=0.1, seed=SPLIT_SEED)
        data = DatasetDict({**data, "train": split["train"], "test": split["test"]})
    return data


def load_image_dataset(spec: str) -> DatasetDict:
    """``digits`` | ``fashion_mnist`` | a local image folder | a Hub dataset id -> DatasetDict(train, test)."""
    if spec == "digits":
        return _digits()
    if spec == "fashion_mnist":
        return _fashion_mnist()
    if os.path.isdir(spec):
        return _normalise(load_dataset("imagefolder", data_dir=spec), spec)
    try:
        data = load_dataset(spec)
    except Exception as error:  # noqa: BLE001 - datasets raises many types for "not found / offline"
        raise ValueError(
            f"Cannot load dataset {spec!r}: use digits, fashion_mnist, a local image folder, or a Hub dataset id "
            f"that is cached or reachable ({type(error).__name__}: {str(error).splitlines()[0][:200]})."
        ) from None
    return _normalise(data, spec)


def processor_for_size(processor, image_size: int):
    """The same image processor, resizing (and cropping) to ``image_size`` square; a copy, the input is untouched."""
    processor = type(processor).from_dict(processor.to_dict())
    crop = getattr(processor, "crop_size", None)
    if getattr(processor, "do_center_crop", False) and crop:
        shortest = (processor.size or {}).get("shortest_edge")
        ratio = shortest / crop["height"] if shortest and crop.get("height") else 1.0
        processor.crop_size = {"height": image_size, "width": image_size}
        processor.size = {"shortest_edge": int(round(image_size * ratio))}
    else:
        processor.size = {"height": image_size, "width": image_size}
    return processor


def pixel_batches(
    dataset: Dataset, processor, batch_size: int, num_batches: int, num_channels: int = 3
) -> list[dict[str, torch.Tensor]]:
    """The first ``num_batches`` batches of ``dataset`` (in order: deterministic) as pixel_values/labels tensors."""
    mode = "RGB" if num_channels == 3 else "L"
    batches = []
    for start in range(0, min(len(dataset), batch_size * num_batches), batch_size):
        rows = dataset[start : start + batch_size]
        images = [image.convert(mode) for image in rows["image"]]
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        batches.append({"pixel_values": pixels, "labels": torch.tensor(rows["label"])})
    return batches
