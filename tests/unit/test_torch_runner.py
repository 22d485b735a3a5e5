"""The torch runner as the fp32 reference on CUDA: TF32 off while it runs, the process settings restored after."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.runners.base import RunnerOptions
from benchmarks.runners.torch_runner import TorchRunner, full_fp32
from deepslim.artifact import ArtifactMeta
from deepslim.spec import InputSpec

SETTINGS = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)


def _precisions() -> list[str]:
    return [s.fp32_precision for s in SETTINGS]


class Recorder(torch.nn.Module):
    """Records the fp32 precision torch would use for each forward."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[str]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(_precisions())
        return x.flatten(1)[:, :2]


def _runner(device: str) -> TorchRunner:
    module = Recorder()  # stays on the CPU: only the settings the runner chooses for the device are tested
    meta = ArtifactMeta(InputSpec.create(1, 2, (0.0,), (1.0,)), ["a", "b"])
    return TorchRunner(Path("m.safetensors"), meta, RunnerOptions(threads=1, device=device), {"threads": 1},
                       module=module, eager=module)


@pytest.fixture(autouse=True)
def tf32_allowed():
    """Start every test with TF32 allowed everywhere, and leave the process as it was."""
    saved = _precisions()
    for s in SETTINGS:
        s.fp32_precision = "tf32"
    yield
    for s, value in zip(SETTINGS, saved):
        s.fp32_precision = value


def test_full_fp32_turns_tf32_off_inside_and_restores_after_an_error():
    with pytest.raises(ValueError):
        with full_fp32():
            assert _precisions() == ["ieee", "ieee", "ieee"]
            raise ValueError("boom")
    assert _precisions() == ["tf32", "tf32", "tf32"]


@pytest.mark.parametrize("entered", [False, True])
def test_a_cuda_runner_runs_without_tf32_and_restores_the_settings(entered):
    runner = _runner("cuda")
    x = np.zeros((3, 1, 2, 2), np.float32)
    if entered:
        with runner:
            runner.run(x)
            assert _precisions() == ["ieee", "ieee", "ieee"]
    else:
        runner.run(x)
    assert runner.module.seen == [["ieee", "ieee", "ieee"]]
    assert _precisions() == ["tf32", "tf32", "tf32"]


def test_a_cpu_runner_leaves_the_cuda_settings_alone():
    runner = _runner("cpu")
    with runner:
        runner.run(np.zeros((1, 1, 2, 2), np.float32))
    assert runner.module.seen == [["tf32", "tf32", "tf32"]]
