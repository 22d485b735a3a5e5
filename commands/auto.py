"""`deepslim auto`: search pruning x quantization within an accuracy budget, measured on the target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import Dataset, TrustCode, trusting
from compress.options import QuantTarget


@trusting
def auto(
    model: Annotated[Path, typer.Argument(help="A trained bundle (.safetensors).", show_default=False)],
    dataset: Dataset = None,
    max_accuracy_drop: Annotated[float, typer.Option(help="Val top-1 points the result may lose.")] = 1.0,
    target: Annotated[QuantTarget, typer.Option(help="Runtime the candidates are timed on.")] = QuantTarget.OPENVINO,
    time_budget: Annotated[float, typer.Option(help="Seconds for the whole search (this worker).")] = 600.0,
    trials: Annotated[Optional[int], typer.Option(help="At most this many trials (this worker).")] = None,
    latency_size: Annotated[Optional[int], typer.Option(help="Input size for timing, e.g. 224 (default: the "
                                                        "model's).")] = None,
    finetune_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs of a promising candidate (the first "
                                                 "one screens it).")] = 3,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory: trials/, search.json/.md, pareto.png, "
                                      "best.*")] = Path("runs/auto"),
    storage: Annotated[Optional[str], typer.Option(help="Optuna storage shared by workers: sqlite:///search.db or "
                                                   "a PostgreSQL URL.")] = None,
    study: Annotated[str, typer.Option(help="Study name (workers with the same storage and name share it).")]
    = "deepslim-auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    trust_code: TrustCode = False,
) -> None:
    """Find the fastest pruned/quantized model within --max-accuracy-drop, timed on the target (Optuna, NSGA-II).

    Example: deepslim auto base.safetensors --max-accuracy-drop 1.0 --target openvino --latency-size 224 --time-budget 600
    """
    from deepslim.fileio import require_file
    require_file(model, "model")
    if model.suffix.lower() != ".safetensors":
        from deepslim.errors import ConfigError
        raise ConfigError("deepslim auto prunes and fine-tunes, so MODEL must be a bundle (.safetensors).")
    from pipeline.search import SearchConfig, search
    cfg = SearchConfig(max_accuracy_drop=max_accuracy_drop, target=target, time_budget=time_budget, trials=trials,
                       latency_size=latency_size, finetune_epochs=finetune_epochs, storage=storage, study=study,
                       seed=seed)
    from commands.common import choose_data
    from deepslim.bundle import read_header
    header = read_header(model)
    data = choose_data(dataset, header.lineage if header else [], severity=None,
                       classes=header.classes if header else None, what=model.name, quiet=quiet)
    from rich.console import Console
    console = Console(stderr=True, quiet=quiet)
    result = search(model, data.spec, cfg, out, log=lambda m: console.print(m, highlight=False))
    typer.echo(result.report.read_text())
    if result.chosen:
        typer.echo(_chosen_line(result.chosen, result.baseline) + f"; search {result.seconds:.0f} s; Pareto plot "
                   f"{out / 'pareto.png'}; timing {result.timing['report']}")
    else:
        from deepslim.errors import DeepSlimError
        raise DeepSlimError(f"No candidate met --max-accuracy-drop {max_accuracy_drop:g} within the time budget; "
                            f"see {result.report}.")


def _chosen_line(chosen: dict, baseline: dict) -> str:
    """The chosen model: its accuracy (val drop, test top-1) and its speed against the unpruned model, same run."""
    from deepslim.units import format_speedup
    return (f"chosen: {chosen['copied_to']} (trial {chosen['number']}): val drop {chosen['val_drop_points']:.2f} pt, "
            f"test top-1 {baseline['test']['top1']:.4f} -> {chosen['test']['top1']:.4f}; {chosen['latency_ms']:.3f} ms "
            f"at batch 1, {format_speedup(chosen['speedup'])} than the unpruned model ({baseline['latency_ms']:.3f} ms) "
            f"timed in the same run{' (inside the noise)' if chosen['within_noise'] else ''}")
