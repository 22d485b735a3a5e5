"""Typed, validated configuration of the training loop (torch-free, so the CLI stays fast)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from deepslim.errors import ConfigError


class OptimizerKind(str, Enum):
    SGD = "sgd"
    ADAMW = "adamw"


class Schedule(str, Enum):
    COSINE = "cosine"
    ONECYCLE = "onecycle"
    CONSTANT = "constant"


class Augment(str, Enum):
    """Training augmentation: none; light (small shifts, scale and rotation, no flips: safe for digits and
    text); standard (ImageNet-style random resized crops and horizontal flips, for natural photos)."""
    NONE = "none"
    LIGHT = "light"
    STANDARD = "standard"


class Init(str, Enum):
    DEFAULT = "default"
    KAIMING = "kaiming"
    XAVIER = "xavier"
    NORMAL = "normal"


_DEFAULT_LR = {OptimizerKind.SGD: 0.05, OptimizerKind.ADAMW: 1e-3}


@dataclass(frozen=True)
class TrainConfig:
    """Everything the shared train loop needs; validated on creation."""

    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None  # None: 0.05 for SGD, 1e-3 for AdamW
    optimizer: OptimizerKind = OptimizerKind.SGD
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule = Schedule.COSINE
    warmup_epochs: int | None = None  # None: 1 when epochs > 2, else 0
    label_smoothing: float = 0.0
    augment: Augment = Augment.LIGHT
    init: Init = Init.DEFAULT
    freeze_backbone: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision, used on CUDA only
    num_workers: int = 0
    accumulate: int = 1  # gradient accumulation: optimizer step every N batches
    sync_bn: bool = False  # under torchrun on GPUs: BatchNorm statistics over all ranks (nn.SyncBatchNorm)

    def __post_init__(self) -> None:
        _positive_int("epochs", self.epochs)
        _positive_int("batch-size", self.batch_size)
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}.")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got '{self.device}'.")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}.")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}.")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"--warmup-epochs must be between 0 and epochs - 1, got {self.warmup_epochs}.")
        _positive_int("accumulate", self.accumulate)
        if self.num_workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.num_workers}.")
        object.__setattr__(self, "optimizer", OptimizerKind(self.optimizer))
        object.__setattr__(self, "schedule", Schedule(self.schedule))
        object.__setattr__(self, "init", Init(self.init))
        object.__setattr__(self, "augment", augment_policy(self.augment))

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else _DEFAULT_LR[self.optimizer]

    @property
    def warmup(self) -> int:
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return 1 if self.epochs > 2 else 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(optimizer=self.optimizer.value, augment=self.augment.value, schedule=self.schedule.value, init=self.init.value,
                    lr=self.learning_rate, warmup_epochs=self.warmup)
        return data


def augment_policy(value: "Augment | str | bool") -> Augment:
    """The policy named by ``value`` (True/False, from older callers, mean light/none)."""
    if isinstance(value, bool):
        return Augment.LIGHT if value else Augment.NONE
    try:
        return Augment(value)
    except ValueError:
        raise ConfigError(f"--augment must be none, light or standard, got '{value}'.") from None


def _positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"--{name} must be a positive integer, got {value}.")
