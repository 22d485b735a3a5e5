"""Distillation teachers: a bundle run in PyTorch, or an exported artifact run through its runtime.

A :class:`Teacher` gives logits for a student's batch (renormalised to the teacher's own
input statistics) and, for PyTorch teachers, the features of named layers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepslim.distributed import context, gather_shards, shard
from deepslim.errors import ConfigError, DeepSlimError, ModelError, first_line
from deepslim.fileio import sha256_file
from deepslim.fingerprint import state_fingerprint
from deepslim.models import ModelBundle
from deepslim.spec import InputSpec

RUNNER_BACKEND = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt"}


class DistillError(DeepSlimError):
    """Teacher and student cannot be paired, or a named layer does not exist."""


class Teacher:
    """What distillation asks of a teacher: logits for a student's batch, features of named layers."""

    name: str
    kind: str
    input_spec: InputSpec
    classes: list[str]
    seconds: float = 0.0   # time spent in the teacher's forward passes
    features: dict[str, torch.Tensor]
    device: torch.device = torch.device("cpu")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch normalised with ``student_spec`` (set by :meth:`pair`)."""
        start = time.perf_counter()
        with torch.no_grad():
            out = self._forward(self._renormalize(x))
        self.seconds += time.perf_counter() - start
        return out

    def pair(self, student_spec: InputSpec, data_channels: int = 0) -> None:
        """Feed the teacher batches prepared for the student, converted to the teacher's normalisation.

        The spatial size must match. Channel counts may differ (1 vs 3) only for greyscale data
        (``data_channels == 1``), whose 3-channel form repeats one channel: the conversion is then exact.
        """
        (sc, *s_size), (tc, *t_size) = student_spec.shape, self.input_spec.shape
        grey = data_channels == 1 and {sc, tc} <= {1, 3}
        if s_size != t_size or (sc != tc and not grey):
            raise DistillError(f"The student takes {shape_text(student_spec)} inputs but the teacher "
                               f"{shape_text(self.input_spec)}; distillation feeds both the same batch, so build "
                               "the student at the teacher's input size and channels.")
        s_mean, s_std = _stats(student_spec)
        t_mean, t_std = _stats(self.input_spec)
        same = sc == tc and torch.equal(s_mean, t_mean) and torch.equal(s_std, t_std)
        self._convert = None if same else (s_mean, s_std, t_mean, t_std)

    def _renormalize(self, x: torch.Tensor) -> torch.Tensor:
        convert = getattr(self, "_convert", None)
        if convert is None:
            return x
        s_mean, s_std, t_mean, t_std = (a.to(x.device, x.dtype) for a in convert)
        raw = x * s_std + s_mean
        if raw.shape[1] != t_mean.shape[0]:  # greyscale: 3 equal channels <-> 1
            raw = raw.mean(1, keepdim=True) if raw.shape[1] == 3 else raw.expand(-1, 3, -1, -1)
        return (raw - t_mean) / t_std

    def watch(self, layers: list[str]) -> None:
        raise DistillError(f"The teacher {self.name} is an exported {self.kind} artifact whose inner layers "
                           "cannot be read; use --feature-pairs with a bundle teacher, or logits only.")

    def predict(self, dataset: Dataset, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Logits and labels over the whole dataset (sharded over ranks under torchrun)."""
        ctx = context()
        logits, labels = [], []
        for x, y in DataLoader(shard(dataset, ctx), batch_size=batch_size, shuffle=False):
            logits.append(self.logits(x.to(self.device)).float().cpu())
            labels.append(y)
        total = len(dataset)
        return (gather_shards(torch.cat(logits).numpy(), total, ctx),
                gather_shards(torch.cat(labels).numpy(), total, ctx))

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind}

    def close(self) -> None:
        """Drop hooks and runners."""

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TorchTeacher(Teacher):
    """A PyTorch teacher in eval mode; forward hooks read the features of named layers."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle, self.model = bundle, bundle.model.eval()
        self.name = bundle.path.name if bundle.path else bundle.arch.name
        self.kind, self.input_spec, self.classes = "bundle", bundle.input_spec, list(bundle.classes)
        self.features, self._hooks = {}, []
        self.device = next((p.device for p in self.model.parameters()), torch.device("cpu"))

    def to(self, device: torch.device) -> TorchTeacher:
        self.model.to(device)
        self.device = device
        return self

    def watch(self, layers: list[str]) -> None:
        modules = dict(self.model.named_modules())
        targets = [layer_named(modules, name, "teacher") for name in layers]  # every name checked before any hook
        for module, name in zip(targets, layers):
            self._hooks.append(module.register_forward_hook(capture(self.features, name)))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device != self.device:
            self.to(x.device)
        try:
            return self.model(x)
        except Exception as exc:  # a user's model may raise anything
            raise ModelError(f"The teacher fails on inputs of shape {tuple(x.shape)}: {first_line(exc)}.") from exc

    def identity(self) -> dict[str, Any]:
        digest = sha256_file(self.bundle.path) if self.bundle.path else state_fingerprint(self.model)
        return {"name": self.name, "kind": self.kind, "sha256": digest}

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self.model.cpu()


class RunnerTeacher(Teacher):
    """An exported artifact (ONNX, OpenVINO IR, TensorRT engine) as the teacher, through its runner."""

    def __init__(self, path: Path, backend: str | None = None, *, device: str = "cpu") -> None:
        from benchmarks.runners import RunnerOptions, open_runner
        self.path = Path(path)
        backend = backend or RUNNER_BACKEND.get(self.path.suffix.lower())
        if backend is None:
            raise ConfigError(f"{path} is not an exported artifact (.onnx, .xml or .engine).")
        self.runner = open_runner(self.path, backend, RunnerOptions(device=device))
        meta = self.runner.meta
        self.name, self.kind, self.backend = self.path.name, self.path.suffix.lower().lstrip("."), backend
        self.input_spec, self.classes, self.features = meta.input_spec, list(meta.classes), {}

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Runs the batch in chunks the artifact accepts (a TensorRT profile or a fixed ONNX batch)."""
        batch = x.detach().float().cpu().numpy()
        step = self.runner.max_batch or len(batch)
        try:
            outs = [np.asarray(self.runner.run(batch[i:i + step]), dtype=np.float32)
                    for i in range(0, len(batch), step)]
        except Exception as exc:  # runtimes raise their own exception types
            raise ModelError(f"The teacher {self.name} fails on a batch of shape {tuple(batch[:step].shape)} "
                             f"through {self.backend}: {first_line(exc)}.") from exc
        return torch.from_numpy(np.concatenate(outs)).to(x.device)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "backend": self.backend, "sha256": sha256_file(self.path)}

    def close(self) -> None:
        self.runner.__exit__(None, None, None)


