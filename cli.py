"""deepslim's command line: parse -> config -> library call -> print.

Heavy libraries (torch, onnxruntime, openvino, tensorrt) are imported inside the
commands, so ``deepslim --help`` starts fast.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer._click.exceptions import UsageError as _UsageError
from typer.core import TyperGroup

from deepslim.config import Init, OptimizerKind, Schedule, TrainConfig
from deepslim.errors import ConfigError, DeepSlimError
from export.options import Exporter, OVSource, Precision, Target


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
Severity = Annotated[Optional[int], typer.Option("--severity", help="Corruption severity 1-5 for digits-c "
                                                 "(default 3).", show_default=False)]
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
          input_size: int | None, channels: int | None, trust_pickle: bool, dataset: str, severity: int | None,
          pretrained: str | None = None, seed: int | None = None):
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
        info = open_dataset(dataset, severity=_severity(dataset, severity)).info
        return load_model(model, trust_pickle=trust_pickle, input_size=input_size, channels=channels,
                          mean=info.mean, std=info.std)
    if arch is None:
        raise ConfigError("Give a MODEL file or --arch NAME.")
    return model_for_dataset(arch, dataset, severity=_severity(dataset, severity), input_size=input_size,
                             channels=channels, arch_kwargs=kwargs, weights=weights, pretrained=pretrained, seed=seed)


def _severity(dataset: str, severity: int | None) -> int:
    """--severity belongs to digits-c; refuse it elsewhere rather than ignore it."""
    if severity is not None and dataset != "digits-c":
        raise ConfigError(f"--severity applies to --dataset digits-c only, not '{dataset}'.")
    return 3 if severity is None else severity


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
    dataset: Dataset = "digits", severity: Severity = None,
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
    if init is not Init.DEFAULT and (model is not None or weights is not None or pretrained is not None):
        raise ConfigError(f"--init {init.value} would overwrite the loaded weights; use it only for a new --arch "
                          "without --weights or --pretrained.")
    from deepslim.models import check_saveable, save_model
    from deepslim.training import train as run_train
    bundle = _load(model, arch=arch, weights=weights, arch_kwargs=arch_kwargs, input_size=input_size,
                   channels=channels, trust_pickle=trust_pickle, dataset=dataset, severity=severity,
                   pretrained=pretrained, seed=seed)
    check_saveable(bundle)
    ckpt = out.with_name(out.name + ".ckpt")
    trained = run_train(bundle, dataset, cfg, severity=_severity(dataset, severity), checkpoint=ckpt, resume=resume,
                        progress=not quiet)
    save_model(trained, out)
    ckpt.unlink(missing_ok=True)
    record = trained.lineage[-1]
    _print_metrics(f"{out}: test split of {dataset} (best epoch {record.metrics['best_epoch']}, "
                   f"{record.seconds:.1f} s)", record.metrics["test"])


@app.command("eval")
def evaluate(
    model: Model = None, arch: Arch = None, weights: Weights = None, arch_kwargs: ArchKwargs = None,
    input_size: InputSize = None, channels: Channels = None, trust_pickle: TrustPickle = False,
    dataset: Dataset = "digits", severity: Severity = None,
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
    result = run_eval(bundle, dataset, split=split, limit=limit, batch_size=batch_size,
                      severity=_severity(dataset, severity), device=device)
    if as_json:
        typer.echo(json.dumps({"model": str(model or arch), "dataset": result.dataset, "split": split,
                               "metrics": result.metrics}, indent=2))
    else:
        _print_metrics(f"{model or arch} on {result.dataset} ({split})", result.metrics)


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--batch must be comma-separated positive integers such as 1,8,32, got '{text}'.") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--batch sizes must be positive integers, got '{text}'.")
    return values


@app.command("export")
def export_cmd(
    model: Model = None,
    target: Annotated[Optional[Target], typer.Option("--target", "-t", help="Artifact to produce.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="model.onnx | model.xml | model.engine")] = None,
    precision: Annotated[Precision, typer.Option(help="fp32; fp16 (ONNX/TensorRT: fp16 graph, OpenVINO: fp16 "
                                                          "weights); int8 (TensorRT, from a Q/DQ ONNX).")] = Precision.FP32,
    input_size: Annotated[Optional[int], typer.Option(
        "--input-size", help="Export at another resolution than the model was trained at.")] = None,
    exporter: Annotated[Exporter, typer.Option(help="ONNX exporter: dynamo, or the TorchScript-based legacy one.")]
    = Exporter.DYNAMO,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Clean the ONNX graph with onnxslim.")] = True,
    ov_via: Annotated[OVSource, typer.Option("--ov-via", help="OpenVINO from the ONNX export, or directly from torch.")]
    = "onnx",
    batch: Annotated[str, typer.Option(help="TensorRT profile batch sizes: min,..,max (opt = the largest).")] = "1",
    workspace: Annotated[int, typer.Option(help="TensorRT workspace limit in MiB.")] = 1024,
    timing_cache: Annotated[Optional[Path], typer.Option(help="TensorRT timing cache file (read and updated).")] = None,
    print_trtexec: Annotated[bool, typer.Option("--print-trtexec", help="Print the equivalent trtexec command and "
                                                "exit (works without TensorRT).")] = False,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Parity inputs from this dataset's test "
                                                   "split (default: seeded random inputs).")] = None,
    parity_samples: Annotated[int, typer.Option(help="Inputs compared by the parity check.")] = 64,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check parity with the source model.")] = True,
    check: Annotated[bool, typer.Option("--check", help="Only say whether MODEL exports to each target, and which "
                                        "ops fail.")] = False,
    arch: Arch = None, weights: Weights = None, arch_kwargs: ArchKwargs = None, trust_pickle: TrustPickle = False,
    force: Force = False,
) -> None:
    """Export a model to ONNX, OpenVINO IR or a TensorRT engine, then check parity with the source.

    Example: deepslim export base.safetensors --target openvino --dataset digits -o base.xml
    """
    import export as ex
    if check:
        return _export_check(model, arch=arch, weights=weights, arch_kwargs=arch_kwargs, input_size=input_size,
                             trust_pickle=trust_pickle, dataset=dataset or "digits")
    if target is None or output is None:
        raise ConfigError("Give --target onnx|openvino|tensorrt and -o OUTPUT (or --check).")
    onnx_config = ex.OnnxConfig(exporter=exporter.value, simplify=simplify, input_size=input_size)
    trt_config = ex.TensorRTConfig(precision=precision.value, batches=_batches(batch), workspace_mib=workspace,
                                   timing_cache=timing_cache)
    if print_trtexec:
        return _print_trtexec(model, output, trt_config, target)
    from deepslim.fileio import check_output
    out = check_output(output, force=force, inputs=[model, weights])
    verify_config = ex.VerifyConfig(dataset=dataset, samples=parity_samples) if verify else None
    if model is not None and model.suffix.lower() == ".onnx":
        source = model
    else:
        source = _load(model, arch=arch, weights=weights, arch_kwargs=arch_kwargs, input_size=None, channels=None,
                       trust_pickle=trust_pickle, dataset=dataset or "digits", severity=None)
    result = ex.export_model(source, target.value, out, precision=precision.value, onnx_config=onnx_config,
                             ov_via=ov_via.value, tensorrt_config=trt_config, verify=verify_config)
    typer.echo(f"wrote {result.artifact}" + "".join(f", {p}" for p in result.extra_files))
    if result.parity is None:
        typer.echo("warning: parity NOT checked (--no-verify); the artifact may differ from the model.", err=True)
    else:
        typer.echo(result.parity.summary())


def _export_check(model, *, arch, weights, arch_kwargs, input_size, trust_pickle, dataset) -> None:
    from rich.console import Console
    from rich.table import Table
    from export import check_exportable
    bundle = _load(model, arch=arch, weights=weights, arch_kwargs=arch_kwargs, input_size=None, channels=None,
                   trust_pickle=trust_pickle, dataset=dataset, severity=None)
    results = check_exportable(bundle, input_size=input_size)
    table = Table(title=f"exportability of {model or arch}")
    for col in ("target", "status", "detail", "failing ops"):
        table.add_column(col)
    for r in results:
        color = {"ok": "green", "fails": "red"}.get(r.status, "yellow")
        table.add_row(r.target, f"[{color}]{r.status}[/]", r.detail, ", ".join(r.failing_ops) or "-")
    Console().print(table)
    if any(r.status == "fails" for r in results):
        raise typer.Exit(1)


def _print_trtexec(model, output: Path, trt_config, target) -> None:
    from deepslim.artifact import read_onnx_meta
    from export import plan_build, trtexec_command
    if target is not Target.TENSORRT or model is None or model.suffix.lower() != ".onnx":
        raise ConfigError("--print-trtexec needs --target tensorrt and an ONNX MODEL exported by deepslim.")
    meta = read_onnx_meta(model)
    if meta is None:
        raise ConfigError(f"{model} has no deepslim metadata; export it with `deepslim export --target onnx`.")
    plan = plan_build(meta, trt_config)
    typer.echo(trtexec_command(model, output, plan, trt_config.timing_cache))
    if plan.convert_to_fp16:
        typer.echo("# fp16: convert the ONNX to fp16 first (deepslim export --target onnx --precision fp16)", err=True)


@app.command()
def bench(
    artifacts: Annotated[list[Path], typer.Argument(help="Bundles, .onnx, .xml or .engine files; the first is the "
                                                   "baseline of every ratio.", show_default=False)],
    backend: Annotated[str, typer.Option("--backend", "-b", help="Comma-separated: torch, onnxruntime, openvino, "
                                         "tensorrt. Bundles are exported on the way (with parity checks).")]
    = "torch,onnxruntime,openvino",
    report: Annotated[Path, typer.Option("--report", "-r", help="Directory for report.json/.md/.html and plots.")]
    = Path("runs/bench"),
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Accuracy on this dataset's split.")] = "digits",
    split: Annotated[str, typer.Option(help="Evaluation split.")] = "test",
    limit: Annotated[Optional[int], typer.Option(help="Evaluate a seeded subset of this many samples.")] = None,
    severity: Severity = None,
    no_accuracy: Annotated[bool, typer.Option("--no-accuracy", help="Latency only.")] = False,
    metric: Annotated[Optional[str], typer.Option(help="path/file.py:fn(outputs, targets) -> {name: value}, for "
                                                  "models that are not classifiers.")] = None,
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    duration: Annotated[float, typer.Option(help="Seconds of timing per artifact and batch (over all rounds).")] = 5.0,
    rounds: Annotated[int, typer.Option(help="Interleaved timing rounds.")] = 5,
    iterations: Annotated[Optional[int], typer.Option(help="Fixed iterations per round instead of --duration.")] = None,
    warmup: Annotated[int, typer.Option(help="Warm-up iterations per artifact and batch.")] = 10,
    threads: Annotated[Optional[int], typer.Option(help="Threads per backend (default: usable cores).")] = None,
    device: Annotated[str, typer.Option(help="cpu, or cuda for torch/onnxruntime.")] = "cpu",
    input_size: Annotated[Optional[int], typer.Option(
        "--input-size", help="Run bundles at this resolution (exports are made at it too).")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the torch runner.")] = False,
    force: Force = False,
) -> None:
    """Measure accuracy, latency, size and MACs of several artifacts on several backends in one run.

    Example: deepslim bench base.safetensors --backend torch,onnxruntime,openvino --batch 1,8 --report runs/bench
    """
    from benchmarks import BenchTarget, LatencyConfig, RunnerOptions, bench as run_bench, load_metric, write_report
    latency = LatencyConfig(batches=_batches(batch), rounds=rounds, duration=duration, iterations=iterations,
                            warmup=warmup)
    options = RunnerOptions(threads=threads, device=device, compile=compile)
    backends = _backends(backend)
    if report.exists() and not report.is_dir():
        raise ConfigError(f"--report {report} is a file; give a directory.")
    if (report / "report.json").exists() and not force:
        raise ConfigError(f"{report} already holds a report; pass --force to replace it or choose another --report.")
    user_metric = load_metric(metric) if metric else None
    from deepslim.data import check_split
    check_split(split)
    severity = _severity(dataset, severity)
    from pipeline.bench import plan_targets
    targets, notes = plan_targets(artifacts, backends, report / "artifacts", input_size=input_size,
                           dataset=None if no_accuracy else dataset)
    from rich.console import Console
    console = Console(stderr=True)
    with console.status("benchmarking") as status:
        result = run_bench(targets, latency, dataset=None if no_accuracy else dataset, split=split, limit=limit,
                           severity=severity, metric=user_metric, options=options,
                           tick=lambda text: status.update(text), notes=notes)
    paths = write_report(result, report)
    _print_bench(result)
    typer.echo(f"report: {paths['report.html']} (also report.md, report.json)")


def _backends(text: str):
    from benchmarks import Backend
    names = [b.strip() for b in text.split(",") if b.strip()]
    try:
        return [Backend(b) for b in names]
    except ValueError:
        raise ConfigError(f"--backend takes torch, onnxruntime, openvino or tensorrt, got '{text}'.") from None


def _print_bench(result) -> None:
    from rich.console import Console
    from rich.table import Table
    from benchmarks.report import summary_rows
    head, rows = summary_rows(result, compact=True)
    table = Table(title="deepslim bench (p50 = median of round medians; ~ = inside the noise)")
    for col in head:
        table.add_column(col, justify="left" if col in ("artifact", "backend") else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    console = Console()
    console = console if console.is_terminal else Console(width=160)
    console.print(table)
    for note in result.notes + [n for e in result.entries for n in e.notes]:
        console.print(f"note: {note}", highlight=False)


compress_app = typer.Typer(help="Compression stages: structured pruning (distillation and quantization arrive "
                                  "in later issues).", no_args_is_help=True)
app.add_typer(compress_app, name="compress")


class ImportanceName(str, Enum):
    L1 = "l1"
    L2 = "l2"
    TAYLOR = "taylor"
    BN = "bn"
    LAMP = "lamp"
    RANDOM = "random"


class Allocation(str, Enum):
    UNIFORM = "uniform"
    SENSITIVITY = "sensitivity"


@compress_app.command("prune")
def prune_cmd(
    model: Model = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Pruned bundle (.safetensors).")] = None,
    ratio: Annotated[Optional[float], typer.Option(help="Fraction of channels removed (0 < R < 1).")] = None,
    speedup: Annotated[Optional[float], typer.Option(help="Reduce MACs this many times; the ratio is searched.")]
    = None,
    importance: Annotated[ImportanceName, typer.Option(help="Which channels go.")] = ImportanceName.L2,
    global_pruning: Annotated[bool, typer.Option("--global/--local", help="Rank channels across layers or within "
                                                 "each layer.")] = False,
    iterative_steps: Annotated[int, typer.Option(help="Prune in K steps, fine-tuning between them.")] = 1,
    round_to: Annotated[int, typer.Option(help="Keep channel counts multiples of N (1: off).")] = 8,
    max_layer_ratio: Annotated[float, typer.Option(help="No layer loses more than this fraction.")] = 0.9,
    ignore: Annotated[Optional[str], typer.Option(help="Comma-separated layer names never pruned (the head never "
                                                  "is).")] = None,
    finetune_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs after pruning (shared train loop).")] = 0,
    finetune_lr: Annotated[float, typer.Option(help="Fine-tuning learning rate (SGD, cosine).")] = 0.03,
    sparsity_train_epochs: Annotated[int, typer.Option(help="bn importance: epochs of L1 on BatchNorm scales first "
                                                       "(network slimming).")] = 0,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Data for BatchNorm recalibration, fine-tuning, "
                                         "Taylor importance, sensitivity and accuracy.")] = "digits",
    sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Measure per-layer sensitivity (table + plot); "
                                              "without -o, only that.")] = False,
    allocation: Annotated[Allocation, typer.Option(help="Same ratio for every layer, or spread by sensitivity.")]
    = Allocation.UNIFORM,
    report: Annotated[Optional[Path], typer.Option(help="Directory for the sensitivity table and plot.")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Check exportability before pruning.")] = True,
    arch: Arch = None, weights: Weights = None, arch_kwargs: ArchKwargs = None, trust_pickle: TrustPickle = False,
    input_size: InputSize = None, channels: Channels = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    force: Force = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Remove whole channels (torch-pruning's DepGraph) so the model is really smaller and faster.

    Example: deepslim compress prune base.safetensors --speedup 2 --finetune-epochs 5 -o pruned.safetensors
    """
    from compress.prune import PruneConfig
    layers = tuple(n.strip() for n in (ignore or "").split(",") if n.strip())
    wants_sensitivity = sensitivity or allocation is Allocation.SENSITIVITY
    if output is None and not sensitivity:
        raise ConfigError("Give -o OUTPUT for the pruned bundle (or --sensitivity for the analysis only).")
    if output is None and ratio is None and speedup is None:
        ratio = 0.5  # analysis only: the target is unused, the importance and --ignore settings are
    cfg = PruneConfig(ratio=ratio, speedup=speedup, importance=importance.value, global_pruning=global_pruning,
                      iterative_steps=iterative_steps, round_to=None if round_to == 1 else round_to,
                      max_layer_ratio=max_layer_ratio, ignore=layers, finetune_epochs=finetune_epochs,
                      finetune_lr=finetune_lr, sparsity_train_epochs=sparsity_train_epochs, seed=seed)
    from deepslim.fileio import check_output
    out = check_output(output, force=force, inputs=[model, weights], suffix=".safetensors") if output else None
    bundle = _load(model, arch=arch, weights=weights, arch_kwargs=arch_kwargs, input_size=input_size,
                   channels=channels, trust_pickle=trust_pickle, dataset=dataset, severity=None, seed=seed)
    from rich.console import Console
    console = Console(stderr=True, quiet=quiet)
    _prune_preflight(bundle, cfg, check, console)
    if wants_sensitivity:
        cfg = _sensitivity(bundle, cfg, dataset, report or _default_report(out), allocation, console)
    if out is None:
        return
    from compress.prune import prune
    from deepslim.models import save_model
    pruned = prune(bundle, cfg, dataset=dataset, progress=not quiet, log=lambda m: console.print(m, highlight=False))
    save_model(pruned, out)
    _print_prune(pruned, out)


