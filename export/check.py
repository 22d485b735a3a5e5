"""``deepslim export --check``: will this model export to each target, and which ops fail?"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from deepslim.errors import DeepSlimError, first_line
from deepslim.models import ModelBundle
from export.errors import ExportError
from export.onnx import OnnxConfig, to_onnx

_OP = re.compile(r"\b(aten::\w+|aten\.\w+(?:\.\w+)?|torchvision::\w+)")


@dataclass(frozen=True)
class TargetCheck:
    target: str
    status: str               # ok | fails | skipped
    detail: str = ""
    failing_ops: list[str] = field(default_factory=list)


def check_exportable(bundle: ModelBundle, *,
                     input_size: int | tuple[int, int] | str | None = None) -> list[TargetCheck]:
    """Try each export quickly (no parity, no benchmark) and report per target."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        try:
            to_onnx(bundle, onnx_path, OnnxConfig(input_size=input_size, simplify=False))
            results.append(TargetCheck("onnx", "ok", "dynamo exporter"))
        except ExportError as exc:
            legacy = _try_legacy(bundle, onnx_path, input_size)
            results.append(TargetCheck("onnx", "ok" if legacy else "fails", str(exc) if not legacy else
                                       "only with --exporter legacy: " + str(exc), sorted(set(_OP.findall(str(exc))))))
        if not onnx_path.exists():
            return results + [TargetCheck(t, "fails", "needs the ONNX export first") for t in ("openvino", "tensorrt")]
        results.append(_check_openvino(onnx_path))
        results.append(_check_tensorrt(onnx_path))
    return results


def _try_legacy(bundle: ModelBundle, path: Path, input_size: int | tuple[int, int] | str | None) -> bool:
    try:
        to_onnx(bundle, path, OnnxConfig(exporter="legacy", input_size=input_size, simplify=False))
        return True
    except ExportError:
        return False


def _check_openvino(onnx_path: Path) -> TargetCheck:
    try:
        import openvino as ov
    except ImportError:
        return TargetCheck("openvino", "skipped", "the 'openvino' package is not installed")
    try:
        ov.convert_model(str(onnx_path))
        return TargetCheck("openvino", "ok", "converted from ONNX")
    except Exception as exc:  # OpenVINO frontends raise several types
        return TargetCheck("openvino", "fails", first_line(exc), sorted(set(re.findall(r"\b[A-Z]\w+\b", str(exc)))))


def _check_tensorrt(onnx_path: Path) -> TargetCheck:
    try:
        import tensorrt as trt
    except ImportError:
        return TargetCheck("tensorrt", "skipped", "the 'tensorrt' package is not installed (needs an NVIDIA GPU)")
    try:
        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if parser.parse(onnx_path.read_bytes()):
            return TargetCheck("tensorrt", "ok", f"TensorRT {trt.__version__} parses the ONNX graph")
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        ops = sorted({str(e.node_operator()) for e in errors if hasattr(e, "node_operator")})
        return TargetCheck("tensorrt", "fails", str(errors[0]).splitlines()[0] if errors else "parse failed", ops)
    except (RuntimeError, TypeError, DeepSlimError) as exc:
        return TargetCheck("tensorrt", "skipped", f"TensorRT could not start: {first_line(exc)}")
