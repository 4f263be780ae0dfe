"""Video datasets for the video commands: clips with ``video`` (frames), ``caption`` and ``label`` columns.

Offline there are no videos, so clips are **built from real images**: a Fashion-MNIST item (Debian
``dataset-fashion-mnist``; scikit-learn's digits as the fallback) moves across a blank canvas along one of 8
directions at one of 2 speeds for ``num_frames`` frames. The caption says what and how ("a sneaker moving up and
to the left quickly"); ``label`` is the motion (8 classes: a task that needs time, not one frame). Training clips
use training images with random motions; the held-out split uses test images and holds one clip per caption
(class x direction x speed), so every caption names exactly one video and R@1 is well defined.

Online, the same loaders take any Hub dataset with a video column and a caption column (or a class label).
"""

from __future__ import annotations

import numpy as np
from datasets import Array3D, ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset

from .data import FASHION_MNIST_DIR, SPLIT_SEED, _read_idx, load_image_dataset

MOTIONS = {
    "up": (0, -1), "down": (0, 1), "to the left": (-1, 0), "to the right": (1, 0),
    "up and to the left": (-1, -1), "up and to the right": (1, -1),
    "down and to the left": (-1, 1), "down and to the right": (1, 1),
}  # fmt: skip
SPEEDS = {"slowly": 2, "quickly": 4}  # pixels per frame
FASHION_NOUNS = ["t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                 "ankle boot"]  # fmt: skip
DIGIT_NOUNS = [f"digit {i}" for i in range(10)]
OFFLINE_SPECS = ("moving_fashion_mnist", "moving_digits")
ITEM = 28  # item side in pixels (Fashion-MNIST's size; digits are upscaled to it)


def caption_for(noun: str, motion: str, speed: str) -> str:
    article = "an" if noun[0] in "aeiou" else "a"
    return f"{article} {noun} moving {motion} {speed}"


def render_clip(item: np.ndarray, motion: str, speed: str, num_frames: int, canvas: int) -> np.ndarray:
    """(num_frames, canvas, canvas) uint8: ``item`` pasted along a straight path centred on the canvas."""
    if canvas < ITEM + SPEEDS[speed] * (num_frames - 1):
        raise ValueError(f"A {canvas}px canvas is too small for {num_frames} frames at {speed}; use a larger canvas.")
    (dx, dy), step = MOTIONS[motion], SPEEDS[speed]
    centre = (canvas - ITEM) / 2
    frames = np.zeros((num_frames, canvas, canvas), dtype=np.uint8)
    for t in range(num_frames):
        offset = (t - (num_frames - 1) / 2) * step
        x, y = int(round(centre + dx * offset)), int(round(centre + dy * offset))
        frames[t, y : y + ITEM, x : x + ITEM] = item
    return frames


def _items(source: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """split -> (images (N, 28, 28) uint8, labels), and the nouns of the classes."""
    if source == "moving_fashion_mnist" and FASHION_MNIST_DIR.is_dir():  # the raw IDX files: no per-image decoding
        return {
            split: (_read_idx(FASHION_MNIST_DIR / f"{stem}-images-idx3-ubyte.gz"),
                    _read_idx(FASHION_MNIST_DIR / f"{stem}-labels-idx1-ubyte.gz"))
            for split, stem in (("train", "train"), ("test", "t10k"))
        }, FASHION_NOUNS  # fmt: skip
    if source == "moving_fashion_mnist":
        data = load_image_dataset("fashion_mnist")  # the Hub copy
        images = {split: np.stack([np.asarray(im.convert("L").resize((ITEM, ITEM))) for im in data[split]["image"]])
                  for split in ("train", "test")}  # fmt: skip
        return {split: (images[split], np.asarray(data[split]["label"])) for split in images}, FASHION_NOUNS
    from sklearn.datasets import load_digits

    digits = load_digits()  # 8x8, values 0..16 -> 24x24 (3x nearest) in a 28x28 frame
    images = np.pad(np.kron(digits.images * (255.0 / 16.0), np.ones((3, 3))), ((0, 0), (2, 2), (2, 2)))
    images, labels = images.round().astype(np.uint8), digits.target
    test = np.random.default_rng(SPLIT_SEED).permutation(len(labels))[: len(labels) // 5]
    train = np.setdiff1d(np.arange(len(labels)), test)
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}, DIGIT_NOUNS


def _features(num_frames: int, canvas: int, nouns: list[str]) -> Features:
    return Features(
        {
            "video": Array3D((num_frames, canvas, canvas), "uint8"),
            "caption": Value("string"),
            "label": ClassLabel(names=list(MOTIONS)),
            "item": ClassLabel(names=nouns),
        }
    )


def moving_clips(
    images: np.ndarray, labels: np.ndarray, nouns: list[str], combos: list[tuple[int, str, str]], rng,
    num_frames: int, canvas: int,
) -> Dataset:  # fmt: skip
    """One clip per (class, motion, speed) in ``combos``, each from a random image of that class."""
    by_class = {c: np.flatnonzero(labels == c) for c in range(len(nouns))}
    rows = {"video": [], "caption": [], "label": [], "item": []}
    for cls, motion, speed in combos:
        image = images[rng.choice(by_class[cls])]
        rows["video"].append(render_clip(image, motion, speed, num_frames, canvas))
        rows["caption"].append(caption_for(nouns[cls], motion, speed))
        rows["label"].append(list(MOTIONS).index(motion))
        rows["item"].append(cls)
    rows["video"] = np.stack(rows["video"])
    return Dataset.from_dict(rows, features=_features(num_frames, canvas, nouns))


def load_moving_clips(
    source: str = "moving_fashion_mnist", num_train: int = 1000, num_frames: int = 8, canvas: int = 56, seed: int = 0
) -> DatasetDict:
    """The offline clips: ``num_train`` random training clips, and a held-out split of one clip per caption."""
    if source not in OFFLINE_SPECS:
        raise ValueError(f"Unknown offline clip source {source!r}; choose one of {', '.join(OFFLINE_SPECS)}.")
    items, nouns = _items(source)
    rng = np.random.default_rng(seed)
    every = [(c, m, s) for c in range(len(nouns)) for m in MOTIONS for s in SPEEDS]
    train = [every[i] for i in rng.integers(0, len(every), num_train)]
    return DatasetDict(
        {
            "train": moving_clips(*items["train"], nouns, train, rng, num_frames, canvas),
            "test": moving_clips(*items["test"], nouns, every, rng, num_frames, canvas),
        }
    )


def require_columns(dataset: Dataset, columns: dict[str, str], spec: str) -> None:
    """One message naming every missing column and the option that picks another."""
    missing = [f"{role} column {name!r} (--{role}-column)" for role, name in columns.items()
               if name not in dataset.column_names]  # fmt: skip
    if missing:
        raise ValueError(
            f"Dataset {spec!r} has no {', no '.join(missing)}; its columns are {dataset.column_names}. Pass the "
            "right column names, or use a video-text dataset with video and caption columns."
        )


def load_video_dataset(spec: str, num_train: int = 1000, num_frames: int = 8, canvas: int = 56, seed: int = 0):
    """``moving_fashion_mnist`` / ``moving_digits`` (offline, built as above), a ``save_to_disk`` folder, or a Hub
    dataset id -> DatasetDict with train and test splits (a Hub set without test gets 10 % of train)."""
    if spec in OFFLINE_SPECS:
        return load_moving_clips(spec, num_train, num_frames, canvas, seed)
    from pathlib import Path

    from datasets import load_from_disk

    try:
        data = load_from_disk(spec) if Path(spec, "dataset_dict.json").is_file() else load_dataset(spec)
    except Exception as error:  # noqa: BLE001 - datasets raises many types for "not found / offline"
        raise ValueError(
            f"Cannot load video dataset {spec!r}: use {' or '.join(OFFLINE_SPECS)}, a save_to_disk folder, or a Hub "
            f"dataset id that is cached or reachable ({type(error).__name__}: {str(error).splitlines()[0][:200]})."
        ) from None
    if "test" not in data:
        split = data["train"].train_test_split(test_size=0.1, seed=seed)
        data = DatasetDict({**data, "test": split["test"], "train": split["train"]})
    return data


def clip_frames(video, num_frames: int) -> list[np.ndarray]:
    """``num_frames`` RGB frames (H, W, 3) uint8 sampled uniformly from a clip: an array (T, H, W[, C]), a list of
    frames/PIL images, or a decoder with ``get_frames_at`` (`datasets`' Video feature, torchcodec)."""
    if hasattr(video, "get_frames_at"):  # torchcodec VideoDecoder
        total = len(video)
        index = np.linspace(0, total - 1, num_frames).round().astype(int).tolist()
        frames = video.get_frames_at(indices=index).data.permute(0, 2, 3, 1).numpy()
    else:
        frames = np.stack([np.asarray(frame) for frame in video])
        index = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
        frames = frames[index]
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    elif frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return list(frames.astype(np.uint8))
