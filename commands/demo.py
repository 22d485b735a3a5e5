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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """The whole pipeline on the built-in digits data: train resnet18, prune it with KD recovery, quantize it to
    int8 for OpenVINO, benchmark every stage on every backend at 224x224, report."""
    from rich.console import Console
    console = Console(stderr=True, quiet=quiet)
    from pipeline.demo import run_demo
    result = run_demo(out_dir, epochs=epochs, finetune_epochs=finetune_epochs, bench_seconds=bench_seconds,
                      progress=not quiet, log=lambda m: console.print(m, highlight=False))
    print_run(result.run, report=False)
    print_report(result.report)
    typer.echo(headline(result.summary))
    typer.echo(f"report: {result.run.report}")


def headline(s: dict) -> str:
    """Original vs final: test top-1, and the final p50 against the original's, each ratio in the word it measures."""
    return (f"final artifact {s['final_artifact']}: test top-1 {s['original_top1']:.4f} -> {s['final_top1']:.4f} "
            f"({-s['top1_loss_points']:+.2f} pt, at 32x32); at 224x224 batch 1 it runs in {s['final_p50_ms']:.3f} ms: "
            f"{speed_words(s['speedup_vs_torch_eager'])} than the original on torch eager "
            f"({s['torch_eager_p50_ms']:.3f} ms) and {speed_words(s['speedup_vs_openvino_fp32'])} than the original "
            "on OpenVINO fp32")


def speed_words(speedup: float) -> str:
    """A measured speedup (baseline p50 / this p50) in words: "2.31x faster", or "1.25x slower" below 1."""
    return f"{speedup:.2f}x faster" if speedup >= 1 else f"{1 / speedup:.2f}x slower"
