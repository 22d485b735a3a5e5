"""The train loop's guards against quiet failures: BatchNorm statistics that lag the weights, and how a
trained start is recognised."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepslim.batchnorm import (BatchNormGuard, batchnorm_layers, collapsed, eval_vs_batch_top1,
                                recalibrate_batchnorm, slowest_momentum)
from deepslim.config import Init, TrainConfig
from deepslim.data import open_dataset
from deepslim.finetune import Start, assess_start, finetune_config
from deepslim.spec import StageRecord
from deepslim.training import fit, model_for_dataset


def _cnn(momentum=None, width=8):
    bundle = model_for_dataset("small_cnn", "digits", input_size=8, arch_kwargs={"width": width}, seed=0)
    if momentum is not None:
        for m in batchnorm_layers(bundle.model):
            m.momentum = momentum
    return bundle


def _splits(bundle):
    src = open_dataset("digits")
    return src.split("train", bundle.input_spec, augment="none"), src.split("val", bundle.input_spec)


def _no_guard(monkeypatch):
    monkeypatch.setattr(BatchNormGuard, "before_validation", lambda self, row, epoch: None)


def test_slow_batchnorm_momentum_no_longer_leaves_val_at_chance(monkeypatch):
    """torchvision's MobileNetV3 uses momentum 0.01: its running statistics lag a short run's weights."""
    cfg = TrainConfig(epochs=1, seed=0, augment="none", device="cpu")
    fixed = _cnn(momentum=0.001)
    train_ds, val_ds = _splits(fixed)
    result = fit(fixed.model, train_ds, val_ds, cfg, progress=False)
    assert result.best_val_top1 >= 0.8, result.history
    assert result.history[0]["bn_recalibrated"] is True
    assert len(result.notes) == 1 and "momentum 0.001 is too slow" in result.notes[0]

    _no_guard(monkeypatch)  # the loop as it was: validation reads the lagging statistics
    old = _cnn(momentum=0.001)
    before = fit(old.model, train_ds, val_ds, cfg, progress=False)
    assert before.best_val_top1 <= 0.35, before.history
    assert before.history[0]["train_loss"] == pytest.approx(result.history[0]["train_loss"])


def _stale_statistics(bundle):
    """A loss that leaves the running variances far off before every step (momentum 0.1 cannot recover)."""
    norms = batchnorm_layers(bundle.model)

    def loss_fn(net, x, y):
        with torch.no_grad():
            for m in norms:
                m.running_var.fill_(1e4)
        return nn.functional.cross_entropy(net(x), y)
    return loss_fn


def test_eval_mode_collapse_is_detected_and_fixed(monkeypatch):
    cfg = TrainConfig(epochs=1, seed=0, augment="none", device="cpu")
    bundle = _cnn()
    train_ds, val_ds = _splits(bundle)
    result = fit(bundle.model, train_ds, val_ds, cfg, loss_fn=_stale_statistics(bundle), progress=False)
    row = result.history[0]
    assert row["bn_collapse"] is True and row["bn_recalibrated"] is True
    assert result.best_val_top1 >= 0.8, result.history
    assert "epoch 1: eval-mode top-1" in result.notes[0] and "recomputed them" in result.notes[0]

    _no_guard(monkeypatch)
    old = _cnn()
    before = fit(old.model, train_ds, val_ds, cfg, loss_fn=_stale_statistics(old), progress=False)
    assert before.best_val_top1 <= 0.3, before.history


def test_a_healthy_model_is_left_alone():
    bundle = _cnn()
    train_ds, _ = _splits(bundle)
    guard = BatchNormGuard(bundle.model, train_ds, say=pytest.fail)
    assert guard.enabled and not guard.always
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    row = {}
    guard.before_validation(row, 1)  # eval and batch statistics agree on a fresh model: nothing to do
    assert row == {}
    assert all(torch.equal(before[k], v) for k, v in bundle.model.state_dict().items())


def test_checking_a_batch_restores_the_running_statistics():
    bundle = _cnn()
    train_ds, _ = _splits(bundle)
    x, y = next(iter(torch.utils.data.DataLoader(train_ds, batch_size=64)))
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    running, batch = eval_vs_batch_top1(bundle.model.train(), x, y)
    assert 0 <= running <= 1 and 0 <= batch <= 1 and bundle.model.training
    assert all(torch.equal(before[k], v) for k, v in bundle.model.state_dict().items())


@pytest.mark.parametrize("eval_top1, batch_top1, expected", [(0.10, 0.95, True), (0.40, 0.95, True),
                                                             (0.50, 0.95, False), (0.05, 0.20, False),
                                                             (0.90, 0.95, False)])
def test_collapse_needs_half_and_twenty_points(eval_top1, batch_top1, expected):
    assert collapsed(eval_top1, batch_top1) is expected


def test_frozen_batchnorm_is_neither_counted_nor_recalibrated():
    bundle = _cnn(momentum=0.01)
    for p in bundle.model.features.parameters():
        p.requires_grad_(False)
    assert slowest_momentum(bundle.model) is None and not batchnorm_layers(bundle.model, trainable_only=True)
    train_ds, _ = _splits(bundle)
    stats = {k: v.clone() for k, v in bundle.model.state_dict().items() if "running" in k}
    assert recalibrate_batchnorm(bundle.model, train_ds, batches=2, skip_frozen=True) == 0
    assert all(torch.equal(stats[k], bundle.model.state_dict()[k]) for k in stats)
    assert recalibrate_batchnorm(bundle.model, train_ds, batches=2) == 2  # pruning's call recomputes them all


def test_slowest_momentum_counts_cumulative_averages_as_slow():
    bundle = _cnn()
    assert slowest_momentum(bundle.model) is None
    batchnorm_layers(bundle.model)[1].momentum = None
    assert slowest_momentum(bundle.model) == 0.0


def _record(stage, **metrics):
    return StageRecord(stage, {}, 1.0, metrics)


def test_a_start_counts_as_trained_by_lineage_or_by_val():
    labels = np.arange(100) % 10
    assert not assess_start(0.11, labels, []).trained
    assert assess_start(0.11, labels, [_record("train", val_top1=0.9)]).trained_because == \
        "its lineage has a train stage"
    assert assess_start(0.33, labels, []).trained  # a quarter of the way from chance (0.1) to 1.0
    assert not assess_start(0.31, labels, []).trained
    assert not assess_start(0.11, labels, [_record("prune")]).trained  # a prune that measured nothing
    assert not assess_start(0.95, labels, [_record("train", val_top1=0.9)], Init.KAIMING).trained
    skewed = np.array([0] * 90 + [1] * 10)
    assert assess_start(0.90, skewed, []).chance == 0.9 and not assess_start(0.90, skewed, []).trained


def test_finetune_config_lowers_only_what_the_user_left_unset():
    trained, scratch = Start(0.95, 0.1, "val top-1 0.95"), Start(0.1, 0.1)
    cfg, note = finetune_config(TrainConfig(epochs=3), trained)
    assert cfg.learning_rate == pytest.approx(0.005) and cfg.warmup == 0 and "a tenth of the from-scratch 0.05" in note
    cfg, _ = finetune_config(TrainConfig(epochs=3, optimizer="adamw", warmup_epochs=1), trained)
    assert cfg.learning_rate == pytest.approx(1e-4) and cfg.warmup == 1
    cfg, note = finetune_config(TrainConfig(epochs=3, lr=0.02), trained)
    assert cfg.learning_rate == 0.02 and cfg.warmup == 1 and "--lr 0.02 as given" in note
    cfg, note = finetune_config(TrainConfig(epochs=3), scratch)
    assert cfg == TrainConfig(epochs=3) and note == ""
