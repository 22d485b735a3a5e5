"""Static cost of a model: MACs and parameter count (torch-pruning's counter)."""

from __future__ import annotations

import torch
from torch import nn

from deepslim.spec import InputSpec


def count_macs_params(model: nn.Module, spec: InputSpec) -> tuple[int, int]:
    """Multiply-accumulates of one sample at ``spec``'s shape, and the parameter count."""
    import torch_pruning as tp
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, *spec.shape, device=device))
    finally:
        model.train(was_training)
    return int(macs), int(params)
