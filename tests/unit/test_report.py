"""Bench reports render the metrics each entry has: a missing one (top-5 of a 5-class model) is a dash."""

from __future__ import annotations

from benchmarks.bench import BenchReport, Entry
from benchmarks.latency import summarize
from benchmarks.report import summary_rows, to_html, to_markdown, write_report

ENV = {"cpu": {"model": "cpu", "usable_cores": 2, "flags": []}, "gpu": None, "threads": 1, "os": "linux",
       "versions": {"torch": "2"}}


def _entry(name: str, accuracy: dict) -> Entry:
    entry = Entry(name, name, "torch", "bundle", "fp32", 2**20, 10, 1000, [1, 1, 8, 8], None, {}, 0.1, None,
                  accuracy=accuracy)
    entry.latency = {1: summarize([[1.0, 1.0]], 1)}
    entry.latency[1].speedup = 1.0
    return entry


def _report() -> BenchReport:
    four = _entry("four.safetensors", {"top1": 0.5, "samples": 8})
    ten = _entry("ten.safetensors", {"top1": 0.75, "top5": 0.875, "samples": 8})
    return BenchReport("now", ENV, {"batches": [1]}, [four, ten])


def test_markdown_shows_top5_where_measured_and_a_dash_where_not():
    md = to_markdown(_report())
    assert "| artifact | backend | top1 | samples | top5 |" in md
    assert "| four.safetensors | torch | 0.5000 | 8 | - |" in md
    assert "| ten.safetensors | torch | 0.7500 | 8 | 0.8750 |" in md


def test_html_table_and_files_render_without_top5(tmp_path):
    head, rows = summary_rows(_report())
    assert len(rows) == 2 and "top-1" in head
    assert "four.safetensors" in to_html(_report(), {})
    paths = write_report(_report(), tmp_path)
    assert "| four.safetensors | torch | 0.5000 | 8 | - |" in paths["report.md"].read_text()
