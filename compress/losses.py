"""Distillation losses: pure functions of tensors (no models, no hooks), tested against hand-computed values.

:func:`task_distillation_loss` is the one a stage uses: the task's soft-target loss
(:func:`deepslim.losses.soft_target_loss`: temperature KL, BCE against the teacher's sigmoid, or MSE)
mixed by ``alpha`` with the task's own loss on the true targets (:func:`deepslim.losses.task_criterion`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from deepslim.losses import soft_target_loss, task_criterion
from deepslim.tasks import Task, TaskKind

MixedLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. (2015): KL(teacher || student) between temperature-softened distributions, times T².

    The T² factor keeps the gradient scale of the soft targets independent of T, so the
    mix with the hard-label cross-entropy means the same thing at every temperature.
    """
    t = float(temperature)
    log_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * (t * t)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                      temperature: float, alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """``alpha`` · KD + (1 − ``alpha``) · cross-entropy with the true labels."""
    hard = F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)
    if alpha == 0:
        return hard
    return alpha * kd_loss(student_logits, teacher_logits, temperature) + (1 - alpha) * hard


def task_distillation_loss(task: Task | None, *, temperature: float, alpha: float,
                           label_smoothing: float = 0.0) -> MixedLoss:
    """``loss(student_out, teacher_out, target)``: ``alpha`` · the task's soft-target loss + (1 − ``alpha``) ·
    the task's loss on the true targets. ``task`` None (or a classification) is :func:`distillation_loss`.

    The temperature softens classification logits only; a multilabel student matches the teacher's
    sigmoid (BCE), a regression student its prediction (MSE in the task's standard units)."""
    if task is None or task.kind is TaskKind.CLASSIFICATION:
        return lambda s, t, y: distillation_loss(s, t, y, temperature=temperature, alpha=alpha,
                                                 label_smoothing=label_smoothing)
    hard = task_criterion(task, label_smoothing=label_smoothing)

    def mixed(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        truth = hard(student, target)
        if alpha == 0:
            return truth
        return alpha * soft_target_loss(task, student, teacher, temperature) + (1 - alpha) * truth
    return mixed


def feature_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Mean squared error between an (adapted) student feature map and the teacher's (FitNets).

    Maps of different spatial size are compared at the smaller one (adaptive average pooling).
    """
    s, t = student_feature.float(), teacher_feature.float().detach()
    if s.dim() == 4 and s.shape[-2:] != t.shape[-2:]:
        size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
        s, t = F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size)
    if s.shape != t.shape:
        raise ValueError(f"feature shapes {tuple(s.shape)} and {tuple(t.shape)} cannot be compared")
    return F.mse_loss(s, t)


def make_adapter(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    """A learned projection from the student's channels to the teacher's (identity when they agree).

    4-D maps (N, C, H, W) get a 1×1 convolution; 3-D features that differ in their second axis only
    (a Conv1d's (N, C, L)) a 1×1 Conv1d; tokens (N, L, C) and vectors (N, C) a linear layer on the last axis.
    """
    if len(student_shape) != len(teacher_shape):
        raise ValueError(f"a {len(student_shape)}-D student feature cannot be matched to a "
                         f"{len(teacher_shape)}-D teacher feature")
    if len(student_shape) == 4:
        cs, ct = student_shape[1], teacher_shape[1]
        return nn.Identity() if cs == ct else nn.Conv2d(cs, ct, kernel_size=1, bias=False)
    if len(student_shape) == 3 and student_shape[1] != teacher_shape[1] and student_shape[2] == teacher_shape[2]:
        return nn.Conv1d(student_shape[1], teacher_shape[1], kernel_size=1, bias=False)
    cs, ct = student_shape[-1], teacher_shape[-1]
    return nn.Identity() if cs == ct else nn.Linear(cs, ct, bias=False)


# --- transformer features (TinyBERT / MiniLM): pure functions of the captured tensors ------------------

def hidden_state_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between a (projected) student layer's hidden states and the teacher's, (batch, tokens,
    width) each, over the real tokens only when ``mask`` (batch, tokens; 1 real, 0 padding) is given."""
    s, t = student.float(), teacher.float().detach()
    if s.shape != t.shape:
        raise ValueError(f"hidden states {tuple(s.shape)} and {tuple(t.shape)} cannot be compared")
    if mask is None:
        return F.mse_loss(s, t)
    weight = mask.to(s.dtype)[..., None]
    return ((s - t) ** 2 * weight).sum() / (weight.sum() * s.shape[-1]).clamp_min(1.0)


def attention_map_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None, *,
                       kind: str = "kl") -> torch.Tensor:
    """How far a student layer's attention probabilities (batch, heads, query, key) are from the teacher's.

    ``kl``: KL(teacher ‖ student) of each query's distribution over the keys (MiniLM), averaged over heads and
    queries; ``mse``: the mean squared difference of the probabilities (TinyBERT). When the head counts differ
    (heads pruned) both sides are averaged over their heads first. ``mask`` (batch, tokens) keeps real query
    rows (KL) or real query-key cells (MSE) only."""
    s, t = student.float(), teacher.float().detach()
    if s.shape[1] != t.shape[1]:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    if s.shape != t.shape:
        raise ValueError(f"attention maps {tuple(s.shape)} and {tuple(t.shape)} cannot be compared")
    if kind == "kl":
        per_query = (torch.xlogy(t, t) - t * torch.log(s.clamp_min(1e-12))).sum(-1)  # (batch, heads, query)
        if mask is None:
            return per_query.mean()
        weight = mask.to(s.dtype)[:, None, :].expand_as(per_query)
        return (per_query * weight).sum() / weight.sum().clamp_min(1.0)
    if kind != "mse":
        raise ValueError(f"unknown attention loss '{kind}' (kl or mse)")
    if mask is None:
        return F.mse_loss(s, t)
    m = mask.to(s.dtype)
    weight = (m[:, None, :, None] * m[:, None, None, :]).expand_as(s)
    return ((s - t) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)
