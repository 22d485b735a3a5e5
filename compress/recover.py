"""Before and after the cut: BatchNorm recalibration, network-slimming sparsity training, Taylor gradients,
and the fine-tuning that recovers accuracy (the task's loss, or KD from the unpruned model) — for any task."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepslim.batchnorm import recalibrate_batchnorm
from deepslim.config import OptimizerKind, TrainConfig
from deepslim.losses import soft_target_loss, task_criterion
from deepslim.modelio import as_args, call, task_output, to_device
from deepslim.signature import Signature
from deepslim.tasks import Task, metric_info
from deepslim.training import FitResult, fit, val_metric

if TYPE_CHECKING:
    from compress.prune import PruneConfig
    from deepslim.models import ModelBundle

__all__ = ["accumulate_taylor_gradients", "epochs_for_step", "finetune", "kd_loss", "recalibrate_batchnorm",
           "recover_step", "sparsity_train"]

LossFn = Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]


def _criterion(task: Task | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task's loss; cross-entropy for callers that predate tasks."""
    return task_criterion(task) if task is not None else (lambda out, y: F.cross_entropy(out.float(), y))


def _read(signature: Signature | None) -> Callable[[Any], torch.Tensor]:
    return (lambda out: out) if signature is None else (lambda out: task_output(out, signature))


def sparsity_train(model: nn.Module, train_ds: Dataset, val_ds: Dataset, *, epochs: int, penalty: float,
                   seed: int = 0, progress: bool = True, task: Task | None = None,
                   signature: Signature | None = None) -> None:
    """Network slimming (Liu et al. 2017): train with an L1 penalty on BatchNorm scales before pruning
    (the task's loss on its output; cross-entropy when no task is given)."""
    scales = [m.weight for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    criterion = _criterion(task)
    read = _read(signature)

    def loss_fn(m: nn.Module, x: Any, y: torch.Tensor) -> torch.Tensor:
        return criterion(read(call(m, x)), y) + penalty * sum(s.abs().sum() for s in scales)

    fit(model, train_ds, val_ds, TrainConfig(epochs=epochs, lr=0.01, seed=seed), loss_fn=loss_fn, progress=progress,
        task=task, signature=signature)


def accumulate_taylor_gradients(model: nn.Module, data: Dataset, *, batches: int, batch_size: int = 32,
                                task: Task | None = None, signature: Signature | None = None) -> None:
    """Gradients of the task's loss on a few batches, which Taylor importance reads from ``.grad``."""
    model.eval()
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    criterion = _criterion(task)
    read = _read(signature)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    for i, (x, y) in enumerate(loader):
        if i >= batches:
            break
        criterion(read(call(model, to_device(x, device))), y.to(device)).backward()


def kd_loss(teacher: nn.Module, task: Task, signature: Signature, temperature: float, alpha: float) -> LossFn:
    """A loss for :func:`deepslim.training.fit` that distills from ``teacher`` (the model before pruning):
    ``alpha`` · the task's soft-target loss (:func:`deepslim.losses.soft_target_loss`) + (1 − ``alpha``) · the
    task's loss with the true targets, both on the task output."""
    teacher.eval()
    criterion = task_criterion(task)

    def loss_fn(net: nn.Module, x: Any, y: torch.Tensor) -> torch.Tensor:
        device = as_args(x)[0].device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        out = task_output(call(net, x), signature)
        hard = criterion(out, y)
        if alpha == 0:
            return hard
        with torch.no_grad():
            target = task_output(call(teacher, x), signature)
        return alpha * soft_target_loss(task, out, target, temperature) + (1 - alpha) * hard

    return loss_fn


def finetune(model: nn.Module, data: dict[str, Dataset], *, epochs: int, lr: float, seed: int, task: Task,
             signature: Signature, teacher: nn.Module | None = None, temperature: float = 4.0, alpha: float = 0.5,
             progress: bool = True, optimizer: OptimizerKind = OptimizerKind.SGD, sync_bn: bool = False) -> FitResult:
    """Fine-tune a pruned ``model`` in place on ``data`` (``train_aug``, ``val``, ``train`` for BatchNorm):
    the task's loss (or KD from ``teacher``), the best epoch by the task's primary metric on val, and the
    pruned start kept when no epoch beats it."""
    cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed, warmup_epochs=0, optimizer=optimizer, sync_bn=sync_bn)
    loss = kd_loss(teacher, task, signature, temperature, alpha) if teacher is not None else None
    return fit(model, data["train_aug"], data["val"], cfg, loss_fn=loss, progress=progress, keep_start=True,
               bn_data=data["train"], task=task, signature=signature)


def recover_step(work: ModelBundle, cfg: PruneConfig, data: dict[str, Any], step: int, teacher: nn.Module | None,
                 *, progress: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """After pruning step ``step``: BatchNorm recalibration and this step's fine-tuning, as the step's row
    (``finetune_val_top1``, or ``finetune_val_<primary>`` and ``finetune_val_score`` for other metrics)."""
    row: dict[str, Any] = {"bn_batches": recalibrate_batchnorm(work.model, data["train"],
                                                               batches=cfg.calibration_batches)}
    epochs = epochs_for_step(cfg.finetune_epochs, cfg.iterative_steps, step)
    if not epochs:
        return row
    task = work.task
    result = finetune(work.model, data, epochs=epochs, lr=cfg.finetune_lr, seed=cfg.seed, task=task,
                      signature=work.signature, teacher=teacher, temperature=cfg.temperature, alpha=cfg.alpha,
                      progress=progress, optimizer=cfg.finetune_optimizer, sync_bn=cfg.sync_bn)
    row.update({f"finetune_{k}": v for k, v in val_metric(task, result.best_val).items()},
               finetune_best_epoch=result.best_epoch)
    if result.notes:
        row["notes"] = list(result.notes)
    if result.best_epoch == 0:
        row["kept_start"] = True
        value = result.best_val if task.primary_info.higher_is_better else -result.best_val
        label = "top-1" if task.primary == "top1" else metric_info(task.primary).label
        say(f"step {step + 1}: no fine-tuning epoch beat the pruned start (val {label} {value:.4f}); "
            "the start is kept")
    return row


def epochs_for_step(total: int, steps: int, step: int) -> int:
    """Spread the fine-tuning epochs over the iterative steps (the last steps get the remainder)."""
    return total // steps + (1 if step >= steps - total % steps else 0)
