"""Reports of a bench run: ``report.json`` (versioned), ``report.md``, self-contained ``report.html``, plots."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.bench import BenchReport, Entry
from benchmarks.latency import Point
from benchmarks.text_inputs import padding_words
from deepslim.fileio import atomic_path
from deepslim.tasks import metric_info
from deepslim.units import format_count, format_size, format_speedup

PLOTS = ("accuracy_vs_latency.png", "latency_per_batch.png", "size.png")  # and latency_per_sequence.png (--seq-len)


def write_report(report: BenchReport, directory: str | Path) -> dict[str, Path]:
    """Write every report file into ``directory`` (each atomically) and return their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    images = _plots(report)
    paths = {name: out / name for name in ("report.json", "report.md", "report.html", *images)}
    for name, png in images.items():
        with atomic_path(paths[name]) as tmp:
            tmp.write_bytes(png)
    texts = {"report.json": json.dumps(report.to_json(), indent=2), "report.md": to_markdown(report),
             "report.html": to_html(report, images)}
    for name, text in texts.items():
        with atomic_path(paths[name]) as tmp:
            tmp.write_text(text)
    return paths


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def title_line(report: BenchReport | Mapping[str, Any]) -> str:
    """What the accuracy figures are about, for the title of every table and report of a bench run:
    "accuracy on digits, test split (all 360 images)", "... (a seeded subset of 100 images)", or
    "latency only; accuracy not measured". Takes the report or its ``report.json`` (a kept report prints
    like a fresh one)."""
    config, entries = _config_entries(report)
    dataset = config.get("dataset")
    sequences = config.get("sequences")
    at = f"; latency at sequence {', '.join(map(str, sequences))}" if sequences else ""
    if dataset is None:
        return "latency only; accuracy not measured" + at
    counts = {e["accuracy"].get("samples") for e in entries if e["accuracy"].get("samples") is not None}
    count, limit = (counts.pop() if len(counts) == 1 else None), config.get("limit")
    word = "images" if config.get("images", True) else "samples"
    if limit is None:
        images = f"all {count} {word}" if count is not None else f"all {word}"
    elif count is not None and count < limit:  # the split is smaller than the limit: all of it was scored
        images = f"all {count} {word}"
    else:
        images = f"a seeded subset of {count if count is not None else f'at most {limit}'} {word}"
    return f"accuracy on {dataset}, {config.get('split', 'test')} split ({images}){at}"


def primary_metric(report: BenchReport | Mapping[str, Any]) -> tuple[str, str, bool, str]:
    """(registry name, column label, higher is better, unit of a drop) of the metric the report's tables and
    plots show: the first artifact's task's primary metric ("r2", "R²", True, "points"); top-1 for reports
    written before tasks. Takes the report or its ``report.json``."""
    config, _ = _config_entries(report)
    name = config.get("primary_metric", "top1")
    info = metric_info(name)
    return name, config.get("primary_label", info.label), config.get("higher_is_better", info.higher_is_better), \
        config.get("drop_unit", "points" if info.bounded else "% of the baseline")


def metric_line(report: BenchReport | Mapping[str, Any]) -> str:
    """The metric the tables lead with, in words: "a regression task, judged by R² (higher is better; a drop is
    in points against the first artifact)"."""
    config, _ = _config_entries(report)
    _, label, higher, unit = primary_metric(report)
    task = config.get("task", "classification")
    return (f"a {task} task, judged by {label} ({'higher' if higher else 'lower'} is better; a drop is in {unit} "
            "against the first artifact)")


def _config_entries(report: BenchReport | Mapping[str, Any]) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]]:
    if isinstance(report, BenchReport):
        return report.config, [{"accuracy": e.accuracy} for e in report.entries]
    return report["config"], report["entries"]


def speed_cell(speedup: float | None, *, within_noise: bool | None = None, baseline: bool = False) -> str:
    """One speedup (baseline p50 / this p50) in words; "baseline" for the row the others are measured against,
    " ~" appended when it is inside the baseline's spread."""
    if baseline:
        return "baseline"
    if speedup is None:
        return "-"
    return format_speedup(speedup) + (" ~" if within_noise and speedup != 1.0 else "")


def latency_points(report: BenchReport) -> list[Point]:
    """Where the report's latency was measured: its batch sizes, or (sequence, batch) pairs with --seq-len."""
    batches, sequences = report.config["batches"], report.config.get("sequences")
    return [(n, b) for n in sequences for b in batches] if sequences else list(batches)


def point_words(point: Point, compact: bool = False) -> str:
    """``b8``, or ``s128 b8`` for a sequence length and batch size."""
    if isinstance(point, tuple):
        return f"s{point[0]} b{point[1]}" if compact else f"seq {point[0]} batch {point[1]}"
    return f"b{point}" if compact else f"batch {point}"