def _default_report(out: Path | None) -> Path:
    return out.with_name(out.stem + "_sensitivity") if out else Path("runs/prune-sensitivity")


def _prune_preflight(bundle, cfg, check: bool, console) -> None:
    """Before any long job: exportability per target, prunable groups, layers left out and why."""
    from compress.prune import plan
    the_plan = plan(bundle, cfg)
    if check:
        from export import check_exportable
        for r in check_exportable(bundle):
            ops = f" (failing ops: {', '.join(r.failing_ops)})" if r.failing_ops else ""
            console.print(f"export check: {r.target}: {r.status}: {r.detail}{ops}", highlight=False)
    console.print(f"{the_plan.prunable_groups} prunable layer groups"
                  + (f", {the_plan.attention_modules} attention modules pruned by whole heads"
                     if the_plan.attention_modules else ""), highlight=False)
    for layer, why in the_plan.ignored.items():
        console.print(f"left out: {layer} ({why})", highlight=False)


def _sensitivity(bundle, cfg, dataset: str, report: Path, allocation, console):
    from dataclasses import replace
    from compress.sensitivity import allocate, analyze, write_sensitivity
    with console.status("pruning sensitivity") as status:
        base, rows = analyze(bundle, dataset, cfg, tick=lambda text: status.update(text))
    paths = write_sensitivity(base, rows, report)
    console.print(f"sensitivity: {paths['md']} and {paths['png']}", highlight=False)
    if allocation is Allocation.SENSITIVITY and (cfg.ratio or cfg.speedup):
        weights = allocate(rows)
        layer_ratios = {k: min(w * cfg.ratio, cfg.max_layer_ratio) for k, w in weights.items()} if cfg.ratio \
            else weights
        return replace(cfg, layer_ratios=layer_ratios)
    return cfg


def _print_prune(bundle, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table
    m = bundle.lineage[-1].metrics
    table = Table(title=f"pruned: {out} ({bundle.lineage[-1].seconds:.1f} s)")
    for col in ("", "before", "after", "change"):
        table.add_column(col, justify="right")
    table.add_row("MACs", f"{m['macs_before'] / 1e6:.1f}M", f"{m['macs_after'] / 1e6:.1f}M",
                  f"{m['mac_reduction']:.2f}x fewer")
    table.add_row("params", f"{m['params_before'] / 1e6:.2f}M", f"{m['params_after'] / 1e6:.2f}M",
                  f"{m['params_before'] / m['params_after']:.2f}x fewer")
    if "test" in m:
        b, a = m["test_before"]["top1"], m["test"]["top1"]
        table.add_row("test top-1", f"{b:.4f}", f"{a:.4f}", f"{100 * (a - b):+.2f} pt")
    Console().print(table)


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
    """The whole pipeline on the built-in digits data: train, prune, export to ONNX and OpenVINO, benchmark."""
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
    _print_prune(result.pruned, result.pruned.path)
    _print_bench(result.bench)
    typer.echo(f"report: {result.report}")


if __name__ == "__main__":
    app()
