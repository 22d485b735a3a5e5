"""`deepslim compress distill` end to end: bundle and ONNX teachers, feature pairs, resume after a kill,
2-process DDP under torchrun (gloo, CPU), and pruning's --recover kd."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_contract import kill_when, ok
from deepslim.models import load_model, save_model

ROOT = Path(__file__).resolve().parents[2]
STUDENT = ["--student", "small_cnn", "--arch-kwargs", '{"width": 8}']


@pytest.fixture()
def teacher(tmp_path, trained_cnn) -> Path:
    return save_model(trained_cnn, tmp_path / "teacher.safetensors")


def _record(path: Path) -> dict:
    header = json.loads(ok(["info", path, "--json"]).stdout)
    return header["lineage"][-1]


def test_distill_from_a_bundle_with_feature_pairs(tmp_path, teacher):
    out = tmp_path / "student.safetensors"
    result = ok(["compress", "distill", "--teacher", teacher, *STUDENT, "--epochs", "3", "--accumulate", "2",
                 "--feature-pairs", "teacher.features.3:student.features.3", "--quiet", "-o", out])
    assert "student after" in result.stdout and "teacher" in result.stdout
    record = _record(out)
    assert record["stage"] == "distill"
    config, metrics = record["config"], record["metrics"]
    assert config["teacher"]["name"] == "teacher.safetensors" and config["teacher"]["kind"] == "bundle"
    assert config["losses"] == ["ce", "kd", "feature_mse"] and config["feature_pairs"] == ["features.3:features.3"]
    assert (config["temperature"], config["alpha"], config["train"]["epochs"]) == (4.0, 0.5, 3)
    assert metrics["teacher_test"]["top1"] >= 0.9
    assert metrics["test"]["top1"] >= 0.75, metrics["test"]
    assert len(metrics["history"]) == 3
    student = load_model(out)  # a plain bundle: the adapters are not part of it
    assert set(student.model.state_dict()) == set(load_model(arch="small_cnn", num_classes=10, input_size=8,
                                                             arch_kwargs={"width": 8}).model.state_dict())
    evaluated = json.loads(ok(["eval", out, "--json"]).stdout)["metrics"]
    assert evaluated["top1"] == metrics["test"]["top1"]
    assert not list(tmp_path.glob("*.ckpt"))


def test_distill_from_the_exported_onnx_teacher(tmp_path, teacher):
    onnx = tmp_path / "teacher.onnx"
    ok(["export", teacher, "--target", "onnx", "-o", onnx])
    out = tmp_path / "student.safetensors"
    result = ok(["compress", "distill", "--teacher", onnx, *STUDENT, "--epochs", "3", "--quiet", "-o", out])
    assert "student after" in result.stdout
    record = _record(out)
    assert record["config"]["teacher"]["kind"] == "onnx"
    assert record["config"]["teacher"]["backend"] == "onnxruntime"
    assert record["metrics"]["teacher_test"]["top1"] >= 0.9
    assert record["metrics"]["test"]["top1"] >= 0.75
    assert record["metrics"]["teacher_seconds"] > 0


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), *args]


def test_killed_distillation_resumes_and_matches_an_uninterrupted_run(tmp_path, teacher):
    common = ["compress", "distill", "--teacher", str(teacher), "--student", "small_cnn", "--arch-kwargs",
              '{"width": 16}', "--epochs", "5", "--quiet", "--device", "cpu"]
    out, ckpt = tmp_path / "killed.safetensors", tmp_path / "killed.safetensors.ckpt"
    kill_when(_cli(*common, "-o", str(out)), ckpt.exists)
    assert not out.exists() and not list(tmp_path.glob(".*tmp-*"))
    done = subprocess.run(_cli(*common, "--resume", "-o", str(out)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr
    resumed = load_model(out)
    assert [row["epoch"] for row in resumed.lineage[-1].metrics["history"]] == [1, 2, 3, 4, 5]
    assert not ckpt.exists()
    straight = tmp_path / "straight.safetensors"
    ok([*common, "-o", straight])
    reference = load_model(straight)
    assert resumed.lineage[-1].metrics["test"] == reference.lineage[-1].metrics["test"]
    for key, value in reference.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[key].float(), value.float(), atol=1e-6), key


def test_prune_recover_kd_distills_from_the_unpruned_model(tmp_path, teacher):
    out = tmp_path / "pruned.safetensors"
    ok(["compress", "prune", teacher, "--ratio", "0.5", "--round-to", "1", "--finetune-epochs", "2",
        "--recover", "kd", "--temperature", "2", "--alpha", "0.5", "--no-check", "--quiet", "-o", out])
    record = _record(out)
    assert record["config"]["recover"] == "kd"
    assert (record["config"]["temperature"], record["config"]["alpha"]) == (2.0, 0.5)
    before, after = record["metrics"]["test_before"]["top1"], record["metrics"]["test"]["top1"]
    assert after >= before - 0.05, (before, after)
