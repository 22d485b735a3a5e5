"""The fp32 ONNX file and OpenVINO IR that quantization starts from, for a model of any signature.

A one-image model goes through :mod:`export` as it always has. Any other model goes through
:mod:`export` too when that accepts it; where the exporters still read one image (a
ConfigError from the one-image view of the signature), a local export with every input named
after the signature, its named dims dynamic and every output named is used instead.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

from deepslim.artifact import META_KEY, ArtifactMeta, read_onnx_meta
from deepslim.errors import ConfigError, first_line
from deepslim.models import ModelBundle
from deepslim.signature import Signature


def fp32_onnx(bundle: ModelBundle, path: Path, input_size: int | None) -> Path:
    """``bundle`` exported to the fp32 ONNX file ``path`` with deepslim's metadata (signature, task, lineage)."""
    from export.onnx import OnnxConfig, to_onnx
    signature = bundle.signature
    if signature.single_image:
        return to_onnx(bundle, path, OnnxConfig(input_size=input_size))
    if input_size is not None:
        raise ConfigError("--input-size changes the resolution of a model with one image input; this model takes "
                          f"{signature.describe()}.")
    try:
        return to_onnx(bundle, path, OnnxConfig())
    except ConfigError:  # the exporter still reads one image: export every input here
        return _export_any(bundle, path)


def _export_any(bundle: ModelBundle, path: Path) -> Path:
    import onnx

    from deepslim.modelio import example_inputs
    from export.errors import ExportError
    from export.onnx import set_metadata
    model = bundle.model.eval().cpu()
    try:
        export_graph(model, example_inputs(bundle.signature, 2), bundle.signature, path)
    except Exception as exc:  # the exporter raises many types
        raise ExportError(f"ONNX export of {bundle.arch.name} failed: {type(exc).__name__}: {first_line(exc)}.") from exc
    proto = onnx.load(str(path))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    meta = ArtifactMeta(bundle.signature, bundle.task, list(bundle.lineage),
                        {"target": "onnx", "exporter": "legacy", "simplified": False, "opset": opset,
                         "precision": "fp32", "source_arch": bundle.arch.name,
                         "params": int(sum(p.numel() for p in model.parameters()))})
    set_metadata(proto, meta)
    onnx.save_model(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path


def export_graph(model, example: tuple, signature: Signature, path: Path, opset: int = 17) -> None:
    """TorchScript ONNX export with the signature's input and output names and dynamic axes."""
    import torch
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(example), str(path), dynamo=False, opset_version=opset,
                          input_names=list(signature.input_names), output_names=list(signature.outputs),
                          dynamic_axes=signature.dynamic_axes())


def fp32_openvino(onnx_path: Path, xml: Path, signature: Signature) -> Path:
    """The OpenVINO IR of the fp32 ONNX file (its metadata carried into rt_info): through :mod:`export` for a
    one-image model, else converted here (the same ONNX frontend, every input kept as the file has it)."""
    if signature.single_image:
        from export.openvino import to_openvino
        return to_openvino(onnx_path, xml)
    return _openvino_any(onnx_path, xml)


def _openvino_any(onnx_path: Path, xml: Path) -> Path:
    import openvino as ov

    from benchmarks.runners.openvino_runner import ov_reason
    from export.errors import ExportError
    meta = read_onnx_meta(onnx_path)
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:  # OpenVINO's frontends raise several types
        raise ExportError(f"OpenVINO cannot convert {onnx_path.name}: {ov_reason(exc)}.") from exc
    export: dict[str, Any] = {**meta.export, "target": "openvino", "precision": "fp32", "via": "onnx"}
    model.set_rt_info(ArtifactMeta(meta.signature, meta.task, meta.lineage, export).to_json(), [META_KEY, "meta"])
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml
