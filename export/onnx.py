"""PyTorch -> ONNX: the dynamo exporter (TorchScript only on request), onnxslim clean-up, metadata, checker.

The graph takes the model's signature: its inputs by name, in ``forward``'s order and of their dtypes, and
its outputs by name in ``signature.outputs`` order (a dict's keys, a tuple's ``output_0``...), with ``batch``
and every named dim of the signature as dynamic axes.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deepslim.artifact import META_KEY, ArtifactMeta
from deepslim.errors import ConfigError, first_line
from deepslim.fileio import atomic_files
from deepslim.models import ModelBundle
from deepslim.modelio import all_outputs, example_inputs
from deepslim.profile import count_macs_params
from deepslim.signature import BATCH, Signature, parse_size
from export.errors import ExportError
from export.options import Exporter

MAX_PROTO_BYTES = 2_000_000_000  # protobuf's limit; larger models keep their weights in a side file
MAX_DIM = 4096  # the largest batch (and named dim) the dynamo exporter is told about


@dataclass(frozen=True)
class OnnxConfig:
    exporter: Exporter = Exporter.DYNAMO
    simplify: bool = True
    input_size: int | tuple[int, int] | str | None = None  # one-image models: export at N or (H, W) ("28x56")
    opset: int | None = None
    dynamic_batch: bool = True
    fp16: bool = False  # fp16 weights and arithmetic, fp32 inputs/outputs (for GPU runtimes)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exporter", Exporter(self.exporter))
        self.size  # noqa: B018 -- validates input_size

    @property
    def size(self) -> tuple[int, int] | None:
        """``input_size`` as (H, W), or None."""
        size = self.input_size
        if isinstance(size, (tuple, list)):
            if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
                raise ConfigError(f"--input-size must be a positive size N or HxW (e.g. 28x56), got {size}.")
            size = f"{size[0]}x{size[1]}"
        elif isinstance(size, bool):
            raise ConfigError(f"--input-size must be a positive size N or HxW (e.g. 28x56), got {size}.")
        return parse_size(size)


def export_signature(bundle: ModelBundle, input_size: int | tuple[int, int] | str | None) -> Signature:
    """The signature to export at: the bundle's, or its one image input at another size (checked to run)."""
    size = OnnxConfig(input_size=input_size).size
    signature = bundle.signature
    if size is None:
        return signature
    if not signature.single_image:
        raise ConfigError(f"--input-size applies to a model with one image input; {bundle.arch.name} takes "
                          f"{signature.describe()}.")
    if size == signature.inputs[0].size:
        return signature
    signature = signature.with_image_size(size)
    try:
        with torch.no_grad():
            bundle.model.eval()(*example_inputs(signature, 1))
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise ExportError(f"{bundle.arch.name} does not accept {size[0]}x{size[1]} inputs "
                          f"({first_line(exc)}); export it at its trained size.") from exc
    return signature


def to_onnx(bundle: ModelBundle, output: str | Path, config: OnnxConfig | None = None) -> Path:
    """Export ``bundle`` to a checked ONNX file with deepslim's metadata; atomic."""
    import onnx
    config = config or OnnxConfig()
    signature = export_signature(bundle, config.input_size)
    model = bundle.model.eval().cpu()
    proto = _export(model, signature, config, bundle.arch.name, dim_limits(bundle, signature))
    if config.fp16:
        from onnxruntime.transformers.float16 import convert_float_to_float16
        proto = convert_float_to_float16(proto, keep_io_types=True)
    if config.simplify or config.fp16:  # onnxslim also re-sorts the nodes the fp16 pass appends
        proto = _simplify(proto)
    check_graph_io(proto, signature, bundle.arch.name)
    facts = {"target": "onnx", "exporter": config.exporter.value, "simplified": config.simplify, "opset": _opset(proto),
             "precision": "fp16" if config.fp16 else "fp32", **export_facts(bundle, signature, config)}
    set_metadata(proto, ArtifactMeta(signature, bundle.task, list(bundle.lineage), facts))
    big = sum(p.numel() * p.element_size() for p in model.state_dict().values()) > MAX_PROTO_BYTES
    out = Path(output)
    data = out.with_name(out.name + ".data")
    with atomic_files(out, data) as (tmp, tmp_data):
        onnx.save_model(proto, str(tmp), save_as_external_data=big, location=data.name if big else None)
        onnx.checker.check_model(str(tmp), full_check=True)
    return out


def set_metadata(proto, meta: ArtifactMeta) -> None:
    for prop in list(proto.metadata_props):
        if prop.key == META_KEY:
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, meta.to_json()


def export_facts(bundle: ModelBundle, signature: Signature, config: OnnxConfig) -> dict[str, Any]:
    """What every export records of its model (the ``export`` part of its metadata): names, dynamic axes, sizes,
    MACs and parameters."""
    macs, params = count_macs_params(bundle.model, signature)
    facts: dict[str, Any] = {
        "source_arch": bundle.arch.name, "input_names": list(signature.input_names),
        "output_names": list(signature.outputs),
        "dynamic_axes": {k: {str(a): d for a, d in v.items()} for k, v in dynamic_axes(signature, config).items()},
        "macs": macs, "params": params}
    if limits := dim_limits(bundle, signature):
        facts["dim_limits"] = limits
    if signature.single_image:
        facts.update(input_size=list(signature.inputs[0].size),
                     trained_input_size=list(bundle.signature.inputs[0].size))
    return facts


