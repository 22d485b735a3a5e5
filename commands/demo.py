"""`deepslim demo`: the whole pipeline on the built-in data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from commands.run import print_report, print_run


def demo(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Run directory; a rerun reuses every unchanged stage.")]
    = Path("runs/demo"),
    epochs: Annotated[int, typer.Option(help="Training epochs of resnet18.")] = 10,
    finetune_epochs: Annotated[int, typer.Option(help="Fine-tuning (KD) epochs after pruning.")] = 3,
    bench_seconds: Annotated[float, typer.Option(help="Seconds of timing per artifact.")] = 2.0,
    seed: Annotated[int, typer.Option(help="Seed of the recipe (initialisation, shuffling, calibration).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """The whole pipeline on the built-in digits data: train resnet18, prune it 2x with KD recovery, quantize it to
    int8 for OpenVINO under a 0.5-point val accuracy guard, benchmark every stage on every backend at 224x224, report.

    The demo promises a final artifact within 1.0 point of test top-1 of the trained original. A run that misses \
it is not a success: the output says by how much in words and the command exits 1 (every artifact and the \
report are still written, for a look at what went wrong)."""
    from rich.console import Console
    console = Console(stderr=True, quiet=quiet)
    from pipeline.demo import budget_miss, run_demo
    result = run_demo(out_dir, epochs=epochs, finetune_epochs=finetune_epochs, bench_seconds=bench_seconds,
                      seed=seed, progress=not quiet, log=lambda m: console.print(m, highlight=False))
    print_run(result.run, report=False)
    print_report(result.report)
    typer.echo(headline(result.summary))
    typer.echo(f"report: {result.run.report}")
    missed = budget_miss(result.summary)
    if missed is not None:
        typer.echo(f"warning: the demo missed its accuracy budget: {missed}.")
        raise typer.Exit(1)


def headline(s: dict) -> str:
    """Original vs final: test top-1 against the budget, the MAC reduction, and the final p50 against the
    original's, each speedup in the word it measures (``deepslim.units.format_speedup``)."""
    from deepslim.units import format_speedup
    budget = "within" if s["within_budget"] else "over"
    return (f"final artifact {s['final_artifact']}: test top-1 {s['original_top1']:.4f} -> {s['final_top1']:.4f} "
            f"({0 - s['top1_loss_points']:+.2f} pt, at 32x32; {budget} the {s['budget_points']:g}-point budget), "
            f"{s['mac_reduction']:.2f}× fewer MACs; at 224x224 batch 1 it runs in {s['final_p50_ms']:.3f} ms: "
            f"{format_speedup(s['speedup_vs_torch_eager'])} than the original on torch eager "
            f"({s['torch_eager_p50_ms']:.3f} ms) and {format_speedup(s['speedup_vs_openvino_fp32'])} than the "
            "original on OpenVINO fp32")
