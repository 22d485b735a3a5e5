"""Tasks: what a model's output means, how its targets look, which metrics judge it and which one decides.

- ``classification``: one integer class per sample; the output is one logit per class.
- ``multilabel``: a 0/1 vector per sample; the output is one logit per label.
- ``regression``: a number (or a vector of numbers) per sample; the output is the prediction.

Every metric has a direction (higher or lower is better) and a scale: bounded metrics (top-1, AP,
r2...) compare in points (hundredths), unbounded ones (mae, rmse, loss) in percent of the baseline.
This module is torch-free; the losses live in :mod:`deepslim.losses`, the metrics in
:mod:`deepslim.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import numpy as np

from deepslim.errors import ConfigError, DatasetError


class TaskKind(str, Enum):
    CLASSIFICATION = "classification"
    MULTILABEL = "multilabel"
    REGRESSION = "regression"


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool
    bounded: bool  # in [0, 1] (or [-inf, 1] for r2): differences are points; else percent of the baseline
    label: str


METRICS: dict[str, MetricInfo] = {m.name: m for m in [
    MetricInfo("top1", True, True, "top-1"),
    MetricInfo("top5", True, True, "top-5"),
    MetricInfo("roc_auc_macro", True, True, "macro ROC-AUC"),
    MetricInfo("ap_macro", True, True, "macro AP"),
    MetricInfo("f1_macro", True, True, "macro F1"),
    MetricInfo("f1_micro", True, True, "micro F1"),
    MetricInfo("map", True, True, "mAP"),
    MetricInfo("subset_accuracy", True, True, "subset accuracy"),
    MetricInfo("agreement", True, True, "agreement"),
    MetricInfo("r2", True, True, "R²"),
    MetricInfo("mae", False, False, "MAE"),
    MetricInfo("rmse", False, False, "RMSE"),
    MetricInfo("loss", False, False, "loss"),
]}

TASK_METRICS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.CLASSIFICATION: ("top1", "top5", "roc_auc_macro", "ap_macro", "f1_macro", "loss"),
    TaskKind.MULTILABEL: ("map", "f1_micro", "f1_macro", "subset_accuracy", "loss"),
    TaskKind.REGRESSION: ("mae", "rmse", "r2", "loss"),
}
PRIMARY: dict[TaskKind, str] = {TaskKind.CLASSIFICATION: "top1", TaskKind.MULTILABEL: "map",
                                TaskKind.REGRESSION: "r2"}
REGRESSION_LOSSES = ("mse", "huber")
TOP5_MIN = 5  # top-5 is measured only with more classes than this


def metric_info(name: str) -> MetricInfo:
    """The registry entry of ``name``; a user's metric (``file.py:fn``) is higher-is-better and bounded unless
    its name says ``loss``/``error``."""
    if name in METRICS:
        return METRICS[name]
    lower = any(word in name.lower() for word in ("loss", "error", "mae", "mse", "rmse"))
    return MetricInfo(name, not lower, not lower, name)


@dataclass(frozen=True)
class Task:
    """The task a model solves, with the names of its classes, labels or targets."""

    kind: TaskKind
    names: tuple[str, ...]
    primary: str = ""
    loss: str = ""  # regression: mse or huber
    offset: tuple[float, ...] = ()  # regression: the train split's target mean and std; the loss compares
    scale: tuple[float, ...] = ()   # (prediction - offset) / scale with (target - offset) / scale

    def __post_init__(self) -> None:
        if not self.names:
            raise ConfigError("A task needs at least one class, label or target name.")
        if not self.primary:
            object.__setattr__(self, "primary", PRIMARY[self.kind])
        if not self.loss:
            object.__setattr__(self, "loss", "mse" if self.kind is TaskKind.REGRESSION else "")
        if self.kind is TaskKind.REGRESSION and self.loss not in REGRESSION_LOSSES:
            raise ConfigError(f"--loss for regression must be mse or huber, got '{self.loss}'.")

    @property
    def width(self) -> int:
        """How many numbers the task output has per sample."""
        return len(self.names)

    @property
    def metrics(self) -> tuple[str, ...]:
        return TASK_METRICS[self.kind]

    @property
    def primary_info(self) -> MetricInfo:
        return metric_info(self.primary)

    @property
    def is_classification(self) -> bool:
        return self.kind is TaskKind.CLASSIFICATION

    def with_primary(self, name: str | None) -> Task:
        if not name:
            return self
        if name == "top5" and self.width <= TOP5_MIN:
            raise ConfigError(f"--primary-metric top5 needs more than {TOP5_MIN} classes; this task has {self.width}.")
        if name in METRICS and name not in self.metrics:
            raise ConfigError(f"--primary-metric {name} is not a {self.kind.value} metric; choose one of "
                              f"{', '.join(m for m in self.metrics if m != 'top5' or self.width > 5)}.")
        return replace(self, primary=name)

    def score(self, metrics: dict[str, Any]) -> float:
        """The primary metric as a number where higher is always better (for picking the best epoch)."""
        value = metrics.get(self.primary)
        if value is None:
            raise ConfigError(f"The primary metric '{self.primary}' was not measured.")
        return float(value) if self.primary_info.higher_is_better else -float(value)

    def drop(self, base: dict[str, Any], new: dict[str, Any], metric: str | None = None) -> float:
        """How much worse ``new`` is than ``base`` on ``metric`` (the primary one by default): in points for a
        bounded metric, in percent of the baseline for an unbounded one; negative when it is better."""
        name = metric or self.primary
        info = metric_info(name)
        if name not in base or name not in new:
            raise ConfigError(f"The metric '{name}' was not measured on both models (too few samples of a kind?).")
        b, n = float(base[name]), float(new[name])
        worse = (b - n) if info.higher_is_better else (n - b)
        return 100.0 * worse if info.bounded else 100.0 * worse / max(abs(b), 1e-12)

    def drop_unit(self, metric: str | None = None) -> str:
        return "points" if metric_info(metric or self.primary).bounded else "% of the baseline"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "names": list(self.names), "primary": self.primary}
        if self.loss:
            out["loss"] = self.loss
        if self.scale:
            out.update(offset=list(self.offset), scale=list(self.scale))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        return cls(TaskKind(data["kind"]), tuple(str(n) for n in data["names"]), str(data.get("primary", "")),
                   str(data.get("loss", "")), tuple(map(float, data.get("offset", ()))),
                   tuple(map(float, data.get("scale", ()))))

    def with_target_scale(self, targets: np.ndarray) -> Task:
        """A regression task that standardises its loss with the mean and std of ``targets`` (the train split)."""
        if self.kind is not TaskKind.REGRESSION or self.scale:
            return self
        values = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
        mean, std = values.mean(axis=0), np.maximum(values.std(axis=0), 1e-6)
        return replace(self, offset=tuple(map(float, mean)), scale=tuple(map(float, std)))

    @classmethod
    def classification(cls, classes: list[str] | tuple[str, ...]) -> Task:
        return cls(TaskKind.CLASSIFICATION, tuple(map(str, classes)))


# --- targets ------------------------------------------------------------------------------------

def target_array(value: Any) -> np.ndarray:
    """A target as a numpy array (a number becomes a 0-d array), without changing its dtype family."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == object:
        raise DatasetError(f"A target {value!r} is not a number or an array of numbers.")
    return arr


