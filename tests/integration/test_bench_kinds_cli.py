"""``deepslim bench`` for every model kind (#13): tabular, regression, multi-label, two inputs with a dict output,
a non-square image, a 1-D signal — the bundle on torch and its ONNX export on onnxruntime (and OpenVINO for the
two-input model), scored by the task's own metrics, timed at every batch size, reported under the task's primary
metric. Exports use the fast TorchScript exporter; the CLI's own export on the way is the slow test."""

from __future__ import annotations

import json
import math

import pytest

from any_kinds import KINDS
from benchmarks import Backend, BenchTarget, LatencyConfig, RunnerOptions, bench, write_report
from cli_contract import invoke, ok
from deepslim.evaluation import evaluate
from deepslim.models import load_model
from deepslim.tasks import TASK_METRICS, TaskKind, metric_info
from deepslim.trust import allow_code

PRIMARY = {"tabular": "top1", "regression": "r2", "multilabel": "map", "two_input": "top1", "wide": "top1",
           "signal": "top1"}
QUICK = LatencyConfig(batches=(1, 4), rounds=1, iterations=2, warmup=1)
ONE_THREAD = RunnerOptions(threads=1)
LIMIT = 96  # test samples scored per kind (a seeded subset; the whole split where it is smaller)


@pytest.fixture(scope="module")
def kind_files(any_kind, tmp_path_factory):
    """``kind_files(kind)``: (bundle path, its ONNX export, the loaded bundle), exported once per kind."""
    from export import OnnxConfig, to_onnx
    root, cache = tmp_path_factory.mktemp("bench_kinds"), {}

    def get(kind: str):
        if kind not in cache:
            with allow_code(trust_code=True):
                bundle = load_model(any_kind(kind))
                onnx = to_onnx(bundle, root / f"{kind}.onnx", OnnxConfig(exporter="legacy", simplify=False))
            cache[kind] = (any_kind(kind), onnx, bundle)
        return cache[kind]
    return get


