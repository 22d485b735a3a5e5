"""Turning a dataset's ``(inputs, target)`` into what a model with a given signature and task eats.

``inputs`` is a tensor (one input), a tuple/list (in ``forward``'s order) or a dict keyed by input
name. Each input is prepared by its kind (:mod:`deepslim.signature`): images are resized,
channel-adapted, augmented (train only) and normalised; features are standardised with the
statistics the signature records; tokens, masks and plain tensors are only given their dtype.
Targets go through :func:`deepslim.tasks.check_target`, the one place a target is converted.

A prepared item is ``(x, target)``: ``x`` a tensor for a one-input model (so a batch is a tensor, as
before signatures), else a tuple of tensors in the signature's order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from deepslim.errors import DatasetError
from deepslim.signature import INTEGER_DTYPES, BATCH, InputKind, Signature, TensorSpec
from deepslim.tasks import Task, check_target

Augment = Callable[[torch.Tensor], torch.Tensor]


def input_tuple(inputs: Any, names: Sequence[str], *, where: str = "the dataset") -> tuple[Any, ...]:
    """``inputs`` as a tuple in the order of ``names`` (a dict must have exactly those keys)."""
    if isinstance(inputs, Mapping):
        missing = [n for n in names if n not in inputs]
        extra = [k for k in inputs if k not in names]
        if missing or extra:
            raise DatasetError(f"{where} gives the inputs {sorted(map(str, inputs))} but the model takes "
                               f"{list(names)}" + (f" (missing {missing})" if missing else "") + ".")
        return tuple(inputs[n] for n in names)
    if isinstance(inputs, (tuple, list)):
        if len(inputs) != len(names):
            raise DatasetError(f"{where} gives {len(inputs)} inputs per sample but the model takes {len(names)} "
                               f"({', '.join(names)}).")
        return tuple(inputs)
    if len(names) != 1:
        raise DatasetError(f"{where} gives one input per sample but the model takes {len(names)} "
                           f"({', '.join(names)}); return a tuple or a dict keyed by input name.")
    return (inputs,)


def prepare_input(value: Any, spec: TensorSpec, augment: Augment | None = None) -> torch.Tensor:
    """One sample's input prepared for ``spec`` (see the module docstring)."""
    if spec.kind is InputKind.IMAGE:
        return _image(value, spec, augment)
    dtype = getattr(torch, spec.dtype)
    tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    if spec.dtype in INTEGER_DTYPES and tensor.is_floating_point():
        raise DatasetError(f"Input '{spec.name}' must hold integers ({spec.dtype}), got {tensor.dtype}.")
    tensor = tensor.to(dtype)
    _check_shape(tensor, spec)
    if spec.kind is InputKind.FEATURES and spec.mean:
        mean = torch.tensor(spec.mean, dtype=tensor.dtype)
        std = torch.tensor(spec.std, dtype=tensor.dtype)
        tensor = (tensor - mean) / std
    return tensor


def _image(value: Any, spec: TensorSpec, augment: Augment | None) -> torch.Tensor:
    from deepslim.data import adapt_channels, normalize, resize
    image = torch.as_tensor(value, dtype=torch.float32)
    if image.dim() == 2:
        image = image.unsqueeze(0)
    if image.dim() != 3:
        raise DatasetError(f"Image input '{spec.name}' must be (C, H, W), got shape {tuple(image.shape)}.")
    image = resize(adapt_channels(image, spec.channels), spec.size)
    if augment is not None:
        image = augment(image)
    return normalize(image, spec)


def _check_shape(tensor: torch.Tensor, spec: TensorSpec) -> None:
    want = spec.sample_shape
    ok = len(want) == tensor.dim() and all(isinstance(w, str) or w == h for w, h in zip(want, tensor.shape))
    if not ok:
        shown = [d for d in want]
        raise DatasetError(f"Input '{spec.name}' must have the per-sample shape {shown}, got {list(tensor.shape)}.")


class Prepared(Dataset):
    """``base``'s items prepared for ``signature`` and ``task`` (``augment`` applies to image inputs)."""

    def __init__(self, base: Dataset, signature: Signature, task: Task, augment: Augment | None = None,
                 where: str = "the dataset") -> None:
        self.base, self.signature, self.task, self.augment, self.where = base, signature, task, augment, where

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        item = self.base[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DatasetError(f"{self.where} must give (inputs, target) pairs; item {index} is "
                               f"{type(item).__name__}.")
        inputs, target = item
        values = input_tuple(inputs, self.signature.input_names, where=self.where)
        xs = tuple(prepare_input(v, s, self.augment) for v, s in zip(values, self.signature.inputs))
        y = torch.from_numpy(check_target(self.task, target))
        return (xs[0] if len(xs) == 1 else xs), y


def prepare(base: Dataset, signature: Signature, task: Task, augment: Augment | None = None, *,
            where: str = "the dataset") -> Prepared:
    return Prepared(base, signature, task, augment, where)


# --- describing what a dataset gives -------------------------------------------------------------

def propose_inputs(probe: list[Any], names: Sequence[str] | None = None) -> tuple[TensorSpec, ...]:
    """The inputs a set of samples' ``inputs`` suggests for a new model: dict keys name them, else ``x`` (one)
    or ``x0``, ``x1``...; a float (C, H, W) with C <= 4 is an image (mean/std per channel from the
    probe), a float vector is features (not standardised: a file dataset's numbers are its own), other
    float tensors are plain tensors, integer vectors tokens (``mask`` when the name says so)."""
    first = probe[0]
    if isinstance(first, Mapping):
        keys = list(first)
        columns = [[p[k] for p in probe] for k in keys]
    elif isinstance(first, (tuple, list)):
        keys = list(names) if names and len(names) == len(first) else [f"x{i}" for i in range(len(first))]
        columns = [[p[i] for p in probe] for i in range(len(first))]
    else:
        keys, columns = ["x"], [probe]
    return tuple(_propose(str(k), c) for k, c in zip(keys, columns))


def _propose(name: str, values: list[Any]) -> TensorSpec:
    tensors = [torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v) for v in values]
    first = tensors[0]
    if any(t.shape != first.shape for t in tensors) and first.dim() != 3:
        raise DatasetError(f"Input '{name}' has samples of different shapes ({tuple(first.shape)}, ...); pad them "
                           "to one shape.")
    dtype = str(first.dtype).replace("torch.", "")
    if not first.is_floating_point():
        kind = InputKind.MASK if "mask" in name.lower() else InputKind.TOKENS if first.dim() == 1 else InputKind.TENSOR
        dims = ("sequence",) if kind in (InputKind.TOKENS, InputKind.MASK) else tuple(first.shape)
        return TensorSpec(name, (BATCH, *dims), "int64" if dtype != "bool" else "bool", kind)
    if first.dim() == 3 and first.shape[0] <= 4:
        stack = torch.stack([t.float() for t in tensors]) if all(t.shape == first.shape for t in tensors) else None
        if stack is None:
            raise DatasetError(f"Image input '{name}' has samples of different sizes; give one size.")
        mean = stack.mean(dim=(0, 2, 3)).tolist()
        std = stack.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
        order = "GRAY" if first.shape[0] == 1 else "RGB"
        return TensorSpec(name, (BATCH, *first.shape), "float32", InputKind.IMAGE, tuple(mean), tuple(std), order)
    kind = InputKind.FEATURES if first.dim() == 1 else InputKind.TENSOR
    return TensorSpec(name, (BATCH, *first.shape), "float32", kind)
