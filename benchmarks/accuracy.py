"""Accuracy of any runner on a dataset split, by the one metrics harness of its task (or a user metric)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.runners import Runner
from benchmarks.runners.base import from_tuple, pad_batch
from deepslim.data import DatasetInfo, check_split, open_dataset, subset
from deepslim.errors import ConfigError, DatasetError, first_line
from deepslim.metrics import classification_metrics, sigmoid, task_metrics
from deepslim.modelio import numpy_inputs
from deepslim.tasks import Task, TaskKind
from deepslim.usercode import user_attribute

Metric = Callable[[np.ndarray, np.ndarray], dict[str, float]]


def predict(runner: Runner, dataset: str, *, split: str = "test", limit: int | None = None, batch: int = 32,
            severity: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Task outputs and targets of ``runner`` over a split, every input fed as the artifact's signature says."""
    check_split(split)
    source = open_dataset(dataset, severity=severity)
    check_task(runner.meta.task, source.info, dataset, runner.artifact.name)
    ds = subset(source.split(split, runner.meta.signature, task=runner.meta.task), limit)
    outputs, targets = [], []
    with runner:
        runner.prepare(batch)
        for x, y in torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=False):
            arrays = numpy_inputs(x)
            rows = len(arrays[0])  # static-shape runners get full batches; the padding is dropped
            outputs.append(np.asarray(runner.run(pad_batch(from_tuple(arrays), batch)))[:rows])
            targets.append(np.asarray(y))
    if not outputs:
        raise DatasetError(f"The {split} split of '{dataset}' is empty.")
    return np.concatenate(outputs), np.concatenate(targets)


def check_task(task: Task, info: DatasetInfo, dataset: str, name: str) -> None:
    """A DatasetError unless ``dataset``'s targets fit the artifact's task: the same kind and output count
    (integer targets may feed a regression)."""
    data = info.task_of()
    if data.kind is not task.kind:
        if task.kind is TaskKind.REGRESSION and data.kind is TaskKind.CLASSIFICATION:
            return
        raise DatasetError(f"{name} solves a {task.kind.value} task but dataset '{dataset}' has {data.kind.value} "
                           "targets.")
    if data.width != task.width:
        what = {TaskKind.CLASSIFICATION: "classes", TaskKind.MULTILABEL: "labels"}.get(task.kind, "targets")
        raise DatasetError(f"{name} predicts {task.width} {what} but dataset '{dataset}' has {data.width}.")


def score(outputs: np.ndarray, targets: np.ndarray, *, task: Task | None = None, reference: np.ndarray | None = None,
          metric: Metric | None = None) -> dict[str, float]:
    """The task's metrics (:func:`deepslim.metrics.task_metrics`; classification when ``task`` is None), or
    the user's ``metric``; ``agreement`` with a ``reference`` output (the first artifact's)."""
    if metric is None:
        if task is None:
            return classification_metrics(outputs, targets, reference_logits=reference)
        return task_metrics(task, outputs, targets, reference=reference)
    try:
        values = metric(outputs, targets)
    except Exception as exc:  # user code: one sentence
        raise ConfigError(f"The --metric function failed: {type(exc).__name__}: {first_line(exc)}.") from exc
    if not isinstance(values, dict) or not all(isinstance(v, (int, float)) for v in values.values()):
        raise ConfigError("The --metric function must return a dict of metric names to numbers.")
    out = {k: float(v) for k, v in values.items()}
    agreed = agreement(task, outputs, reference)
    if agreed is not None:
        out["agreement"] = agreed
    return out


def agreement(task: Task | None, outputs: np.ndarray, reference: np.ndarray | None) -> float | None:
    """How often ``outputs`` decide as ``reference`` does: the same top-1 class, or the same labels at 0.5;
    None for a regression (its outputs are not decisions) or without a reference."""
    if reference is None or (task is not None and task.kind is TaskKind.REGRESSION):
        return None
    if task is not None and task.kind is TaskKind.MULTILABEL:
        return float(np.mean((sigmoid(np.asarray(reference)) >= 0.5) == (sigmoid(np.asarray(outputs)) >= 0.5)))
    return float(np.mean(np.asarray(reference).argmax(1) == np.asarray(outputs).argmax(1)))


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
