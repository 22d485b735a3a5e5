"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from deepslim.metrics import classification_metrics


def test_perfect_and_hand_computed_metrics():
    labels = np.array([0, 1, 2, 2])
    logits = np.array([[3.0, 1, 0], [0, 2, 1], [1, 0, 2], [0, 2, 1]])  # last one wrong (ranks 2nd)
    m = classification_metrics(logits, labels)
    assert m["top1"] == pytest.approx(0.75)
    assert m["samples"] == 4
    assert m["top5"] == pytest.approx(1.0)  # k = 2 for three classes: every label is within the top 2
    # class 0: scores of positives above all negatives -> AUC 1; class 1: positive 1 (p=.665) vs
    # negatives incl. sample 3 (p=.665): tie -> 0.5 + rest; computed by sklearn, checked to be < 1
    assert 0.5 < m["roc_auc_macro"] < 1.0
    assert 0.5 < m["ap_macro"] < 1.0


def test_agreement_with_reference():
    labels = np.array([0, 1, 1, 0])
    logits = np.eye(2)[[0, 1, 0, 0]]
    m = classification_metrics(logits, labels, reference_logits=np.eye(2)[[0, 1, 1, 1]])
    assert m["agreement"] == pytest.approx(0.5)


def test_classes_missing_from_subset_are_skipped_for_auc():
    labels = np.array([0, 0, 1, 1])
    logits = np.array([[2.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 1, 0]])
    m = classification_metrics(logits, labels)
    assert m["roc_auc_macro"] == pytest.approx(1.0) and m["ap_macro"] == pytest.approx(1.0)
