"""Calling a model the way its signature says: inputs in, the task's output out.

A batch ``x`` is a tensor (one input) or a tuple/list of tensors in ``forward``'s order (what
:class:`deepslim.samples.Prepared` yields and the DataLoader collates). A model returns a tensor,
a tuple/list of tensors, or a dict (a Hugging Face ``ModelOutput`` is a dict); :func:`task_output`
picks the one the task reads.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deepslim.errors import ConfigError, ModelError, first_line
from deepslim.signature import InputKind, Signature, TensorSpec
from deepslim.tasks import Task, TaskKind


def as_args(x: Any) -> tuple[torch.Tensor, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def call(model: nn.Module, x: Any) -> Any:
    """``model(x)`` for one input, ``model(*x)`` for several."""
    return model(*as_args(x))


def to_device(x: Any, device: torch.device | str, *, non_blocking: bool = False) -> Any:
    if isinstance(x, (tuple, list)):
        return tuple(t.to(device, non_blocking=non_blocking) for t in x)
    return x.to(device, non_blocking=non_blocking)


def batch_len(x: Any) -> int:
    return len(as_args(x)[0])


def shapes(x: Any) -> str:
    """The batch's shapes in words, for error messages."""
    args = as_args(x)
    return str(tuple(args[0].shape)) if len(args) == 1 else ", ".join(str(tuple(t.shape)) for t in args)


def output_layout(out: Any) -> tuple[str, tuple[str, ...]]:
    """(tensor|tuple|dict, output names) of what a model returned."""
    if isinstance(out, torch.Tensor):
        return "tensor", ("output",)
    if isinstance(out, Mapping):
        names = tuple(k for k, v in out.items() if isinstance(v, torch.Tensor))
        if not names:
            raise ModelError("The model returns a dict without tensors.")
        return "dict", names
    if isinstance(out, (tuple, list)) and out and all(isinstance(v, torch.Tensor) for v in out):
        return "tuple", tuple(f"output_{i}" for i in range(len(out)))
    raise ModelError(f"The model returns {type(out).__name__}; deepslim reads tensors, tuples of tensors or "
                     "dicts of tensors.")


def all_outputs(out: Any, signature: Signature) -> dict[str, torch.Tensor]:
    """Every output of ``out`` by name, in the signature's order."""
    if signature.output_layout == "dict":
        return {name: out[name] for name in signature.outputs}
    if signature.output_layout == "tuple":
        return dict(zip(signature.outputs, out))
    return {signature.outputs[0]: out}


