"""The error contract of ``deepslim compress distill`` (and of pruning's ``--recover kd``).

A bad input gives exit code 2 and exactly one line ``error: ...`` on stderr, no traceback,
and fails *before* any training: no output bundle, no ``.ckpt``, nothing else written, and
every input unchanged. The contract's checks live in cli_contract.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import cli_contract
from cli_contract import Cases, assert_bad_input
from deepslim.models import load_model, save_model

OUT = "out.safetensors"
DISTILL = ["compress", "distill", "--epochs", "1", "--quiet"]


@dataclass(frozen=True)
class Artifacts:
    teacher: bytes        # small_cnn, 10 classes, 1x8x8
    three_classes: bytes  # small_cnn, 3 classes, 1x8x8
    big_input: bytes      # small_cnn, 10 classes, 1x16x16


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    root = tmp_path_factory.mktemp("distill-artifacts")
    torch.manual_seed(0)
    paths = []
    for name, classes, size in (("t", 10, 8), ("three", 3, 8), ("big", 10, 16)):
        bundle = load_model(arch="small_cnn", classes=[str(i) for i in range(classes)], input_size=size,
                            arch_kwargs={"width": 4})
        paths.append(save_model(bundle, root / f"{name}.safetensors"))
    return Artifacts(*(p.read_bytes() for p in paths))


class Workspace(cli_contract.Workspace):
    art: Artifacts

    def teacher(self) -> str:
        return self.write("teacher.safetensors", self.art.teacher)

    def three_classes(self) -> str:
        return self.write("three.safetensors", self.art.three_classes)

    def big_input(self) -> str:
        return self.write("big.safetensors", self.art.big_input)


CASES = Cases()
case = CASES.case


@case("distill-class-count-mismatch")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", ws.three_classes(), "-o", OUT],
            ["teacher predicts 10 classes", "student 3"])


@case("distill-student-input-size-mismatch")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", ws.big_input(), "-o", OUT],
            ["student takes 1x16x16", "teacher 1x8x8"])


@case("distill-student-arch-input-size")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", "small_cnn", "--input-size", "16", "-o", OUT],
            ["student takes 1x16x16", "teacher 1x8x8"])


@case("distill-feature-layer-missing")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", "small_cnn", "--feature-pairs",
             "teacher.layer3:student.features.3", "-o", OUT], ["--feature-pairs", "teacher has no layer 'layer3'"])


@case("distill-feature-layer-missing-in-student")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", "small_cnn", "--feature-pairs",
             "features.3:features.99", "-o", OUT], ["student has no layer 'features.99'"])


@case("distill-feature-pairs-malformed")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", "small_cnn", "--feature-pairs", "features.3",
             "-o", OUT], ["--feature-pairs", "TEACHER_LAYER:STUDENT_LAYER"])


@case("distill-temperature-zero")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", "small_cnn", "--temperature", "0", "-o", OUT],
            ["--temperature", "positive", "got 0"])


@case("distill-alpha-above-one")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", "small_cnn", "--alpha", "1.5", "-o", OUT],
            ["--alpha", "between 0 and 1", "1.5"])


@case("distill-teacher-missing")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", "nope.safetensors", "--student", "small_cnn", "-o", OUT],
            ["teacher nope.safetensors does not exist"])


@case("distill-student-missing")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", "gone.safetensors", "-o", OUT],
            ["student gone.safetensors does not exist"])


@case("distill-unknown-student-arch")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", "resnet19", "-o", OUT], ["resnet19"])


@case("distill-output-is-the-teacher")
def _(ws: Workspace):
    teacher = ws.teacher()
    return ([*DISTILL, "--teacher", teacher, "--student", "small_cnn", "-o", teacher, "--force"],
            [teacher])


@case("distill-output-exists")
def _(ws: Workspace):
    ws.write(OUT, b"keep me")
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", "small_cnn", "-o", OUT], [OUT, "--force"])


@case("distill-teacher-backend-for-a-bundle")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", "small_cnn", "--teacher-backend", "openvino",
             "-o", OUT], ["--teacher-backend", "exported teachers"])


@case("distill-accumulate-zero")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", "small_cnn", "--accumulate", "0", "-o", OUT],
            ["--accumulate", "positive integer"])


@case("distill-resume-without-checkpoint")
def _(ws: Workspace):
    return ([*DISTILL, "--teacher", ws.teacher(), "--student", "small_cnn", "--resume", "-o", OUT],
            ["--resume", f"{OUT}.ckpt"])


@case("prune-recover-kd-without-finetuning")
def _(ws: Workspace):
    return (["compress", "prune", ws.teacher(), "--ratio", "0.5", "--recover", "kd", "--no-check", "-o", OUT],
            ["--recover kd", "--finetune-epochs"])


@case("prune-recover-kd-bad-temperature")
def _(ws: Workspace):
    return (["compress", "prune", ws.teacher(), "--ratio", "0.5", "--recover", "kd", "--finetune-epochs", "1",
             "--temperature", "-1", "--no-check", "-o", OUT], ["--temperature"])


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case_id", CASES.params())
def test_bad_input_is_one_error_line_and_exit_2(case_id: str, workspace: Workspace) -> None:
    args, fragments = CASES[case_id](workspace)
    assert_bad_input(args, fragments, workspace.root, output=OUT)
