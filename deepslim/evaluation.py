"""Evaluate a PyTorch model on a dataset split."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepslim.data import check_split, open_dataset, subset
from deepslim.errors import ConfigError, DatasetError, ModelError, first_line
from deepslim.metrics import classification_metrics
from deepslim.models import ModelBundle


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


def predict(model: nn.Module, dataset: Dataset, *, batch_size: int = 256,
            device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of ``model`` over ``dataset``; the model goes back to its mode and device after.

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
            for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                logits.append(_forward(model, x.to(dev)).float().cpu())
                labels.append(y)
    finally:
        model.train(was_training).to(home)
    if not logits:
        raise DatasetError("The evaluation split is empty.")
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def predict_all(model: nn.Module, dataset: Dataset, *, batch_size: int = 256,
                device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict` over the whole dataset; under torchrun each rank predicts its shard and every
    rank gets the whole result, in the dataset's order."""
    from deepslim.distributed import context, gather_shards, shard
    ctx = context()
    logits, labels = predict(model, shard(dataset, ctx), batch_size=batch_size, device=device)
    return gather_shards(logits, len(dataset), ctx), gather_shards(labels, len(dataset), ctx)


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        return model(x)
    except RuntimeError as exc:
        raise ModelError(f"The model fails on inputs of shape {tuple(x.shape)}: {first_line(exc)}; check "
                         "--input-size and --channels.") from exc


def evaluate(bundle: ModelBundle, dataset: str = "digits", *, split: str = "test", limit: int | None = None,
             batch_size: int = 256, severity: int = 3, device: str = "auto") -> EvalResult:
    """top-1, top-5 (more than 5 classes only), macro ROC-AUC and macro AP of ``bundle`` on ``dataset``'s ``split``."""
    check_split(split)
    source = open_dataset(dataset, severity=severity)
    check_compatible(bundle, source.info.num_classes, dataset)
    ds = subset(source.split(split, bundle.input_spec), limit)
    logits, labels = predict(bundle.model, ds, batch_size=batch_size, device=device)
    return EvalResult(source.info.name, split, classification_metrics(logits, labels), logits, labels)


def check_compatible(bundle: ModelBundle, num_classes: int, dataset: str) -> None:
    if bundle.num_classes != num_classes:
        name = bundle.path.name if bundle.path else "The model"
        raise DatasetError(f"{name} predicts {bundle.num_classes} classes but dataset '{dataset}' has "
                           f"{num_classes}.")
