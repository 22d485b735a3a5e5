"""Distillation without the CLI: config checks, feature pairs, teachers, and the stage on digits."""

from __future__ import annotations

import copy

import pytest
import torch

from compress.distill import (DistillConfig, DistillError, StudentWithAdapters, TorchTeacher, distill,
                              parse_feature_pairs)
from deepslim.config import TrainConfig
from deepslim.errors import ConfigError
from deepslim.spec import InputSpec
from deepslim.training import model_for_dataset


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": 0}, "--temperature must be a positive number"),
    ({"temperature": float("nan")}, "--temperature"),
    ({"alpha": 1.5}, "--alpha"),
    ({"alpha": -0.1}, "between 0 and 1"),
    ({"feature_weight": -1.0}, "--feature-weight"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DistillConfig(**kwargs)


def test_config_names_its_losses():
    assert DistillConfig().losses == ["ce", "kd"]
    assert DistillConfig(alpha=1.0, feature_pairs=(("a", "b"),)).losses == ["kd", "feature_mse"]
    assert DistillConfig(alpha=0.0).losses == ["ce"]
    data = DistillConfig(feature_pairs=(("layer3", "features.3"),)).to_json()
    assert data["feature_pairs"] == ["layer3:features.3"] and data["train"]["epochs"] == 10


def test_feature_pairs_parse_with_and_without_prefixes():
    assert parse_feature_pairs("teacher.layer3:student.features.3, layer4:features.6") == \
        (("layer3", "features.3"), ("layer4", "features.6"))
    assert parse_feature_pairs(None) == ()
    for bad in ("layer3", "a:b:c", ":b"):
        with pytest.raises(ConfigError, match="TEACHER_LAYER:STUDENT_LAYER"):
            parse_feature_pairs(bad)


def test_teacher_renormalises_a_student_batch_to_its_own_statistics(trained_cnn):
    teacher = TorchTeacher(copy.deepcopy(trained_cnn))
    t_spec = trained_cnn.input_spec
    s_spec = InputSpec(t_spec.shape, mean=(0.5,), std=(0.25,))
    raw = torch.rand(3, *t_spec.shape)
    teacher.pair(s_spec)
    as_student = (raw - 0.5) / 0.25
    as_teacher = (raw - t_spec.mean[0]) / t_spec.std[0]
    assert torch.allclose(teacher._renormalize(as_student), as_teacher, atol=1e-5)
    with pytest.raises(DistillError, match="takes 1x16x16 inputs but the teacher 1x8x8"):
        teacher.pair(InputSpec((1, 16, 16), mean=(0.5,), std=(0.25,)))


def test_greyscale_teacher_reads_a_three_channel_student_batch(trained_cnn):
    teacher = TorchTeacher(copy.deepcopy(trained_cnn))  # 1 channel
    t_spec = trained_cnn.input_spec
    s_spec = InputSpec((3, *t_spec.shape[1:]), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    grey = torch.rand(2, 1, *t_spec.shape[1:])
    as_student = (grey.expand(-1, 3, -1, -1) - torch.tensor(s_spec.mean).view(3, 1, 1)) / \
        torch.tensor(s_spec.std).view(3, 1, 1)
    teacher.pair(s_spec, data_channels=1)
    expected = (grey - t_spec.mean[0]) / t_spec.std[0]
    assert torch.allclose(teacher._renormalize(as_student), expected, atol=1e-5)
    with pytest.raises(DistillError, match="takes 3x8x8 inputs but the teacher 1x8x8"):
        teacher.pair(s_spec, data_channels=3)  # colour data: repeating would invent colour


def test_unknown_feature_layer_names_the_known_ones(trained_cnn):
    with pytest.raises(DistillError, match="the student has no layer 'layer3'.*features, pool, classifier"):
        StudentWithAdapters(copy.deepcopy(trained_cnn.model), ["layer3"], [])


def test_distill_beats_nothing_and_records_lineage(trained_cnn):
    student = model_for_dataset("small_cnn", "digits", input_size=8, arch_kwargs={"width": 8}, seed=1)
    cfg = DistillConfig(temperature=4, alpha=0.9, feature_pairs=(("features.3", "features.3"),),
                        train=TrainConfig(epochs=3, seed=0, accumulate=2))
    out = distill(copy.deepcopy(trained_cnn), student, "digits", cfg, progress=False)
    record = out.lineage[-1]
    assert record.stage == "distill"
    assert record.config["temperature"] == 4 and record.config["alpha"] == 0.9
    assert record.config["losses"] == ["ce", "kd", "feature_mse"]
    assert record.config["teacher"]["kind"] == "bundle" and len(record.config["teacher"]["sha256"]) == 64
    assert record.config["train"]["accumulate"] == 2 and record.config["train"]["epochs"] == 3
    m = record.metrics
    assert m["teacher_test"]["top1"] >= 0.9 and m["test_before"]["top1"] < 0.3
    assert m["test"]["top1"] >= 0.75, m["test"]
    # the adapters and hooks are gone: the student is the plain architecture again
    assert not out.model._forward_hooks and all(not mod._forward_hooks for mod in out.model.modules())
    assert set(out.model.state_dict()) == set(student.model.state_dict())


def test_feature_weight_zero_trains_without_adapters(trained_cnn):
    student = model_for_dataset("small_cnn", "digits", input_size=8, arch_kwargs={"width": 4}, seed=0)
    cfg = DistillConfig(feature_pairs=(("features.3", "features.3"),), feature_weight=0.0,
                        train=TrainConfig(epochs=1, seed=0))
    out = distill(copy.deepcopy(trained_cnn), student, "digits", cfg, progress=False)
    assert out.lineage[-1].config["losses"] == ["ce", "kd"]


def test_runner_teacher_splits_batches_to_what_the_artifact_accepts():
    from compress.distill import RunnerTeacher

    class FixedBatchRunner:
        max_batch = 2
        calls: list[int] = []

        def run(self, batch):
            assert len(batch) <= 2, "the artifact only takes batches of 2"
            self.calls.append(len(batch))
            return batch.reshape(len(batch), -1)[:, :3] * 2

    teacher = RunnerTeacher.__new__(RunnerTeacher)
    teacher.runner, teacher.name, teacher.backend = FixedBatchRunner(), "t.onnx", "onnxruntime"
    x = torch.arange(5 * 3, dtype=torch.float32).view(5, 3, 1, 1)
    out = teacher._forward(x)
    assert FixedBatchRunner.calls == [2, 2, 1]
    assert torch.equal(out, x.view(5, 3) * 2)


def test_student_that_returns_a_tuple_is_one_clear_error(trained_cnn):
    from deepslim.errors import ModelError

    class Pair(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x), x

    student = model_for_dataset("small_cnn", "digits", input_size=8, arch_kwargs={"width": 4}, seed=0)
    student.model = Pair(student.model)
    with pytest.raises(ModelError, match="The student returns tuple for a batch of 2, not \\(2, 10\\) logits"):
        distill(copy.deepcopy(trained_cnn), student, "digits", DistillConfig(train=TrainConfig(epochs=1)),
                progress=False)


def test_distilling_into_a_trained_student_fine_tunes_it(trained_cnn):
    said = []
    out = distill(copy.deepcopy(trained_cnn), copy.deepcopy(trained_cnn), "digits",
                  DistillConfig(train=TrainConfig(epochs=1, seed=0)), progress=False, log=said.append)
    record = out.lineage[-1]
    assert record.config["train"]["lr"] == pytest.approx(0.005) and record.config["train"]["warmup_epochs"] == 0
    assert "fine-tuning learning rate 0.005" in said[0] and said == record.metrics["notes"]
    m = record.metrics
    assert m["val_top1"] >= m["start_val_top1"] >= 0.9
    assert m["test"]["top1"] >= m["test_before"]["top1"] - 0.01


def test_distilling_from_a_worse_teacher_keeps_the_student_and_says_so(trained_cnn):
    said = []
    untrained = model_for_dataset("small_cnn", "digits", input_size=8, arch_kwargs={"width": 16}, seed=3)
    student = copy.deepcopy(trained_cnn)
    start = copy.deepcopy(student.model.state_dict())
    cfg = DistillConfig(alpha=1.0, train=TrainConfig(epochs=1, seed=0, lr=0.1))
    out = distill(untrained, student, "digits", cfg, progress=False, log=said.append)
    m = out.lineage[-1].metrics
    assert m["kept_start"] is True and m["best_epoch"] == 0 and m["history"][0]["val_top1"] < m["start_val_top1"]
    assert said[-1].startswith(f"no epoch beat the starting model on val ({m['start_val_top1']:.4f}")
    assert said[-1].endswith("kept the starting weights")
    assert m["test"]["top1"] == pytest.approx(m["test_before"]["top1"])
    assert all(torch.equal(start[k], v) for k, v in out.model.state_dict().items())
