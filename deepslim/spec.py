"""Torch-free descriptions of a model: how to build it, what it eats, where it came from."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from deepslim.errors import ConfigError


class ArchSource(str, Enum):
    """Where an architecture comes from."""

    BUILTIN = "builtin"          # deepslim's own small models
    TORCHVISION = "torchvision"  # torchvision.models by name
    FILE = "file"                # the user's path/to/file.py:build_fn
    TIMM = "timm"                # timm.create_model by name (never pretrained: weights come from the bundle)
    HF = "hf"                    # a Hugging Face config (kwargs) and head (name), built with AutoModelFor...
    PICKLE = "pickle"            # a whole pickled module (--trust-pickle); cannot be rebuilt


@dataclass(frozen=True)
class ArchSpec:
    """How to rebuild an architecture without pickle."""

    source: ArchSource
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    file_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source.value, "name": self.name, "kwargs": dict(self.kwargs),
                "file_sha256": self.file_sha256}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArchSpec:
        name, kwargs, sha = data["name"], data.get("kwargs", {}), data.get("file_sha256")
        if not isinstance(name, str) or not isinstance(kwargs, dict) or not isinstance(sha, (str, type(None))):
            raise ValueError("arch.name must be a string, arch.kwargs an object and arch.file_sha256 a string")
        return cls(ArchSource(data["source"]), name, dict(kwargs), sha)


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: one sample's shape (C, H, W), dtype and normalisation."""

    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtype: str = "float32"
    channel_order: str = "RGB"  # RGB, BGR or GRAY

    def __post_init__(self) -> None:
        c, h, w = self.shape
        if min(c, h, w) < 1:
            raise ConfigError(f"Input shape {self.shape} must have positive channels, height and width.")
        if len(self.mean) != c or len(self.std) != c:
            raise ConfigError(f"Input normalisation needs {c} mean and std values, got {len(self.mean)} and {len(self.std)}.")
        if any(s <= 0 for s in self.std):
            raise ConfigError("Input normalisation std values must be positive.")

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return self.shape[1], self.shape[2]

    @classmethod
    def create(cls, channels: int, size: int | tuple[int, int], mean: tuple[float, ...],
               std: tuple[float, ...]) -> InputSpec:
        """Build a spec, broadcasting one-channel statistics to ``channels``."""
        h, w = (size, size) if isinstance(size, int) else size
        if len(mean) != channels:
            mean = tuple([sum(mean) / len(mean)] * channels)
            std = tuple([sum(std) / len(std)] * channels)
        order = "GRAY" if channels == 1 else "RGB"
        return cls((channels, h, w), tuple(mean), tuple(std), channel_order=order)

    def with_size(self, size: int | tuple[int, int]) -> InputSpec:
        h, w = (size, size) if isinstance(size, int) else size
        return InputSpec((self.channels, h, w), self.mean, self.std, self.dtype, self.channel_order)

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "mean": list(self.mean),
                "std": list(self.std), "channel_order": self.channel_order}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputSpec:
        return cls(tuple(data["shape"]), tuple(data["mean"]), tuple(data["std"]),
                   data.get("dtype", "float32"), data.get("channel_order", "RGB"))


@dataclass(frozen=True)
class StageRecord:
    """One step of a model's lineage: which stage made it, how, how long, how good."""

    stage: str
    config: dict[str, Any]
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    finished_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageRecord:
        return cls(**data)
