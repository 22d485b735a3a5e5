"""`deepslim demo`: the whole pipeline on the built-in data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from commands.common import print_bench
from commands.compress import print_prune


def demo(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Run directory (the demo owns and refreshes it).")]
    = Path("runs/demo"),
    epochs: Annotated[int, typer.Option(help="Training epochs of the built-in model.")] = 10,
) -> None:
    """The whole pipeline on the built-in digits data: train, prune, export to ONNX and OpenVINO, quantize to int8,
    benchmark."""
    from pipeline.demo import run_demo
    result = run_demo(out_dir, epochs=epochs)
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"deepslim demo: {result.model_path}")
    table.add_column("dataset (test split)")
    for key in ("top1", "top5", "roc_auc_macro", "ap_macro"):
        table.add_column(key, justify="right")
    for name, metrics in result.evaluations.items():
        table.add_row(name, *(f"{metrics[k]:.4f}" for k in ("top1", "top5", "roc_auc_macro", "ap_macro")))
    Console().print(table)
    typer.echo(f"trained in {result.train_seconds:.1f} s; bundle: {result.model_path}")
    print_prune(result.pruned, result.pruned.path)
    for q in result.quantized:
        m = q.record.metrics
        typer.echo(f"int8 {q.record.config['target']}: {q.artifact}, test top-1 {m['fp32']['test']['top1']:.4f} -> "
                   f"{m['quantized']['test']['top1']:.4f} ({-m['test_drop_points']:+.2f} pt)")
    print_bench(result.bench)
    typer.echo(f"report: {result.report}")
