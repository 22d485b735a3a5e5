"""deepslim's command line: parse -> config -> library call -> print.

Heavy libraries (torch, onnxruntime, openvino, tensorrt) are imported inside the
commands, so ``deepslim --help`` starts fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer._click.exceptions import UsageError as _UsageError
from typer.core import TyperGroup

from deepslim.config import Init, OptimizerKind, Schedule, TrainConfig
from deepslim.errors import ConfigError, DeepSlimError


class _Group(TyperGroup):
    """Turns a DeepSlimError into one line on stderr and exit code 2 (``--debug``: the traceback)."""

    def invoke(self, ctx):  # noqa: ANN001 - click's signature
        try:
            return super().invoke(ctx)
        except DeepSlimError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            _fail(str(exc), exc.exit_code)
        except _UsageError as exc:  # a mistyped option or value: one line too, not a usage panel
            path = exc.ctx.command_path if exc.ctx else "deepslim"
            _fail(f"{exc.format_message()} (see '{path} --help')", exc.exit_code)


def _fail(message: str, code: int) -> None:
    typer.echo("error: " + " ".join(message.split()), err=True)
    raise typer.Exit(code)


app = typer.Typer(name="deepslim", cls=_Group, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode="rich",
                  help="Compress trained PyTorch models, export them, and benchmark every artifact.")


def _version(value: bool) -> None:
    if value:
        from deepslim import __version__
        typer.echo(f"deepslim {__version__}")
        raise typer.Exit()


@app.callback()
def main(ctx: typer.Context,
         debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of errors.")] = False,
         version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    ctx.obj = {"debug": debug}


# --- shared options ---------------------------------------------------------------------------

Model = Annotated[Optional[Path], typer.Argument(
    help="A deepslim bundle (.safetensors), or a pickled module (.pt) with --trust-pickle.", show_default=False)]
Arch = Annotated[Optional[str], typer.Option(
    "--arch", help="Architecture: small_cnn, a torchvision name (resnet18, ...), or path/file.py:build_fn.")]
Weights = Annotated[Optional[Path], typer.Option(
    "--weights", help="state_dict file for --arch (.pth loaded with weights_only=True, or .safetensors).")]
ArchKwargs = Annotated[Optional[str], typer.Option(
    "--arch-kwargs", help='JSON keyword arguments for the architecture, e.g. \'{"width": 16}\'.')]
InputSize = Annotated[Optional[int], typer.Option(
    "--input-size", help="Input height = width in pixels (default: 16 for small_cnn, 224 otherwise).")]
Channels = Annotated[Optional[int], typer.Option("--channels", help="Input channels (default: from the data).")]
TrustPickle = Annotated[bool, typer.Option(
    "--trust-pickle", help="Allow loading a whole pickled module; unpickling runs code from the file.")]
Dataset = Annotated[str, typer.Option(
    "--dataset", "-d", help="digits, digits-c, an ImageFolder or CIFAR-10 directory, or path/file.py:fn.")]
Severity = Annotated[int, typer.Option("--severity", help="Corruption severity 1-5 for digits-c.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def _parse_kwargs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--arch-kwargs is not valid JSON ({exc.msg} at character {exc.pos}).") from None
    if not isinstance(value, dict):
        raise ConfigError("--arch-kwargs must be a JSON object such as '{\"width\": 16}'.")
    return value


def _load(model: Path | None, *, arch: str | None, weights: Path | None, arch_kwargs: str | None,
          input_size: int | None, channels: int | None, trust_pickle: bool, dataset: str, severity: int,
          pretrained: str | None = None):
    """The one model loader of the CLI: a file, or an architecture shaped for the dataset."""
    from deepslim.data import open_dataset
    from deepslim.models import load_model
    from deepslim.training import model_for_dataset
    kwargs = _parse_kwargs(arch_kwargs)
    if model is not None:
        if arch is not None or weights is not None:
            raise ConfigError("Give either a MODEL file or --arch (with --weights), not both.")
        if model.suffix.lower() == ".safetensors":
            given = [name for name, value in (("--input-size", input_size), ("--channels", channels),
                                              ("--arch-kwargs", arch_kwargs), ("--pretrained", pretrained))
                     if value is not None]
            if given:
                raise ConfigError(f"{', '.join(given)} cannot be used with a bundle, which carries its own "
                                  "architecture and input spec.")
            return load_model(model)
        info = open_dataset(dataset, severity=severity).info
        return load_model(model, trust_pickle=trust_pickle, input_size=input_size, channels=channels,
                          mean=info.mean, std=info.std)
    if arch is None:
        raise ConfigError("Give a MODEL file or --arch NAME.")
    return model_for_dataset(arch, dataset, severity=severity, input_size=input_size, channels=channels,
                             arch_kwargs=kwargs, weights=weights, pretrained=pretrained)


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("top1", "top5", "roc_auc_macro", "ap_macro", "samples"):
        if key in metrics:
            value = metrics[key]
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


# --- commands ---------------------------------------------------------------------------------

@app.command()
def train(
    model: Model = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output bundle (.safetensors).")] = ...,
    arch: Arch = None, weights: Weights = None, arch_kwargs: ArchKwargs = None,
    pretrained: Annotated[Optional[str], typer.Option(
        "--pretrained", help="torchvision weights to start from, e.g. DEFAULT or IMAGENET1K_V1 (downloads).")] = None,
    input_size: InputSize = None, channels: Channels = None,
    dataset: Dataset = "digits", severity: Severity = 3,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default 0.05 SGD, 1e-3 AdamW).")] = None,
    optimizer: Annotated[OptimizerKind, typer.Option(help="Optimizer.")] = OptimizerKind.SGD,
    momentum: Annotated[float, typer.Option(help="SGD momentum (Nesterov).")] = 0.9,
    weight_decay: Annotated[float, typer.Option(help="Weight decay.")] = 5e-4,
    schedule: Annotated[Schedule, typer.Option(help="Learning-rate schedule.")] = Schedule.COSINE,
    warmup_epochs: Annotated[Optional[int], typer.Option(help="Linear warm-up epochs (default 1 if epochs > 2).")] = None,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing of the cross-entropy.")] = 0.0,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Training augmentation.")] = True,
    init: Annotated[Init, typer.Option(help="Re-initialise Conv/Linear weights before training.")] = Init.DEFAULT,
    freeze_backbone: Annotated[bool, typer.Option(
        "--freeze-backbone", help="Train only the classifier head (transfer learning).")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Device = "auto",
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT.ckpt after an interruption.")] = False,
    trust_pickle: TrustPickle = False, force: Force = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or epoch lines.")] = False,
) -> None:
    """Train (or fine-tune) a model and save it as a bundle with its lineage.

    Example: deepslim train --arch resnet18 --dataset digits --input-size 32 -o base.safetensors
    """
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
                      weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs,
                      label_smoothing=label_smoothing, augment=augment, init=init, freeze_backbone=freeze_backbone,
                      seed=seed, device=device, num_workers=workers)
    from deepslim.fileio import check_output
    out = check_output(output, force=force, inputs=[model, weights], suffix=".safetensors")
    from deepslim.models import check_saveable, save_model
    from deepslim.training import train as run_train
    bundle = _load(model, arch=arch, weights=weights, arch_kwargs=arch_kwargs, input_size=input_size,
                   channels=channels, trust_pickle=trust_pickle, dataset=dataset, severity=severity,
                   pretrained=pretrained)
    check_saveable(bundle)
    ckpt = out.with_name(out.name + ".ckpt")
    trained = run_train(bundle, dataset, cfg, severity=severity, checkpoint=ckpt, resume=resume, progress=not quiet)
    save_model(trained, out)
    ckpt.unlink(missing_ok=True)
    record = trained.lineage[-1]
    _print_metrics(f"{out}: test split of {dataset} (best epoch {record.metrics['best_epoch']}, "
                   f"{record.seconds:.1f} s)", record.metrics["test"])


@app.command("eval")
def evaluate(
    model: Model = None, arch: Arch = None, weights: Weights = None, arch_kwargs: ArchKwargs = None,
    input_size: InputSize = None, channels: Channels = None, trust_pickle: TrustPickle = False,
    dataset: Dataset = "digits", severity: Severity = 3,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    limit: Annotated[Optional[int], typer.Option(help="Evaluate a seeded subset of this many samples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 256,
    device: Device = "auto", as_json: AsJson = False,
) -> None:
    """Print top-1, top-5, macro ROC-AUC and macro average precision on a dataset split.

    Example: deepslim eval base.safetensors --dataset digits
    """
    from deepslim.evaluation import evaluate as run_eval
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be a positive integer, got {limit}.")
    bundle = _load(model, arch=arch, weights=weights, arch_kwargs=arch_kwargs, input_size=input_size,
                   channels=channels, trust_pickle=trust_pickle, dataset=dataset, severity=severity)
    result = run_eval(bundle, dataset, split=split, limit=limit, batch_size=batch_size, severity=severity,
                      device=device)
    if as_json:
        typer.echo(json.dumps({"model": str(model or arch), "dataset": result.dataset, "split": split,
                               "metrics": result.metrics}, indent=2))
    else:
        _print_metrics(f"{model or arch} on {result.dataset} ({split})", result.metrics)


@app.command()
def info(model: Annotated[Path, typer.Argument(help="A deepslim bundle (.safetensors).")],
         as_json: AsJson = False) -> None:
    """Show a bundle's header: architecture, input spec, classes, structural changes, lineage."""
    from deepslim import bundle as fmt
    header = fmt.read_header(model)
    if header is None:
        raise ConfigError(f"{model} is a plain safetensors file without a deepslim header.")
    data = header.to_json()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    console = Console()
    console.print(f"[bold]{model}[/]  format v{data['format_version']}")
    console.print(f"arch      {header.arch.source.value}:{header.arch.name} {header.arch.kwargs}")
    console.print(f"input     {header.input_spec.shape} {header.input_spec.channel_order} "
                  f"mean={header.input_spec.mean} std={header.input_spec.std}")
    console.print(f"classes   {len(header.classes)}: {', '.join(header.classes[:12])}"
                  f"{' ...' if len(header.classes) > 12 else ''}")
    console.print(f"structure {len(header.structure.get('modules', {}))} modules changed")
    table = Table(title="lineage")
    for col in ("stage", "seconds", "metrics", "finished"):
        table.add_column(col)
    for rec in header.lineage:
        test = rec.metrics.get("test", rec.metrics)
        summary = ", ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float))
        table.add_row(rec.stage, f"{rec.seconds:.1f}", summary, rec.finished_at)
    console.print(table)


@app.command()
def archs() -> None:
    """List the architectures deepslim can build by name."""
    from deepslim.models import BUILTIN, torchvision_names
    typer.echo("built-in:    " + ", ".join(sorted(BUILTIN)))
    typer.echo("torchvision: " + ", ".join(torchvision_names()))
    typer.echo("your own:    path/to/file.py:build_fn")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Run directory (the demo owns and refreshes it).")]
    = Path("runs/demo"),
    epochs: Annotated[int, typer.Option(help="Training epochs of the built-in model.")] = 10,
) -> None:
    """The whole pipeline on the built-in digits data (today: train the built-in CNN, then evaluate)."""
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


if __name__ == "__main__":
    app()
