"""`deepslim run recipe.yaml`: the whole pipeline from a recipe, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import TrustCode


def run(
    recipe: Annotated[Path, typer.Argument(help="A recipe (.yaml): model, stages, bench. See recipes/.",
                                           show_default=False)],
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="Run directory (default runs/NAME); rerun "
                                                    "with the same one to resume.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Validate the recipe and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    trust_code: TrustCode = False,
) -> None:
    """Run a recipe: train or load -> prune -> distill -> quantize -> export -> bench -> report.

    Each stage writes into its own folder of the run directory and into manifest.json; rerunning
    skips the stages whose config and inputs are unchanged, and resumes after a crash or kill.

    Example: deepslim run recipes/digits-small.yaml --run-dir runs/small
    """
    from pipeline.recipe import feasibility, load_recipe, recipe_dataset
    spec = load_recipe(recipe)
    notes = feasibility(spec)
    if check:
        if spec.model.path is None or (recipe.parent / spec.model.path).exists():  # a missing model is run's error
            from deepslim.data import open_dataset
            open_dataset(recipe_dataset(spec, recipe.parent))  # a table's columns, a folder's files: checked now
        typer.echo(f"{recipe}: valid ({len(spec.stages)} stages{', bench' if spec.bench else ''})")
        for note in notes:
            typer.echo(f"note: {note}")
        return
    from rich.console import Console
    console = Console(stderr=True, quiet=quiet)
    from deepslim.trust import allow_code
    from pipeline.run import run_recipe
    with allow_code(trust_code=trust_code, files=recipe_code_files(spec, recipe.parent)):
        result = run_recipe(spec, run_dir or Path("runs") / spec.name, base=recipe.parent, progress=not quiet,
                            log=lambda m: console.print(m, highlight=False))
    print_run(result)


def recipe_code_files(spec, base: Path) -> list[Path]:
    """The Python architecture file a recipe names itself (model.arch): the user named it, so it may run."""
    from deepslim.trust import is_code_spec
    from pipeline.recipe import resolve_arch
    arch = spec.model.arch
    return [resolve_arch(arch, base)] if arch and is_code_spec(arch) else []


def print_run(result, *, report: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table
    from deepslim.tasks import metric_info
    table = Table(title=f"deepslim run: {result.run_dir}")
    primaries = {s.metrics.get("primary", "top1") for s in result.stages if s.metrics.get("test")}
    same = len(primaries) <= 1
    score = f"test {metric_info(next(iter(primaries), 'top1')).label}" if same else "test (primary metric)"
    for col in ("stage", "status", "seconds", score, "artifacts"):
        table.add_column(col, justify="right" if col in ("seconds", score) else "left")
    for s in result.stages:
        primary = s.metrics.get("primary", "top1")
        value = s.metrics.get("test", {}).get(primary)
        cell = "-" if value is None else f"{value:.4f}" if same else f"{primary} {value:.4f}"
        table.add_row(f"{s.index} {s.kind}", "kept" if s.cached else "ran", f"{s.seconds:.1f}", cell,
                      ", ".join(p.name for p in s.outputs))
    Console().print(table)
    if result.report and report:
        import json
        print_report(json.loads(result.report.with_name("report.json").read_text()))
        typer.echo(f"report: {result.report}")


def print_report(report: dict) -> None:
    """The bench report's headline (from report.json, so a kept report prints like a fresh one)."""
    from rich.console import Console
    from rich.table import Table
    from benchmarks.report import short_path, speed_cell, title_line
    from deepslim.units import format_size
    batches = report["config"]["batches"]
    primary = report["config"].get("primary_metric", "top1")
    from deepslim.tasks import metric_info
    label = report["config"].get("primary_label") or metric_info(primary).label
    table = Table(title=f"bench: {title_line(report)} (speed = baseline p50 / this p50: vs the first row / vs the "
                  "first row on the same backend)")
    for col in ("artifact", "backend", "prec.", "input", label, "size",
                *[f"b{b} p50 ms" for b in batches], *[f"b{b} speed" for b in batches]):
        table.add_column(col, justify="left" if col in ("artifact", "backend") else "right", overflow="fold")
    firsts: dict[str, int] = {}
    for i, e in enumerate(report["entries"]):
        first_on_backend = firsts.setdefault(e["backend"] + str(bool(e.get("runner", {}).get("compile"))), i) == i
        top1 = e["accuracy"].get(primary)
        lat = [e["latency"][str(b)] for b in batches]
        table.add_row(short_path(e["artifact"]), e["backend"], e["precision"], "x".join(map(str, e["input_shape"][1:])),
                      f"{top1:.3f}" if top1 is not None else "-", format_size(e["size_bytes"]),
                      *[f"{s['p50_ms']:.3f}" for s in lat],
                      *[f"{speed_cell(s['speedup'], within_noise=s.get('within_noise'), baseline=i == 0)} / "
                        f"{speed_cell(s['speedup_same_backend'], baseline=first_on_backend)}" for s in lat])
    console = Console()
    console = console if console.is_terminal else Console(width=160)
    console.print(table)
