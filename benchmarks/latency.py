"""Latency: warm-up, then interleaved timed rounds; robust statistics of the round medians.

This machine is noisy (the same model's p50 moved by up to 45% between runs minutes
apart), so each (artifact, batch) is timed in several rounds, the artifacts interleaved
and their order rotated every round; the reported p50 is the median of the round
medians, with their min..max as the spread. A speedup whose spreads overlap the
baseline's is flagged as inside the noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Union

import numpy as np

from benchmarks.runners import Runner
from benchmarks.runners.base import Batch
from deepslim.errors import ConfigError
from deepslim.signature import Signature

NAMED_DIM = 16  # the size of every named dim (sequence, length...) of the random latency inputs
SEQUENCE = "sequence"  # the named dim --seq-len sets

# Where latency is measured: a batch size, or (sequence length, batch size) when --seq-len is given.
Point = Union[int, tuple[int, int]]
# The latency input of one runner at one point (the batch of a text model holds real tokenized texts).
Inputs = Callable[[Runner, Point], Batch]


@dataclass(frozen=True)
class LatencyConfig:
    batches: tuple[int, ...] = (1,)
    sequences: tuple[int, ...] = ()  # --seq-len: every batch at each of these lengths of the sequence dim
    rounds: int = 5
    duration: float = 5.0          # seconds per (artifact, batch), split over the rounds
    iterations: int | None = None  # fixed count per round instead of a duration
    warmup: int = 10
    min_iterations: int = 5        # per round, even when the duration is short

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise ConfigError(f"--batch sizes must be positive integers, got {list(self.batches)}.")
        if self.sequences and min(self.sequences) < 1:
            raise ConfigError(f"--seq-len lengths must be positive integers, got {list(self.sequences)}.")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be a positive integer, got {self.rounds}.")
        if not self.duration > 0:
            raise ConfigError(f"--duration must be a positive number of seconds, got {self.duration}.")
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"--iterations must be a positive integer, got {self.iterations}.")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup}.")

    @property
    def points(self) -> list[Point]:
        """Every batch size, or every (sequence length, batch size) pair with ``sequences``."""
        if not self.sequences:
            return list(self.batches)
        return [(s, b) for s in self.sequences for b in self.batches]


def point_batch(point: Point) -> int:
    return point[1] if isinstance(point, tuple) else point


def point_sequence(point: Point) -> int | None:
    return point[0] if isinstance(point, tuple) else None


def point_sizes(point: Point) -> dict[str, int] | None:
    """The named-dim sizes a point fixes (``{"sequence": L}``), None for a batch size alone."""
    return {SEQUENCE: point[0]} if isinstance(point, tuple) else None


def point_key(point: Point) -> str:
    """A point as a report.json key: ``"8"`` for a batch size, ``"seq128_b8"`` for a sequence length and batch."""
    return f"seq{point[0]}_b{point[1]}" if isinstance(point, tuple) else str(point)


@dataclass
class LatencyStats:
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    spread_ms: tuple[float, float]      # min..max of the round medians
    round_p50_ms: list[float]
    iterations: int
    throughput: float                   # items per second at p50
    speedup: float | None = None        # baseline p50 / this p50 (same batch, same run)
    within_noise: bool | None = None    # spreads of this and the baseline overlap
    speedup_same_backend: float | None = None  # p50 of the first artifact on the same backend / this p50
    sequence: int | None = None         # --seq-len: the sequence length of every input row (throughput: rows/s)
    padding: dict | None = None         # --seq-len on texts: padded/truncated rows, fraction of real tokens

    def to_json(self) -> dict:
        data = asdict(self)
        if self.sequence is None:
            del data["sequence"], data["padding"]
        else:
            data["sequences_per_s"] = self.throughput
        return data


@dataclass
class _Samples:
    rounds: list[list[float]] = field(default_factory=list)


def measure(runners: Sequence[Runner], config: LatencyConfig, tick: Callable[[str], None] | None = None,
            inputs: Inputs | None = None) -> list[dict[Point, LatencyStats]]:
    """Per runner (same order), per point (:attr:`LatencyConfig.points`): latency statistics measured in one
    interleaved run; ``inputs`` makes each runner's batch at a point (default: :func:`latency_inputs`)."""
    make = inputs or _input
    points = config.points
    batches = {(i, p): make(r, p) for i, r in enumerate(runners) for p in points}
    for i, runner in enumerate(runners):
        with runner:
            for p in points:
                _prepare(runner, p)
                for _ in range(config.warmup):
                    runner.run(batches[i, p])
    samples = {(i, p): _Samples() for i in range(len(runners)) for p in points}
    per_round = config.duration / config.rounds
    for k in range(config.rounds):
        order = [(k + j) % len(runners) for j in range(len(runners))]
        for i in order:
            with runners[i]:
                for p in points:
                    _prepare(runners[i], p)
                    samples[i, p].rounds.append(_time(runners[i], batches[i, p], per_round, config))
                    if tick:
                        tick(f"round {k + 1}/{config.rounds}: {runners[i].label} {_point_words(p)}")
    stats = [{p: summarize(samples[i, p].rounds, point_batch(p), point_sequence(p)) for p in points}
             for i in range(len(runners))]
    return add_speedups(stats)


