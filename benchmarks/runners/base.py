"""The one runner interface every backend implements."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from deepslim.artifact import ArtifactMeta
from deepslim.errors import BackendMissingError, ConfigError


class Backend(str, Enum):
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    TENSORRT = "tensorrt"


@dataclass(frozen=True)
class RunnerOptions:
    threads: int | None = None   # None: one per core the process may use (pinned and recorded either way)
    device: str = "cpu"          # cpu | cuda (onnxruntime, torch) | an OpenVINO device name
    compile: bool = False        # torch.compile for the torch runner
    static_batch: bool = True    # OpenVINO: reshape to each batch size before compiling

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be a positive integer, got {self.threads}.")
        if self.threads is None:
            object.__setattr__(self, "threads", len(os.sched_getaffinity(0)))


@dataclass
class Runner(ABC):
    """Loads one artifact; ``run`` takes a float32 NCHW batch and returns logits as numpy."""

    artifact: Path
    meta: ArtifactMeta
    options: RunnerOptions
    details: dict[str, Any] = field(default_factory=dict)  # what was really used: threads, providers, ...

    backend: Backend = Backend.TORCH

    def prepare(self, batch: int) -> None:
        """Get ready for batches of this size (e.g. compile a static shape). Default: nothing."""

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray: ...

    @property
    def max_batch(self) -> int | None:
        """The largest batch the artifact accepts (None: any)."""
        return None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @property
    def label(self) -> str:
        compiled = " compiled" if self.details.get("compile") else ""
        return f"{self.artifact.name} [{self.backend.value}{compiled}]"


def require(module: str, package: str, purpose: str):
    """Import an optional backend, or fail with one sentence naming what to install."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendMissingError(f"{purpose} needs the '{package}' package; install it with "
                                  f"`pip install {package}`.") from exc


def as_batch(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)