def dynamic_axes(signature: Signature, config: OnnxConfig) -> dict[str, dict[int, str]]:
    """Per input and output name, its dynamic axes: ``batch`` (unless ``dynamic_batch`` is off) and named dims."""
    axes = {name: {a: d for a, d in dims.items() if config.dynamic_batch or d != BATCH}
            for name, dims in signature.dynamic_axes().items()}
    return {name: dims for name, dims in axes.items() if dims}


def dynamo_shapes(signature: Signature, config: OnnxConfig, limits: dict[str, int] | None = None
                  ) -> tuple[dict[int, Any] | None, ...] | None:
    """``torch.export`` dynamic shapes per input, in order: one shared ``torch.export.Dim`` per dim name, up to its
    ``limits`` (a text model's ``sequence``: its position embeddings) or :data:`MAX_DIM`."""
    axes = dynamic_axes(signature, config)
    limits = limits or {}
    dims: dict[str, Any] = {}
    shapes = []
    for spec in signature.inputs:
        wanted = axes.get(spec.name, {})
        shapes.append({a: dims.setdefault(d, torch.export.Dim(d, min=1, max=limits.get(d, MAX_DIM)))
                       for a, d in wanted.items()} or None)
    return tuple(shapes) if any(shapes) else None


def dim_limits(bundle: ModelBundle, signature: Signature) -> dict[str, int]:
    """The largest size each named dim can take: a Hugging Face text model's ``sequence`` is bounded by its
    position embeddings (``torch.export`` refuses a wider range; TensorRT profiles are checked against it)."""
    if signature.text is None or "sequence" not in {d for i in signature.inputs for d in i.shape[1:]}:
        return {}
    from deepslim.hf import position_limit
    config = getattr(bundle.model, "config", None)
    limit = position_limit(config) if config is not None else None
    limit = limit or signature.text.position_limit
    return {"sequence": limit} if limit else {}


class OrderedOutputs(torch.nn.Module):
    """``model`` returning its outputs as a tuple in ``signature.outputs`` order (for dict and tuple outputs)."""

    def __init__(self, model: torch.nn.Module, signature: Signature) -> None:
        super().__init__()
        self.model, self.signature = model, signature

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(all_outputs(self.model(*args), self.signature).values())


def _export(model: torch.nn.Module, signature: Signature, config: OnnxConfig, name: str,
            limits: dict[str, int] | None = None):
    import onnx
    wrapped = signature.output_layout != "tensor"
    module = OrderedOutputs(model, signature) if wrapped else model
    example = example_inputs(signature, 2)
    names = {"input_names": list(signature.input_names), "output_names": list(signature.outputs)}
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if config.exporter is Exporter.DYNAMO:
                shapes = dynamo_shapes(signature, config, limits)
                program = torch.onnx.export(module, example, dynamo=True, **names,
                                            dynamic_shapes=(shapes,) if wrapped and shapes else shapes,
                                            opset_version=config.opset, optimize=True, verbose=False)
                return program.model_proto
            buffer = io.BytesIO()
            torch.onnx.export(module, example, buffer, dynamo=False, **names,
                              dynamic_axes=dynamic_axes(signature, config) or None, opset_version=config.opset or 17)
            return onnx.load_from_string(buffer.getvalue())
    except Exception as exc:  # exporter failures come in many types; report the cause in one sentence
        hint = "; try --exporter legacy" if config.exporter is Exporter.DYNAMO else ""
        raise ExportError(f"ONNX export of {name} with the {config.exporter.value} exporter failed: "
                          f"{type(exc).__name__}: {first_line(exc)}{hint}.") from exc


def graph_io(proto) -> tuple[list[str], list[str]]:
    """An ONNX graph's input names (initializers left out) and output names, in order."""
    constants = {i.name for i in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in constants], [o.name for o in proto.graph.output]


def check_graph_io(proto, signature: Signature, name: str) -> None:
    """The exported graph takes and returns exactly the signature's names, in its order."""
    inputs, outputs = graph_io(proto)
    if inputs != list(signature.input_names):
        raise ExportError(f"The ONNX graph of {name} takes the inputs {inputs}, not the signature's "
                          f"{list(signature.input_names)} (an input forward does not use is dropped by the "
                          "exporter); make forward use every input.")
    if outputs != list(signature.outputs):
        raise ExportError(f"The ONNX graph of {name} returns the outputs {outputs}, not the signature's "
                          f"{list(signature.outputs)}.")


def _simplify(proto):
    import onnxslim
    with contextlib.redirect_stdout(io.StringIO()):
        return onnxslim.slim(proto)


def _opset(proto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
