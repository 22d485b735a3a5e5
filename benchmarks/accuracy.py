"""Accuracy of any runner on a dataset split, by the one metrics harness (or a user metric)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.runners import Runner
from deepslim.data import check_split, open_dataset, subset
from deepslim.errors import ConfigError, DatasetError, first_line
from deepslim.metrics import classification_metrics
from deepslim.usercode import user_attribute

Metric = Callable[[np.ndarray, np.ndarray], dict[str, float]]


def predict(runner: Runner, dataset: str, *, split: str = "test", limit: int | None = None, batch: int = 32,
            severity: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of ``runner`` over a split, fed with the artifact's own input spec."""
    check_split(split)
    source = open_dataset(dataset, severity=severity)
    if source.info.num_classes != len(runner.meta.classes):
        raise DatasetError(f"{runner.artifact.name} predicts {len(runner.meta.classes)} classes but dataset "
                           f"'{dataset}' has {source.info.num_classes}.")
    ds = subset(source.split(split, runner.meta.input_spec), limit)
    logits, labels = [], []
    with runner:
        runner.prepare(batch)
        for x, y in torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=False):
            chunk, pad = x.numpy(), batch - len(x)  # static-shape runners get full batches; padding is dropped
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            logits.append(runner.run(chunk)[: batch - pad])
            labels.append(y.numpy())
    return np.concatenate(logits), np.concatenate(labels)


def score(logits: np.ndarray, labels: np.ndarray, *, reference: np.ndarray | None = None,
          metric: Metric | None = None) -> dict[str, float]:
    if metric is None:
        return classification_metrics(logits, labels, reference_logits=reference)
    try:
        values = metric(logits, labels)
    except Exception as exc:  # user code: one sentence
        raise ConfigError(f"The --metric function failed: {type(exc).__name__}: {first_line(exc)}.") from exc
    if not isinstance(values, dict) or not all(isinstance(v, (int, float)) for v in values.values()):
        raise ConfigError("The --metric function must return a dict of metric names to numbers.")
    out = {k: float(v) for k, v in values.items()}
    if reference is not None:
        out["agreement"] = float(np.mean(reference.argmax(1) == logits.argmax(1)))
    return out


def load_metric(spec: str) -> Metric:
    """``path/file.py:fn`` where ``fn(outputs, targets)`` returns ``{name: value}``."""
    path, _, name = spec.rpartition(":")
    file = Path(path)
    if not path.endswith(".py") or not file.is_file():
        raise ConfigError(f"--metric must be path/to/file.py:function, and {path or spec} is not a file.")
    fn = user_attribute(file, name, error=ConfigError)
    if not callable(fn) or len(inspect.signature(fn).parameters) < 2:
        raise ConfigError(f"{file} needs a function {name}(outputs, targets) returning named values.")
    return fn
