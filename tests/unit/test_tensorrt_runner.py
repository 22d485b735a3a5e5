"""The TensorRT runner without a GPU: batches are split by the engine's profile, its shape calls are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.runners.base import RunnerOptions
from benchmarks.runners.tensorrt_runner import EngineRunError, TensorRTRunner
from deepslim.artifact import ArtifactMeta
from deepslim.errors import DeepSlimError
from deepslim.spec import InputSpec

SAMPLE = (1, 4, 4)


class FakeEngine:
    """An engine with one optimization profile: batches ``low``..``high`` of SAMPLE."""

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def get_tensor_profile_shape(self, name: str, profile: int):
        assert name == "input" and profile == 0
        return [(self.low, *SAMPLE), (self.high, *SAMPLE), (self.high, *SAMPLE)]


class FakeContext:
    """Accepts a shape as TensorRT does: inside the profile, or refuses it by returning False."""

    def __init__(self, engine: FakeEngine):
        self.engine, self.shapes = engine, []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes.append(shape)
        return self.engine.low <= shape[0] <= self.engine.high and tuple(shape[1:]) == SAMPLE


def logits_of(x: np.ndarray) -> np.ndarray:
    """Per-row logits that identify the row: its sum, and its first pixel."""
    flat = x.reshape(len(x), -1)
    return np.stack([flat.sum(1), flat[:, 0]], axis=1)


class HostRunner(TensorRTRunner):
    """The real runner with its one GPU call (``_execute``) done on the host."""

    def _execute(self, x: np.ndarray) -> np.ndarray:
        assert self.context.shapes[-1] == x.shape  # the shape was set before running
        self.executed.append(len(x))
        return logits_of(x)


def _runner(low: int, high: int) -> HostRunner:
    engine = FakeEngine(low, high)
    meta = ArtifactMeta(InputSpec.create(1, 4, (0.0,), (1.0,)), ["a", "b"])
    runner = HostRunner(Path("m.engine"), meta, RunnerOptions(threads=1), {}, engine=engine,
                        context=FakeContext(engine))
    runner.executed = []
    return runner


def _batch(n: int, size: int = 4) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 1, size, size)).astype(np.float32)


def test_batches_above_the_profile_max_run_in_order_in_chunks():
    runner = _runner(1, 8)
    x = _batch(37)
    out = runner.run(x)
    assert runner.max_batch == 8 and runner.executed == [8, 8, 8, 8, 5]
    assert [s[0] for s in runner.context.shapes] == [8, 8, 8, 8, 5]
    np.testing.assert_array_equal(out, logits_of(x))


def test_a_batch_inside_the_profile_runs_in_one_call():
    runner = _runner(1, 8)
    x = _batch(8)
    np.testing.assert_array_equal(runner.run(x), logits_of(x))
    assert runner.executed == [8]


def test_a_last_chunk_below_the_profile_min_is_padded_and_the_padding_dropped():
    runner = _runner(4, 8)
    x = _batch(10)
    out = runner.run(x)
    assert runner.executed == [8, 4] and out.shape == (10, 2)
    np.testing.assert_array_equal(out, logits_of(x))


def test_a_refused_shape_raises_one_sentence_and_runs_nothing():
    runner = _runner(1, 8)
    with pytest.raises(EngineRunError, match=r"m.engine refused input shape \(2, 1, 5, 5\); its profile takes "
                                             r"batches 1..8 of \(1, 4, 4\)\.") as info:
        runner.run(_batch(2, size=5))
    assert isinstance(info.value, DeepSlimError) and str(info.value).count(". ") == 0
    assert runner.executed == []


def test_bench_says_when_a_batch_is_timed_in_chunks():
    from benchmarks.bench import Entry, _notes
    from benchmarks.latency import LatencyConfig

    def entry(label: str, runner: dict) -> Entry:
        return Entry(label, label, "tensorrt", "tensorrt", "fp32", 1, None, None, [1, *SAMPLE], None, runner, 0.0, None)

    notes = _notes([entry("small [tensorrt]", {"profile_batches": [1, 8]}),
                    entry("big [tensorrt]", {"profile_batches": [1, 32]})], LatencyConfig(batches=(1, 32)))
    chunked = [n for n in notes if "chunks" in n]
    assert chunked == ["small [tensorrt]: batches above 8, its engine profile's max, run as chunks of 8; rebuild it "
                       "with a larger `--batch` to time them as one batch"]
