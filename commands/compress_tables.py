"""The tables of `deepslim compress prune`, `distill` and `quantize`: the primary metric of the model's task
(top-1 for a classifier, as before), before and after, in its unit."""

from __future__ import annotations

from pathlib import Path

from commands.common import data_line, metric_keys, metric_label, primary_label


def print_prune(bundle, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table
    m = bundle.lineage[-1].metrics
    table = Table(title=f"pruned: {out} ({bundle.lineage[-1].seconds:.1f} s); {data_line(bundle.lineage[-1])}")
    for col in ("", "before", "after", "change"):
        table.add_column(col, justify="right")
    from deepslim.units import format_count
    table.add_row("MACs", format_count(m["macs_before"]), format_count(m["macs_after"]),
                  f"{m['mac_reduction']:.2f}× fewer")
    table.add_row("params", format_count(m["params_before"]), format_count(m["params_after"]),
                  f"{m['params_before'] / m['params_after']:.2f}× fewer")
    task = bundle.task
    if "test" in m and task.primary in m["test"] and task.primary in m.get("test_before", {}):
        b, a = m["test_before"][task.primary], m["test"][task.primary]
        table.add_row(f"test {primary_label(task)}", f"{b:.4f}", f"{a:.4f}", change(task, m["test_before"], m["test"]))
    Console().print(table)


def change(task, before: dict, after: dict) -> str:
    """How the primary metric moved, in its unit: '+0.52 pt' (bounded metrics), and for
    unbounded ones (percent of the baseline: '3.10 % worse' for an MAE that grew)."""
    drop = task.drop(before, after)
    if task.drop_unit() == "points":
        return f"{0.0 - drop:+.2f} pt"
    return f"{abs(drop):.2f} % {'worse' if drop > 0 else 'better'}"


def print_distill(bundle, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table
    record = bundle.lineage[-1]
    m = record.metrics
    table = Table(title=f"distilled: {out} ({record.seconds:.1f} s, teacher forward {m['teacher_seconds']:.1f} s); "
                        f"{data_line(record)}")
    keys = [k for k in metric_keys(bundle.task) if k != "samples" and k in m.get("test", {})][:3]
    table.add_column("test split", justify="right")
    for key in keys:
        table.add_column(metric_label(key, bundle.task), justify="right")
    for name, key in (("teacher", "teacher_test"), ("student before", "test_before"), ("student after", "test")):
        table.add_row(name, *(f"{m[key][k]:.4f}" if k in m.get(key, {}) else "-" for k in keys))
    Console().print(table)


def print_quantize(result, task=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from deepslim.units import format_speedup
    m, cfg = result.record.metrics, result.record.config
    table = Table(title=f"{cfg['method']} for {cfg['target']}: {result.artifact} ({result.record.seconds:.1f} s); "
                        f"{data_line(result.record).replace('test split', 'val and test splits')}")
    for col in ("", "fp32", "quantized", "change"):
        table.add_column(col, justify="right")
    from deepslim.tasks import Task
    task = task or Task.classification(["0", "1"])  # the top-1 table of before
    for split in ("val", "test"):
        before, after = m["fp32"][split], m["quantized"][split]
        if task.primary in before and task.primary in after:
            table.add_row(f"{split} {primary_label(task)}", f"{before[task.primary]:.4f}",
                          f"{after[task.primary]:.4f}", change(task, before, after))
    if "agreement" in m["quantized"]["test"]:
        table.add_row("test agreement", "", f"{m['quantized']['test']['agreement']:.4f}", "")
    if "latency" in m:
        lat = m["latency"]
        table.add_row("p50 batch 1", f"{lat['fp32_p50_ms']:.3f} ms", f"{lat['quantized_p50_ms']:.3f} ms",
                      format_speedup(lat["speedup"]) + (" (within noise)" if lat["within_noise"] else ""))
    console = Console()
    console.print(table)
    if m.get("fp32_layers"):
        names = m.get("fp32_modules") or m["fp32_layers"]  # the PyTorch module names where known
        console.print(f"kept in fp32 by the accuracy guard: {', '.join(names)}", highlight=False)
    if m.get("layer_errors"):
        errors = Table(title="per-layer quantization error (SQNR vs fp32, dB; worst first)")
        for col in ("layer", "op", "input", "output", "lost", "weight"):
            errors.add_column(col, justify="left" if col in ("layer", "op") else "right")
        for row in m["layer_errors"][:8]:
            errors.add_row(row["layer"], row["op"], *(f"{row[k]:.1f}" if row[k] is not None else "-"
                                                      for k in ("input_sqnr_db", "output_sqnr_db", "lost_db",
                                                                "weight_sqnr_db")))
        console.print(errors)
