"""Classification metrics from logits, computed by scikit-learn (one harness for every artifact)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, top_k_accuracy_score
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
