"""How well the latency harness measures known costs on this machine, in one interleaved run.

    .venv/bin/python -m benchmarks.latency_check [--duration 1.0] [--rounds 5]

Two busy-waiting runners cost 2.0 and 0.5 ms per item, so the true speedup is 4.00x and
batch 2 costs twice batch 1. Prints what the harness measured (p50, round spread, the
ratios) next to those true values. On a shared or throttled machine the ratios drift; that
is what this script is for (the unit tests check the harness on a fake clock instead).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.latency import LatencyConfig, measure
from benchmarks.runners.base import Runner, RunnerOptions
from deepslim.artifact import ArtifactMeta
from deepslim.spec import InputSpec


@dataclass
class BusyRunner(Runner):
    """Spins for ``ms_per_item`` per item of the batch."""

    ms_per_item: float = 1.0

    def run(self, batch: np.ndarray) -> np.ndarray:
        deadline = time.perf_counter() + self.ms_per_item * batch.shape[0] / 1e3
        while time.perf_counter() < deadline:
            pass
        return np.zeros((batch.shape[0], 2), np.float32)


def _runner(name: str, ms_per_item: float) -> BusyRunner:
    meta = ArtifactMeta(InputSpec.create(1, 4, (0.0,), (1.0,)), ["a", "b"])
    return BusyRunner(Path(name), meta, RunnerOptions(threads=1), {}, ms_per_item=ms_per_item)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per runner and batch")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    slow, fast = measure([_runner("slow", 2.0), _runner("fast", 0.5)],
                         LatencyConfig(batches=(1, 2), rounds=args.rounds, duration=args.duration, warmup=5))
    for name, stats in (("slow (2.0 ms/item)", slow), ("fast (0.5 ms/item)", fast)):
        for b, s in stats.items():
            print(f"{name} batch {b}: p50 {s.p50_ms:.3f} ms (rounds {s.spread_ms[0]:.3f}-{s.spread_ms[1]:.3f}), "
                  f"{s.iterations} runs")
    print(f"speedup fast vs slow, batch 1: {fast[1].speedup:.2f}x measured, 4.00x true"
          f"{' (inside the noise)' if fast[1].within_noise else ''}")
    print(f"batch 2 / batch 1, slow: {slow[2].p50_ms / slow[1].p50_ms:.2f}x measured, 2.00x true")


if __name__ == "__main__":
    main()
