"""Latency statistics, interleaving and the noise flag, with fake runners on a fake clock.

Nothing here times real work: runners advance a fake clock by a known cost, so every
assertion is exact. How fast the real harness measures real work is a benchmark
(``python -m benchmarks.latency_check``), not a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from benchmarks import latency
from benchmarks.latency import LatencyConfig, add_speedups, measure, summarize
from benchmarks.report import pareto_front
from benchmarks.runners.base import Runner, RunnerOptions
from deepslim.artifact import ArtifactMeta
from deepslim.errors import ConfigError
from deepslim.spec import InputSpec


class FakeClock:
    """Stands in for the ``time`` module inside benchmarks.latency; only runners move it."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@dataclass
class FakeRunner(Runner):
    clock: FakeClock | None = None
    seconds_per_item: float = 2**-9
    log: list = field(default_factory=list)

    def __enter__(self) -> FakeRunner:
        self.log.append(("enter", self.artifact.name))
        return self

    def __exit__(self, *exc: object) -> None:
        self.log.append(("exit", self.artifact.name))

    def prepare(self, batch: int) -> None:
        self.log.append(("prepare", self.artifact.name, batch))

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.log.append(("run", self.artifact.name, batch.shape[0]))
        self.clock.now += self.seconds_per_item * batch.shape[0]
        return np.zeros((batch.shape[0], 3), np.float32)


@pytest.fixture()
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(latency, "time", fake)
    return fake


def _runners(clock: FakeClock, costs: dict[str, float]) -> tuple[list[FakeRunner], list]:
    log: list = []
    meta = ArtifactMeta(InputSpec.create(1, 4, (0.0,), (1.0,)), ["a", "b", "c"])
    runners = [FakeRunner(Path(name), meta, RunnerOptions(threads=1), {}, clock=clock, seconds_per_item=cost, log=log)
               for name, cost in costs.items()]
    return runners, log


def _timed_order(log: list) -> list[str]:
    return [event[1] for event in log if event[0] == "run"]


def test_each_round_rotates_which_runner_goes_first(clock):
    runners, log = _runners(clock, {"a": 2**-9, "b": 2**-9, "c": 2**-9})
    measure(runners, LatencyConfig(batches=(1,), rounds=4, iterations=1, warmup=0))
    assert _timed_order(log) == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]


def test_warmup_then_rounds_each_inside_the_runner_and_prepared_per_batch(clock):
    runners, log = _runners(clock, {"a": 2**-9, "b": 2**-9})
    measure(runners, LatencyConfig(batches=(1, 2), rounds=2, iterations=2, warmup=1))

    def visit(name: str, runs: int) -> list:
        per_batch = [[("prepare", name, b)] + [("run", name, b)] * runs for b in (1, 2)]
        return [("enter", name), *per_batch[0], *per_batch[1], ("exit", name)]

    warmup = visit("a", 1) + visit("b", 1)
    assert log == warmup + visit("a", 2) + visit("b", 2) + visit("b", 2) + visit("a", 2)


def test_statistics_and_speedups_come_from_the_measured_times(clock):
    # costs and the per-round time are powers of two: the fake clock adds them exactly
    runners, _ = _runners(clock, {"slow": 2**-9, "fast": 2**-11})
    config = LatencyConfig(batches=(1, 2), rounds=3, duration=3 * 2**-6, warmup=0, min_iterations=5)
    stats = measure(runners, config)
    slow, fast = stats
    assert slow[1].p50_ms == 1000 * 2**-9 and fast[1].p50_ms == 1000 * 2**-11
    assert slow[2].p50_ms == 1000 * 2**-8 and slow[1].round_p50_ms == [1000 * 2**-9] * 3
    assert slow[1].iterations == 3 * 8 and fast[1].iterations == 3 * 32  # one round's time, 2**-6 s, each
    assert slow[2].iterations == 3 * 5  # 4 batches fill a round; min_iterations asks for 5
    assert slow[1].speedup == 1.0 and fast[1].speedup == 4.0 and fast[2].speedup == 4.0
    assert fast[1].within_noise is False and slow[1].throughput == pytest.approx(2**9)


def test_fixed_iterations(clock):
    runners, log = _runners(clock, {"a": 2**-9})
    stats = measure(runners, LatencyConfig(batches=(1,), rounds=2, iterations=7, warmup=3))
    assert stats[0][1].iterations == 14 and len(_timed_order(log)) == 3 + 14


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


@pytest.mark.parametrize("kwargs,fragment", [({"batches": (0,)}, "--batch"), ({"rounds": 0}, "--rounds"),
                                             ({"duration": 0}, "--duration"), ({"iterations": 0}, "--iterations"),
                                             ({"warmup": -1}, "--warmup")])
def test_bad_latency_options(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        LatencyConfig(**kwargs)


def test_pareto_front():
    points = [(1.0, 0.90), (2.0, 0.95), (3.0, 0.94), (0.5, 0.80), (2.0, None)]
    assert pareto_front(points) == [0, 1, 3]
