"""ONNX (or a torch.export program) -> OpenVINO IR (.xml + .bin) with deepslim's metadata in rt_info.

The IR keeps the signature: every input by name with its static dims fixed and ``batch`` and named dims
dynamic, every output by name in the signature's order."""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import torch

from deepslim.artifact import META_KEY, ArtifactMeta, read_onnx_meta
from deepslim.errors import BackendMissingError, ConfigError, InputFileError, first_line
from deepslim.fileio import atomic_files, require_file
from deepslim.models import ModelBundle
from deepslim.modelio import example_inputs
from deepslim.signature import Signature
from benchmarks.runners.openvino_runner import ov_reason
from export.errors import ExportError
from export.onnx import (OnnxConfig, OrderedOutputs, dim_limits, dynamo_shapes, export_facts, export_signature,
                         to_onnx)
from export.options import OVSource


def to_openvino(source: ModelBundle | str | Path, output: str | Path, *, precision: str = "fp32",
                via: OVSource = OVSource.ONNX, onnx_config: OnnxConfig | None = None) -> Path:
    """Write an OpenVINO IR (``.xml`` + ``.bin``) from a bundle or a deepslim ONNX file; atomic."""
    ov = _openvino()
    if precision not in ("fp32", "fp16"):
        raise ConfigError(f"OpenVINO export supports --precision fp32 or fp16, not {precision} (int8 comes from "
                          "`deepslim compress quantize`).")
    out = Path(output)
    if out.suffix.lower() != ".xml":
        raise ConfigError(f"An OpenVINO IR is named *.xml (with a .bin beside it); got {out.name}.")
    try:
        via = OVSource(via)
    except ValueError:
        raise ConfigError(f"--ov-via must be onnx or torch, got '{via}'.") from None
    if not isinstance(source, ModelBundle) and (onnx_config or OnnxConfig()).input_size is not None:
        raise ConfigError(f"--input-size applies when exporting a bundle; {Path(source).name} keeps the size it "
                          "was exported at.")
    model, meta = _convert(ov, source, via, onnx_config or OnnxConfig())
    shape_inputs(ov, model, meta.signature)
    meta = ArtifactMeta(meta.signature, meta.task, meta.lineage,
                        {**meta.export, "target": "openvino", "precision": precision, "via": via.value})
    model.set_rt_info(meta.to_json(), [META_KEY, "meta"])
    with atomic_files(out, out.with_suffix(".bin")) as (tmp_xml, _):
        ov.save_model(model, str(tmp_xml), compress_to_fp16=precision == "fp16")
    return out


def _convert(ov, source, via: OVSource, onnx_config: OnnxConfig):
    if isinstance(source, ModelBundle):
        if via is OVSource.TORCH:
            return _convert_torch(ov, source, onnx_config)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = to_onnx(source, Path(tmp) / "model.onnx", onnx_config)
            return _convert_onnx(ov, onnx_path)
    return _convert_onnx(ov, Path(source))


def _convert_onnx(ov, onnx_path: Path):
    meta = read_onnx_meta(require_file(onnx_path, "ONNX file"))
    if meta is None:
        raise InputFileError(f"{onnx_path} has no deepslim metadata; export it with `deepslim export --target onnx`.")
    try:
        converted = ov.convert_model(str(onnx_path))
    except Exception as exc:  # OpenVINO's frontends raise several exception types
        raise ExportError(f"OpenVINO cannot convert {onnx_path.name}: {ov_reason(exc)}.") from exc
    if len(converted.inputs) != len(meta.signature.inputs) or len(converted.outputs) != len(meta.signature.outputs):
        raise ExportError(f"{onnx_path.name} has {len(converted.inputs)} inputs and {len(converted.outputs)} outputs "
                          f"but its metadata describes {meta.signature.describe()}.")
    return converted, meta


def shape_inputs(ov, model, signature: Signature) -> None:
    """Each input (by position: an ONNX from before signatures named its one input ``input``) reshaped to its
    signature shape: numbers static, ``batch`` and named dims dynamic."""
    shapes = {i: ov.PartialShape([d if isinstance(d, int) else -1 for d in (-1, *spec.sample_shape)])
              for i, spec in enumerate(signature.inputs)}
    try:
        model.reshape(shapes)
    except RuntimeError as exc:
        raise ExportError(f"OpenVINO cannot give the model its signature's shapes ({signature.describe()}): "
                          f"{ov_reason(exc)}.") from exc


def name_ports(model, signature: Signature) -> None:
    """Inputs and outputs named after the signature (a converted torch program names them after its own args)."""
    for port, name in zip(model.inputs, signature.input_names):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, signature.outputs):
        port.get_tensor().set_names({name})


def _convert_torch(ov, bundle: ModelBundle, onnx_config: OnnxConfig):
    signature = export_signature(bundle, onnx_config.input_size)
    model = bundle.model.eval().cpu()
    wrapped = signature.output_layout != "tensor"
    module = OrderedOutputs(model, signature) if wrapped else model
    shapes = dynamo_shapes(signature, onnx_config, dim_limits(bundle, signature))
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, example_inputs(signature, 2),
                                          dynamic_shapes=(shapes,) if wrapped and shapes else shapes)
            converted = ov.convert_model(program)
    except Exception as exc:  # torch.export and OpenVINO raise many types
        raise ExportError(f"Direct torch -> OpenVINO conversion of {bundle.arch.name} failed: {first_line(exc)}; "
                          "use --ov-via onnx.") from exc
    if len(converted.inputs) != len(signature.inputs) or len(converted.outputs) != len(signature.outputs):
        raise ExportError(f"Direct torch -> OpenVINO conversion of {bundle.arch.name} gave {len(converted.inputs)} "
                          f"inputs and {len(converted.outputs)} outputs, not the signature's "
                          f"({signature.describe()}); use --ov-via onnx.")
    name_ports(converted, signature)
    facts = {"exporter": "torch.export", **export_facts(bundle, signature, onnx_config)}
    return converted, ArtifactMeta(signature, bundle.task, list(bundle.lineage), facts)


def _openvino():
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendMissingError("OpenVINO export needs the 'openvino' package; install it with "
                                  "`pip install openvino`.") from exc
    return ov
