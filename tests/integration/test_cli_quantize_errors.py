"""The error contract of ``deepslim compress quantize``: one line, exit 2, nothing written, inputs unchanged."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import cli_contract
from cli_contract import Cases, assert_bad_input
from deepslim.models import load_model, save_model

OUT = "out.onnx"
QUANTIZE = ["compress", "quantize", "--no-latency", "--quiet", "--calibration-samples", "16"]


@dataclass(frozen=True)
class Artifacts:
    bundle: bytes   # small_cnn, 10 classes, 1x8x8
    onnx: bytes     # its fp32 ONNX export


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    from export.onnx import to_onnx
    root = tmp_path_factory.mktemp("quantize-artifacts")
    torch.manual_seed(0)
    bundle = load_model(arch="small_cnn", num_classes=10, input_size=8, arch_kwargs={"width": 4})
    path = save_model(bundle, root / "m.safetensors")
    onnx = to_onnx(load_model(path), root / "m.onnx")
    return Artifacts(path.read_bytes(), onnx.read_bytes())


class Workspace(cli_contract.Workspace):
    art: Artifacts

    def bundle(self) -> str:
        return self.write("model.safetensors", self.art.bundle)

    def onnx(self) -> str:
        return self.write("model.onnx", self.art.onnx)


CASES = Cases()
case = CASES.case


@case("quantize-zero-calibration-samples")
def _(ws: Workspace):
    return ([*QUANTIZE, ws.bundle(), "--calibration-samples", "0", "-o", OUT],
            ["--calibration-samples", "positive integer", "got 0"])


@case("quantize-more-samples-than-the-dataset")
def _(ws: Workspace):
    return ([*QUANTIZE, ws.bundle(), "--calibration-samples", "5000", "-o", OUT],
            ["--calibration-samples 5000", "1078 samples"])


@case("quantize-qat-on-onnx")
def _(ws: Workspace):
    return ([*QUANTIZE, ws.onnx(), "--method", "qat", "-o", OUT], ["--method qat", "bundle, not an ONNX file"])


@case("quantize-tensorrt-qdq-breaks-the-rules")
def _(ws: Workspace):
    return ([*QUANTIZE, ws.bundle(), "--target", "tensorrt", "--activations", "u8", "-o", OUT],
            ["TensorRT's explicit-quantization rules", "zero-point"])


@case("quantize-tensorrt-per-tensor-weights")
def _(ws: Workspace):
    return ([*QUANTIZE, ws.bundle(), "--target", "tensorrt", "--per-tensor", "-o", OUT],
            ["TensorRT's explicit-quantization rules", "per-channel"])


@case("quantize-unknown-method")
def _(ws: Workspace):
    return ([*QUANTIZE, ws.bundle(), "--method", "int4", "-o", OUT], ["--method", "int4"])


@case("quantize-unknown-target")
def _(ws: Workspace):
    return ([*QUANTIZE, ws.bundle(), "--target", "tflite", "-o", OUT], ["--target", "tflite"])


@case("quantize-dynamic-for-openvino")
def _(ws: Workspace):
    return ([*QUANTIZE, ws.bundle(), "--method", "dynamic", "--target", "openvino", "-o", "out.xml"],
            ["--method dynamic", "--target onnxruntime"])


@case("quantize-wrong-output-suffix")
def _(ws: Workspace):
    return ([*QUANTIZE, ws.bundle(), "--target", "openvino", "-o", OUT], ["--target openvino", ".xml"])


@case("quantize-uppercase-xml")
def _(ws: Workspace):
    return ([*QUANTIZE, ws.bundle(), "--target", "openvino", "-o", "out.XML"], ["--target openvino", ".xml"])


@case("quantize-qat-entropy")
def _(ws: Workspace):
    return ([*QUANTIZE, ws.bundle(), "--method", "qat", "--calibration", "entropy", "-o", OUT],
            ["entropy", "minmax or percentile"])


@case("quantize-output-exists")
def _(ws: Workspace):
    ws.write(OUT, b"keep me")
    return ([*QUANTIZE, ws.bundle(), "-o", OUT], [OUT, "--force"])


@case("quantize-onto-its-input")
def _(ws: Workspace):
    onnx = ws.onnx()
    return ([*QUANTIZE, onnx, "-o", onnx, "--force"], [onnx])


@case("quantize-negative-accuracy-drop")
def _(ws: Workspace):
    return ([*QUANTIZE, ws.bundle(), "--max-accuracy-drop", "-1", "-o", OUT], ["--max-accuracy-drop", ">= 0"])


@case("quantize-entropy-for-openvino")
def _(ws: Workspace):
    return ([*QUANTIZE, ws.bundle(), "--target", "openvino", "--calibration", "entropy", "-o", "out.xml"],
            ["entropy", "minmax or percentile"])


@case("quantize-missing-model")
def _(ws: Workspace):
    return ([*QUANTIZE, "nope.safetensors", "-o", OUT], ["nope.safetensors does not exist"])


@case("quantize-class-mismatch")
def _(ws: Workspace):
    ws.write("three.py", cli_contract.DATA_PY)
    return ([*QUANTIZE, ws.bundle(), "--dataset", "three.py:make", "-o", OUT], ["10 classes", "3"])


@case("quantize-already-quantized-onnx")
def _(ws: Workspace):
    from compress.quantize import QuantizeConfig, quantize
    src = ws.onnx()
    quantize(ws.root / src, ws.root / "q.onnx", QuantizeConfig(latency=False, calibration_samples=16), "digits",
             progress=False)
    return ([*QUANTIZE, "q.onnx", "-o", OUT], ["already quantized", "fp32"])


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 14


@pytest.mark.parametrize("case_id", CASES.params())
def test_bad_input_is_one_error_line_and_exit_2(case_id: str, workspace: Workspace) -> None:
    args, fragments = CASES[case_id](workspace)
    assert_bad_input(args, fragments, workspace.root, output=OUT)
