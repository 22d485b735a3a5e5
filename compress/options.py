"""Compression choices as enums (torch-free, so the CLI can offer them without importing torch)."""

from __future__ import annotations

from enum import Enum


class Importance(str, Enum):
    L1 = "l1"
    L2 = "l2"
    TAYLOR = "taylor"   # first-order Taylor; needs a few batches of data
    BN = "bn"           # network slimming: |BatchNorm scale|
    LAMP = "lamp"
    RANDOM = "random"


class Allocation(str, Enum):
    UNIFORM = "uniform"          # the same ratio for every layer
    SENSITIVITY = "sensitivity"  # spread by per-layer sensitivity


class Recover(str, Enum):
    FINETUNE = "finetune"  # cross-entropy with the labels
    KD = "kd"              # knowledge distillation from the model before pruning
