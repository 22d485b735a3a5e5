"""Exporters (ONNX, OpenVINO IR, TensorRT) and parity checks.

    from export import to_onnx, to_openvino, to_tensorrt, check_parity, check_exportable
"""

from __future__ import annotations

from export.api import ExportResult, Target, VerifyConfig, export_model
from export.check import TargetCheck, check_exportable
from export.errors import ExportError, ParityError
from export.onnx import Exporter, OnnxConfig, to_onnx
from export.openvino import OVSource, to_openvino
from export.parity import ParityReport, check_parity
from export.tensorrt import Precision, TensorRTConfig, check_qdq_for_tensorrt, plan_build, to_tensorrt, trtexec_command

__all__ = ["ExportResult", "Target", "VerifyConfig", "export_model", "ExportError", "Exporter", "OVSource", "OnnxConfig", "ParityError", "ParityReport", "Precision",
           "TargetCheck", "TensorRTConfig", "check_exportable", "check_parity", "check_qdq_for_tensorrt",
           "plan_build", "to_onnx", "to_openvino", "to_tensorrt", "trtexec_command"]
