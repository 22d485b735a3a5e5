"""Exporters (ONNX, OpenVINO IR, TensorRT) and parity checks.

    from export import export_model, to_onnx, to_openvino, to_tensorrt, check_parity, check_exportable

Attributes load on first use (PEP 562), so ``export.options`` (the enums the CLI offers)
imports no torch or backend.
"""

from __future__ import annotations

import importlib
from typing import Any

from export.errors import ExportError, ParityError
from export.options import Exporter, OVSource, Precision, Target

_LAZY = {
    "ExportResult": "export.api", "VerifyConfig": "export.api", "export_model": "export.api",
    "planned_files": "export.api",
    "TargetCheck": "export.check", "check_exportable": "export.check",
    "OnnxConfig": "export.onnx", "to_onnx": "export.onnx", "to_openvino": "export.openvino",
    "ParityReport": "export.parity", "check_parity": "export.parity",
    "TensorRTConfig": "export.tensorrt", "check_qdq_for_tensorrt": "export.tensorrt", "plan_build": "export.tensorrt",
    "to_tensorrt": "export.tensorrt", "trtexec_command": "export.tensorrt",
}

__all__ = ["ExportError", "Exporter", "OVSource", "ParityError", "Precision", "Target", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
