"""The TensorRT path without a GPU: build plan, trtexec line, explicit-quantization rules, compatibility."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from benchmarks.runners.tensorrt_runner import check_engine_compatible
from deepslim.artifact import ArtifactMeta
from deepslim.errors import ArtifactMismatchError, BackendMissingError, ConfigError
from deepslim.spec import InputSpec
from export import TensorRTConfig, check_qdq_for_tensorrt, plan_build, to_onnx, trtexec_command
from export.tensorrt import Precision

META = ArtifactMeta(InputSpec.create(3, 224, (0.5,), (0.5,)), [str(i) for i in range(10)])
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


def test_profile_shapes_and_flags_follow_the_options():
    plan = plan_build(META, TensorRTConfig(precision="fp16", batches=(1, 8, 32), workspace_mib=512))
    assert plan.min_shape == (1, 3, 224, 224) and plan.opt_shape == (32, 3, 224, 224)
    assert plan.max_shape == (32, 3, 224, 224)
    assert plan.network_flags == ("STRONGLY_TYPED",) and plan.builder_flags == ()
    assert plan.convert_to_fp16 and not plan.requires_qdq and plan.workspace_bytes == 512 * 2**20
    plan = plan_build(META, TensorRTConfig(precision="int8", batches=(1, 16), opt_batch=4))
    assert plan.opt_shape[0] == 4 and plan.requires_qdq and not plan.convert_to_fp16


def test_trtexec_command_matches_the_plan():
    plan = plan_build(META, TensorRTConfig(batches=(1, 8)))
    line = trtexec_command("m.onnx", "m.engine", plan, "cache.bin")
    assert line.split() == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--minShapes=input:1x3x224x224",
                            "--optShapes=input:8x3x224x224", "--maxShapes=input:8x3x224x224",
                            "--memPoolSize=workspace:1024M", "--stronglyTyped", "--noTF32",
                            "--timingCacheFile=cache.bin"]


@pytest.mark.parametrize("precision,cleared", [("fp32", ("TF32",)), ("fp16", ()), ("int8", ())])
def test_an_fp32_engine_is_built_without_tf32(precision, cleared):
    from export.tensorrt import apply_builder_flags

    class Flags:
        TF32 = "tf32-flag"

    class FakeTrt:
        BuilderFlag = Flags

    class FakeConfig:
        def __init__(self):
            self.set, self.cleared = [], []

        def set_flag(self, flag):
            self.set.append(flag)

        def clear_flag(self, flag):
            self.cleared.append(flag)

    plan = plan_build(META, TensorRTConfig(precision=precision))
    config = FakeConfig()
    apply_builder_flags(FakeTrt, config, plan)
    assert plan.cleared_builder_flags == cleared and config.set == []
    assert config.cleared == (["tf32-flag"] if precision == "fp32" else [])
    assert ("--noTF32" in trtexec_command("m.onnx", "m.engine", plan).split()) is (precision == "fp32")


@pytest.mark.parametrize("kwargs,fragment", [({"batches": ()}, "--batch"), ({"batches": (0, 4)}, "--batch"),
                                             ({"workspace_mib": 0}, "--workspace"),
                                             ({"batches": (1, 4), "opt_batch": 8}, "outside the profile"),
                                             ({"precision": "int4"}, "int4")])
def test_bad_tensorrt_options(kwargs, fragment):
    with pytest.raises((ConfigError, ValueError), match=fragment):
        TensorRTConfig(**kwargs)


def _qdq_model(tmp_path, *, symmetric: bool, per_channel: bool, quantize_bias: bool = False):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from deepslim.models import load_model
    bundle = load_model(arch="small_cnn", num_classes=10, input_size=8, arch_kwargs={"width": 8})
    fp32 = to_onnx(bundle, tmp_path / "fp32.onnx")
    name = onnx.load(str(fp32)).graph.input[0].name  # the model's forward parameter ("x")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: np.random.default_rng(i).standard_normal((1, 1, 8, 8), np.float32)}
                               for i in range(4)])

        def get_next(self):
            return next(self.items, None)

    out = tmp_path / f"qdq_{symmetric}_{per_channel}_{quantize_bias}.onnx"
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                                   "QuantizeBias": quantize_bias})  # TensorRT has no int32 bias Q/DQ
    return onnx.load(str(out))


def test_symmetric_per_channel_qdq_meets_tensorrt_rules(tmp_path):
    assert check_qdq_for_tensorrt(_qdq_model(tmp_path, symmetric=True, per_channel=True)) == []


def test_asymmetric_activations_and_per_tensor_weights_are_flagged(tmp_path):
    problems = check_qdq_for_tensorrt(_qdq_model(tmp_path, symmetric=False, per_channel=True))
    assert any("uint8" in p for p in problems) and any("not 0" in p for p in problems)
    problems = check_qdq_for_tensorrt(_qdq_model(tmp_path, symmetric=True, per_channel=False))
    assert any("per tensor" in p and "per-channel" in p for p in problems)


def test_wrong_per_channel_axis_is_flagged():
    w = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.int8), "w_q")
    scale = numpy_helper.from_array(np.full(2, 0.1, np.float32), "w_scale")
    zero = numpy_helper.from_array(np.zeros(2, np.int8), "w_zero")
    dq = helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="dq_w", axis=1)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    graph = helper.make_graph([dq, conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, scale, zero])
    problems = check_qdq_for_tensorrt(helper.make_model(graph))
    assert problems == ["dq_w: per-channel axis 1 is not the output axis 0"]


def test_plain_fp32_model_is_not_int8_ready(tmp_path):
    from deepslim.models import load_model
    path = to_onnx(load_model(arch="small_cnn", num_classes=10, input_size=8), tmp_path / "m.onnx")
    assert "no QuantizeLinear" in check_qdq_for_tensorrt(onnx.load(str(path)))[0]


def test_engine_compatibility_is_checked():
    sidecar = {"tensorrt": "10.3.0", "gpu": "NVIDIA A100", "compute_capability": "8.0"}
    check_engine_compatible(sidecar, "10.3.0", "NVIDIA A100-SXM4", "8.0")
    with pytest.raises(ArtifactMismatchError, match="built with TensorRT 10.3.0 but this machine has 10.4.0"):
        check_engine_compatible(sidecar, "10.4.0", "NVIDIA A100", "8.0")
    with pytest.raises(ArtifactMismatchError, match=r"built for NVIDIA A100 \(compute capability 8.0\)"):
        check_engine_compatible(sidecar, "10.3.0", "NVIDIA H100", "9.0")


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt and a GPU are present")
def test_without_tensorrt_the_build_fails_with_one_sentence(tmp_path):
    from deepslim.models import load_model
    from export import to_tensorrt
    path = to_onnx(load_model(arch="small_cnn", num_classes=10, input_size=8), tmp_path / "m.onnx")
    with pytest.raises(BackendMissingError, match="'tensorrt' package and an NVIDIA GPU"):
        to_tensorrt(path, tmp_path / "m.engine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.skipif(not HAVE_TRT, reason="needs the tensorrt package and a CUDA GPU")
def test_engine_builds_runs_and_matches_onnx(tmp_path):
    from benchmarks.runners import open_runner
    from deepslim.models import load_model
    from export import check_parity, to_tensorrt
    bundle = load_model(arch="resnet18", num_classes=10, input_size=32)
    onnx_path = to_onnx(bundle, tmp_path / "m.onnx")
    engine = to_tensorrt(onnx_path, tmp_path / "m.engine", TensorRTConfig(batches=(1, 8),
                                                                          timing_cache=tmp_path / "cache"))
    assert (tmp_path / "m.engine.json").exists() and (tmp_path / "cache").exists()
    assert open_runner(engine, "tensorrt").run(np.zeros((8, 3, 32, 32), np.float32)).shape == (8, 10)
    assert check_parity(bundle, engine, precision="fp32").passed
    assert Precision.FP32.value == "fp32"


def test_int32_bias_quantization_is_flagged(tmp_path):
    """onnxruntime quantizes biases to int32 by default; TensorRT's explicit quantization is int8 only."""
    problems = check_qdq_for_tensorrt(_qdq_model(tmp_path, symmetric=True, per_channel=True, quantize_bias=True))
    assert any("bias" in p and "int32" in p for p in problems)
