"""What pruning feeds torch-pruning and reads back, for any model kind.

torch-pruning traces a model by calling it on example inputs (``model(*example)`` for a tuple) and
walking back from the outputs (``output_transform`` picks them). Here: the example is a real sample of
every input from the model's own dataset (or, without data, zeros for a one-image model and seeded
random inputs of the right dtypes otherwise), always a tuple in ``forward``'s order; the outputs read are
every output the signature names (a dict or tuple output works, and a layer feeding only a non-task output
follows the cut); MACs are counted with every input; the task head (the layer that produces the task output)
and the layers returning the other outputs are found by tracing, so their widths never change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepslim.errors import ModelError
from deepslim.modelio import all_outputs, as_args, call, example_inputs, task_output
from deepslim.signature import Signature

Example = tuple[torch.Tensor, ...]
HEAD_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def example_of(signature: Signature, data: Dataset | None = None) -> Example:
    """One sample of every input, batched (batch of 1): the first sample of ``data`` (an unaugmented split)
    when given, else zeros for a one-image model (as before signatures) or seeded random inputs."""
    if data is not None and len(data) > 0:
        x, _ = next(iter(DataLoader(data, batch_size=1, shuffle=False)))
        return tuple(as_args(x))
    if signature.single_image:
        return (torch.zeros(1, *signature.inputs[0].sample_shape),)
    return example_inputs(signature, 1)


def as_example(example: Any) -> Example:
    """An example as a tuple of tensors: a shape of one image (legacy callers), a tensor, or a tuple."""
    if isinstance(example, torch.Tensor):
        return (example,)
    if isinstance(example, (tuple, list)) and example and all(isinstance(d, int) for d in example):
        return (torch.zeros(1, *example),)
    return tuple(example)


def reader(signature: Signature | None) -> Callable[[Any], tuple[torch.Tensor, ...]] | None:
    """torch-pruning's ``output_transform``: every output the signature names (a dict or tuple output), so a
    layer that feeds only another output than the task's is traced and pruned consistently too."""
    if signature is None or signature.output_layout == "tensor":
        return None
    return lambda out: tuple(all_outputs(out, signature).values())


def on_device(example: Example, model: nn.Module) -> Example:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return tuple(t.to(device) for t in example)


def count(model: nn.Module, example: Any) -> tuple[int, int]:
    """Multiply-accumulates of one sample of every input, and the parameter count (torch-pruning's counter)."""
    import torch_pruning as tp
    was_training = model.training
    try:
        model.eval()
        macs, params = tp.utils.count_ops_and_params(model, on_device(as_example(example), model))
    finally:
        model.train(was_training)
    return int(macs), int(params)


def output_layers(model: nn.Module, example: Example, signature: Signature) -> dict[str, str]:
    """Output name -> the Linear/Conv layer whose output it is (a view of it counts); outputs that no layer
    returns unchanged (a concatenation, an activation after the head) are left out."""
    return {name: layer for name, (layer, _) in _traced(model, example, signature).items()}


def task_head(model: nn.Module, example: Example, signature: Signature, width: int) -> str | None:
    """The layer whose output is the task output with ``width`` values per sample (None: no layer returns it
    unchanged)."""
    layer, tensor = _traced(model, example, signature).get(signature.task_output, (None, None))
    return layer if layer is not None and tensor.numel() == len(tensor) * width else None


@torch.no_grad()
def _traced(model: nn.Module, example: Example, signature: Signature) -> dict[str, tuple[str, torch.Tensor]]:
    """Output name -> (the last Linear/Conv layer that returned exactly that tensor, the tensor)."""
    outputs: dict[str, torch.Tensor] = {}
    named = [(n, m) for n, m in model.named_modules() if n and isinstance(m, HEAD_TYPES)]

    def keep(name: str):
        def hook(_module, _inputs, out) -> None:
            if isinstance(out, torch.Tensor):
                outputs[name] = out
        return hook
    handles = [m.register_forward_hook(keep(n)) for n, m in named]
    was_training = model.training
    try:
        model.eval()
        returned = all_outputs(call(model, on_device(example, model)), signature)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    found = {}
    for out_name, tensor in returned.items():
        layers = [n for n, o in outputs.items() if o.numel() == tensor.numel() and o.data_ptr() == tensor.data_ptr()]
        if layers:
            found[out_name] = (layers[-1], tensor)
    return found


def head_or_fallback(model: nn.Module, example: Example, signature: Signature, width: int) -> str:
    """:func:`task_head`, else the last Linear/Conv2d with ``width`` outputs (:func:`deepslim.models.find_head`)."""
    from deepslim.models import find_head
    name = task_head(model, example, signature, width)
    if name is not None:
        return name
    try:
        return find_head(model, width)[0]
    except ModelError as exc:
        raise ModelError(f"Cannot find the task head: no Linear or Conv layer produces the task output "
                         f"'{signature.task_output}' ({width} values per sample).") from exc
