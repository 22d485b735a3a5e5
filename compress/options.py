"""Compression choices as enums (torch-free, so the CLI can offer them without importing torch)."""

from __future__ import annotations

from enum import Enum


class Importance(str, Enum):
    L1 = "l1"
    L2 = "l2"
    TAYLOR = "taylor"   # first-order Taylor; needs a few batches of data
    BN = "bn"           # network slimming: |BatchNorm scale|
    LAMP = "lamp"
    RANDOM = "random"


class Allocation(str, Enum):
    UNIFORM = "uniform"          # the same ratio for every layer
    SENSITIVITY = "sensitivity"  # spread by per-layer sensitivity


class Recover(str, Enum):
    FINETUNE = "finetune"  # cross-entropy with the labels
    KD = "kd"              # knowledge distillation from the model before pruning


class Method(str, Enum):
    PTQ = "ptq"          # static int8: weights and activations, calibrated on data
    QAT = "qat"          # fake-quantized fine-tuning, then the same int8 formats
    DYNAMIC = "dynamic"  # int8 weights, activations quantized at run time (onnxruntime)
    FP16 = "fp16"        # half-precision weights (GPU targets, OpenVINO)


class QuantTarget(str, Enum):
    ONNXRUNTIME = "onnxruntime"  # Q/DQ ONNX
    OPENVINO = "openvino"        # NNCF-quantized IR
    TENSORRT = "tensorrt"        # symmetric S8S8 Q/DQ ONNX for an explicit-quantization engine


class Calibration(str, Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class Activations(str, Enum):
    AUTO = "auto"  # by target and CPU: u8 for onnxruntime on CPUs (ORT's advice), s8 symmetric for TensorRT
    U8 = "u8"
    S8 = "s8"
