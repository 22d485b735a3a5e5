"""Before and after the cut: BatchNorm recalibration, network-slimming sparsity training, Taylor gradients."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepslim.batchnorm import recalibrate_batchnorm
from deepslim.config import TrainConfig
from deepslim.training import fit

__all__ = ["accumulate_taylor_gradients", "recalibrate_batchnorm", "sparsity_train"]


def sparsity_train(model: nn.Module, train_ds: Dataset, val_ds: Dataset, *, epochs: int, penalty: float,
                   seed: int = 0, progress: bool = True) -> None:
    """Network slimming (Liu et al. 2017): train with an L1 penalty on BatchNorm scales before pruning."""
    scales = [m.weight for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    criterion = nn.CrossEntropyLoss()

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return criterion(m(x), y) + penalty * sum(s.abs().sum() for s in scales)

    fit(model, train_ds, val_ds, TrainConfig(epochs=epochs, lr=0.01, seed=seed), loss_fn=loss_fn, progress=progress)


def accumulate_taylor_gradients(model: nn.Module, data: Dataset, *, batches: int, batch_size: int = 32) -> None:
    """Gradients of the loss on a few batches, which Taylor importance reads from ``.grad``."""
    model.eval()
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    for i, (x, y) in enumerate(loader):
        if i >= batches:
            break
        nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
