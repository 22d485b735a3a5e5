"""`deepslim compress prune` on models beyond one-image classifiers (issue #13), with the existing options:
the MLP to a 2x MAC reduction, the two-input dict-output model (a file architecture: --trust-code), the
regression's sensitivity table in R², and the refusals that say what to change."""

from __future__ import annotations

import json

from any_kinds import KINDS
from cli_contract import invoke, ok


def _record(path):
    return json.loads(ok(["info", path, "--json"]).stdout)["lineage"][-1]


def test_prune_the_mlp_to_a_2x_mac_reduction_with_a_fine_tune(any_kind, tmp_path):
    out = tmp_path / "mlp_2x.safetensors"
    result = ok(["compress", "prune", any_kind("tabular"), "-d", KINDS["tabular"].dataset, "--speedup", "2",
                 "--round-to", "1", "--finetune-epochs", "1", "--no-check", "--quiet", "-o", out])
    assert "fewer" in result.stdout
    record = _record(out)
    m = record["metrics"]
    assert abs(m["mac_reduction"] - 2.0) <= 0.1 and m["params_after"] < m["params_before"]
    assert m["primary"] == "top1" and "finetune_val_top1" in m["steps"][0] and "top1" in m["test"]
    assert m["ignored"] == {"head": "classifier head (its outputs are the classes)"}


def test_prune_the_two_input_dict_output_model_from_the_cli(any_kind, tmp_path):
    out = tmp_path / "two.safetensors"
    ok(["compress", "prune", any_kind("two_input"), "--trust-code", "-d", KINDS["two_input"].dataset, "--ratio",
        "0.5", "--round-to", "1", "--finetune-epochs", "1", "--no-check", "--quiet", "-o", out])
    record = _record(out)
    m = record["metrics"]
    assert m["mac_reduction"] > 2 and m["groups"]["conv.0"][2] == 4 and m["groups"]["meta.0"][2] == 4
    assert "top1" in m["test"] and "drop" in m
    evaluated = json.loads(ok(["eval", out, "--trust-code", "-d", KINDS["two_input"].dataset, "--json"]).stdout)
    assert evaluated["metrics"]["top1"] == m["test"]["top1"]  # the saved bundle scores what the record says


def test_sensitivity_of_the_regression_mlp_in_its_primary_metric(any_kind, tmp_path):
    report = tmp_path / "sens"
    ok(["compress", "prune", any_kind("regression"), "-d", "diabetes", "--sensitivity", "--round-to", "1",
        "--no-check", "--quiet", "--report", report])
    table = json.loads((report / "sensitivity.json").read_text())
    assert table["metric"] == "r2" and "base_r2" in table and table["drop_unit"] == "points"
    assert sorted(layer["layer"] for layer in table["layers"]) == ["body.0", "body.3"]
    assert "val R²" in (report / "sensitivity.md").read_text()


def test_narrow_layers_and_bn_importance_without_batchnorm_are_refused_in_one_sentence(any_kind, tmp_path):
    out = tmp_path / "never.safetensors"
    narrow = invoke([str(a) for a in ["compress", "prune", any_kind("two_input"), "--trust-code", "--ratio", "0.5",
                                      "-d", KINDS["two_input"].dataset, "--no-check", "--quiet", "-o", out]])
    assert narrow.exit_code == 2 and "--round-to 1" in narrow.output and "Traceback" not in narrow.output
    no_bn = invoke([str(a) for a in ["compress", "prune", any_kind("tabular"), "-d", "wine", "--ratio", "0.5",
                                     "--importance", "bn", "--no-check", "--quiet", "-o", out]])
    assert no_bn.exit_code == 2 and "no BatchNorm layer" in no_bn.output and "Traceback" not in no_bn.output
    assert not out.exists()
