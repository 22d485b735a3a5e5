"""Models and datasets beyond one-image classifiers, for the tests of every model kind (issue #13).

Each ``*_data(split)`` returns a torch Dataset of ``(inputs, target)``; each ``*_model(num_classes)``
builds the matching model. Everything is generated from fixed seeds or scikit-learn's digits.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

SPLITS = {"train": 0, "val": 1, "test": 2}


class Pairs(Dataset):
    def __init__(self, inputs, targets) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        x = self.inputs(i) if callable(self.inputs) else self.inputs[i]
        return x, self.targets[i]


def _part(n: int, split: str, seed: int = 0) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    cut1, cut2 = int(n * 0.7), int(n * 0.85)
    return {"train": order[:cut1], "val": order[cut1:cut2], "test": order[cut2:]}[split]


# --- multi-label: 5 labels, each a linear rule on 16 features ------------------------------------

@functools.cache
def _multilabel() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1200, 16)).astype(np.float32)
    w = rng.standard_normal((16, 5)).astype(np.float32)
    y = (x @ w > 0.3).astype(np.int64)
    return x, y


def multilabel_data(split: str):
    x, y = _multilabel()
    idx = _part(len(y), split)
    return Pairs(torch.from_numpy(x[idx]), list(y[idx]))


# --- two inputs (image + features), a dict output ------------------------------------------------

@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def two_input_data(split: str):
    images, labels = _digits()
    idx = _part(len(labels), split)
    rng = np.random.default_rng(SPLITS[split])
    extra = np.eye(2, dtype=np.float32)[labels[idx] % 2] + 0.3 * rng.standard_normal((len(idx), 2)).astype(np.float32)
    feats = np.concatenate([extra, rng.standard_normal((len(idx), 2)).astype(np.float32)], axis=1)
    ims = torch.from_numpy(images[idx]).unsqueeze(1)
    return Pairs(lambda i: {"image": ims[i], "meta": torch.from_numpy(feats[i])}, list(labels[idx]))


class TwoInput(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.meta = nn.Sequential(nn.Linear(4, width), nn.ReLU())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = torch.cat([self.conv(image), self.meta(meta)], dim=1)
        return {"logits": self.head(embedding), "embedding": embedding}


def two_input_model(num_classes: int = 10, width: int = 16) -> nn.Module:
    return TwoInput(num_classes, width)


# --- a non-square image (1 x 28 x 56): the digit sits in the left or right half -------------------

@functools.cache
def _wide() -> torch.Tensor:
    images, _ = _digits()
    small = torch.nn.functional.interpolate(torch.from_numpy(images)[:, None], size=(28, 28), mode="bilinear",
                                            align_corners=False)
    sides = np.random.default_rng(10).integers(0, 2, len(images))
    canvas = torch.zeros(len(images), 1, 28, 56)
    for i, side in enumerate(sides):
        canvas[i, :, :, 28 * side:28 * side + 28] = small[i]
    return canvas


def wide_data(split: str):
    _, labels = _digits()
    idx = _part(len(labels), split)
    return Pairs(_wide()[idx], list(labels[idx]))


def wide_model(num_classes: int = 10, width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))


# --- a 1-D signal (1 x 64): which of three frequencies, in noise ----------------------------------

@functools.cache
def _signals() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 900)
    t = np.arange(64) / 64.0
    phase = rng.uniform(0, 2 * np.pi, 900)[:, None]
    freq = np.array([2.0, 5.0, 9.0])[labels][:, None]
    x = np.sin(2 * np.pi * freq * t + phase) + 0.5 * rng.standard_normal((900, 64))
    return x[:, None, :].astype(np.float32), labels.astype(np.int64)


def signal_data(split: str):
    x, y = _signals()
    idx = _part(len(y), split)
    return Pairs(torch.from_numpy(x[idx]), list(y[idx]))


class Signal1D(nn.Module):
    def __init__(self, num_classes: int = 3, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(1, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
                                      nn.Conv1d(width, 2 * width, 5, padding=2), nn.BatchNorm1d(2 * width), nn.ReLU(),
                                      nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(signal))


def signal_model(num_classes: int = 3, width: int = 16) -> nn.Module:
    return Signal1D(num_classes, width)


# --- regression from a file: scikit-learn's diabetes, float targets -------------------------------

@functools.cache
def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes
    d = load_diabetes()
    x = d.data.astype(np.float32)
    return (x - x.mean(0)) / x.std(0), d.target.astype(np.float32)


def diabetes_data(split: str):
    x, y = _diabetes()
    idx = _part(len(y), split)
    return Pairs(torch.from_numpy(x[idx]), list(y[idx]))


def mlp_model(num_classes: int = 1, in_features: int = 10, width: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, num_classes))
