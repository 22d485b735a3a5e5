"""Metrics of every task from its outputs, computed by scikit-learn (one harness for every artifact)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, mean_absolute_error,
                             mean_squared_error, r2_score, roc_auc_score, top_k_accuracy_score)
from sklearn.preprocessing import label_binarize

TOP_K = 5  # top-5 accuracy, reported only for models with more classes than that


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, *,
                           reference_logits: np.ndarray | None = None) -> dict[str, float]:
    """top-1, top-5, macro one-vs-rest ROC-AUC and macro average precision (and agreement).

    top-5 is left out with 5 classes or fewer, where it would be 1.0 whatever the model.
    AUC and AP are averaged over the classes that have both positive and negative samples
    in ``labels``, so small evaluation subsets stay well-defined.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    n_classes = logits.shape[1]
    all_labels = np.arange(n_classes)
    probs = softmax(logits)
    out: dict[str, float] = {"top1": float(np.mean(probs.argmax(axis=1) == labels))}
    if n_classes > TOP_K:
        out["top5"] = float(top_k_accuracy_score(labels, probs, k=TOP_K, labels=all_labels))
    out["samples"] = int(len(labels))
    onehot = label_binarize(labels, classes=all_labels)
    if n_classes == 2:
        onehot = np.hstack([1 - onehot, onehot])
    present = (onehot.sum(axis=0) > 0) & (onehot.sum(axis=0) < len(labels))
    if present.any():
        out["roc_auc_macro"] = float(roc_auc_score(onehot[:, present], probs[:, present], average="macro"))
        out["ap_macro"] = float(average_precision_score(onehot[:, present], probs[:, present], average="macro"))
    if reference_logits is not None:
        out["agreement"] = float(np.mean(np.asarray(reference_logits).argmax(axis=1) == probs.argmax(axis=1)))
    return out


# --- every task ----------------------------------------------------------------------------------

def task_metrics(task, outputs: np.ndarray, targets: np.ndarray, *,
                 reference: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of ``task`` (:mod:`deepslim.tasks`) from the task output and the targets, with the same
    names everywhere (``top1``..., ``map``..., ``mae``...); ``loss`` is the task's training loss
    (without label smoothing); ``agreement`` with a ``reference`` output (the original model's)."""
    from deepslim.tasks import TaskKind
    outputs = np.asarray(outputs, dtype=np.float64)
    targets = np.asarray(targets)
    if task.kind is TaskKind.CLASSIFICATION:
        out = classification_metrics(outputs, targets, reference_logits=reference)
        # over the classes present in the targets or the predictions: a class a small split lacks is not an F1 of 0
        out["f1_macro"] = float(f1_score(targets, outputs.argmax(axis=1), average="macro", zero_division=0))
        out["loss"] = cross_entropy(outputs, targets)
        return out
    if task.kind is TaskKind.MULTILABEL:
        return multilabel_metrics(outputs, targets, reference=reference)
    return regression_metrics(outputs, targets, loss=task.loss, offset=task.offset, scale=task.scale)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(labels)), labels.astype(np.int64)]))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def multilabel_metrics(logits: np.ndarray, targets: np.ndarray, *, reference: np.ndarray | None = None) -> dict[str, float]:
    """mAP (mean AP over the labels that have positives and negatives), micro/macro F1 and subset accuracy at
    a 0.5 probability threshold, and the BCE-with-logits loss."""
    targets = targets.astype(np.int64)
    probs = sigmoid(logits)
    decided = (probs >= 0.5).astype(np.int64)
    present = (targets.sum(axis=0) > 0) & (targets.sum(axis=0) < len(targets))
    out: dict[str, float] = {"samples": int(len(targets))}
    if present.any():
        out["map"] = float(average_precision_score(targets[:, present], probs[:, present], average="macro"))
    out["f1_micro"] = float(f1_score(targets, decided, average="micro", zero_division=0))
    seen = np.flatnonzero(targets.any(axis=0) | decided.any(axis=0))  # labels a split never has are not an F1 of 0
    if seen.size:
        out["f1_macro"] = float(f1_score(targets, decided, average="macro", labels=seen, zero_division=0))
    out["subset_accuracy"] = float(accuracy_score(targets, decided))
    loss = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    out["loss"] = float(loss.mean())
    if reference is not None:
        out["agreement"] = float(np.mean((sigmoid(np.asarray(reference)) >= 0.5) == (probs >= 0.5)))
    return out


def regression_metrics(predictions: np.ndarray, targets: np.ndarray, *, loss: str = "mse",
                       offset: tuple[float, ...] = (), scale: tuple[float, ...] = ()) -> dict[str, float]:
    """MAE, RMSE and R² (averaged uniformly over targets, in the targets' units) and the training loss (MSE or
    Huber with delta 1), in the standard units the loss trains in when the task records ``scale``."""
    targets = targets.astype(np.float64)
    predictions = predictions.reshape(targets.shape)
    err = predictions - targets
    if scale:
        err = err.reshape(len(err), -1) / np.asarray(scale, dtype=np.float64)
    if loss == "huber":
        a = np.abs(err)
        value = float(np.mean(np.where(a <= 1.0, 0.5 * err ** 2, a - 0.5)))
    else:
        value = float(np.mean(err ** 2))
    out = {"mae": float(mean_absolute_error(targets, predictions)),
           "rmse": float(np.sqrt(mean_squared_error(targets, predictions))),
           "samples": int(len(targets)), "loss": value}
    if len(targets) > 1:
        out["r2"] = float(r2_score(targets, predictions))
    return out
