"""Distillation losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from compress.losses import distillation_loss, feature_loss, kd_loss, make_adapter

# Teacher logits [ln 3, 0] give p = [3/4, 1/4] at T = 1; uniform student logits give q = [1/2, 1/2].
TEACHER = torch.tensor([[math.log(3.0), 0.0]])
STUDENT = torch.zeros(1, 2)


def test_kd_loss_at_t1_is_the_kl_divergence():
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)   # 0.130812...
    assert kd_loss(STUDENT, TEACHER, 1.0).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.1308120, abs=1e-6)


def test_kd_loss_softens_by_t_and_scales_by_t_squared():
    # At T = 2 the teacher's logits become [ln 3 / 2, 0]: p = [√3, 1] / (√3 + 1).
    p = [math.sqrt(3) / (math.sqrt(3) + 1), 1 / (math.sqrt(3) + 1)]
    kl = sum(pi * math.log(pi / 0.5) for pi in p)
    assert kd_loss(STUDENT, TEACHER, 2.0).item() == pytest.approx(4 * kl, abs=1e-6)
    assert 4 * kl == pytest.approx(0.145363, abs=1e-6)


def test_kd_loss_is_zero_for_identical_logits_and_averages_over_the_batch():
    logits = torch.randn(5, 7)
    assert kd_loss(logits, logits, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    same = torch.randn(1, 2)
    pair = kd_loss(torch.cat([STUDENT, same]), torch.cat([TEACHER, same]), 1.0).item()
    assert pair == pytest.approx(0.1308120 / 2, abs=1e-6)  # batchmean: the second row adds nothing


def test_distillation_loss_mixes_kd_and_cross_entropy_by_alpha():
    labels = torch.tensor([1])
    ce = math.log(2.0)  # uniform student, two classes
    kd = 0.1308120
    assert distillation_loss(STUDENT, TEACHER, labels, temperature=1, alpha=0.0).item() == pytest.approx(ce, abs=1e-6)
    assert distillation_loss(STUDENT, TEACHER, labels, temperature=1, alpha=1.0).item() == pytest.approx(kd, abs=1e-6)
    mixed = distillation_loss(STUDENT, TEACHER, labels, temperature=1, alpha=0.25).item()
    assert mixed == pytest.approx(0.25 * kd + 0.75 * ce, abs=1e-6)


def test_distillation_loss_gradient_flows_to_the_student_only():
    student = torch.zeros(2, 3, requires_grad=True)
    teacher = torch.randn(2, 3, requires_grad=True)
    distillation_loss(student, teacher, torch.tensor([0, 2]), temperature=4, alpha=0.9).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_feature_loss_is_mse_and_pools_to_the_smaller_map():
    s = torch.ones(1, 2, 4, 4)
    t = torch.full((1, 2, 2, 2), 3.0)
    assert feature_loss(s, t).item() == pytest.approx(4.0)  # (1 - 3)^2 after pooling 4x4 -> 2x2
    assert feature_loss(t, t).item() == 0.0
    with pytest.raises(ValueError, match="cannot be compared"):
        feature_loss(torch.ones(1, 3, 2, 2), torch.ones(1, 2, 2, 2))


def test_adapters_project_student_channels_to_the_teachers():
    conv = make_adapter(torch.Size([2, 8, 4, 4]), torch.Size([2, 32, 4, 4]))
    assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1)
    assert conv(torch.zeros(2, 8, 4, 4)).shape == (2, 32, 4, 4)
    tokens = make_adapter(torch.Size([2, 5, 16]), torch.Size([2, 5, 64]))
    assert tokens(torch.zeros(2, 5, 16)).shape == (2, 5, 64)
    assert isinstance(make_adapter(torch.Size([2, 8, 4, 4]), torch.Size([2, 8, 2, 2])), torch.nn.Identity)
    with pytest.raises(ValueError, match="4-D student feature"):
        make_adapter(torch.Size([2, 8, 4, 4]), torch.Size([2, 8]))
