"""`deepslim export` for models beyond one-image classifiers (#13): a two-input dict-output model to ONNX and
on to OpenVINO, a regression to OpenVINO checked on its own recorded dataset, the TensorRT plan of a two-input
ONNX, and --input-size refused for a tabular model; the slow test sends every kind through the default
(dynamo) exporter and the direct torch -> OpenVINO path with parity."""

from __future__ import annotations

import shutil

import onnx
import pytest

from any_kinds import KINDS
from cli_contract import assert_bad_input, ok


def _copy(any_kind, kind: str, tmp_path):
    return shutil.copy(any_kind(kind), tmp_path / f"{kind}.safetensors")


def test_two_input_model_exports_to_onnx_then_openvino_with_parity(any_kind, tmp_path):
    bundle = _copy(any_kind, "two_input", tmp_path)
    data = KINDS["two_input"].dataset
    out = ok(["export", bundle, "--target", "onnx", "-o", tmp_path / "m.onnx", "--trust-code", "-d", data,
              "--parity-samples", "32"]).stdout
    assert "parity ok: m.onnx (logits) on onnxruntime vs torch, 32" in out and "top-1 agreement 1.0000" in out
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [i.name for i in graph.input] == ["image", "meta"]
    assert [o.name for o in graph.output] == ["logits", "embedding"]
    out = ok(["export", tmp_path / "m.onnx", "--target", "openvino", "-o", tmp_path / "m.xml", "--trust-code",
              "-d", data, "--parity-samples", "32"]).stdout
    assert "parity ok: m.xml (logits) on openvino vs m.onnx [onnxruntime]" in out
    assert (tmp_path / "m.bin").is_file()
    line = ok(["export", tmp_path / "m.onnx", "--target", "tensorrt", "-o", tmp_path / "m.engine", "--batch", "1,8",
               "--print-trtexec"]).stdout
    assert "--minShapes=image:1x1x8x8,meta:1x4" in line and "--optShapes=image:8x1x8x8,meta:8x4" in line
    assert not (tmp_path / "m.engine").exists()


def test_regression_exports_to_openvino_checked_on_its_own_dataset(any_kind, tmp_path):
    bundle = _copy(any_kind, "regression", tmp_path)
    out = ok(["export", bundle, "--target", "openvino", "-o", tmp_path / "r.xml"]).stdout
    assert "parity ok: r.xml (prediction) on openvino vs torch" in out
    assert "diabetes test (the model's own dataset)" in out and "samples within tolerance 1.0000" in out
    assert "of the output's largest |value|" in out


def test_input_size_is_refused_for_a_tabular_model(any_kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _copy(any_kind, "tabular", tmp_path)
    assert_bad_input(["export", "tabular.safetensors", "--target", "onnx", "-o", "t.onnx", "--input-size", "16"],
                     ["--input-size", "one image input", "features"], tmp_path, output="t.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_through_dynamo_and_torch_to_openvino(kind, any_kind, tmp_path):
    from deepslim.models import load_model
    from deepslim.trust import allow_code
    from export import OVSource, Target, VerifyConfig, export_model
    verify = VerifyConfig(dataset=KINDS[kind].dataset, samples=32)
    with allow_code(trust_code=True):
        bundle = load_model(any_kind(kind))
        onnx_result = export_model(bundle, Target.ONNX, tmp_path / "m.onnx", verify=verify)
        ir_result = export_model(bundle, Target.OPENVINO, tmp_path / "m.xml", ov_via=OVSource.TORCH, verify=verify)
    for result in (onnx_result, ir_result):
        assert result.parity.passed and result.parity.max_rel < 1e-3
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [i.name for i in graph.input] == list(bundle.signature.input_names)
    assert [o.name for o in graph.output] == list(bundle.signature.outputs)