def _latency_cells(entry: Entry, point: Point, compact: bool, first: bool, first_on_backend: bool) -> list[str]:
    s = entry.latency[point]
    p50 = f"{s.p50_ms:.3f}" + ("" if compact else f" ({s.spread_ms[0]:.3f}-{s.spread_ms[1]:.3f})")
    speed = speed_cell(s.speedup, within_noise=s.within_noise, baseline=first)
    same = s.speedup_same_backend
    differs = same is not None and (first_on_backend or abs(same - (s.speedup or 0)) > 1e-9)
    if not compact and not first and differs:
        speed += f" / {speed_cell(same, baseline=first_on_backend)} on {entry.backend}"
    return [p50, speed]


def _firsts_on_backend(entries: list[Entry]) -> set[int]:
    """Indices of the first entry on each backend (the key of ``benchmarks.bench.add_backend_speedups``)."""
    seen: dict[str, int] = {}
    for i, e in enumerate(entries):
        seen.setdefault(e.backend + str(bool(e.runner.get("compile"))), i)
    return set(seen.values())


def short_path(path: str) -> str:
    """The artifact's path relative to the working directory when it is below it, else as given."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def summary_rows(report: BenchReport, *, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """The headline table shared by the terminal (compact), Markdown and HTML views.

    Each batch has a p50 column and a speed column: baseline p50 / this p50 in words ("2.00× faster",
    "1.50× slower"), against the first artifact (and, in the full view, the first on the same backend)."""
    where = latency_points(report)
    p50_head = "{} p50 ms" if compact else "{} p50 ms (spread)"
    speed_head = "{} speed vs the first" if compact else "{} speed vs the first / vs the first on that backend"
    metric, label, _, unit = primary_metric(report)
    drop = [] if compact else [f"{label} drop ({unit})"]
    sequences = report.config.get("sequences")
    macs_head = f"MACs (seq {sequences[0]})" if sequences else "MACs"
    head = ["artifact", "backend", "prec.", "input", label, *drop, "agree", "size", macs_head,
            *[h.format(point_words(p, compact=True)) for p in where for h in (p50_head, speed_head)]]
    rows = []
    firsts = _firsts_on_backend(report.entries)
    for i, e in enumerate(report.entries):
        macs = format_count(e.macs) if e.macs else "-"
        drops = [] if compact else [_fmt(e.drop, 2)]
        rows.append([short_path(e.artifact), _backend(e), e.precision, input_words(e, compact),
                     _fmt(e.accuracy.get(metric), 3), *drops, _fmt(e.accuracy.get("agreement"), 3),
                     format_size(e.size_bytes), macs,
                     *[c for p in where for c in _latency_cells(e, p, compact, i == 0, i in firsts)]])
    return head, rows


def input_words(entry: Entry | Mapping[str, Any], compact: bool = False) -> str:
    """What an entry's model takes: ``8x8`` for one image (its size, as before signatures), ``13`` for one other
    input (its sample shape), ``image 1x8x8, meta 4`` for several (named dims by name)."""
    inputs = (entry.get("inputs") if isinstance(entry, Mapping) else entry.inputs) or {}
    shape = entry["input_shape"] if isinstance(entry, Mapping) else entry.input_shape
    if not inputs or (len(inputs) == 1 and next(iter(inputs.values())).get("kind") == "image"):
        return "x".join(map(str, shape[1:]))
    if len(inputs) == 1:
        return "x".join(map(str, next(iter(inputs.values()))["shape"]))
    if all(spec.get("kind") in ("tokens", "mask") and spec["shape"] == ["sequence"] for spec in inputs.values()):
        # a text model: every input one row of tokens (the sequence lengths head the latency columns)
        return f"text, {len(inputs)} inputs" if compact else f"{', '.join(inputs)} (sequence)"
    return ", ".join(f"{name} {'x'.join(map(str, spec['shape']))}" for name, spec in inputs.items())


def _env_lines(report: BenchReport) -> list[str]:
    env = report.environment
    cpu = env["cpu"]
    gpu = env["gpu"]["name"] if env.get("gpu") else "none"
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return [f"CPU: {cpu['model']} ({cpu['usable_cores']} usable cores; flags: {', '.join(cpu['flags']) or '-'})",
            f"threads: {env['threads']}; GPU: {gpu}; OS: {env['os']}", f"versions: {versions}"]


def to_markdown(report: BenchReport) -> str:
    head, rows = summary_rows(report)
    lines = ["# deepslim bench report", "", f"**{_capital(title_line(report))}.**", "",
             f"Created {report.created}.", "", f"{_capital(metric_line(report))}.", ""]
    lines += [f"- {line}" for line in _env_lines(report)] + [""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "## Accuracy", "", "| artifact | backend | " + " | ".join(_metric_names(report)) + " |",
              "|" + "---|" * (2 + len(_metric_names(report)))]
    for e in report.entries:
        lines.append(f"| {Path(e.artifact).name} | {e.backend} | " +
                     " | ".join(_fmt(e.accuracy.get(m)) for m in _metric_names(report)) + " |")
    lines += ["", "## Latency (ms)", "", f"{SPEED_NOTE}.", "", *_latency_table(report)]
    notes = report.notes + [f"{Path(e.artifact).name} [{e.backend}]: {n}" for e in report.entries for n in e.notes]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _latency_table(report: BenchReport) -> list[str]:
    """The Markdown latency rows: one per artifact and batch, or per artifact, sequence length and batch (with
    sequences/s and how the texts fit the length)."""
    text = bool(report.config.get("sequences"))
    head = ["artifact", "backend", *(["seq"] if text else []), "batch", "p50", "p90", "p99", "mean", "std",
            "sequences/s" if text else "items/s", *(["inputs"] if text else []), "vs the first",
            "vs the first on that backend"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    firsts = _firsts_on_backend(report.entries)
    for i, e in enumerate(report.entries):
        for p, s in e.latency.items():
            seq, batch = p if isinstance(p, tuple) else (None, p)
            cells = [Path(e.artifact).name, e.backend, *([str(seq)] if text else []), str(batch),
                     *(f"{v:.3f}" for v in (s.p50_ms, s.p90_ms, s.p99_ms, s.mean_ms, s.std_ms)),
                     f"{s.throughput:.1f}", *([padding_words(s.padding, seq, batch)] if text else []),
                     speed_cell(s.speedup, within_noise=s.within_noise, baseline=i == 0),
                     speed_cell(s.speedup_same_backend, baseline=i in firsts)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


SPEED_NOTE = ("Speed is the baseline's p50 / this artifact's p50, measured in this run: against the first artifact "
              "(the original on its first backend), and against the first artifact on the same backend")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _metric_names(report: BenchReport) -> list[str]:
    names: list[str] = []
    for e in report.entries:
        names += [k for k in e.accuracy if k not in names]
    return names


def to_html(report: BenchReport, images: dict[str, bytes]) -> str:
    head, rows = summary_rows(report)
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    pictures = "".join(f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                       f"<figcaption>{name[:-4].replace('_', ' ')}</figcaption></figure>" for name, png in images.items())
    env = "".join(f"<li>{html.escape(line)}</li>" for line in _env_lines(report))
    notes = report.notes + [f"{Path(e.artifact).name} [{e.backend}]: {n}" for e in report.entries for n in e.notes]
    style = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}th{background:#f3f3f3}"
             "figure{display:inline-block;margin:1em}img{max-width:560px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>deepslim bench report</title>"
            f"<style>{style}</style></head><body><h1>deepslim bench report</h1>"
            f"<p><strong>{html.escape(_capital(title_line(report)))}.</strong></p><p>Created {report.created}.</p>"
            f"<ul>{env}</ul>{table}<p>{html.escape(SPEED_NOTE)}.</p><div>{pictures}</div><h2>Notes</h2><ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul></body></html>")


MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # 7 markers x 20 colours: 140 distinct pairs in a row


def plot_styles(count: int) -> list[tuple[tuple[float, float, float, float], str]]:
    """A (colour, marker) pair for each of ``count`` series, all different for up to 140 series.

    matplotlib's default colour cycle repeats after 10; tab20 has 20 colours (its darker ten first,
    so short lists get the clearly distinct ones) and the marker cycles independently."""
    from matplotlib import colormaps
    tab20 = colormaps["tab20"].colors
    colours = [*tab20[0::2], *tab20[1::2]]
    return [((*colours[i % len(colours)], 1.0), MARKERS[i % len(MARKERS)]) for i in range(count)]


def plot_labels(entries: list[Entry]) -> list[str]:
    """Each entry's label (file name [backend]); where two share one (every stage of a run directory holds a
    model.safetensors), their paths relative to the working directory instead."""
    labels = [e.label for e in entries]
    return [f"{short_path(e.artifact)} [{_backend(e)}]" if labels.count(e.label) > 1 else e.label for e in entries]


def _backend(entry: Entry) -> str:
    return entry.backend + (" compiled" if entry.runner.get("compile") else "")


def figures(report: BenchReport) -> dict[str, Any]:
    """The report's plots as matplotlib Figures (the object API: no pyplot state, no global backend switch)."""
    styles = plot_styles(len(report.entries))
    figs = {"accuracy_vs_latency.png": _accuracy_figure(report, styles),
            "latency_per_batch.png": _batch_figure(report, styles), "size.png": _size_figure(report, styles)}
    if report.config.get("sequences"):
        figs["latency_per_sequence.png"] = _sequence_figure(report, styles)
    return figs


