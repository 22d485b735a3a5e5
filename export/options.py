"""The export choices as enums (torch-free, so the CLI can offer them without importing a backend)."""

from __future__ import annotations

from enum import Enum


class Target(str, Enum):
    ONNX = "onnx"
    OPENVINO = "openvino"
    TENSORRT = "tensorrt"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Exporter(str, Enum):
    DYNAMO = "dynamo"
    LEGACY = "legacy"  # the TorchScript-based exporter


class OVSource(str, Enum):
    ONNX = "onnx"    # convert the exported ONNX file (default: the same graph every backend sees)
    TORCH = "torch"  # convert a torch.export program directly