def _expected_metrics(bundle) -> set[str]:
    names = set(TASK_METRICS[bundle.task.kind]) | {"samples"}
    return names if bundle.task.width > 5 else names - {"top5"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_benches_on_torch_and_onnxruntime_with_its_tasks_metrics(kind, kind_files, tmp_path):
    path, onnx, bundle = kind_files(kind)
    dataset = KINDS[kind].dataset
    with allow_code(trust_code=True):
        report = bench([BenchTarget(path, Backend.TORCH), BenchTarget(onnx, Backend.ONNXRUNTIME)], QUICK,
                       dataset=dataset, limit=LIMIT, options=ONE_THREAD)
        truth = evaluate(bundle, dataset, limit=LIMIT, device="cpu").metrics  # the same seeded subset
    primary = PRIMARY[kind]
    assert report.config["primary_metric"] == primary and report.config["task"] == bundle.task.kind.value
    torch_row, onnx_row = report.entries
    assert [e.backend for e in report.entries] == ["torch", "onnxruntime"]
    for entry in report.entries:
        assert sorted(entry.latency) == [1, 4] and all(s.p50_ms > 0 for s in entry.latency.values())
        assert set(entry.accuracy) - {"agreement"} == _expected_metrics(bundle)
        assert {k: v["shape"] for k, v in entry.inputs.items()} == {i.name: list(i.sample_shape)
                                                                    for i in bundle.signature.inputs}
    for name, value in truth.items():  # the torch runner scores exactly what `deepslim eval` scores
        assert torch_row.accuracy[name] == pytest.approx(value, abs=1e-4), name
    for name in truth:
        tolerance = 1e-3 * max(1.0, abs(truth[name])) if not metric_info(name).bounded else 1e-3
        assert onnx_row.accuracy[name] == pytest.approx(torch_row.accuracy[name], abs=tolerance), name
    assert onnx_row.drop == pytest.approx(0.0, abs=0.1)
    if bundle.task.kind is TaskKind.REGRESSION:
        assert "agreement" not in onnx_row.accuracy and torch_row.accuracy["mae"] > 0 and torch_row.accuracy["r2"] > 0
    else:
        assert onnx_row.accuracy["agreement"] >= 0.99 and 0 < torch_row.accuracy[primary] <= 1
    paths = write_report(report, tmp_path / "report")
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    label = metric_info(primary).label
    assert f"| artifact | backend | prec. | input | {label} | {label} drop (points) |" in paths["report.md"].read_text()
    kept = json.loads(paths["report.json"].read_text())
    assert [sorted(e["latency"]) for e in kept["entries"]] == [["1", "4"], ["1", "4"]]
    assert all(math.isfinite(e["accuracy"][primary]) for e in kept["entries"])


def test_the_two_input_onnx_runs_on_onnxruntime_and_openvino_and_its_ir_on_openvino(kind_files, tmp_path):
    from benchmarks import open_runner
    from benchmarks.latency import latency_inputs
    from export import OnnxConfig, to_openvino
    path, onnx, bundle = kind_files("two_input")
    with allow_code(trust_code=True):
        ir = to_openvino(bundle, tmp_path / "two.xml", onnx_config=OnnxConfig(exporter="legacy", simplify=False))
        targets = [BenchTarget(onnx, Backend.ONNXRUNTIME), BenchTarget(onnx, Backend.OPENVINO),
                   BenchTarget(ir, Backend.OPENVINO)]
        report = bench(targets, QUICK, dataset=KINDS["two_input"].dataset, options=ONE_THREAD)
    top1 = {round(e.accuracy["top1"], 6) for e in report.entries}
    assert len(top1) == 1 and [e.accuracy["agreement"] for e in report.entries[1:]] == [1.0, 1.0]
    assert all(e.input_shape == [1, 8, 8] and list(e.inputs) == ["image", "meta"] for e in report.entries)
    batch = latency_inputs(bundle.signature, 3)
    for artifact, backend in [(onnx, "onnxruntime"), (ir, "openvino")]:
        with open_runner(artifact, backend, ONE_THREAD) as runner:
            outputs = runner.run_all(batch)
            assert {k: v.shape for k, v in outputs.items()} == {"logits": (3, 10), "embedding": (3, 16)}
            assert (runner.run(batch) == outputs["logits"]).all()


def test_the_cli_benches_a_regression_bundle_and_a_two_input_onnx(kind_files, tmp_path):
    reg, _, _ = kind_files("regression")
    _, two, _ = kind_files("two_input")
    quick = ["--batch", "1,4", "--rounds", "1", "--iterations", "2", "--warmup", "1", "--threads", "1"]
    ok(["bench", reg, "--backend", "torch", "-d", "diabetes", "--report", tmp_path / "reg", *quick])
    reg_report = json.loads((tmp_path / "reg" / "report.json").read_text())
    assert reg_report["config"]["primary_metric"] == "r2"
    assert {"mae", "rmse", "r2"} <= set(reg_report["entries"][0]["accuracy"])
    assert "| R² | R² drop (points) |" in (tmp_path / "reg" / "report.md").read_text()
    ok(["bench", two, "--backend", "onnxruntime,openvino", "-d", KINDS["two_input"].dataset, "--trust-code",
        "--report", tmp_path / "two", *quick])
    entries = json.loads((tmp_path / "two" / "report.json").read_text())["entries"]
    assert [e["backend"] for e in entries] == ["onnxruntime", "openvino"] and entries[1]["accuracy"]["agreement"] == 1.0


def test_the_cli_refuses_input_size_for_a_model_without_one_image(kind_files, tmp_path):
    path, onnx, _ = kind_files("two_input")
    result = invoke(["bench", str(path), "--backend", "torch", "--input-size", "16", "--no-accuracy", "--trust-code",
                     "--report", str(tmp_path / "r")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert ("error: --input-size applies to models with one image input; two_input.safetensors takes image: image "
            "1x8x8 float32, meta: features 4 float32") in result.output
    assert not (tmp_path / "r" / "report.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_the_cli_exports_each_kinds_bundle_on_the_way_and_benches_it(kind, kind_files, tmp_path):
    path, _, _ = kind_files(kind)
    ok(["bench", path, "--backend", "torch,onnxruntime,openvino", "-d", KINDS[kind].dataset, "--trust-code",
        "--batch", "1,4", "--rounds", "1", "--iterations", "2", "--warmup", "1", "--report", tmp_path / "r"])
    entries = json.loads((tmp_path / "r" / "report.json").read_text())["entries"]
    primary = PRIMARY[kind]
    assert [e["backend"] for e in entries] == ["torch", "onnxruntime", "openvino"]
    values = [e["accuracy"][primary] for e in entries]
    assert max(values) - min(values) <= 1e-3 and all(sorted(e["latency"]) == ["1", "4"] for e in entries)