def _accuracy_figure(report: BenchReport, styles):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    first = latency_points(report)[0]
    metric, label, higher, _ = primary_metric(report)
    points = [(e.latency[first].p50_ms, e.accuracy.get(metric)) for e in report.entries]
    for (lat, acc), name, (colour, marker) in zip(points, plot_labels(report.entries), styles):
        if acc is not None:
            ax.scatter(lat, acc, label=name, color=colour, marker=marker)
    front = sorted(points[i] for i in pareto_front(points, higher_is_better=higher))
    if front:
        ax.plot(*zip(*front), "o--", color="black", markerfacecolor="none", markersize=12, linewidth=1,
                label="Pareto front")
    ax.set(xlabel=f"p50 latency at {point_words(first)} (ms; lower is faster)",
           ylabel=label + ("" if higher else " (lower is better)"))
    ax.set_title(f"accuracy vs latency\n{title_line(report)}", fontsize=10)
    if any(acc is not None for _, acc in points):
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "accuracy not measured", ha="center", va="center", transform=ax.transAxes)
    return fig


def _batch_figure(report: BenchReport, styles):
    """p50 per item against the batch size: one line per entry (per entry and sequence length with --seq-len)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    batches = report.config["batches"]
    sequences = report.config.get("sequences") or [None]
    for e, label, (colour, marker) in zip(report.entries, plot_labels(report.entries), styles):
        for k, n in enumerate(sequences):
            at = [(n, b) if n is not None else b for b in batches]
            ax.plot(batches, [e.latency[p].p50_ms / b for p, b in zip(at, batches)], color=colour, marker=marker,
                    linestyle=LINESTYLES[k % len(LINESTYLES)], label=label if n is None else f"{label} seq {n}")
    item = "sequence" if sequences != [None] else "item"
    ax.set(xlabel="batch size", ylabel=f"p50 ms per {item} (lower is faster)",
           title=f"latency per {item} by batch size", xscale="log")
    ax.legend(fontsize=7)
    return fig


LINESTYLES = ("-", "--", ":", "-.")


def _sequence_figure(report: BenchReport, styles):
    """--seq-len runs: p50 per sequence against the sequence length, one line per entry and batch size."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    sequences = report.config["sequences"]
    for e, label, (colour, marker) in zip(report.entries, plot_labels(report.entries), styles):
        for k, b in enumerate(report.config["batches"]):
            ax.plot(sequences, [e.latency[n, b].p50_ms / b for n in sequences], color=colour, marker=marker,
                    linestyle=LINESTYLES[k % len(LINESTYLES)], label=f"{label} batch {b}")
    ax.set(xlabel="sequence length (tokens; shorter texts padded)", ylabel="p50 ms per sequence (lower is faster)",
           title="latency per sequence by sequence length", xscale="log")
    ax.legend(fontsize=7)
    return fig


