"""Static facts of a model: MACs and parameter count (torch-pruning's counter), layers and their output shapes.

Both feed one sample of every input the model's signature names (an :class:`InputSpec` stays accepted for
one-image models): images and features as zeros/noise of their shape, integer inputs of their dtype."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from deepslim.signature import Signature
from deepslim.spec import InputSpec

if TYPE_CHECKING:
    from deepslim.models import ModelBundle


def one_sample(spec: InputSpec | Signature, device: torch.device | str = "cpu", *,
               sizes: dict[str, int] | None = None) -> tuple[torch.Tensor, ...]:
    """One sample of every input (batch 1), in ``forward``'s order: zeros for an :class:`InputSpec` (an image),
    :func:`deepslim.modelio.example_inputs` for a signature (named dims at ``sizes``, default 16)."""
    if isinstance(spec, InputSpec):
        return (torch.zeros(1, *spec.shape, device=device),)
    from deepslim.modelio import example_inputs
    return tuple(t.to(device) for t in example_inputs(spec, 1, sizes=sizes))


def count_macs_params(model: nn.Module, spec: InputSpec | Signature, *,
                      sizes: dict[str, int] | None = None) -> tuple[int, int]:
    """Multiply-accumulates of one sample (every input of ``spec``), and the parameter count."""
    import torch_pruning as tp
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        macs, params = tp.utils.count_ops_and_params(model, one_sample(spec, device, sizes=sizes))
    finally:
        model.train(was_training)
    return int(macs), int(params)


def layer_shapes(bundle: ModelBundle) -> list[tuple[str, str, tuple[int, ...] | None]]:
    """(name, class, output shape of one sample) of every named module, in definition order.

    Shapes come from a forward pass of one zero sample; modules not called, or returning
    something other than a tensor, get None."""
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name: str):
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, (tuple, list)) and output else output
            if isinstance(out, dict) and out:
                out = next(iter(out.values()))
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape[1:])
        return record

    model = bundle.model.eval()
    named = [(n, m) for n, m in model.named_modules() if n]
    handles = [m.register_forward_hook(hook(n)) for n, m in named]
    try:
        with torch.no_grad():
            model(*one_sample(bundle.signature))
    finally:
        for h in handles:
            h.remove()
    return [(n, type(m).__name__, shapes.get(n)) for n, m in named]
