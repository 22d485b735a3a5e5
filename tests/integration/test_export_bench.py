"""Export -> parity -> bench -> reports, end to end on models trained on digits."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from cli_contract import ok
from deepslim.artifact import read_onnx_meta
from deepslim.config import TrainConfig
from deepslim.models import save_model
from deepslim.training import model_for_dataset, train
from export import OnnxConfig, ParityError, VerifyConfig, check_parity, export_model, to_onnx



@pytest.fixture(scope="session")
def models(tmp_path_factory, trained_cnn):
    """A small_cnn (8x8) and a resnet18 (32x32) trained briefly on digits, saved as bundles."""
    root = tmp_path_factory.mktemp("models")
    import torch
    torch.manual_seed(0)
    resnet = train(model_for_dataset("resnet18", "digits", input_size=32), "digits", TrainConfig(epochs=2),
                   progress=False)
    return {"cnn": save_model(trained_cnn, root / "cnn.safetensors"),
            "resnet18": save_model(resnet, root / "resnet18.safetensors"), "bundles": {"cnn": trained_cnn,
                                                                                     "resnet18": resnet}}



@pytest.mark.parametrize("name", ["cnn", "resnet18"])
@pytest.mark.parametrize("target,suffix", [("onnx", ".onnx"), ("openvino", ".xml")])
def test_fp32_exports_match_the_model(models, tmp_path, name, target, suffix):
    result = export_model(models["bundles"][name], target, tmp_path / f"m{suffix}", verify=VerifyConfig("digits"))
    assert result.parity.passed and result.parity.inputs == "digits test (--dataset)"
    assert result.parity.max_abs <= 1e-4 and result.parity.top1_agreement == 1.0


@pytest.mark.slow  # 21 s; the fp32 parity matrix and the export CLI test stay in the default run
def test_other_exporters_and_precisions(models, tmp_path):
    bundle = models["bundles"]["resnet18"]
    legacy = export_model(bundle, "onnx", tmp_path / "legacy.onnx", onnx_config=OnnxConfig(exporter="legacy"))
    assert legacy.parity.max_abs <= 1e-4 and read_onnx_meta(legacy.artifact).export["exporter"] == "legacy"
    direct = export_model(bundle, "openvino", tmp_path / "direct.xml", ov_via="torch")
    assert direct.parity.max_abs <= 1e-4
    for target, suffix in (("onnx", ".onnx"), ("openvino", ".xml")):
        half = export_model(bundle, target, tmp_path / f"half{suffix}", precision="fp16",
                            verify=VerifyConfig("digits"))
        assert half.parity.passed and half.parity.max_abs > 0
    assert (tmp_path / "half.onnx").stat().st_size < 0.6 * (tmp_path / "legacy.onnx").stat().st_size


def test_metadata_travels_with_the_artifact(models, tmp_path):
    path = to_onnx(models["bundles"]["cnn"], tmp_path / "m.onnx", OnnxConfig(input_size=32))
    meta = read_onnx_meta(path)
    assert meta.input_spec.shape == (1, 32, 32) and meta.export["trained_input_size"] == [8, 8]
    assert meta.classes == [str(i) for i in range(10)] and meta.lineage[0].stage == "train"
    assert meta.export["macs"] > 0 and meta.export["params"] > 0
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert not (tmp_path / "m.onnx.data").exists()  # a single file
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch


def test_broken_export_is_caught_by_parity(models, tmp_path):
    path = to_onnx(models["bundles"]["resnet18"], tmp_path / "m.onnx")
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = numpy_helper.to_array(init).copy()
    weights.flat[: weights.size // 10] *= -3.0  # corrupt a tenth of the largest weight tensor
    init.CopyFrom(numpy_helper.from_array(weights, init.name))
    onnx.save(model, str(path))
    with pytest.raises(ParityError, match="parity FAILED"):
        check_parity(models["bundles"]["resnet18"], path, dataset="digits")


def test_bench_cli_compares_backends_and_writes_reports(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = ok(["bench", models["cnn"], "--backend", "torch,onnxruntime,openvino",
               "--batch", "1,4", "--duration", "0.4", "--rounds", "2", "--warmup", "2", "--report", "rep"]).stdout
    assert "report.html" in out and "onnxruntime" in out
    for name in ("report.json", "report.md", "report.html", "accuracy_vs_latency.png", "latency_per_batch.png",
                 "size.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["schema_version"] == 1 and len(report["entries"]) == 3
    env = report["environment"]
    assert env["cpu"]["model"] and "avx2" in env["cpu"]["flags"] and env["threads"] >= 1
    assert {"torch", "onnxruntime", "openvino"} <= set(env["versions"])
    by_model = {}
    for e in report["entries"]:
        by_model.setdefault(e["input_shape"][1], []).append(e)
        assert set(e["latency"]) == {"1", "4"} and e["latency"]["1"]["p50_ms"] > 0
        assert e["size_bytes"] > 0 and e["macs"] > 0 and e["params"] > 0
    for entries in by_model.values():
        top1 = {round(e["accuracy"]["top1"], 4) for e in entries}
        assert len(top1) == 1 and entries[0]["accuracy"]["top1"] >= 0.7  # same accuracy on every backend
    assert report["entries"][0]["latency"]["1"]["speedup"] == 1.0
    assert all(e["accuracy"]["agreement"] >= 0.99 for e in report["entries"][1:3])
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<table>" in html
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| artifact | backend |" in md and "static shape" in md


def test_bench_at_deployment_resolution_says_so(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok(["bench", models["cnn"], "--backend", "torch,openvino", "--input-size", "32", "--duration", "0.2",
         "--rounds", "1", "--limit", "50", "--report", "rep"])
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert all(e["input_shape"] == [1, 32, 32] for e in report["entries"])
    assert any("runs at 32x32, trained at 8x8" in n for n in report["entries"][1]["notes"])


def test_user_metric_replaces_the_classification_metrics(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("metric.py").write_text(textwrap.dedent("""
        import numpy as np
        def mean_logit(outputs, targets):
            return {"mean_logit": float(np.mean(outputs)), "n": len(targets)}
    """))
    ok(["bench", models["cnn"], "--backend", "torch", "--metric", "metric.py:mean_logit", "--duration", "0.1",
         "--rounds", "1", "--report", "rep"])
    accuracy = json.loads((tmp_path / "rep" / "report.json").read_text())["entries"][0]["accuracy"]
    assert set(accuracy) == {"mean_logit", "n"} and accuracy["n"] == 360


def test_export_cli_and_check(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = ok(["export", models["cnn"], "--target", "openvino", "--dataset", "digits", "-o", "m.xml"]).stdout
    assert "parity ok" in out and Path("m.xml").exists() and Path("m.bin").exists()
    assert not list(tmp_path.glob(".*tmp-*"))
    meta = json.loads(ok(["info", "m.xml", "--json"]).stdout)
    assert meta["export"]["target"] == "openvino" and meta["input"]["shape"] == [1, 8, 8]
    assert meta["lineage"][0]["stage"] == "train" and len(meta["classes"]) == 10
    check = ok(["export", "--check", models["cnn"]]).stdout
    assert "onnx" in check and "openvino" in check and "tensorrt" in check
    line = ok(["export", "m.onnx" if Path("m.onnx").exists() else to_onnx(models["bundles"]["cnn"], tmp_path / "m.onnx"),
                "--target", "tensorrt", "--batch", "1,8", "-o", "m.engine", "--print-trtexec"]).stdout
    assert line.startswith("trtexec --onnx=") and "--maxShapes=x:8x1x8x8" in line
