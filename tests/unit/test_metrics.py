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
    assert "top5" not in m  # three classes: every label is within the top 5, so it says nothing
    # one-vs-rest AUCs by hand: class 0 -> 1.0; class 1 (positive: sample 1, negatives 0, 2, 3 where sample 3
    # has the same softmax as sample 1) -> (1 + 1 + 0.5) / 3; class 2 (positives 2, 3; negatives 0, 1)
    # -> sample 2 beats both, sample 3 ties sample 1 and beats sample 0 -> (2 + 1.5) / 4
    assert m["roc_auc_macro"] == pytest.approx((1.0 + 2.5 / 3 + 3.5 / 4) / 3)


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


@pytest.mark.parametrize("n_classes", [2, 5])
def test_top5_is_left_out_with_five_classes_or_fewer(n_classes):
    labels = np.arange(8) % n_classes
    logits = np.random.default_rng(0).standard_normal((8, n_classes))
    assert set(classification_metrics(logits, labels)) == {"top1", "samples", "roc_auc_macro", "ap_macro"}


def test_top5_with_more_than_five_classes_is_hand_computed():
    labels = np.array([0, 9, 3])
    logits = np.tile(-np.arange(10.0), (3, 1))  # every sample ranks the classes 0, 1, 2, ... 9
    m = classification_metrics(logits, labels)
    assert m["top1"] == pytest.approx(1 / 3) and m["top5"] == pytest.approx(2 / 3)  # 0 and 3 in the top 5; 9 not
