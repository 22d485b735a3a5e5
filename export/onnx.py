"""PyTorch -> ONNX: the dynamo exporter (TorchScript only on request), onnxslim clean-up, metadata, checker."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from deepslim.artifact import META_KEY, ArtifactMeta
from deepslim.errors import ConfigError, first_line
from deepslim.fileio import atomic_files
from deepslim.models import ModelBundle
from deepslim.profile import count_macs_params
from deepslim.spec import InputSpec
from export.errors import ExportError
from export.options import Exporter

MAX_PROTO_BYTES = 2_000_000_000  # protobuf's limit; larger models keep their weights in a side file


@dataclass(frozen=True)
class OnnxConfig:
    exporter: Exporter = Exporter.DYNAMO
    simplify: bool = True
    input_size: int | None = None  # export at another resolution than the model was trained at
    opset: int | None = None
    dynamic_batch: bool = True
    fp16: bool = False  # fp16 weights and arithmetic, fp32 inputs/outputs (for GPU runtimes)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exporter", Exporter(self.exporter))
        if self.input_size is not None and self.input_size < 1:
            raise ConfigError(f"--input-size must be a positive integer, got {self.input_size}.")


def export_spec(bundle: ModelBundle, input_size: int | None) -> InputSpec:
    """The input spec to export at; checks that the architecture accepts a changed size."""
    if input_size is None or (input_size, input_size) == bundle.input_spec.size:
        return bundle.input_spec
    spec = bundle.input_spec.with_size(input_size)
    try:
        with torch.no_grad():
            bundle.model.eval()(torch.zeros(1, *spec.shape))
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise ExportError(f"{bundle.arch.name} does not accept {input_size}x{input_size} inputs "
                          f"({first_line(exc)}); export it at its trained size.") from exc
    return spec


def to_onnx(bundle: ModelBundle, output: str | Path, config: OnnxConfig | None = None) -> Path:
    """Export ``bundle`` to a checked ONNX file with deepslim's metadata; atomic."""
    import onnx
    config = config or OnnxConfig()
    spec = export_spec(bundle, config.input_size)
    model = bundle.model.eval().cpu()
    proto = _export(model, torch.randn(2, *spec.shape), config, bundle.arch.name)
    if config.fp16:
        from onnxruntime.transformers.float16 import convert_float_to_float16
        proto = convert_float_to_float16(proto, keep_io_types=True)
    if config.simplify or config.fp16:  # onnxslim also re-sorts the nodes the fp16 pass appends
        proto = _simplify(proto)
    macs, params = count_macs_params(model, spec)
    meta = ArtifactMeta(spec, list(bundle.classes), list(bundle.lineage),
                        {"target": "onnx", "exporter": config.exporter.value, "simplified": config.simplify,
                         "opset": _opset(proto), "precision": "fp16" if config.fp16 else "fp32", "source_arch": bundle.arch.name,
                         "input_size": list(spec.size), "trained_input_size": list(bundle.input_spec.size),
                         "macs": macs, "params": params})
    set_metadata(proto, meta)
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


def _export(model: torch.nn.Module, example: torch.Tensor, config: OnnxConfig, name: str):
    import onnx
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if config.exporter is Exporter.DYNAMO:
                dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if config.dynamic_batch else None
                program = torch.onnx.export(model, (example,), dynamo=True, input_names=["input"],
                                            output_names=["logits"], dynamic_shapes=dynamic,
                                            opset_version=config.opset, optimize=True, verbose=False)
                return program.model_proto
            buffer = io.BytesIO()
            axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if config.dynamic_batch else None
            torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes=axes, opset_version=config.opset or 17)
            return onnx.load_from_string(buffer.getvalue())
    except Exception as exc:  # exporter failures come in many types; report the cause in one sentence
        hint = "; try --exporter legacy" if config.exporter is Exporter.DYNAMO else ""
        raise ExportError(f"ONNX export of {name} with the {config.exporter.value} exporter failed: "
                          f"{type(exc).__name__}: {first_line(exc)}{hint}.") from exc


def _simplify(proto):
    import onnxslim
    with contextlib.redirect_stdout(io.StringIO()):
        return onnxslim.slim(proto)


def _opset(proto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
