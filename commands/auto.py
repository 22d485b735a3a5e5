"""`deepslim auto`: search pruning x quantization within an accuracy budget, measured on the target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import (Dataset, FeatureColumns, LabelColumn, TextColumn, PrimaryMetric, TaskOption, TrustCode, dataset_ref,
                             trusting)
from compress.options import QuantTarget


@trusting
def auto(
    model: Annotated[Optional[Path], typer.Argument(help="A trained bundle (.safetensors); not with --report-only.",
                                                    show_default=False)] = None,
    dataset: Dataset = None, label_column: LabelColumn = None, text_column: TextColumn = None, feature_columns: FeatureColumns = None,
    task: TaskOption = None, primary_metric: PrimaryMetric = None,
    max_accuracy_drop: Annotated[float, typer.Option(
        help="How much of the primary metric (val top-1 by default) the result may lose: points, or percent of the "
             "baseline for mae/rmse/loss (which count a rise as a loss).")] = 1.0,
    target: Annotated[QuantTarget, typer.Option(help="Runtime the candidates are timed on.")] = QuantTarget.OPENVINO,
    time_budget: Annotated[float, typer.Option(help="Seconds for the whole search (this worker).")] = 600.0,
    trials: Annotated[Optional[int], typer.Option(help="At most this many trials (this worker).")] = None,
    latency_size: Annotated[Optional[int], typer.Option(help="Input size for timing, e.g. 224 (default: the "
                                                        "model's).")] = None,
    finetune_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs of a promising candidate (the first "
                                                 "one screens it).")] = 3,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory: trials/, search.json/.md, pareto.png, "
                                      "best.*")] = Path("runs/auto"),
    storage: Annotated[Optional[str], typer.Option(help="Optuna storage shared by workers: "
                                                   "postgresql://USER:PASSWORD@HOST:PORT/DB (several machines), "
                                                   "journal:FILE (a shared file system) or sqlite:///FILE.db (one "
                                                   "machine).")] = None,
    study: Annotated[str, typer.Option(help="Study name (workers with the same storage and name share it).")]
    = "deepslim-auto",
    total_trials: Annotated[Optional[int], typer.Option(help="The study's budget: no worker starts a trial once the "
                                                        "study has this many finished (over all workers).")] = None,
    heartbeat: Annotated[int, typer.Option(help="Seconds between a running trial's heartbeats in a PostgreSQL or "
                                           "SQLite study.")] = 30,
    grace_period: Annotated[Optional[int], typer.Option(help="Seconds without a heartbeat before a trial counts as "
                                                        "dead, is marked failed and queued again (default 2 x "
                                                        "--heartbeat).")] = None,
    retries: Annotated[int, typer.Option(help="Times a dead worker's trial is queued again.")] = 2,
    report_only: Annotated[bool, typer.Option("--report-only", help="Run no trial: rebuild the report (search.json, "
                                              "search.md, pareto.png) in --out from the study in --storage alone.")]
    = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    trust_code: TrustCode = False,
) -> None:
    """Find the fastest pruned/quantized model within --max-accuracy-drop, timed on the target (Optuna, NSGA-II).

    Example: deepslim auto base.safetensors --max-accuracy-drop 1.0 --target openvino --latency-size 224 --time-budget 600
    """
    from pipeline.search import SearchConfig, report_only as rebuild, search
    cfg = SearchConfig(max_accuracy_drop=max_accuracy_drop, target=target, time_budget=time_budget, trials=trials,
                       latency_size=latency_size, finetune_epochs=finetune_epochs, storage=storage, study=study,
                       seed=seed, primary_metric=primary_metric, total_trials=total_trials, heartbeat=heartbeat,
                       grace=grace_period, retries=retries)
    if report_only:
        if model is not None:
            from deepslim.errors import ConfigError
            raise ConfigError("--report-only reads everything from the study; give no MODEL.")
        result = rebuild(cfg, out)
        typer.echo(result.report.read_text())
        return
    if model is None:
        from deepslim.errors import ConfigError
        raise ConfigError("Give MODEL (a trained bundle), or --report-only with --storage to rebuild a report.")
    dataset = dataset_ref(dataset, label_column, feature_columns, task, text_column)
    from deepslim.fileio import require_file
    require_file(model, "model")
    if model.suffix.lower() != ".safetensors":
        from deepslim.errors import ConfigError
        raise ConfigError("deepslim auto prunes and fine-tunes, so MODEL must be a bundle (.safetensors).")
    from commands.common import choose_data
    from deepslim.bundle import read_header
    header = read_header(model)
    from commands.common import check_metric_name
    check_metric_name(primary_metric)
    judged = header.task.with_primary(primary_metric) if header else None  # a wrong name fails before any work
    data = choose_data(dataset, header.lineage if header else [], severity=None,
                       classes=header.classes if header else None, task=judged, what=model.name, quiet=quiet)
    from rich.console import Console
    console = Console(stderr=True, quiet=quiet)
    result = search(model, data.spec, cfg, out, log=lambda m: console.print(m, highlight=False))
    typer.echo(result.report.read_text())
    if result.chosen:
        typer.echo(_chosen_line(result.chosen, result.baseline, judged) + f"; search {result.seconds:.0f} s; Pareto plot "
                   f"{out / 'pareto.png'}; timing {result.timing['report']}")
    else:
        from deepslim.errors import DeepSlimError
        raise DeepSlimError(f"No candidate met --max-accuracy-drop {max_accuracy_drop:g} within the time budget; "
                            f"see {result.report}.")


def _chosen_line(chosen: dict, baseline: dict, task=None) -> str:
    """The chosen model: its accuracy (val drop, test primary metric) and its speed against the unpruned model,
    same run."""
    from commands.common import primary_label
    from deepslim.units import format_speedup
    from pipeline.search_report import unit
    p = task.primary if task is not None else "top1"
    drop_unit = unit(task) if task is not None else "pt"
    return (f"chosen: {chosen['copied_to']} (trial {chosen['number']}): val drop {chosen['val_drop_points']:.2f} "
            f"{drop_unit}, test {primary_label(task)} {baseline['test'][p]:.4f} -> {chosen['test'][p]:.4f}; "
            f"{chosen['latency_ms']:.3f} ms "
            f"at batch 1, {format_speedup(chosen['speedup'])} than the unpruned model ({baseline['latency_ms']:.3f} ms) "
            f"timed in the same run{' (inside the noise)' if chosen['within_noise'] else ''}")
