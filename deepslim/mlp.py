"""``mlp``: a plain multilayer perceptron for feature inputs (tables, embeddings).

Each hidden block is Linear -> ReLU -> (BatchNorm1d) -> Dropout; the last layer is a Linear
named ``head`` with one output per class (classification), label (multilabel) or target
(regression). Structured pruning removes hidden units; the head's width never changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _check(num_classes: int, in_features: int, hidden: Sequence[int], dropout: float) -> list[int]:
    for name, value in (("num_classes", num_classes), ("in_features", in_features)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"mlp needs {name} to be a positive integer, got {value!r}")
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ValueError(f"mlp needs hidden to be a list of layer widths, got {hidden!r}")
    widths = list(hidden)
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"mlp needs every hidden width to be a positive integer, got {widths}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"mlp needs dropout in [0, 1), got {dropout!r}")
    return widths


class MLP(nn.Module):
    """``in_features`` -> hidden blocks (``hidden`` widths) -> ``head`` (``num_classes`` outputs)."""

    def __init__(self, num_classes: int, in_features: int, hidden: Sequence[int] = (128, 64),
                 dropout: float = 0.1, batch_norm: bool = False) -> None:
        super().__init__()
        widths = _check(num_classes, in_features, hidden, dropout)
        layers: list[nn.Module] = []
        width = in_features
        for out in widths:
            layers += [nn.Linear(width, out), nn.ReLU(inplace=True)]
            if batch_norm:
                layers.append(nn.BatchNorm1d(out))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = out
        self.in_features = in_features
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.flatten(1)))
