"""Evaluate a PyTorch model on a dataset split."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepslim.data import check_split, collate_for, open_dataset, subset
from deepslim.errors import ConfigError, DatasetError, ModelError, first_line
from deepslim.metrics import task_metrics
from deepslim.modelio import call, shapes, task_output, to_device
from deepslim.models import ModelBundle
from deepslim.signature import Signature


@dataclass(frozen=True)
class EvalResult:
    dataset: str
    split: str
    metrics: dict[str, float]
    logits: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got '{device}'.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA GPU is available; use --device cpu.")
    return torch.device(device)


def predict(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, device: str = "auto",
            signature: Signature | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The task outputs (logits, or predictions) and targets of ``model`` over ``dataset``; the model goes back
    to its mode and device after. ``signature`` says which output the task reads (default: the only one).

    The model moves to the device outside inference mode: parameters moved inside it would
    become inference tensors that autograd (fine-tuning, pruning) can no longer use."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size}.")
    dev = resolve_device(device)
    was_training = model.training
    home = next((p.device for p in model.parameters()), dev)
    model.eval().to(dev)
    logits, labels = [], []
    try:
        with torch.inference_mode():
            for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_for(dataset)):
                logits.append(_forward(model, to_device(x, dev), signature).float().cpu())
                labels.append(y)
    finally:
        model.train(was_training).to(home)
    if not logits:
        raise DatasetError("The evaluation split is empty.")
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def predict_all(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, device: str = "auto",
                signature: Signature | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict` over the whole dataset; under torchrun each rank predicts its shard and every
    rank gets the whole result, in the dataset's order."""
    from deepslim.distributed import context, gather_shards, shard
    ctx = context()
    logits, labels = predict(model, shard(dataset, ctx), batch_size=batch_size, device=device, signature=signature)
    return gather_shards(logits, len(dataset), ctx), gather_shards(labels, len(dataset), ctx)


def _forward(model: nn.Module, x, signature: Signature | None) -> torch.Tensor:
    try:
        out = call(model, x)
    except RuntimeError as exc:
        raise ModelError(f"The model fails on inputs of shape {shapes(x)}: {first_line(exc)}; check "
                         "--input-size and --channels.") from exc
    if signature is None:
        if not isinstance(out, torch.Tensor):
            raise ModelError("The model returns several outputs; say which one the task reads (a signature).")
        return out
    return task_output(out, signature)


def evaluate(bundle: ModelBundle, dataset: str = "digits", *, split: str = "test", limit: int | None = None,
             batch_size: int = 256, severity: int = 3, device: str = "auto") -> EvalResult:
    """The task's metrics (:func:`deepslim.metrics.task_metrics`) of ``bundle`` on ``dataset``'s ``split``."""
    check_split(split)
    source = open_dataset(dataset, severity=severity)
    check_compatible(bundle, source.info, dataset)
    ds = subset(source.split(split, bundle.signature, task=bundle.task), limit)
    logits, labels = predict(bundle.model, ds, batch_size=batch_size, device=device, signature=bundle.signature)
    return EvalResult(source.info.name, split, task_metrics(bundle.task, logits, labels), logits, labels)


def check_compatible(bundle: ModelBundle, info, dataset: str) -> None:
    """A DatasetError unless the dataset's task fits the model's: the same kind and output count.
    ``info`` is a :class:`~deepslim.data.DatasetInfo` (a bare class count is accepted)."""
    name = bundle.path.name if bundle.path else "The model"
    if isinstance(info, int):
        width, kind = info, bundle.task.kind
    else:
        task = info.task_of()
        width, kind = task.width, task.kind
        if kind is not bundle.task.kind:
            if _retargetable(bundle, task):
                return  # integer targets read as numbers: the model's own task decides
            raise DatasetError(f"{name} solves a {bundle.task.kind.value} task but dataset '{dataset}' has "
                               f"{kind.value} targets.")
    if bundle.num_classes != width:
        what = {"classification": "classes", "multilabel": "labels"}.get(bundle.task.kind.value, "targets")
        raise DatasetError(f"{name} predicts {bundle.num_classes} {what} but dataset '{dataset}' has {width}.")


def _retargetable(bundle: ModelBundle, data_task) -> bool:
    """Integer targets can train a regression (``--task regression``)."""
    return bundle.task.kind.value == "regression" and data_task.kind.value == "classification"
