"""`deepslim compress quantize` end to end: PTQ for each target, QAT against PTQ, the artifact in `bench` and `info`."""

from __future__ import annotations

import json

import pytest

from cli_contract import ok
from deepslim.models import save_model
from quantized import fp32_and_int8_layers, val_top1


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    """small_cnn width 4 at 8x8, 5 epochs: small enough that int8 costs it some accuracy."""
    from deepslim.config import TrainConfig
    from deepslim.training import model_for_dataset, train
    bundle = model_for_dataset("small_cnn", "digits", input_size=8, arch_kwargs={"width": 4}, seed=0)
    bundle = train(bundle, "digits", TrainConfig(epochs=5, seed=0), progress=False)
    return save_model(bundle, tmp_path_factory.mktemp("quantize") / "narrow.safetensors")


def _assert_latency_consistent(m: dict, stdout: str) -> None:
    """The speedup is the fp32 p50 over the quantized one (both rounded to 3 decimals), printed in words as
    "N.NN× faster" or "N.NN× slower"; the "not faster" warning is there exactly when the speedup is 1 or less,
    and names a cause."""
    from deepslim.units import format_speedup
    lat = m["latency"]
    fp32, q = lat["fp32_p50_ms"], lat["quantized_p50_ms"]
    assert "ratio" not in lat, lat
    rounding = 5e-4 * (1 + lat["speedup"] * (1 / q + 1 / fp32))
    assert lat["speedup"] == pytest.approx(fp32 / q, abs=rounding), lat
    assert format_speedup(lat["speedup"]) in stdout and ("faster" in stdout or "slower" in stdout)
    slow = [w for w in m["warnings"] if "not faster than fp32" in w]
    assert bool(slow) == (lat["speedup"] <= 1.0), (lat, m["warnings"])
    assert all("too small" not in w and "likely cause: " in w for w in slow), slow


def _record(path) -> dict:
    return json.loads(ok(["info", path, "--json"]).stdout)["lineage"][-1]


def test_ptq_for_onnxruntime_is_benchmarked_like_any_artifact(tmp_path, narrow):
    out = tmp_path / "q.onnx"
    result = ok(["compress", "quantize", narrow, "--target", "onnxruntime", "--quiet", "-o", out])
    assert "val top-1" in result.stdout and "per-layer quantization error" in result.stdout
    assert "node_Conv" not in result.stdout and "features.0" in result.stdout  # module names in the error table
    record = _record(out)
    assert record["stage"] == "quantize" and record["config"]["method"] == "ptq"
    m = record["metrics"]
    assert m["fp32"]["test"]["top1"] >= 0.85 and m["quantized"]["test"]["top1"] >= 0.8
    _assert_latency_consistent(m, result.stdout)
    assert "activation_type" in m and record["config"]["environment"]["cpu"]
    report = tmp_path / "bench"
    ok(["bench", out, "--backend", "onnxruntime", "--duration", "0.2", "--rounds", "2", "--warmup", "1",
        "--report", report])
    entry = json.loads((report / "report.json").read_text())["entries"][0]
    assert entry["accuracy"]["top1"] == pytest.approx(m["quantized"]["test"]["top1"])