def infer_kind(samples: list[Any]) -> TaskKind:
    """The task the targets fit: integers (or bools) -> classification; 0/1 vectors -> multilabel; floats ->
    regression. Anything else is a DatasetError."""
    arrays = [target_array(s) for s in samples]
    if not arrays:
        raise DatasetError("The dataset has no targets to infer a task from.")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DatasetError(f"The targets have different shapes ({sorted(shapes)[:3]}); they fit no task.")
    first = arrays[0]
    integral = all(a.dtype.kind in "iub" for a in arrays)
    floating = all(a.dtype.kind == "f" for a in arrays)
    if not integral and not floating:
        raise DatasetError(f"The targets have dtype {first.dtype}; they fit no task (give integers for "
                           "classes, 0/1 vectors for labels, floats for regression).")
    if first.ndim == 0:
        return TaskKind.CLASSIFICATION if integral else TaskKind.REGRESSION
    if first.ndim == 1:
        binary = all(np.isin(a, (0, 1)).all() for a in arrays)
        return TaskKind.MULTILABEL if integral and binary else TaskKind.REGRESSION
    raise DatasetError(f"The targets have shape {first.shape}; a target is a number or a vector.")


def check_target(task: Task, value: Any) -> np.ndarray:
    """``value`` as the numpy target ``task`` trains on, or a DatasetError saying why it does not fit.

    classification: an int64 scalar in [0, classes); multilabel: a float32 0/1 vector of the label count;
    regression: float32 of the target count (a scalar for one target)."""
    arr = target_array(value)
    if task.kind is TaskKind.CLASSIFICATION:
        return _class_target(task, arr)
    if task.kind is TaskKind.MULTILABEL:
        if arr.shape != (task.width,) or not np.isin(arr, (0, 1)).all():
            raise DatasetError(f"A multilabel target must be a 0/1 vector of {task.width} labels, got {arr.tolist()}.")
        return arr.astype(np.float32)
    if arr.dtype.kind not in "iuf":
        raise DatasetError(f"A regression target must be numeric, got dtype {arr.dtype}.")
    want = () if task.width == 1 else (task.width,)
    if arr.shape not in (want, (task.width,)):
        raise DatasetError(f"A regression target must have {task.width} value(s), got shape {arr.shape}.")
    return arr.astype(np.float32).reshape(want)


