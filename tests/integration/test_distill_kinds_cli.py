"""Distillation of every model kind (issue #13), end to end on real data: smaller students learn from the
tiny trained teachers of ``tests/any_kinds.py`` (wine, diabetes, a multi-label task, a two-input model with a
dict output), from a two-input teacher exported to ONNX, and through ``deepslim compress distill``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from any_kinds import KINDS
from cli_contract import invoke, ok
from compress.distill import DistillConfig, distill, open_teacher
from deepslim.config import TrainConfig
from deepslim.models import load_model, save_model
from deepslim.training import model_for_dataset
from deepslim.trust import allow_code


def _load(path: Path):
    with allow_code(trust_code=True):
        return load_model(path)


def _student(kind: str, **kwargs):
    spec = KINDS[kind]
    with allow_code(trust_code=True):
        return model_for_dataset(spec.arch, spec.dataset, arch_kwargs={**spec.kwargs, **kwargs}, seed=0)


def _distill(teacher, kind: str, student, *, epochs: int, lr: float, alpha: float = 0.7, **cfg):
    train = TrainConfig(epochs=epochs, optimizer="adamw", lr=lr, batch_size=64, seed=0, augment="none")
    with allow_code(trust_code=True):
        return distill(teacher, student, KINDS[kind].dataset, DistillConfig(alpha=alpha, train=train, **cfg),
                       progress=False)


def test_a_smaller_mlp_learns_the_wine_classifier(any_kind):
    out = _distill(_load(any_kind("tabular")), "tabular", _student("tabular", hidden=[16]), epochs=8, lr=1e-2)
    m = out.lineage[-1].metrics
    assert m["test_before"]["top1"] < 0.7 and m["test"]["top1"] >= 0.8, m["test"]
    assert m["val_top1"] >= 0.8 and {"f1_macro", "loss", "agreement"} <= set(m["test"])
    assert m["test"]["agreement"] >= 0.8  # it predicts what the teacher predicts
    assert out.model.body[0].out_features == 16


def test_a_regression_student_reports_r2_close_to_the_teachers(any_kind):
    teacher = _load(any_kind("regression"))
    out = _distill(teacher, "regression", _student("regression", hidden=[16, 8]), epochs=30, lr=1e-2)
    record = out.lineage[-1]
    m, t = record.metrics, record.metrics["teacher_test"]
    assert {"mae", "rmse", "r2"} <= set(m["test"]) and "top1" not in m["test"]
    assert m["test_before"]["r2"] < 0 < m["test"]["r2"], m["test"]  # a new MLP predicts nonsense before
    assert m["test"]["r2"] >= t["r2"] - 0.08, (m["test"], t)
    assert m["test"]["mae"] <= 1.15 * t["mae"]
    assert "val_r2" in m and "val_top1" not in m and m["history"][-1]["val_r2"] == pytest.approx(m["history"][-1]
                                                                                                 ["val_score"])
    assert record.config["task"]["kind"] == "regression" and out.task.scale == pytest.approx(teacher.task.scale)


def test_a_multilabel_student_matches_the_teachers_map(any_kind):
    out = _distill(_load(any_kind("multilabel")), "multilabel", _student("multilabel", hidden=[16]), epochs=6,
                   lr=1e-2)
    m = out.lineage[-1].metrics
    assert m["test"]["map"] >= 0.85 and m["test"]["map"] >= m["teacher_test"]["map"] - 0.05, m["test"]
    assert m["test_before"]["map"] < 0.7 and m["val_map"] >= 0.85
    assert {"f1_micro", "subset_accuracy"} <= set(m["test"])


def test_a_narrower_two_input_model_learns_from_its_dict_output_with_feature_pairs(any_kind):
    student = _student("two_input", width=6)
    keys = set(student.model.state_dict())
    out = _distill(_load(any_kind("two_input")), "two_input", student, epochs=3, lr=3e-2, alpha=0.5,
                   feature_pairs=(("meta.1", "meta.1"),))
    record = out.lineage[-1]
    m = record.metrics
    assert record.config["losses"] == ["ce", "kd", "feature_mse"]
    assert m["test_before"]["top1"] < 0.2 and m["test"]["top1"] >= 0.3, m["test"]
    assert set(out.model.state_dict()) == keys and out.model.head.in_features == 12  # adapters are gone
    assert out.signature.outputs == ("logits", "embedding") and out.signature.task_output == "logits"


def test_a_two_input_teacher_exported_to_onnx(tmp_path, any_kind):
    from export import to_onnx
    teacher = _load(any_kind("two_input"))
    with allow_code(trust_code=True):
        onnx = to_onnx(teacher, tmp_path / "teacher.onnx")
    out = _distill(open_teacher(onnx), "two_input", _student("two_input", width=6), epochs=2, lr=3e-2, alpha=0.5)
    record = out.lineage[-1]
    m = record.metrics
    assert record.config["teacher"]["kind"] == "onnx" and record.config["teacher"]["backend"] == "onnxruntime"
    # the exported teacher, fed both inputs by name, scores what the bundle scored on test
    assert m["teacher_test"]["top1"] == pytest.approx(teacher.lineage[-1].metrics["test"]["top1"])
    assert m["test"]["top1"] > m["test_before"]["top1"] + 0.05, m


def test_cli_distills_the_wine_classifier_into_a_smaller_student(tmp_path, any_kind):
    student = save_model(_student("tabular", hidden=[16]), tmp_path / "student.safetensors")
    out = tmp_path / "distilled.safetensors"
    result = ok(["compress", "distill", "--teacher", any_kind("tabular"), "--student", student, "-o", out,
                 "--dataset", "wine", "--epochs", "8", "--optimizer", "adamw", "--lr", "0.01", "--alpha", "0.7",
                 "--augment", "none", "--trust-code", "--quiet"])
    assert "student after" in result.stdout
    record = json.loads(ok(["info", out, "--json"]).stdout)["lineage"][-1]
    assert record["stage"] == "distill" and record["config"]["task"]["kind"] == "classification"
    assert record["metrics"]["test"]["top1"] >= 0.8 and record["metrics"]["val_top1"] >= 0.8
    assert load_model(out).model.body[0].out_features == 16 and not list(tmp_path.glob("*.ckpt"))


def test_cli_refuses_a_student_of_another_task(tmp_path, any_kind):
    student = save_model(_student("tabular", hidden=[16]), tmp_path / "student.safetensors")
    out = tmp_path / "distilled.safetensors"
    result = invoke([str(a) for a in ["compress", "distill", "--teacher", any_kind("regression"), "--student",
                                      student, "-o", out, "--dataset", "wine", "--epochs", "1", "--quiet"]])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.stderr.strip().splitlines() == [
        "error: The teacher solves a regression task but the student a classification task; distillation needs "
        "the same task."]
    assert not out.exists()