def open_teacher(source: str | Path | ModelBundle | Teacher, *, backend: str | None = None,
                 device: str = "cpu") -> Teacher:
    """A teacher from a bundle (or loaded model) or from an exported artifact's path."""
    if isinstance(source, Teacher):
        return source
    if isinstance(source, ModelBundle):
        return TorchTeacher(source)
    path = Path(source)
    if path.suffix.lower() in RUNNER_BACKEND:
        return RunnerTeacher(path, backend, device=device)
    from deepslim.models import load_model
    return TorchTeacher(load_model(path))


def capture(store: dict[str, torch.Tensor], name: str) -> Callable:
    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        store[name] = output[0] if isinstance(output, (tuple, list)) else output
    return hook


def layer_named(modules: dict[str, nn.Module], name: str, role: str) -> nn.Module:
    if name not in modules or not name:
        known = [n for n in modules if n and "." not in n] or [n for n in modules if n][:12]
        raise DistillError(f"--feature-pairs: the {role} has no layer '{name}'; its top-level layers are "
                           f"{', '.join(known)} (`deepslim info MODEL --layers` lists them all).")
    return modules[name]


def _stats(spec: InputSpec) -> tuple[torch.Tensor, torch.Tensor]:
    c = spec.shape[0]
    return (torch.tensor(spec.mean, dtype=torch.float32).view(c, 1, 1),
            torch.tensor(spec.std, dtype=torch.float32).view(c, 1, 1))


def shape_text(spec: InputSpec) -> str:
    c, h, w = spec.shape
    return f"{c}x{h}x{w}"


__all__ = ["DistillError", "RunnerTeacher", "Teacher", "TorchTeacher", "capture", "layer_named", "open_teacher",
           "shape_text"]