def _class_target(task: Task, arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 0 or arr.dtype.kind not in "iub":
        kind = "a float" if arr.dtype.kind == "f" else f"shape {arr.shape} dtype {arr.dtype}"
        raise DatasetError(f"A classification target must be one integer class, got {kind} ({arr.tolist()}); "
                           "for numeric targets use --task regression.")
    index = int(arr)
    if not 0 <= index < task.width:
        raise DatasetError(f"Class index {index} is outside the model's {task.width} classes.")
    return np.asarray(index, dtype=np.int64)


def task_for_targets(samples: list[Any], *, kind: TaskKind | str | None = None,
                     names: list[str] | tuple[str, ...] | None = None, count: int | None = None) -> Task:
    """The task of a dataset from a sample of its targets: ``kind`` when the user said (``--task``), else
    inferred; ``names`` are class/label/target names (default ``0..N-1`` or ``target``); ``count`` is the
    number of classes when the sample may miss some."""
    inferred = infer_kind(samples)
    chosen = TaskKind(kind) if kind else inferred
    arrays = [target_array(s) for s in samples]
    if chosen is TaskKind.CLASSIFICATION:
        if inferred is not TaskKind.CLASSIFICATION:
            raise DatasetError(f"--task classification needs one integer class per sample, but the targets look "
                               f"like {inferred.value} targets.")
        width = len(names) if names else max(count or 0, int(max(a.max() for a in arrays)) + 1)
    elif chosen is TaskKind.MULTILABEL:
        binary = all(a.ndim == 1 and a.dtype.kind in "iubf" and np.isin(a, (0, 1)).all() for a in arrays)
        if not binary:
            raise DatasetError(f"--task multilabel needs 0/1 vectors, but the targets look like {inferred.value} "
                               "targets.")
        width = arrays[0].shape[0]
    else:
        width = 1 if arrays[0].ndim == 0 else arrays[0].shape[0]
    if names is None:
        names = ["target"] if chosen is TaskKind.REGRESSION and width == 1 else [str(i) for i in range(width)]
    if len(names) != width:
        raise DatasetError(f"{len(names)} names were given for {width} {chosen.value} outputs.")
    return Task(chosen, tuple(map(str, names)))
