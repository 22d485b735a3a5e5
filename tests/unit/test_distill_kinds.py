"""Distillation beyond one-image classifiers (issue #13), without training: the per-task losses against
hand-computed values, adapters, pairing teacher and student (task, inputs, statistics), exported teachers
with several inputs and outputs, and pruning's KD loss with a task and a signature."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from any_kinds import KINDS
from compress.distill import DistillConfig, DistillError, RunnerTeacher, TorchTeacher, distill, kd_finetune_loss
from compress.distill import _prepare  # the adapters are sized on a trial batch before any training
from compress.losses import distillation_loss, make_adapter, task_distillation_loss
from deepslim.config import TrainConfig
from deepslim.signature import InputKind, Signature, TensorSpec
from deepslim.tasks import Task, TaskKind
from deepslim.training import model_for_dataset
from deepslim.trust import allow_code


def _new(kind: str, **kwargs):
    """An untrained bundle of kind ``kind`` (tests/any_kinds.py), with ``kwargs`` replacing its arch kwargs."""
    spec = KINDS[kind]
    with allow_code(trust_code=True):
        return model_for_dataset(spec.arch, spec.dataset, arch_kwargs={**spec.kwargs, **kwargs}, seed=0)


# --- the losses -----------------------------------------------------------------------------------

def test_multilabel_distillation_is_bce_against_the_teachers_sigmoid():
    task = Task(TaskKind.MULTILABEL, ("a",))
    student, teacher, target = torch.tensor([[math.log(3.0)]]), torch.zeros(1, 1), torch.ones(1, 1)
    # sigmoid(ln 3) = 3/4; the teacher's sigmoid(0) = 1/2 is the soft target
    soft = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    hard = -math.log(0.75)
    loss = task_distillation_loss(task, temperature=4.0, alpha=0.25)(student, teacher, target)
    assert loss.item() == pytest.approx(0.25 * soft + 0.75 * hard, abs=1e-6)
    assert loss.item() == pytest.approx(0.425009, abs=1e-5)


def test_regression_distillation_is_mse_to_the_teacher_in_standard_units():
    task = Task(TaskKind.REGRESSION, ("y",), offset=(10.0,), scale=(2.0,))
    student, teacher, target = torch.tensor([[14.0]]), torch.tensor([[12.0]]), torch.tensor([10.0])
    # ((14 - 12) / 2)^2 = 1 from the teacher, ((14 - 10) / 2)^2 = 4 from the truth
    for temperature in (1.0, 8.0):  # a temperature softens logits only
        loss = task_distillation_loss(task, temperature=temperature, alpha=0.5)(student, teacher, target)
        assert loss.item() == pytest.approx(2.5)
    assert task_distillation_loss(task, temperature=4.0, alpha=0.0)(student, teacher, target).item() == 4.0
    assert task_distillation_loss(task, temperature=4.0, alpha=1.0)(student, teacher, target).item() == 1.0


def test_classification_distillation_is_todays_kd():
    torch.manual_seed(0)
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    expected = distillation_loss(s, t, y, temperature=3.0, alpha=0.7, label_smoothing=0.1)
    for task in (None, Task.classification(["a", "b", "c"])):
        got = task_distillation_loss(task, temperature=3.0, alpha=0.7, label_smoothing=0.1)(s, t, y)
        assert torch.equal(got, expected)


def test_signal_features_get_a_one_by_one_conv1d_adapter():
    adapter = make_adapter(torch.Size((2, 4, 16)), torch.Size((2, 8, 16)))
    assert isinstance(adapter, nn.Conv1d) and adapter(torch.randn(2, 4, 16)).shape == (2, 8, 16)
    assert isinstance(make_adapter(torch.Size((2, 16, 4)), torch.Size((2, 16, 8))), nn.Linear)  # tokens


# --- pairing teacher and student ------------------------------------------------------------------

@pytest.mark.parametrize("teacher_kind, student_kind, message", [
    ("regression", "tabular", "The teacher solves a regression task but the student a classification task"),
    ("tabular", "multilabel", "The teacher solves a classification task but the student a multilabel task"),
])
def test_teacher_and_student_of_different_tasks_are_refused_before_training(teacher_kind, student_kind, message):
    with pytest.raises(DistillError, match=message):
        distill(_new(teacher_kind), _new(student_kind), KINDS[student_kind].dataset, progress=False)


def test_teacher_and_student_of_different_widths_are_refused():
    student = _new("multilabel")
    student.task = Task(TaskKind.MULTILABEL, ("a", "b", "c"))
    with pytest.raises(DistillError, match="predicts 5 labels but the student 3; distillation needs the same labels"):
        distill(_new("multilabel"), student, KINDS["multilabel"].dataset, progress=False)


def test_inputs_must_agree_in_name_kind_and_shape():
    teacher = TorchTeacher(_new("two_input"))
    image, meta = teacher.signature.inputs
    assert (image.kind, meta.kind) == (InputKind.IMAGE, InputKind.FEATURES)
    teacher.pair(_new("two_input", width=4).signature)  # same inputs, smaller model: fine
    cases = [
        (TorchTeacher(_new("tabular")).signature, "different inputs"),
        (teacher.signature.replace_input(replace(meta, shape=("batch", 6), mean=(), std=())), "'meta' differs"),
        (teacher.signature.replace_input(replace(meta, kind=InputKind.TENSOR)), "'meta' is tensor for one"),
        (teacher.signature.replace_input(replace(image, shape=("batch", 1, 16, 16))), "image 'image' differs"),
    ]
    for student, fragment in cases:
        with pytest.raises(DistillError, match=f"The student takes .*{fragment}.*build the student with the "
                                               "teacher's inputs"):
            teacher.pair(student)


def test_feature_inputs_are_restandardised_to_the_teachers_statistics():
    teacher = TorchTeacher(_new("tabular"))
    t_spec = teacher.signature.inputs[0]
    assert t_spec.kind is InputKind.FEATURES and len(t_spec.mean) == 13
    s_spec = replace(t_spec, mean=tuple(m + 1.0 for m in t_spec.mean), std=tuple(2 * s for s in t_spec.std))
    raw = torch.randn(4, 13) * 10 + 50
    mean, std = torch.tensor(t_spec.mean), torch.tensor(t_spec.std)
    teacher.pair(Signature((s_spec,)))
    as_student = (raw - (mean + 1)) / (2 * std)
    assert torch.allclose(teacher._renormalize(as_student), (raw - mean) / std, atol=1e-4)
    teacher.pair(teacher.signature)  # the same statistics: the batch passes untouched
    assert teacher._renormalize(as_student) is as_student


def test_two_input_teacher_converts_only_the_input_whose_statistics_differ():
    teacher = TorchTeacher(_new("two_input"))
    image, meta = teacher.signature.inputs
    student = teacher.signature.replace_input(replace(image, mean=(0.0,), std=(1.0,)))
    teacher.pair(student)
    x = (torch.rand(3, 1, 8, 8), torch.randn(3, 4))
    converted = teacher._renormalize(x)
    assert torch.allclose(converted[0], (x[0] - image.mean[0]) / image.std[0], atol=1e-5)
    assert converted[1] is x[1]
    out = teacher.outputs(x)  # every input, the dict output's task entry
    assert out.shape == (3, 10)
    assert torch.equal(out, teacher.model(*converted)["logits"])


# --- feature pairs beyond images ------------------------------------------------------------------

def test_feature_pairs_on_a_conv1d_model_and_a_clear_error_where_shapes_cannot_match():
    teacher, student = _new("signal", width=8), _new("signal", width=4)
    cfg = DistillConfig(feature_pairs=(("features.0", "features.0"),))
    wrapper = _prepare(TorchTeacher(teacher), student, cfg)
    assert isinstance(wrapper.adapters[0], nn.Conv1d) and wrapper.adapters[0].in_channels == 4
    wrapper.close()
    cfg = DistillConfig(feature_pairs=(("features.0", "head"),))
    with pytest.raises(DistillError, match="--feature-pairs features.0:head: a 2-D student feature cannot be "
                                           "matched to a 3-D teacher feature"):
        distill(teacher, student, KINDS["signal"].dataset, cfg, progress=False)


# --- exported teachers ----------------------------------------------------------------------------

def test_runner_teacher_feeds_every_input_in_chunks_and_reads_the_task_output_by_name():
    signature = _new("two_input").signature
    assert signature.outputs == ("logits", "embedding")

    class TwoOutputs:  # a runner that returns every output, in the artifact's order, for batches of 2 at most
        max_batch, output_names, calls = 2, ("embedding", "logits"), []

        def run(self, batch):
            image, meta = batch
            self.calls.append((image.shape, meta.shape))
            logits = image.reshape(len(image), -1)[:, :10] + meta.sum(1, keepdims=True)
            return [meta * 0, logits]

    teacher = RunnerTeacher.__new__(RunnerTeacher)
    teacher.runner, teacher.name, teacher.backend, teacher.signature = TwoOutputs(), "t.onnx", "onnxruntime", signature
    x = (torch.rand(5, 1, 8, 8), torch.randn(5, 4))
    out = teacher._forward(x)
    assert [c[0][0] for c in TwoOutputs.calls] == [2, 2, 1] and TwoOutputs.calls[0][1] == (2, 4)
    assert torch.allclose(out, x[0].reshape(5, -1)[:, :10] + x[1].sum(1, keepdim=True))


# --- pruning's recovery loss ----------------------------------------------------------------------

def test_kd_finetune_loss_calls_every_input_and_reads_the_task_output():
    teacher, student = _new("two_input"), _new("two_input", width=4)
    x = (torch.rand(6, 1, 8, 8), torch.randn(6, 4))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    loss = kd_finetune_loss(teacher.model, 4.0, 0.5, task=teacher.task, signature=teacher.signature)
    value = loss(student.model, x, y)
    with torch.no_grad():
        expected = distillation_loss(student.model(*x)["logits"], teacher.model(*x)["logits"], y, temperature=4.0,
                                     alpha=0.5)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    value.backward()  # the student's weights get gradients, the teacher's none
    assert student.model.head.weight.grad is not None and teacher.model.head.weight.grad is None


def test_kd_finetune_loss_regression_and_the_default_image_case():
    teacher, student = _new("regression"), _new("regression", hidden=[8])
    task = replace(teacher.task, offset=(150.0,), scale=(80.0,))
    x, y = torch.randn(5, 10), torch.full((5,), 150.0)
    with torch.no_grad():
        t, s = teacher.model(x), student.model(x)
    expected = 0.5 * ((s - t) / 80).pow(2).mean() + 0.5 * ((s.view(-1) - 150) / 80).pow(2).mean()
    got = kd_finetune_loss(teacher.model, 4.0, 0.5, task=task, signature=teacher.signature)(student.model, x, y)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    # no task: today's classification loss on a one-image model
    from deepslim.models import load_model
    torch.manual_seed(0)
    cnn_t, cnn_s = (load_model(arch="small_cnn", num_classes=10, input_size=8, arch_kwargs={"width": w}).model
                    for w in (8, 4))
    images, labels = torch.rand(4, 1, 8, 8), torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        expected = distillation_loss(cnn_s(images), cnn_t.eval()(images), labels, temperature=2.0, alpha=0.3)
    assert kd_finetune_loss(copy.deepcopy(cnn_t), 2.0, 0.3)(cnn_s, images, labels).item() == \
        pytest.approx(expected.item(), rel=1e-6)