@pytest.mark.slow  # 12 s; QAT itself stays in the default run (test_quantize_kinds, the OpenVINO QAT pair)
def test_qat_is_at_least_as_accurate_as_ptq_at_the_same_settings(tmp_path, narrow):
    ptq, qat = tmp_path / "ptq.onnx", tmp_path / "qat.onnx"
    common = ["--target", "onnxruntime", "--no-latency", "--quiet", "--calibration-samples", "300"]
    ok(["compress", "quantize", narrow, "--method", "ptq", *common, "-o", ptq])
    ok(["compress", "quantize", narrow, "--method", "qat", "--qat-epochs", "3", *common, "-o", qat])
    p, q = _record(ptq)["metrics"], _record(qat)["metrics"]
    # QAT keeps the best epoch on val (its NNCF-calibrated start included), so val is where it must not lose;
    # on the 360 held-out test images it stays within 2 points (7 images) of PTQ.
    assert q["quantized"]["val"]["top1"] >= p["quantized"]["val"]["top1"], (p["quantized"], q["quantized"])
    assert q["quantized"]["test"]["top1"] >= p["quantized"]["test"]["top1"] - 0.02, (p["quantized"], q["quantized"])
    assert len(q["qat_history"]) == 3 and q["library"] == "nncf"
    _assert_deployable_int8(qat, ptq, narrow)
    assert 100 * (q["fp32"]["test"]["top1"] - q["quantized"]["test"]["top1"]) <= 3.0
    export = json.loads(ok(["info", qat, "--json"]).stdout)["export"]
    assert export["simplified"] is False and export["qdq_graph"]["batchnorms_folded"] == 5, export


def _assert_deployable_int8(qat, ptq, bundle) -> None:
    """The QAT Q/DQ ONNX is int8 the way onnxruntime's PTQ output is: no BatchNormalization, no Constant nodes,
    every Conv's weight an INT8 initializer behind a DequantizeLinear, weights a quarter of the fp32 export's
    bytes, and onnxruntime runs at least as many layers as int8 kernels as it does for the PTQ file minus the
    classifier (which NNCF leaves without an output quantizer)."""
    import onnx
    from onnx import numpy_helper

    from compress.qdq_onnx import ort_kernel_counts
    from deepslim.models import load_model
    from export.onnx import to_onnx
    graph = onnx.load(str(qat)).graph
    ops = [n.op_type for n in graph.node]
    assert "BatchNormalization" not in ops and "Constant" not in ops, ops
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    for conv in (n for n in graph.node if n.op_type == "Conv"):
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == onnx.TensorProto.INT8, conv.name
    fp32 = to_onnx(load_model(bundle), qat.with_name("fp32.onnx"))
    weights = lambda path: sum(numpy_helper.to_array(i).nbytes for i in onnx.load(str(path)).graph.initializer)
    assert weights(qat) < 0.4 * weights(fp32) and qat.stat().st_size < fp32.stat().st_size + 20_000
    assert ort_kernel_counts(qat)[0] >= ort_kernel_counts(ptq)[0] - 1 >= ops.count("Conv") - 1


@pytest.mark.slow  # ~65 s; the NNCF guard runs in unit/test_quantize.py::test_openvino_guard_*, QAT on every kind in test_quantize_kinds
def test_openvino_ptq_with_a_guard_and_qat_write_ir_pairs(tmp_path, narrow):
    out = tmp_path / "q.xml"
    ok(["compress", "quantize", narrow, "--target", "openvino", "--max-accuracy-drop", "2", "--quiet", "-o", out])
    assert out.with_suffix(".bin").is_file()
    m = _record(out)["metrics"]
    fp32, int8 = fp32_and_int8_layers(out)  # read from the IR: the record names what it keeps in fp32
    assert int8 and set(fp32) == set(m["fp32_layers"]), (fp32, int8, m["fp32_layers"])
    top1 = val_top1(out)  # the IR as written, scored by the benchmarks harness
    assert top1 == pytest.approx(m["quantized"]["val"]["top1"])
    assert 100 * (m["fp32"]["val"]["top1"] - top1) == pytest.approx(m["val_drop_points"], abs=1e-3)
    assert 100 * (m["fp32"]["val"]["top1"] - top1) <= 2.0
    qat = tmp_path / "qat.xml"
    ok(["compress", "quantize", narrow, "--method", "qat", "--target", "openvino", "--qat-epochs", "1",
        "--recover", "kd", "--no-latency", "--quiet", "-o", qat])
    record = _record(qat)
    assert record["config"]["recover"] == "kd" and record["metrics"]["quantized"]["test"]["top1"] >= 0.8