def _size_figure(report: BenchReport, styles):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    sizes = [e.size_bytes for e in report.entries]
    unit, scale = ("MiB", 2**20) if max(sizes, default=0) >= 2**20 else ("KiB", 2**10)
    bars = ax.barh(range(len(sizes)), [s / scale for s in sizes], color=[c for c, _ in styles])
    ax.set_yticks(range(len(sizes)), plot_labels(report.entries))
    ax.invert_yaxis()  # the first artifact on top, as in the tables
    ax.bar_label(bars, labels=[format_size(s) for s in sizes], fontsize=7, padding=2)
    ax.margins(x=0.15)  # room for the labels
    ax.set(xlabel=f"{unit} on disk", title="artifact size")
    fig.tight_layout()
    return fig


def _plots(report: BenchReport) -> dict[str, bytes]:
    return {name: _png(fig) for name, fig in figures(report).items()}


def pareto_front(points: list[tuple[float, float | None]], *, higher_is_better: bool = True) -> list[int]:
    """Indices of points no other point beats on both latency (lower) and the metric (higher, or lower for a
    metric such as MAE where lower is better)."""
    sign = 1.0 if higher_is_better else -1.0
    valid = [(i, lat, sign * acc) for i, (lat, acc) in enumerate(points) if acc is not None]
    return [i for i, lat, acc in valid
            if not any(l2 <= lat and a2 >= acc and (l2, a2) != (lat, acc) for _, l2, a2 in valid)]


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()