def _prepare(runner: Runner, point: Point) -> None:
    """``runner.prepare`` for a point (a batch size alone is prepared as runners before --seq-len were)."""
    sizes = point_sizes(point)
    if sizes is None:
        runner.prepare(point_batch(point))
    else:
        runner.prepare(point_batch(point), sizes)


def _point_words(point: Point) -> str:
    return f"sequence {point[0]} batch {point[1]}" if isinstance(point, tuple) else f"batch {point}"


def _input(runner: Runner, point: Point) -> Batch:
    return latency_inputs(runner.meta.signature, point_batch(point), point_sizes(point))


def latency_inputs(signature: Signature, batch: int, sizes: dict[str, int] | None = None) -> Batch:
    """Seeded random inputs of every input at ``batch`` (named dims at :data:`NAMED_DIM`, or ``sizes``), each of
    its dtype: one array for a one-input model, else a tuple in the signature's order."""
    from deepslim.modelio import example_inputs, numpy_inputs
    sizes = {**named_dims(signature), **(sizes or {})}
    arrays = numpy_inputs(example_inputs(signature, batch, sizes=sizes, seed=batch))
    return arrays[0] if len(arrays) == 1 else arrays


def named_dims(signature: Signature) -> dict[str, int]:
    """The size latency gives each named dim of ``signature`` (recorded in the report)."""
    return {d: NAMED_DIM for spec in signature.inputs for d in spec.sample_shape if isinstance(d, str)}


def _time(runner: Runner, x: Batch, seconds: float, config: LatencyConfig) -> list[float]:
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        runner.run(x)
        end = time.perf_counter()
        times.append((end - start) * 1e3)
        if config.iterations is not None:
            if len(times) >= config.iterations:
                return times
        elif end >= deadline and len(times) >= config.min_iterations:
            return times


def summarize(rounds: list[list[float]], batch: int, sequence: int | None = None) -> LatencyStats:
    everything = np.concatenate([np.asarray(r) for r in rounds])
    medians = [float(np.median(r)) for r in rounds]
    p50 = float(np.median(medians))
    return LatencyStats(batch, p50, float(np.percentile(everything, 90)), float(np.percentile(everything, 99)),
                        float(everything.mean()), float(everything.std()), (min(medians), max(medians)), medians,
                        int(everything.size), batch / (p50 / 1e3), sequence=sequence)


def add_speedups(stats: list[dict[Point, LatencyStats]]) -> list[dict[Point, LatencyStats]]:
    """Ratios to the first runner (the baseline), and whether the difference is inside the noise."""
    for per_batch in stats:
        for b, s in per_batch.items():
            base = stats[0][b]
            s.speedup = base.p50_ms / s.p50_ms
            s.within_noise = s.spread_ms[0] <= base.spread_ms[1] and base.spread_ms[0] <= s.spread_ms[1]
    return stats
