"""scikit-learn's 8x8 ``digits`` with a fixed stratified split, and ``digits-c`` (seeded corruptions).

``digits-c`` follows ImageNet-C: every image gets one of five corruptions (Gaussian
noise, Gaussian blur, rotation, translation, contrast loss), chosen and parameterised
by a seeded generator per image, at one of five severities. The corruptions are applied
at 32x32 so they do not depend on the model's input size. Clean digits saturate near
99% top-1; the corrupted set separates compression methods.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset

from deepslim.config import Augment
from deepslim.data import (SPLIT_SEED, DatasetInfo, Split, TensorImages, image_input_spec, random_affine, resize,
                           stratified_split, tensor_augment)
from deepslim.spec import InputSpec

MEAN, STD = (0.3053,), (0.3760,)  # of load_digits().data / 16
CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "rotation", "translation", "contrast")
CORRUPT_SIZE = (32, 32)
_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)
_BLUR = (0.6, 1.0, 1.5, 2.0, 2.5)
_ROTATE = (10.0, 20.0, 30.0, 40.0, 50.0)
_SHIFT = (0.06, 0.12, 0.18, 0.24, 0.30)
_CONTRAST = (0.6, 0.45, 0.3, 0.2, 0.12)


@functools.cache
def _load() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(digits.target, dtype=torch.long)


@functools.cache
def _split_indices() -> dict[str, np.ndarray]:
    return stratified_split(_load()[1].numpy(), (0.6, 0.2, 0.2))


def corrupt(image: torch.Tensor, kind: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Apply one corruption at ``severity`` (1-5) to an image in [0, 1]."""
    s = severity - 1
    sign = 1.0 if torch.rand(1, generator=generator).item() < 0.5 else -1.0
    if kind == "gaussian_noise":
        out = image + torch.randn(image.shape, generator=generator) * _NOISE[s]
    elif kind == "gaussian_blur":
        sigma = _BLUR[s]
        out = TF.gaussian_blur(image, kernel_size=2 * int(3 * sigma) + 1, sigma=sigma)
    elif kind == "rotation":
        out = TF.rotate(image, angle=sign * _ROTATE[s])
    elif kind == "translation":
        theta = torch.rand(1, generator=generator).item() * 2 * np.pi
        dx, dy = (_SHIFT[s] * image.shape[-1] * np.cos(theta), _SHIFT[s] * image.shape[-2] * np.sin(theta))
        out = TF.affine(image, angle=0.0, translate=[round(dx), round(dy)], scale=1.0, shear=[0.0, 0.0])
    elif kind == "contrast":
        mean = image.mean()
        out = (image - mean) * _CONTRAST[s] + mean
    else:
        raise ValueError(f"unknown corruption {kind}")
    return out.clamp(0.0, 1.0)


@functools.cache
def _corrupted(severity: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    images, _ = _load()
    base = resize(images, CORRUPT_SIZE)
    out, kinds = torch.empty_like(base), []
    for i in range(len(base)):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        kind = CORRUPTIONS[int(torch.randint(len(CORRUPTIONS), (1,), generator=gen))]
        out[i] = corrupt(base[i], kind, severity, gen)
        kinds.append(kind)
    return out, kinds


class DigitsSource:
    """``digits`` (severity None) or ``digits-c`` at ``severity`` 1-5; split 60/20/20, fixed seed."""

    def __init__(self, severity: int | None = None) -> None:
        self.severity = severity
        name = "digits" if severity is None else f"digits-c (severity {severity})"
        size = (8, 8) if severity is None else CORRUPT_SIZE
        self.info = DatasetInfo(
            name, tuple(str(i) for i in range(10)), 1, MEAN, STD, (8, 8),
            split_policy=f"scikit-learn's 1,797 digits split 60/20/20 into train/val/test (stratified, seed {SPLIT_SEED})",
            preprocess=f"grey images at {size[0]}x{size[1]}: resized to the input size, no crop")

    def images(self) -> torch.Tensor:
        return _load()[0] if self.severity is None else _corrupted(self.severity)[0]

    def split(self, name: Split, input_spec: InputSpec, *, augment: Augment | str | bool = Augment.NONE,
              task=None) -> Dataset:
        """``augment="standard"`` is the same as ``light`` here: a mirrored digit is not the same digit."""
        input_spec = image_input_spec(input_spec)
        idx = torch.as_tensor(_split_indices()[name])
        images, labels = self.images()[idx], _load()[1][idx]
        return TensorImages(images, labels, input_spec, tensor_augment(name, augment, standard=random_affine))
