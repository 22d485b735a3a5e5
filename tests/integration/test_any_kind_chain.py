"""Every model kind through the whole chain from the CLI (#13): a trained bundle → prune → quantize (int8
onnxruntime) → export (OpenVINO IR, parity on the model's own data) → bench, each stage reading the one
before it, with the task's primary metric at the end."""

from __future__ import annotations

import json

import pytest

from any_kinds import KINDS
from cli_contract import ok

# the primary metric's floor after the chain (the fixtures are trained for seconds: these are their levels)
FLOORS = {"multilabel": ("map", 0.8), "two_input": ("top1", 0.3), "regression": ("r2", 0.1),
          "tabular": ("top1", 0.7), "wide": ("top1", 0.15), "signal": ("top1", 0.8)}
DEFAULT = ()  # every kind's stages have default tests of their own (test_*_kinds*); the whole chain runs in the
# default suite through the demo and the transformer chains (all slow here: ~25 s each)
EPOCHS = {"tabular": 10, "signal": 8}  # fine-tuning after a 0.5 cut (2 leave these two far below their start)


@pytest.mark.parametrize("name", [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in FLOORS])
def test_train_prune_quantize_export_bench(any_kind, tmp_path, name):
    base = any_kind(name)
    data = ["-d", KINDS[name].dataset, "--trust-code"]
    pruned, int8, ir, report = (tmp_path / "pruned.safetensors", tmp_path / "int8.onnx", tmp_path / "model.xml",
                                tmp_path / "bench")
    ok(["compress", "prune", base, "--ratio", "0.5", "--round-to", "1", "--finetune-epochs", str(EPOCHS.get(name, 2)), "-o", pruned,
        "-q", *data])
    ok(["compress", "quantize", pruned, "--method", "ptq", "--target", "onnxruntime", "-o", int8,
        "--max-accuracy-drop", "100", *data])
    exported = ok(["export", pruned, "--target", "openvino", "-o", ir, *data])
    assert "parity ok" in exported.output
    ok(["bench", base, int8, ir, "--backend", "torch,onnxruntime,openvino", "--batch", "1,3", "--duration", "0.2",
        "--report", report, *data])
    result = json.loads((report / "report.json").read_text())
    metric, floor = FLOORS[name]
    assert result["config"]["primary_metric"] == metric
    entries = {(e["artifact"].rsplit("/", 1)[-1], e["backend"]): e for e in result["entries"]}
    assert {("int8.onnx", "onnxruntime"), ("model.xml", "openvino")} <= set(entries)
    for entry in entries.values():
        assert entry["accuracy"][metric] >= floor, (entry["artifact"], entry["accuracy"])
        assert set(entry["latency"]) == {"1", "3"}
