"""`deepslim run recipe.yaml`: the whole pipeline from a recipe, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def run(
    recipe: Annotated[Path, typer.Argument(help="A recipe (.yaml): model, stages, bench. See recipes/.",
                                           show_default=False)],
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="Run directory (default runs/NAME); rerun "
                                                    "with the same one to resume.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Validate the recipe and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Run a recipe: train or load -> prune -> distill -> quantize -> export -> bench -> report.

    Each stage writes into its own folder of the run directory and into manifest.json; rerunning
    skips the stages whose config and inputs are unchanged, and resumes after a crash or kill.

    Example: deepslim run recipes/digits-small.yaml --run-dir runs/small
    """
    from pipeline.recipe import feasibility, load_recipe
    spec = load_recipe(recipe)
    notes = feasibility(spec)
    if check:
        typer.echo(f"{recipe}: valid ({len(spec.stages)} stages{', bench' if spec.bench else ''})")
        for note in notes:
            typer.echo(f"note: {note}")
        return
    from rich.console import Console
    console = Console(stderr=True, quiet=quiet)
    from pipeline.run import run_recipe
    result = run_recipe(spec, run_dir or Path("runs") / spec.name, base=recipe.parent, progress=not quiet,
                        log=lambda m: console.print(m, highlight=False))
    print_run(result)


def print_run(result) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"deepslim run: {result.run_dir}")
    for col in ("stage", "status", "seconds", "test top-1", "artifacts"):
        table.add_column(col, justify="right" if col in ("seconds", "test top-1") else "left")
    for s in result.stages:
        top1 = s.metrics.get("test", {}).get("top1")
        table.add_row(f"{s.index} {s.kind}", "kept" if s.cached else "ran", f"{s.seconds:.1f}",
                      f"{top1:.4f}" if top1 is not None else "-", ", ".join(p.name for p in s.outputs))
    Console().print(table)
    if result.report:
        typer.echo(f"report: {result.report}")
