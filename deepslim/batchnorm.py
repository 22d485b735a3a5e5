"""BatchNorm running statistics that match the weights: recalibration, and the train loop's guard.

Running statistics are an exponential average with ``momentum`` per step (0.1 in PyTorch's
default, 0.01 in torchvision's MobileNetV3 and EfficientNet). With a slow momentum and a
short run they lag the weights by hundreds of steps, and the model in eval mode (which
uses them) can sit at chance while training goes well. Recomputing them as a cumulative
average over some training batches in eval mode elsewhere ("precise BN") fixes that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepslim.modelio import call, to_device

SLOW_MOMENTUM = 0.1          # below this (or None, a cumulative average) statistics are always recomputed
RECALIBRATION_BATCHES = 20
COLLAPSE_RATIO, COLLAPSE_GAP = 0.5, 0.2  # eval top-1 below half of train-mode top-1 and 20 points under it


def batchnorm_layers(model: nn.Module, *, trainable_only: bool = False) -> list[nn.Module]:
    """The model's BatchNorm layers (``trainable_only``: leave out those whose parameters are frozen)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if trainable_only:
        norms = [m for m in norms if m.weight is None or m.weight.requires_grad]
    return [m for m in norms if m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data: Dataset, *, batches: int = RECALIBRATION_BATCHES,
                          batch_size: int = 64, skip_frozen: bool = False) -> int:
    """Recompute BatchNorm running statistics on training data (pruning, or a slow momentum, leaves them stale).

    A cumulative average over ``batches`` seeded batches, with every other layer in eval mode.
    ``skip_frozen`` leaves layers with frozen parameters (a frozen backbone) as they are.
    Returns the number of batches used (0 when there is nothing to recompute)."""
    norms = batchnorm_layers(model, trainable_only=skip_frozen)
    if not norms:
        return 0
    saved = [(m.momentum, m.training) for m in norms]
    was_training = model.training
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
        m.train()
    device = next(model.parameters()).device
    used = 0
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    try:
        with torch.random.fork_rng(devices=[]):  # augmentation here must not shift the training's random draws
            for x, _ in loader:
                call(model, to_device(x, device))
                used += 1
                if used >= batches:
                    break
    finally:
        for m, (momentum, training) in zip(norms, saved):
            m.momentum = momentum
            m.train(training)
        model.train(was_training)
    return used


@contextlib.contextmanager
def synced_batchnorm(model: nn.Module) -> Iterator[int]:
    """Within the block, the model's BatchNorm layers are ``nn.SyncBatchNorm`` (batch statistics over all ranks
    of the process group); afterwards they are their own classes again, holding the same parameters and
    buffers, so the saved model has no trace of the synchronisation. Yields the number of layers converted."""
    kinds = {name: type(m) for name, m in model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)}
    if "" in kinds:
        raise ValueError("the model itself is a BatchNorm layer")
    nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the children in place, sharing their tensors
    try:
        yield len(kinds)
    finally:
        for name, kind in kinds.items():
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            parent.add_module(child, _unsynced(getattr(parent, child), kind))


def _unsynced(sync: nn.SyncBatchNorm, kind: type) -> nn.Module:
    """A ``kind`` BatchNorm holding ``sync``'s parameters and buffers (the same tensors, so optimizers keep them)."""
    plain = kind(sync.num_features, sync.eps, sync.momentum, sync.affine, sync.track_running_stats)
    for key, param in sync.named_parameters(recurse=False):
        setattr(plain, key, param)
    for key, buffer in sync.named_buffers(recurse=False):
        setattr(plain, key, buffer)
    if hasattr(sync, "qconfig"):
        plain.qconfig = sync.qconfig
    return plain.train(sync.training)


