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

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepslim.errors import ConfigError, ModelError
from deepslim.modelio import all_outputs, as_args, call, example_inputs
from deepslim.signature import Signature

if TYPE_CHECKING:
    from deepslim.models import ModelBundle

Example = tuple[torch.Tensor, ...]
HEAD_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def example_of(signature: Signature, data: Dataset | None = None) -> Example:
    """One sample of every input, batched (batch of 1): the first sample of ``data`` (an unaugmented split)
    when given, else zeros for a one-image model (as before signatures) or seeded random inputs. A text
    model's sample is padded to its ``max_length`` (:func:`full_length`): traces and MACs are at that length."""
    if data is not None and len(data) > 0:
        x, _ = next(iter(DataLoader(data, batch_size=1, shuffle=False)))
        return full_length(tuple(as_args(x)), signature)
    if signature.single_image:
        return (torch.zeros(1, *signature.inputs[0].sample_shape),)
    return example_inputs(signature, 1, sizes=signature.sizes)


def full_length(example: Example, signature: Signature) -> Example:
    """``example`` with every ``sequence`` input padded (zeros: padding tokens, masked out) or cut to the
    signature's sequence length (``Signature.sizes``); other models' examples unchanged."""
    length = signature.sizes.get("sequence")
    if length is None:
        return example
    out = []
    for spec, t in zip(signature.inputs, example):
        if spec.shape and spec.shape[-1] == "sequence" and t.dim() == 2:
            t = torch.nn.functional.pad(t[:, :length], (0, max(length - t.shape[1], 0)))
        out.append(t)
    return tuple(out)


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


def ignored_layers(bundle: ModelBundle, names: tuple[str, ...], *, example: Example | None = None) -> dict[str, str]:
    """The layers never pruned, with the reason: the task head (the layer producing the task output, found by
    tracing ``example``), the layers that return the model's other outputs, and the user's --ignore list."""
    modules = dict(bundle.model.named_modules())
    sig = bundle.signature
    example = example if example is not None else example_of(sig)
    head = head_or_fallback(bundle.model, example, sig, bundle.task.width)
    out = {head: _head_reason(bundle)}
    if len(sig.outputs) > 1:
        for output, layer in output_layers(bundle.model, example, sig).items():
            out.setdefault(layer, f"returns the output '{output}' (its width is part of the model's outputs)")
    for name in names:
        if name not in modules:
            close = difflib.get_close_matches(name, list(modules), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; `deepslim info` lists nothing this fine, " \
                                                                      "use the names of model.named_modules()."
            raise ConfigError(f"--ignore names '{name}', which the model does not have{hint}")
        out[name] = "--ignore"
    from compress.hf_prune import fixed_layers, is_hf
    if is_hf(bundle.arch):  # embeddings, pooler, pre-classifier: the config has no width of their own
        for name, why in fixed_layers(bundle.model).items():
            out.setdefault(name, why)
    return out


def _head_reason(bundle: ModelBundle) -> str:
    if bundle.task.is_classification:
        return "classifier head (its outputs are the classes)"
    what = "label" if bundle.task.kind.value == "multilabel" else "target"
    if bundle.task.width == 1:
        return f"task head (its output is the {what})"
    return f"task head (its {bundle.task.width} outputs are the {what}s)"
