"""Image datasets for every command: one spec string -> a `datasets.DatasetDict` with ``image``/``label`` columns
and fixed ``train``/``test`` splits, and the batches a model eats.

Specs: ``digits`` (scikit-learn's 1,797 8x8 digits, embedded, offline), ``fashion_mnist`` (the Debian package
``dataset-fashion-mnist`` when installed, else the Hub copy), a local folder (``imagefolder`` layout:
``class_name/image.png``, or a ``save_to_disk`` folder), or any Hub dataset id.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset, load_from_disk
from datasets.utils import logging as datasets_logging
from transformers.utils import logging

from .model_cards.naming import public_name

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HUB = "zalando-datasets/fashion_mnist"
FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                        "Ankle boot"]  # fmt: skip
SPLIT_SEED = 0
logger = logging.get_logger("transmamba.data")


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
    check_classes(features[label].names, f"Dataset {spec!r}")
    data = DatasetDict({k: v.select_columns([image, label]) for k, v in data.items()})
    data = data.rename_columns({k: v for k, v in ((image, "image"), (label, "label")) if k != v})
    if "test" not in data:
        split = data["train"].train_test_split(test_size=0.1, seed=SPLIT_SEED)
        data = DatasetDict({**data, "train": split["train"], "test": split["test"]})
    return data


def is_saved_dataset(spec: str) -> bool:
    return os.path.isdir(spec) and any(Path(spec, name).is_file() for name in ("dataset_dict.json", "state.json"))


def load_stored_dataset(spec: str, what: str, accepted: str) -> DatasetDict:
    """A ``save_to_disk`` folder (DatasetDict, or a Dataset as ``train``) or a Hub dataset id that is cached or
    reachable; anything else is one message listing what ``accepted`` names."""
    if is_saved_dataset(spec):
        data = load_from_disk(spec)
        return data if isinstance(data, DatasetDict) else DatasetDict({"train": data})
    try:
        return load_dataset(spec)
    except Exception as error:  # noqa: BLE001 - datasets raises many types for "not found / offline"
        raise ValueError(
            f"Cannot load {what} {spec!r}: use {accepted}, or a Hub dataset id that is cached or reachable "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]})."
        ) from None


def _local_folder(spec: str, option: str) -> DatasetDict:
    """A ``save_to_disk`` folder (DatasetDict or Dataset), else an ``imagefolder``, loaded without Hub-style bars."""
    folder = Path(spec)
    if not any(path.is_file() for path in folder.rglob("*")):
        raise ValueError(
            f"{option} {spec} is an empty folder; put images in class_name/ subfolders (imagefolder layout) or "
            "pass a folder written by DatasetDict.save_to_disk."
        )
    if is_saved_dataset(spec):
        return load_stored_dataset(spec, option, "")
    classes = sorted(path.name for path in folder.iterdir() if path.is_dir())
    check_classes(classes, f"{option} {spec}")  # imagefolder silently drops the label column of a one-class folder
    verbosity = datasets_logging.get_verbosity()
    datasets_logging.set_verbosity_error()
    datasets_logging.disable_progress_bar()
    try:
        return load_dataset("imagefolder", data_dir=spec)
    except Exception as error:  # noqa: BLE001 - datasets raises many types for a folder it cannot read
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ValueError(
            f"{option} {spec} is not an image folder that `datasets` can read ({reason}); use the imagefolder "
            "layout class_name/image.png."
        ) from None
    finally:
        datasets_logging.enable_progress_bar()
        datasets_logging.set_verbosity(verbosity)


def load_dataset_dict(spec: str, option: str = "dataset") -> DatasetDict:
    """The data as stored: ``digits`` | ``fashion_mnist`` | a local folder | a Hub dataset id; no split is empty."""
    if spec == "digits":
        data = _digits()
    elif spec == "fashion_mnist":
        data = _fashion_mnist()
    elif os.path.isdir(spec):
        data = _local_folder(spec, option)
    else:
        data = load_stored_dataset(spec, option, "digits, fashion_mnist, a local image folder, a save_to_disk folder")
    empty = [name for name, split in data.items() if len(split) == 0]
    if empty:
        raise ValueError(f"{option} {spec}: split {', '.join(map(repr, empty))} has no rows; pass data with images.")
    return data


def load_image_dataset(spec: str, option: str = "dataset") -> DatasetDict:
    """`load_dataset_dict` with ``image``/``label`` columns and a fixed ``test`` split."""
    data = load_dataset_dict(spec, option)
    return data if spec in ("digits", "fashion_mnist") else _normalise(data, spec)


def clean_labels(data: DatasetDict, label_column: str, num_labels: int, where: str) -> DatasetDict:
    """Every split checked before training: unlabelled rows (-1, common in Hub test splits) are dropped with a
    count; a label outside ``0..num_labels-1`` or a split left empty is one message naming the split."""
    cleaned = {}
    for name, split in data.items():
        labels = np.asarray(split.with_format(None)[label_column])
        unlabelled = int((labels == -1).sum())
        bad = labels[(labels < -1) | (labels >= num_labels)]
        if len(bad):
            raise ValueError(
                f"{where}: split {name!r} has label {int(bad[0])} ({len(bad)} outside 0..{num_labels - 1} in all), "
                f"but the model has {num_labels} classes; fix the labels or convert the student with the right "
                "number of labels."
            )
        if unlabelled:
            if unlabelled == len(labels):
                raise ValueError(f"{where}: split {name!r} has no labelled rows (all {unlabelled} are -1); pass "
                                 "another split, e.g. --eval_split validation.")  # fmt: skip
            logger.warning(
                f"{where}: dropped {unlabelled} unlabelled rows (label -1) of {len(labels)} in split {name!r}"
            )
            split = split.select(np.flatnonzero(labels != -1))
        cleaned[name] = split
    return DatasetDict(cleaned)


def check_classes(names: list[str] | int, where: str) -> None:
    """A classifier needs at least two classes; one class gets a message that says so."""
    count = names if isinstance(names, int) else len(names)
    if count < 2:
        which = "" if isinstance(names, int) else f" ({', '.join(map(str, names))})"
        raise ValueError(
            f"{where} has {count} class{'' if count == 1 else 'es'}{which}; image classification needs at least "
            "two. Add images of another class (imagefolder: one subfolder per class)."
        )


def dataset_names(dataset: str, given: str | None) -> tuple[str, str | None, str]:
    """(card name, Hub id, where the data came from); a local folder is named by its folder name, never its path."""
    if dataset == "fashion_mnist":
        local = FASHION_MNIST_DIR.is_dir()
        return dataset, FASHION_MNIST_HUB, "Debian package dataset-fashion-mnist" if local else FASHION_MNIST_HUB
    if dataset == "digits":
        return dataset, None, "scikit-learn load_digits (embedded)"
    if os.path.isdir(dataset):
        name = given or public_name(dataset)
        return name, None, f"local folder {public_name(dataset)}"
    return given or dataset, dataset, dataset


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
