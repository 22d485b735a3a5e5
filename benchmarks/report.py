"""Reports of a bench run: ``report.json`` (versioned), ``report.md``, self-contained ``report.html``, plots."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from benchmarks.bench import BenchReport, Entry
from deepslim.fileio import atomic_path

PLOTS = ("accuracy_vs_latency.png", "latency_per_batch.png", "size.png")


def write_report(report: BenchReport, directory: str | Path) -> dict[str, Path]:
    """Write every report file into ``directory`` (each atomically) and return their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("report.json", "report.md", "report.html", *PLOTS)}
    images = _plots(report)
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


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _latency_cell(entry: Entry, batch: int, compact: bool) -> str:
    s = entry.latency[batch]
    ratio = f"{s.speedup:.2f}x" + ("~" if s.within_noise and s.speedup != 1.0 else "")
    spread = "" if compact else f" ({s.spread_ms[0]:.3f}-{s.spread_ms[1]:.3f})"
    same = s.speedup_same_backend
    if not compact and same is not None and abs(same - s.speedup) > 1e-9:
        ratio += f" / {same:.2f}x on {entry.backend}"
    return f"{s.p50_ms:.3f}{spread} {ratio}"


def short_path(path: str) -> str:
    """The artifact's path relative to the working directory when it is below it, else as given."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def summary_rows(report: BenchReport, *, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """The headline table shared by the terminal (compact), Markdown and HTML views."""
    batches = report.config["batches"]
    latency_head = "b{} p50 ms" if compact else "b{} p50 ms (spread), speedup vs the first / vs the first on that backend"
    head = ["artifact", "backend", "prec.", "input", "top-1", "agree", "size", "MACs",
            *[latency_head.format(b) for b in batches]]
    rows = []
    for e in report.entries:
        macs = f"{e.macs / 1e6:.1f}M" if e.macs else "-"
        backend = e.backend + (" compiled" if e.runner.get("compile") else "")
        rows.append([short_path(e.artifact), backend, e.precision, "x".join(map(str, e.input_shape[1:])),
                     _fmt(e.accuracy.get("top1"), 3), _fmt(e.accuracy.get("agreement"), 3), _mib(e.size_bytes), macs,
                     *[_latency_cell(e, b, compact) for b in batches]])
    return head, rows


def _env_lines(report: BenchReport) -> list[str]:
    env = report.environment
    cpu = env["cpu"]
    gpu = env["gpu"]["name"] if env.get("gpu") else "none"
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return [f"CPU: {cpu['model']} ({cpu['usable_cores']} usable cores; flags: {', '.join(cpu['flags']) or '-'})",
            f"threads: {env['threads']}; GPU: {gpu}; OS: {env['os']}", f"versions: {versions}"]


def to_markdown(report: BenchReport) -> str:
    head, rows = summary_rows(report)
    lines = ["# deepslim bench report", "", f"Created {report.created}.", ""]
    lines += [f"- {line}" for line in _env_lines(report)] + [""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "## Accuracy", "", "| artifact | backend | " + " | ".join(_metric_names(report)) + " |",
              "|" + "---|" * (2 + len(_metric_names(report)))]
    for e in report.entries:
        lines.append(f"| {Path(e.artifact).name} | {e.backend} | " +
                     " | ".join(_fmt(e.accuracy.get(m)) for m in _metric_names(report)) + " |")
    lines += ["", "## Latency (ms)", "", "Speedup is against the first artifact (the original on its first backend); "
              "same backend, against the first artifact on that backend.", "",
              "| artifact | backend | batch | p50 | p90 | p99 | mean | std | items/s | "
              "speedup | same backend |", "|" + "---|" * 11]
    for e in report.entries:
        for b, s in e.latency.items():
            lines.append(f"| {Path(e.artifact).name} | {e.backend} | {b} | {s.p50_ms:.3f} | {s.p90_ms:.3f} | "
                         f"{s.p99_ms:.3f} | {s.mean_ms:.3f} | {s.std_ms:.3f} | {s.throughput:.1f} | "
                         f"{s.speedup:.2f}x{'~' if s.within_noise and s.speedup != 1.0 else ''} | "
                         f"{_fmt_ratio(s.speedup_same_backend)} |")
    notes = report.notes + [f"{Path(e.artifact).name} [{e.backend}]: {n}" for e in report.entries for n in e.notes]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


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
            f"<style>{style}</style></head><body><h1>deepslim bench report</h1><p>Created {report.created}.</p>"
            f"<ul>{env}</ul>{table}<div>{pictures}</div><h2>Notes</h2><ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul></body></html>")


def _plots(report: BenchReport) -> dict[str, bytes]:
    from matplotlib.figure import Figure  # the object API: no pyplot state, no global backend switch
    labels = [e.label for e in report.entries]
    batches = report.config["batches"]
    out = {}
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    first = batches[0]
    points = [(e.latency[first].p50_ms, e.accuracy.get("top1")) for e in report.entries]
    for (lat, acc), label in zip(points, labels):
        if acc is not None:
            ax.scatter(lat, acc, label=label)
    front = sorted(points[i] for i in pareto_front(points))
    if front:
        ax.plot(*zip(*front), "o--", color="black", markerfacecolor="none", markersize=12, linewidth=1,
                label="Pareto front")
    ax.set(xlabel=f"p50 latency at batch {first} (ms)", ylabel="top-1", title="accuracy vs latency")
    if any(acc is not None for _, acc in points):
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "accuracy not measured", ha="center", va="center", transform=ax.transAxes)
    out["accuracy_vs_latency.png"] = _png(fig)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for e, label in zip(report.entries, labels):
        ax.plot(batches, [e.latency[b].p50_ms / b for b in batches], marker="o", label=label)
    ax.set(xlabel="batch size", ylabel="p50 ms per item", title="latency per item by batch size", xscale="log")
    ax.legend(fontsize=7)
    out["latency_per_batch.png"] = _png(fig)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    ax.barh(labels, [e.size_bytes / 2**20 for e in report.entries])
    ax.set(xlabel="MiB on disk", title="artifact size")
    fig.tight_layout()
    out["size.png"] = _png(fig)
    return out


def pareto_front(points: list[tuple[float, float | None]]) -> list[int]:
    """Indices of points no other point beats on both latency (lower) and accuracy (higher)."""
    valid = [(i, lat, acc) for i, (lat, acc) in enumerate(points) if acc is not None]
    return [i for i, lat, acc in valid
            if not any(l2 <= lat and a2 >= acc and (l2, a2) != (lat, acc) for _, l2, a2 in valid)]


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()
