"""The export choices as enums (torch-free, so the CLI can offer them without importing a backend)."""

from __future__ import annotations

from enum import Enum

from deepslim.errors import ConfigError


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


def parse_seq_len(text: str | None) -> tuple[int, int, int] | None:
    """``--seq-len MIN,OPT,MAX`` (or one length N for N,N,N) -> (min, opt, max); None stays None."""
    if text is None:
        return None
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise ConfigError(f"--seq-len must be MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX (e.g. 16,128,512) or one "
                          f"length, got '{text}'.")
    return values[0], values[1], values[2]
