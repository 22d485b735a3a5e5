"""Runners, latency and accuracy measurement, reports.

    from benchmarks import bench, BenchTarget, LatencyConfig, write_report
"""

from __future__ import annotations

from benchmarks.accuracy import load_metric
from benchmarks.bench import BenchReport, BenchTarget, bench
from benchmarks.latency import LatencyConfig
from benchmarks.report import write_report
from benchmarks.runners import Backend, RunnerOptions, open_runner

__all__ = ["Backend", "BenchReport", "BenchTarget", "LatencyConfig", "RunnerOptions", "bench", "load_metric",
           "open_runner", "write_report"]
