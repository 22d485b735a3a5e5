"""Each task's training loss on its output (torch): cross-entropy, BCE-with-logits, MSE or Huber."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from deepslim.tasks import Task, TaskKind

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def task_criterion(task: Task, *, label_smoothing: float = 0.0) -> Criterion:
    """``loss(output, target)`` of ``task`` (label smoothing applies to classification only). A regression
    compares in standard units when its task records the train targets' mean and std."""
    if task.kind is TaskKind.CLASSIFICATION:
        return lambda out, y: F.cross_entropy(out.float(), y, label_smoothing=label_smoothing)
    if task.kind is TaskKind.MULTILABEL:
        return lambda out, y: F.binary_cross_entropy_with_logits(out.float(), y.float())
    base = F.huber_loss if task.loss == "huber" else F.mse_loss
    offset = torch.tensor(task.offset or (0.0,) * task.width)
    scale = torch.tensor(task.scale or (1.0,) * task.width)

    def regression(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        o, s = offset.to(out.device), scale.to(out.device)
        pred = out.float().reshape(len(y), -1)
        return base((pred - o) / s, (y.float().reshape(len(y), -1) - o) / s)
    return regression


def soft_target_loss(task: Task, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """How far the student's output is from the teacher's: temperature KL (times T²) for classification,
    BCE against the teacher's sigmoid for multilabel, MSE against the teacher's prediction for regression."""
    if task.kind is TaskKind.CLASSIFICATION:
        t = float(temperature)
        log_student = F.log_softmax(student.float() / t, dim=1)
        log_teacher = F.log_softmax(teacher.float() / t, dim=1)
        return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * (t * t)
    if task.kind is TaskKind.MULTILABEL:
        return F.binary_cross_entropy_with_logits(student.float(), torch.sigmoid(teacher.float().detach()))
    scale = torch.tensor(task.scale or (1.0,) * task.width, device=student.device)
    s = student.float().reshape(len(student), -1) / scale
    t = teacher.float().detach().reshape(len(teacher), -1) / scale
    return F.mse_loss(s, t)
