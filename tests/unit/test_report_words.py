"""Bench reports in words: speedups say faster/slower, small sizes in KiB, the dataset and split in every title,
and every artifact its own colour and marker in the plots."""

from __future__ import annotations

import json
import re

import pytest

from benchmarks.bench import BenchReport, Entry
from benchmarks.latency import add_speedups, summarize
from benchmarks.report import figures, plot_labels, plot_styles, summary_rows, title_line, to_html, to_markdown

ENV = {"cpu": {"model": "cpu", "usable_cores": 2, "flags": []}, "gpu": None, "threads": 1, "os": "linux",
       "versions": {"torch": "2"}}
OLD_RATIO = re.compile(r"\d\.\d\dx")  # the old "0.50x": a ratio with no direction


def _entry(name: str, backend: str, size: int, accuracy: dict) -> Entry:
    return Entry(f"{name} [{backend}]", name, backend, "bundle", "fp32", size, 10, 1000, [1, 1, 8, 8], None, {},
                 0.1, None, accuracy=accuracy)


def _report(p50s: list[float], *, dataset: str | None = "digits", backends: list[str] | None = None,
            names: list[str] | None = None) -> BenchReport:
    backends = backends or ["torch"] * len(p50s)
    names = names or [f"m{i}.safetensors" for i in range(len(p50s))]
    accuracy = {"top1": 0.9, "samples": 360} if dataset else {}
    entries = [_entry(n, b, 3000 + i, dict(accuracy)) for i, (n, b) in enumerate(zip(names, backends))]
    stats = add_speedups([{1: summarize([[p] * 3, [p] * 3], 1)} for p in p50s])
    for e, s in zip(entries, stats):
        e.latency = s
    first: dict[str, float] = {}
    for e in entries:
        e.latency[1].speedup_same_backend = first.setdefault(e.backend, e.latency[1].p50_ms) / e.latency[1].p50_ms
    config = {"batches": [1], "dataset": dataset, "split": "test", "limit": None}
    return BenchReport("now", ENV, config, entries)


def test_summary_speed_columns_say_faster_or_slower_and_the_first_row_is_the_baseline():
    head, rows = summary_rows(_report([2.0, 1.0, 4.0]), compact=True)
    speed = head.index("b1 speed vs the first")
    assert head[speed - 1] == "b1 p50 ms"
    assert [r[speed] for r in rows] == ["baseline", "2.00× faster", "2.00× slower"]
    assert not any(OLD_RATIO.search(c) for r in rows for c in r)


def test_full_view_names_the_ratio_on_the_same_backend_in_words():
    report = _report([2.0, 1.0, 4.0, 8.0], backends=["torch", "torch", "openvino", "openvino"])
    head, rows = summary_rows(report)
    speed = head.index("b1 speed vs the first / vs the first on that backend")
    assert [r[speed] for r in rows] == ["baseline", "2.00× faster", "2.00× slower / baseline on openvino",
                                        "4.00× slower / 2.00× slower on openvino"]


def test_markdown_latency_table_speaks_in_words():
    md = to_markdown(_report([2.0, 1.0, 4.0], backends=["torch", "torch", "openvino"]))
    assert "| vs the first | vs the first on that backend |" in md
    assert "| 2.000 | 2.000 | 2.000 | 2.000 | 0.000 | 500.0 | baseline | baseline |" in md
    assert "| 1.000 | 1.000 | 1.000 | 1.000 | 0.000 | 1000.0 | 2.00× faster | 2.00× faster |" in md
    assert "| 2.00× slower | baseline |" in md
    assert not OLD_RATIO.search(md)


def test_sizes_under_a_mebibyte_print_in_kibibytes_and_small_mac_counts_are_not_zero():
    head, rows = summary_rows(_report([1.0]))
    assert rows[0][head.index("size")] == "2.9 KiB"  # 3000 bytes; "0.0 MiB" before
    assert rows[0][head.index("MACs")] == "1.00k"  # 1000 MACs; "0.0M" before


def test_markdown_and_html_title_blocks_name_the_dataset_and_split():
    report = _report([1.0, 2.0])
    words = "accuracy on digits, test split (all 360 images)"
    assert title_line(report) == words
    assert title_line(report) == title_line(json.loads(json.dumps(report.to_json())))  # a kept report.json too
    md = to_markdown(report)
    assert md.splitlines()[:3] == ["# deepslim bench report", "", f"**A{words[1:]}.**"]
    assert f"<h1>deepslim bench report</h1><p><strong>A{words[1:]}.</strong></p>" in to_html(report, {})


@pytest.mark.parametrize("limit, words", [(360, "a seeded subset of 360 images"), (1000, "all 360 images")])
def test_a_seeded_subset_is_said_in_the_title(limit, words):
    report = _report([1.0])
    report.config["limit"] = limit  # 360 images scored: a subset at --limit 360, the whole split at --limit 1000
    assert title_line(report) == f"accuracy on digits, test split ({words})"


def test_a_latency_only_report_says_accuracy_was_not_measured():
    report = _report([1.0, 2.0], dataset=None)
    assert title_line(report) == "latency only; accuracy not measured"
    assert "**Latency only; accuracy not measured.**" in to_markdown(report)
    assert "<strong>Latency only; accuracy not measured.</strong>" in to_html(report, {})


def test_fifteen_artifacts_get_fifteen_colour_and_marker_pairs_in_the_plots():
    assert len(set(plot_styles(140))) == 140
    report = _report([1.0 + i for i in range(15)])
    figs = figures(report)
    lines = figs["latency_per_batch.png"].axes[0].get_lines()
    assert len({(tuple(line.get_color()), line.get_marker()) for line in lines}) == 15
    points = figs["accuracy_vs_latency.png"].axes[0].collections
    looks = {(tuple(c.get_facecolor()[0]), c.get_paths()[0].vertices.tobytes()) for c in points}
    assert len(points) == 15 and len(looks) == 15
    bars = figs["size.png"].axes[0].patches
    assert len({tuple(b.get_facecolor()) for b in bars}) == 15


def test_two_artifacts_with_one_file_name_get_two_labels():
    report = _report([1.0, 2.0], names=["runs/a/01-train/model.safetensors", "runs/a/02-prune/model.safetensors"])
    labels = plot_labels(report.entries)
    assert labels == ["runs/a/01-train/model.safetensors [torch]", "runs/a/02-prune/model.safetensors [torch]"]
    ticks = [t.get_text() for t in figures(report)["size.png"].axes[0].get_yticklabels()]
    assert ticks == labels


@pytest.fixture
def kept_report(tmp_path):
    report = _report([2.0, 1.0, 4.0], backends=["torch", "torch", "onnxruntime"])
    return json.loads(json.dumps(report.to_json()))


def test_run_prints_the_kept_report_with_its_dataset_speed_words_and_sizes(kept_report, capsys):
    from commands.run import print_report
    print_report(kept_report)
    out = " ".join(capsys.readouterr().out.split())
    assert "bench: accuracy on digits, test split (all 360 images)" in out
    assert "baseline / baseline" in out and "2.00× faster / 2.00× faster" in out
    assert "2.00× slower / baseline" in out and "2.9 KiB" in out and "MiB" not in out
    assert not OLD_RATIO.search(out)
