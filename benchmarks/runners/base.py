"""The one runner interface every backend implements."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from deepslim.artifact import ArtifactMeta
from deepslim.errors import BackendMissingError, ConfigError, ModelError
from deepslim.signature import Signature
from deepslim.tasks import Task

# A batch is one array (a model with one input) or a tuple of arrays in the signature's input order.
Batch = np.ndarray | tuple[np.ndarray, ...]


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
    """Loads one artifact; ``run`` takes a batch (:data:`Batch`: one array, or a tuple of arrays in the signature's
    input order) and returns the task output as numpy; ``run_all`` returns every output by name."""

    artifact: Path
    meta: ArtifactMeta
    options: RunnerOptions
    details: dict[str, Any] = field(default_factory=dict)  # what was really used: threads, providers, ...

    backend: Backend = Backend.TORCH

    def prepare(self, batch: int, sizes: dict[str, int] | None = None) -> None:
        """Get ready for batches of this size (e.g. compile a static shape), with the named dims at ``sizes``
        when given (``{"sequence": 128}``; None: any length). Default: nothing."""

    @property
    def signature(self) -> Signature:
        return self.meta.signature

    @property
    def task(self) -> Task:
        return self.meta.task

    @abstractmethod
    def run(self, batch: Batch) -> np.ndarray: ...

    def run_all(self, batch: Batch) -> dict[str, np.ndarray]:
        """Every output of one batch by name (default: the task output only)."""
        return {self.signature.task_output: self.run(batch)}

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


def resized(meta: ArtifactMeta, input_size: int | tuple[int, int] | None, path: Path) -> ArtifactMeta:
    """``meta`` at another image resolution (a one-image model only; anything else is a ConfigError)."""
    if input_size is None:
        return meta
    if not meta.signature.single_image:
        raise ConfigError(f"--input-size applies to models with one image input; {path.name} takes "
                          f"{meta.signature.describe()}.")
    return replace(meta, signature=meta.signature.with_image_size(input_size))


def feed_names(signature: Signature, names: list[str], artifact: Path | str) -> tuple[str, ...]:
    """The artifact's input names in the signature's order: by name when they match the signature's, else by
    position (artifacts exported before signatures named their one input ``input``)."""
    if set(names) == set(signature.input_names):
        return signature.input_names
    if len(names) == len(signature.inputs):
        return tuple(names)
    raise ModelError(f"{Path(artifact).name} takes the inputs {names} but its metadata describes "
                     f"{list(signature.input_names)}; re-export it with `deepslim export`.")


def as_tuple(batch: Batch) -> tuple[np.ndarray, ...]:
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)


def from_tuple(arrays: tuple[np.ndarray, ...] | list[np.ndarray]) -> Batch:
    """The batch convention back: a bare array for one input."""
    return arrays[0] if len(arrays) == 1 else tuple(arrays)


def batch_size(batch: Batch) -> int:
    return len(as_tuple(batch)[0])


def pad_batch(batch: Batch, size: int) -> Batch:
    """``batch`` zero-padded to ``size`` rows (static-shape runners get full batches; callers drop the padding)."""
    pad = size - batch_size(batch)
    if pad <= 0:
        return batch
    return from_tuple([np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) for a in as_tuple(batch)])


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    return from_tuple([a[start:stop] for a in as_tuple(batch)])
