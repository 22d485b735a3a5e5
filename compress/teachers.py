"""Distillation teachers: a bundle run in PyTorch, or an exported artifact run through its runtime.

A :class:`Teacher` gives its task output (logits, or predictions) for a student's batch — every
input, renormalised to the teacher's own image and feature statistics — and, for PyTorch teachers,
the features of named layers. Teacher and student must take the same inputs (names and kinds, in
``forward``'s order); an image may differ only in channels, and only for greyscale data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepslim.described import Described
from deepslim.distributed import context, gather_shards, shard
from deepslim.errors import ConfigError, DeepSlimError, ModelError, first_line
from deepslim.fileio import sha256_file
from deepslim.fingerprint import state_fingerprint
from deepslim.modelio import as_args, call, numpy_inputs, select_output, shapes, task_output, to_device
from deepslim.models import ModelBundle
from deepslim.signature import InputKind, Signature, TensorSpec
from deepslim.spec import InputSpec
from deepslim.tasks import Task

if TYPE_CHECKING:
    from compress.transformer_kd import Features

RUNNER_BACKEND = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt"}


class DistillError(DeepSlimError):
    """Teacher and student cannot be paired, or a named layer does not exist."""


class Teacher(Described):
    """What distillation asks of a teacher: its task output for a student's batch, features of named layers."""

    name: str
    kind: str
    signature: Signature
    task: Task
    seconds: float = 0.0   # time spent in the teacher's forward passes
    features: dict[str, torch.Tensor]
    transformer: Features | None = None  # the last batch's encoder-layer features (:meth:`watch_transformer`)
    collect: bool = True                 # False while only task outputs are wanted
    device: torch.device = torch.device("cpu")


    def outputs(self, x: Any) -> torch.Tensor:
        """The task output for a batch (a tensor, or a tuple of every input) prepared for the student
        (:meth:`pair` says how to convert it)."""
        start = time.perf_counter()
        with torch.no_grad():
            out = self._forward(self._renormalize(x))
        self.seconds += time.perf_counter() - start
        return out

    logits = outputs  # the name of a classifier's task output

    def pair(self, student: Signature | InputSpec, data_channels: int | dict[str, int] = 0) -> None:
        """Feed the teacher batches prepared for the student, converted to the teacher's normalisation.

        Inputs pair by position and must agree in name (beyond one image), kind and fixed dims. An
        image's spatial size must match; channel counts may differ (1 vs 3) only for greyscale data
        (``data_channels`` 1, per image input name for several inputs), whose 3-channel form repeats one
        channel: the conversion is then exact."""
        student = Signature.from_input_spec(student) if isinstance(student, InputSpec) else student
        teacher = self.signature
        if student.single_image and teacher.single_image:
            channels = data_channels if isinstance(data_channels, int) else next(iter(data_channels.values()), 0)
            if not _images_pair(student.inputs[0], teacher.inputs[0], channels):
                s_text, t_text = shape_text(student.to_input_spec()), shape_text(teacher.to_input_spec())
                raise DistillError(f"The student takes {s_text} inputs but the teacher {t_text}; distillation feeds "
                                   "both the same batch, so build the student at the teacher's input size and "
                                   "channels.")
        else:
            _check_inputs(student, teacher, data_channels)
            _check_tokenizers(student, teacher)
        self._convert = tuple(_conversion(s, t) for s, t in zip(student.inputs, teacher.inputs))

    def _renormalize(self, x: Any) -> Any:
        convert = getattr(self, "_convert", None)
        if convert is None:
            return x
        out = tuple(_apply(t, c) for t, c in zip(as_args(x), convert))
        return out[0] if len(out) == 1 else out

    def watch(self, layers: list[str]) -> None:
        raise DistillError(f"The teacher {self.name} is an exported {self.kind} artifact whose inner layers "
                           "cannot be read; use --feature-pairs with a bundle teacher, or logits only.")

    def watch_transformer(self, *, hidden: bool, attention: bool) -> None:
        """Keep each encoder layer's hidden states and/or attention maps of every batch in ``transformer``."""
        raise DistillError(f"The teacher {self.name} is an exported {self.kind} artifact, which gives its logits "
                           "only; --hidden-weight and --attention-weight need the teacher as a bundle or a model "
                           "directory.")

    def predict(self, dataset: Dataset, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Task outputs and targets over the whole dataset (sharded over ranks under torchrun)."""
        ctx = context()
        logits, labels = [], []
        self.collect = False  # the task output only: no features are needed here
        try:
            for x, y in DataLoader(shard(dataset, ctx), batch_size=batch_size, shuffle=False):
                logits.append(self.outputs(to_device(x, self.device)).float().cpu())
                labels.append(y)
        finally:
            self.collect = True
        total = len(dataset)
        return (gather_shards(torch.cat(logits).numpy(), total, ctx),
                gather_shards(torch.cat(labels).numpy(), total, ctx))

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind}

    def close(self) -> None:
        """Drop hooks and runners."""

    def _forward(self, x: Any) -> torch.Tensor:
        raise NotImplementedError


class TorchTeacher(Teacher):
    """A PyTorch teacher in eval mode; forward hooks read the features of named layers."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle, self.model = bundle, bundle.model.eval()
        self.name = bundle.path.name if bundle.path else bundle.arch.name
        self.kind, self.signature, self.task = "bundle", bundle.signature, bundle.task
        self.features, self._hooks = {}, []
        self.device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        self._wants: dict[str, bool] = {}

    def to(self, device: torch.device) -> TorchTeacher:
        self.model.to(device)
        self.device = device
        return self

    def watch(self, layers: list[str]) -> None:
        modules = dict(self.model.named_modules())
        targets = [layer_named(modules, name, "teacher") for name in layers]  # every name checked before any hook
        for module, name in zip(targets, layers):
            self._hooks.append(module.register_forward_hook(capture(self.features, name)))

    def watch_transformer(self, *, hidden: bool, attention: bool) -> None:
        from compress.transformer_kd import require_transformer
        require_transformer(self.model, "teacher", self.name)
        self._wants = {"hidden": hidden, "attention": attention}

    def _forward(self, x: Any) -> torch.Tensor:
        first = as_args(x)[0]
        if first.device != self.device:
            self.to(first.device)
        try:
            if self._wants and self.collect:
                from compress.transformer_kd import TransformerKDError, forward_features
                out, self.transformer = forward_features(self.model, as_args(x), **self._wants)
            else:
                out = call(self.model, x)
        except TransformerKDError:
            raise
        except Exception as exc:  # a user's model may raise anything
            raise ModelError(f"The teacher fails on inputs of shape {shapes(x)}: {first_line(exc)}.") from exc
        return task_output(out, self.signature)

    def identity(self) -> dict[str, Any]:
        path = self.bundle.path
        if path is not None and path.is_dir():  # a model directory: its weights file
            path = path / "model.safetensors"
        digest = sha256_file(path) if path is not None and path.is_file() else state_fingerprint(self.model)
        return {"name": self.name, "kind": self.kind, "sha256": digest}

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._wants, self.transformer = {}, None
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
        self.signature, self.task, self.features = meta.signature, meta.task, {}

    def _forward(self, x: Any) -> torch.Tensor:
        """Runs the batch (every input) in chunks the artifact accepts (a TensorRT profile or a fixed ONNX
        batch); the runner feeds the inputs by name and the task output is read by name."""
        arrays = numpy_inputs(x)
        total = len(arrays[0])
        step = self.runner.max_batch or total
        outs = []
        for i in range(0, total, step):
            chunk = tuple(a[i:i + step] for a in arrays)
            try:
                outs.append(self._run(chunk))
            except Exception as exc:  # runtimes raise their own exception types
                shown = ", ".join(str(tuple(a.shape)) for a in chunk)
                raise ModelError(f"The teacher {self.name} fails on a batch of shape {shown} through "
                                 f"{self.backend}: {first_line(exc)}.") from exc
        return torch.from_numpy(np.concatenate(outs)).to(as_args(x)[0].device)

    def _run(self, chunk: tuple[np.ndarray, ...]) -> np.ndarray:
        """The task output of one chunk: a bare array for one input, the tuple in the signature's order else."""
        result = self.runner.run(chunk[0] if len(chunk) == 1 else chunk)
        if isinstance(result, (list, tuple)):  # every output: pick the task's by name
            names = list(getattr(self.runner, "output_names", None) or [])
            result = select_output(list(result), names, self.signature)
        return np.asarray(result, dtype=np.float32)

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


# --- pairing a student's inputs with the teacher's ------------------------------------------------

def _images_pair(student: TensorSpec, teacher: TensorSpec, data_channels: int) -> bool:
    """Same spatial size; channels equal, or 1 vs 3 on greyscale data."""
    grey = data_channels == 1 and {student.channels, teacher.channels} <= {1, 3}
    return student.size == teacher.size and (student.channels == teacher.channels or grey)


def _check_inputs(student: Signature, teacher: Signature, data_channels: int | dict[str, int]) -> None:
    """A DistillError unless the student's inputs are the teacher's (names, kinds, fixed dims)."""
    problem = None
    if student.input_names != teacher.input_names:
        problem = "different inputs"
    else:
        for s, t in zip(student.inputs, teacher.inputs):
            channels = data_channels.get(s.name, 0) if isinstance(data_channels, dict) else data_channels
            if s.kind is not t.kind:
                problem = f"input '{s.name}' is {s.kind.value} for one and {t.kind.value} for the other"
            elif s.kind is InputKind.IMAGE and not _images_pair(s, t, channels):
                problem = f"image '{s.name}' differs in size or channels"
            elif not _dims_agree(s.sample_shape, t.sample_shape):
                problem = f"input '{s.name}' differs in shape"
            if problem:
                break
    if problem:
        raise DistillError(f"The student takes {inputs_text(student)} but the teacher {inputs_text(teacher)} "
                           f"({problem}); distillation feeds both the same batch, so build the student with the "
                           "teacher's inputs.")


def _check_tokenizers(student: Signature, teacher: Signature) -> None:
    """A DistillError unless both text models map words to the same token ids (the same vocabulary)."""
    s, t = student.text, teacher.text
    if s is None or t is None or s.sha256 == t.sha256:
        return
    if s.tokenizer().get_vocab() != t.tokenizer().get_vocab():
        raise DistillError("The student's tokenizer has another vocabulary than the teacher's; distillation feeds "
                           "both the same token ids, so build the student with the teacher's tokenizer.")


def _dims_agree(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(isinstance(x, str) or isinstance(y, str) or x == y for x, y in zip(a, b))


def _conversion(student: TensorSpec, teacher: TensorSpec) -> tuple | None:
    """How a student's input becomes the teacher's: (student mean, std, teacher mean, std, is image), or None
    when they are prepared alike. Images and standardised features are converted; other kinds pass as they are."""
    if student.kind not in (InputKind.IMAGE, InputKind.FEATURES) or not (student.mean or teacher.mean):
        return None
    image = student.kind is InputKind.IMAGE
    width = len(student.mean or teacher.mean)
    s_mean, s_std = _stats(student, width, image)
    t_mean, t_std = _stats(teacher, width, image)
    if s_mean.shape == t_mean.shape and torch.equal(s_mean, t_mean) and torch.equal(s_std, t_std):
        return None
    return s_mean, s_std, t_mean, t_std, image


def _apply(x: torch.Tensor, convert: tuple | None) -> torch.Tensor:
    if convert is None:
        return x
    s_mean, s_std, t_mean, t_std = (a.to(x.device, x.dtype) for a in convert[:4])
    raw = x * s_std + s_mean
    if convert[4] and raw.shape[1] != t_mean.shape[0]:  # greyscale: 3 equal channels <-> 1
        raw = raw.mean(1, keepdim=True) if raw.shape[1] == 3 else raw.expand(-1, 3, -1, -1)
    return (raw - t_mean) / t_std


def _stats(spec: TensorSpec, width: int, image: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std shaped to broadcast over a batch: (C, 1, 1) for an image, (F,) for features (0 and 1 when
    the features are not standardised)."""
    mean = torch.tensor(spec.mean or (0.0,) * width, dtype=torch.float32)
    std = torch.tensor(spec.std or (1.0,) * width, dtype=torch.float32)
    return (mean.view(-1, 1, 1), std.view(-1, 1, 1)) if image else (mean, std)


def shape_text(spec: InputSpec) -> str:
    c, h, w = spec.shape
    return f"{c}x{h}x{w}"


def inputs_text(signature: Signature) -> str:
    """``image (image 1x8x8), meta (features 4)``: a signature's inputs in words."""
    return ", ".join(f"{i.name} ({i.kind.value} {'x'.join(map(str, i.sample_shape))})" for i in signature.inputs)


__all__ = ["DistillError", "RunnerTeacher", "Teacher", "TorchTeacher", "capture", "inputs_text", "layer_named",
           "open_teacher", "shape_text"]
