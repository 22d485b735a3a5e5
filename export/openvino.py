"""ONNX (or a torch.export program) -> OpenVINO IR (.xml + .bin) with deepslim's metadata in rt_info."""

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
from benchmarks.runners.openvino_runner import ov_reason
from export.errors import ExportError
from export.onnx import OnnxConfig, export_spec, to_onnx
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
    meta = ArtifactMeta(meta.input_spec, meta.classes, meta.lineage,
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
        return ov.convert_model(str(onnx_path)), meta
    except Exception as exc:  # OpenVINO's frontends raise several exception types
        raise ExportError(f"OpenVINO cannot convert {onnx_path.name}: {ov_reason(exc)}.") from exc


def _convert_torch(ov, bundle: ModelBundle, onnx_config: OnnxConfig):
    from deepslim.profile import count_macs_params
    spec = export_spec(bundle, onnx_config.input_size)
    model = bundle.model.eval().cpu()
    example = torch.randn(2, *spec.shape)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dims = ({0: torch.export.Dim("batch", min=1, max=4096)},)
            program = torch.export.export(model, (example,), dynamic_shapes=dims)
            converted = ov.convert_model(program)
    except Exception as exc:  # torch.export and OpenVINO raise many types
        raise ExportError(f"Direct torch -> OpenVINO conversion of {bundle.arch.name} failed: {first_line(exc)}; "
                          "use --ov-via onnx.") from exc
    macs, params = count_macs_params(model, spec)
    meta = ArtifactMeta(spec, list(bundle.classes), list(bundle.lineage),
                        {"source_arch": bundle.arch.name, "input_size": list(spec.size),
                         "trained_input_size": list(bundle.input_spec.size), "macs": macs, "params": params})
    return converted, meta


def _openvino():
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendMissingError("OpenVINO export needs the 'openvino' package; install it with "
                                  "`pip install openvino`.") from exc
    return ov
