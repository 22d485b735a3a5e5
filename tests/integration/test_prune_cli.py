"""`deepslim compress prune` end to end: the resnet18-on-digits acceptance run, reload, export, parity."""

from __future__ import annotations

import json

import pytest

from cli_contract import ok




@pytest.mark.slow  # ~110 s; the demo test asserts 2x with KD within its budget in the default run
def test_resnet18_pruned_2x_keeps_accuracy_and_exports(tmp_path):
    base, pruned = tmp_path / "base.safetensors", tmp_path / "pruned.safetensors"
    ok(["train", "--arch", "resnet18", "--dataset", "digits", "--input-size", "32", "--quiet", "-o", base])
    out = ok(["compress", "prune", base, "--speedup", "2", "--importance", "l2", "--finetune-epochs", "5",
               "--quiet", "-o", pruned])
    assert "MACs" in out.stdout and "fewer" in out.stdout
    header = json.loads(ok(["info", pruned, "--json"]).stdout)
    record = header["lineage"][-1]
    assert [r["stage"] for r in header["lineage"]] == ["train", "prune"]
    assert record["metrics"]["mac_reduction"] >= 2.0 * 0.95
    assert record["config"]["importance"] == "l2" and record["config"]["finetune_epochs"] == 5
    drop = record["metrics"]["test_before"]["top1"] - record["metrics"]["test"]["top1"]
    assert drop <= 0.01, f"pruning cost {100 * drop:.2f} points of top-1"
    assert header["structure"]["modules"] and header["structure"]["tensors"]
    evaluated = json.loads(ok(["eval", pruned, "--json"]).stdout)["metrics"]
    assert evaluated["top1"] == record["metrics"]["test"]["top1"]
    for target, suffix in (("onnx", ".onnx"), ("openvino", ".xml")):
        text = ok(["export", pruned, "--target", target, "--dataset", "digits", "-o", tmp_path / f"p{suffix}"]).stdout
        assert "parity ok" in text


def test_sensitivity_only_writes_table_and_plot(tmp_path, trained_cnn):
    from deepslim.models import save_model
    path = save_model(trained_cnn, tmp_path / "cnn.safetensors")
    ok(["compress", "prune", path, "--sensitivity", "--no-check", "--quiet", "--report", tmp_path / "sens"])
    assert {p.name for p in (tmp_path / "sens").iterdir()} == {"sensitivity.json", "sensitivity.md", "sensitivity.png"}
    assert not list(tmp_path.glob("*pruned*"))