def task_output(out: Any, signature: Signature) -> torch.Tensor:
    """The output the task reads (``signature.task_output``)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        try:
            return out[signature.task_output]
        except KeyError:
            raise ModelError(f"The model's output has no '{signature.task_output}'; it has {sorted(out)}.") from None
    return out[signature.task_index]


def forward_parameters(model: nn.Module) -> tuple[tuple[str, ...], int] | None:
    """``forward``'s positional parameter names and how many of them are required (None for ``*args``)."""
    params = list(inspect.signature(model.forward).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    positional = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    required = sum(p.default is inspect.Parameter.empty for p in positional)
    return tuple(p.name for p in positional), max(required, 1 if positional else 0)


def forward_names(model: nn.Module) -> tuple[str, ...] | None:
    """The names of ``forward``'s required positional parameters (the first one when all have defaults)."""
    found = forward_parameters(model)
    return None if found is None else found[0][:found[1]]


def bind_inputs(model: nn.Module, proposed: tuple[TensorSpec, ...], *, by_name: bool) -> tuple[TensorSpec, ...]:
    """``proposed`` renamed after ``forward``'s parameters: by position (the data gives at least the required
    ones, at most all), or checked by name for dict data (every required one, none it does not take)."""
    found = forward_parameters(model)
    if found is None:
        return proposed
    names, required = found
    if by_name:
        given = [p.name for p in proposed]
        missing, unknown = [n for n in names[:required] if n not in given], [g for g in given if g not in names]
        if missing or unknown:
            raise ConfigError(f"The dataset's inputs {sorted(given)} do not match the model's forward parameters "
                              f"{list(names)}" + (f" (missing {missing})" if missing else "") + ".")
        order = {p.name: p for p in proposed}
        return tuple(order[n] for n in names if n in order)
    if not required <= len(proposed) <= len(names):
        takes = f"{required}" if required == len(names) else f"{required} to {len(names)}"
        raise ConfigError(f"The model's forward takes {takes} input{'s' if len(names) != 1 else ''} "
                          f"({', '.join(names)}) but the dataset gives {len(proposed)} per sample.")
    from dataclasses import replace
    return tuple(replace(p, name=n) for p, n in zip(proposed, names))


def example_inputs(signature: Signature, batch: int = 1, *, sizes: dict[str, int] | None = None,
                   seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Seeded random inputs of every input (named dims default to 16), in order."""
    gen = torch.Generator().manual_seed(seed)
    sizes = {**{d: 16 for i in signature.inputs for d in i.shape[1:] if isinstance(d, str)}, **(sizes or {})}
    out = []
    for spec in signature.inputs:
        shape = spec.concrete_shape(batch, sizes)
        if spec.kind is InputKind.MASK:
            out.append(torch.ones(shape, dtype=getattr(torch, spec.dtype)))
        elif spec.is_integer:
            out.append(torch.randint(0, 2, shape, generator=gen, dtype=getattr(torch, spec.dtype)))
        else:
            out.append(torch.randn(shape, generator=gen))
    return tuple(out)


def probe_outputs(model: nn.Module, signature: Signature, task: Task, *, choice: str | None = None) -> Signature:
    """``signature`` with the outputs ``model`` really returns and the one the task reads: ``choice``
    (``--output``), else the only output whose width fits the task (``logits`` when several do)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = call(model, example_inputs(signature, 2))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        hint = "; check --input-size and --channels" if signature.image is not None else ""
        raise ModelError(f"The model fails on example inputs ({signature.describe()}): {first_line(exc)}{hint}.") from exc
    finally:
        model.train(was)
    layout, names = output_layout(out)
    if layout == "tensor":  # one tensor keeps the name the caller gave it (logits, prediction)
        names = signature.outputs[:1]
    tensors = {n: out[n] for n in names} if isinstance(out, Mapping) else dict(zip(names, as_args(out)))
    fits = [n for n, t in tensors.items() if fits_task(t, task)]
    if choice is not None:
        if choice not in names:
            raise ConfigError(f"--output {choice} is not an output of the model; its outputs are {list(names)}.")
        if choice not in fits:
            raise ModelError(f"Output '{choice}' has shape {tuple(tensors[choice].shape)}, which does not fit a "
                             f"{task.kind.value} task with {task.width} outputs per sample.")
        return signature.with_outputs(names, layout, choice)
    if len(fits) == 1 or "logits" in fits:
        return signature.with_outputs(names, layout, fits[0] if len(fits) == 1 else "logits")
    shown = ", ".join(f"{n} {tuple(t.shape)}" for n, t in tensors.items())
    if not fits:
        raise ModelError(f"No output of the model fits a {task.kind.value} task with {task.width} values per "
                         f"sample (outputs: {shown}); check the architecture's output width or --task.")
    raise ConfigError(f"Several outputs fit the task ({', '.join(fits)}); pick one with --output NAME.")


def fits_task(output: torch.Tensor, task: Task) -> bool:
    """Whether a batch of 2's output has one row of the task's width per sample."""
    if output.dim() == 2 and output.shape[0] == 2 and output.shape[1] == task.width:
        return output.is_floating_point()
    return task.kind is TaskKind.REGRESSION and task.width == 1 and output.dim() == 1 and output.shape[0] == 2


# --- numpy feeds for exported artifacts ---------------------------------------------------------

def numpy_inputs(x: Any) -> tuple[Any, ...]:
    """A batch (tensor, or tuple of tensors) as numpy arrays, in the signature's order."""
    import numpy as np
    return tuple(np.ascontiguousarray(t.detach().cpu().numpy()) if isinstance(t, torch.Tensor) else np.asarray(t)
                 for t in as_args(x))


def feed(signature: Signature, arrays: Any, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """``{input name: array}`` for a runtime; ``arrays`` in the signature's order (a bare array for one input),
    each cast to its input's dtype. ``names`` are the artifact's own input names when they differ."""
    import numpy as np
    values = arrays if isinstance(arrays, (tuple, list)) else (arrays,)
    if len(values) != len(signature.inputs):
        raise ConfigError(f"{len(values)} arrays were given for the {len(signature.inputs)} inputs "
                          f"{list(signature.input_names)}.")
    keys = names or signature.input_names
    return {k: np.ascontiguousarray(np.asarray(v).astype(s.dtype, copy=False))
            for k, v, s in zip(keys, values, signature.inputs)}


def select_output(outputs: list[Any], names: list[str], signature: Signature) -> Any:
    """The task output among a runtime's ``outputs`` (named ``names``): by name, else by the signature's index."""
    if signature.task_output in names:
        return outputs[names.index(signature.task_output)]
    if len(outputs) == len(signature.outputs):
        return outputs[signature.task_index]
    if len(outputs) == 1:
        return outputs[0]
    raise ModelError(f"The artifact's outputs {names} do not include the task output '{signature.task_output}'.")