def slowest_momentum(model: nn.Module) -> float | None:
    """The slowest trainable BatchNorm momentum when it is below :data:`SLOW_MOMENTUM` (0.0 for None), else None."""
    momenta = [0.0 if m.momentum is None else float(m.momentum)
               for m in batchnorm_layers(model, trainable_only=True)]
    slow = [m for m in momenta if m < SLOW_MOMENTUM]
    return min(slow) if slow else None


@torch.no_grad()
def eval_vs_batch_top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                       read: Callable[[object], torch.Tensor] = lambda out: out) -> tuple[float, float]:
    """Top-1 on one training batch with running statistics (eval mode) and with the batch's own statistics.

    Only the BatchNorm layers switch to training mode for the second pass (no dropout), and their
    running statistics are restored afterwards."""
    norms = batchnorm_layers(model, trainable_only=True)
    was_training = model.training
    buffers = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    try:
        model.eval()
        running = _top1(read(call(model, x)), y)
        for m in norms:
            m.train()
        batch = _top1(read(call(model, x)), y)
    finally:
        for m, (mean, var, count) in zip(norms, buffers):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
        model.train(was_training)
    return running, batch


def collapsed(eval_top1: float, batch_top1: float) -> bool:
    """Eval mode far below training mode on the same batch: the running statistics do not fit the weights."""
    return eval_top1 < COLLAPSE_RATIO * batch_top1 and batch_top1 - eval_top1 > COLLAPSE_GAP


def _top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


class BatchNormGuard:
    """What the train loop does to BatchNorm before each validation.

    A slow momentum (below 0.1, or None): always recompute the statistics on
    :data:`RECALIBRATION_BATCHES` training batches, since an exponential average over so few
    steps cannot have caught up. Otherwise check one fixed training batch in eval and training
    mode (two forward passes) and recompute only when eval mode has collapsed; from then on,
    recompute every epoch. Each decision is said once, through ``say``.
    """

    def __init__(self, model: nn.Module, data: Dataset | None, say: Callable[[str], None], *,
                 read: Callable[[object], torch.Tensor] | None = lambda out: out) -> None:
        """``read`` picks the class logits from the model's output; None: the output is not class logits (a
        regression or multilabel task), so only the momentum rule applies."""
        self.model, self.data, self.say, self.read = model, data, say, read
        self.enabled = data is not None and bool(batchnorm_layers(model, trainable_only=True))
        self.momentum = slowest_momentum(model) if self.enabled else None
        self.always = self.momentum is not None
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._told = False

    def before_validation(self, row: dict, epoch: int) -> None:
        """Recompute the statistics when needed; mark ``row`` (``bn_recalibrated``, ``bn_collapse``)."""
        if not self.enabled:
            return
        reason = None
        if self.always and not self._told:
            reason = (f"BatchNorm momentum {self.momentum:g} is too slow for the running statistics to follow "
                      f"the weights: they are recomputed on {RECALIBRATION_BATCHES} training batches before "
                      "each validation")
        elif not self.always and self.read is not None:
            running, batch = eval_vs_batch_top1(self.model, *self._check_batch(), read=self.read)
            if collapsed(running, batch):
                row["bn_collapse"] = True
                self.always = True
                reason = (f"epoch {epoch}: eval-mode top-1 {running:.3f} on a training batch against {batch:.3f} "
                          "with its own batch statistics (BatchNorm running statistics lag the weights); "
                          f"recomputed them on {RECALIBRATION_BATCHES} training batches before validating, and "
                          "every epoch from now on")
        if self.always:
            row["bn_recalibrated"] = True
            recalibrate_batchnorm(self.model, self.data, skip_frozen=True)
        if reason and not self._told:
            self._told = True
            self.say(reason)

    def _check_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._batch is None:
            loader = DataLoader(self.data, batch_size=256, shuffle=True, generator=torch.Generator().manual_seed(1))
            with torch.random.fork_rng(devices=[]):
                x, y = next(iter(loader))
            self._batch = (x, y)
        device = next(self.model.parameters()).device
        return to_device(self._batch[0], device), self._batch[1].to(device)
