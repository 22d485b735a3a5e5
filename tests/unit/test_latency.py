"""Latency statistics, interleaving and the noise flag, on a runner whose cost we control."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from benchmarks.latency import LatencyConfig, add_speedups, measure, summarize
from benchmarks.report import pareto_front
from benchmarks.runners.base import Runner, RunnerOptions
from deepslim.artifact import ArtifactMeta
from deepslim.errors import ConfigError
from deepslim.spec import InputSpec


@dataclass
class SleepRunner(Runner):
    cost_ms: float = 1.0
    log: list | None = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.log is not None:
            self.log.append(self.artifact.name)
        deadline = time.perf_counter() + self.cost_ms * batch.shape[0] / 1e3
        while time.perf_counter() < deadline:
            pass
        return np.zeros((batch.shape[0], 3), np.float32)


def _runner(name: str, cost: float, log=None) -> SleepRunner:
    meta = ArtifactMeta(InputSpec.create(1, 4, (0.0,), (1.0,)), ["a", "b", "c"])
    return SleepRunner(Path(name), meta, RunnerOptions(threads=1), {}, cost_ms=cost, log=log)


def test_summary_statistics():
    s = summarize([[1.0, 2.0, 3.0], [2.0, 2.0, 10.0], [4.0, 4.0, 4.0]], batch=4)
    assert s.round_p50_ms == [2.0, 2.0, 4.0] and s.p50_ms == 2.0 and s.spread_ms == (2.0, 4.0)
    assert s.iterations == 9 and s.mean_ms == pytest.approx(32 / 9)
    assert s.throughput == pytest.approx(4 / 0.002)
    assert s.p99_ms == pytest.approx(np.percentile([1, 2, 3, 2, 2, 10, 4, 4, 4], 99))


def test_speedups_and_noise_flag():
    base = {1: summarize([[10.0], [11.0], [12.0]], 1)}
    fast = {1: summarize([[5.0], [5.5], [6.0]], 1)}
    close = {1: summarize([[11.5], [12.5], [13.0]], 1)}
    stats = add_speedups([base, fast, close])
    assert stats[0][1].speedup == 1.0 and stats[1][1].speedup == pytest.approx(11.0 / 5.5)
    assert stats[1][1].within_noise is False and stats[2][1].within_noise is True


def test_measure_interleaves_rounds_and_ranks_runners():
    log: list[str] = []
    slow, fast = _runner("slow", 2.0, log), _runner("fast", 0.5, log)
    stats = measure([slow, fast], LatencyConfig(batches=(1, 2), rounds=3, duration=0.15, warmup=1))
    assert stats[1][1].p50_ms < stats[0][1].p50_ms and stats[1][1].speedup > 2.5
    assert stats[0][2].p50_ms == pytest.approx(2 * stats[0][1].p50_ms, rel=0.3)
    timed = log[4:]  # after the warm-up calls, rounds alternate which runner goes first
    switches = sum(1 for a, b in zip(timed, timed[1:]) if a != b)
    assert switches >= 3 and all(len(s.round_p50_ms) == 3 for per in stats for s in per.values())


def test_fixed_iterations():
    stats = measure([_runner("a", 0.1)], LatencyConfig(batches=(1,), rounds=2, iterations=7, warmup=0))
    assert stats[0][1].iterations == 14


@pytest.mark.parametrize("kwargs,fragment", [({"batches": (0,)}, "--batch"), ({"rounds": 0}, "--rounds"),
                                             ({"duration": 0}, "--duration"), ({"iterations": 0}, "--iterations"),
                                             ({"warmup": -1}, "--warmup")])
def test_bad_latency_options(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        LatencyConfig(**kwargs)


def test_pareto_front():
    points = [(1.0, 0.90), (2.0, 0.95), (3.0, 0.94), (0.5, 0.80), (2.0, None)]
    assert pareto_front(points) == [0, 1, 3]
