"""`deepslim train`, `eval`, `info`, `archs`."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import (Accumulate, SyncBN, Arch, ArchKwargs, AsJson, Augment, BatchSize, Channels, Dataset, Device,
                             Epochs, FeatureColumns, Force, MaxLength, Tokenizer, InputSize, LabelColumn, TextColumn, LabelSmoothing, Lr, Mean, Model,
                             Momentum, Optim, PrimaryMetric, Quiet, Resume, Sched, Seed, Severity, Std, TaskOption,
                             TaskOutput, TrustCode, TrustPickle, WarmupEpochs, WeightDecay, Weights, Workers,
                             dataset_ref, is_main_process, load_with_data, print_metrics, trusting)
from deepslim.config import Augment as AugmentPolicy
from deepslim.config import Init, OptimizerKind, Schedule, TrainConfig
from deepslim.errors import ConfigError


class RegressionLoss(str, Enum):
    MSE = "mse"
    HUBER = "huber"


@trusting
def train(
    model: Model = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output bundle (.safetensors).")] = ...,
    arch: Arch = None, weights: Weights = None, arch_kwargs: ArchKwargs = None,
    pretrained: Annotated[Optional[str], typer.Option(
        "--pretrained", help="torchvision weights to start from, e.g. DEFAULT or IMAGENET1K_V1 (downloads).")] = None,
    input_size: InputSize = None, channels: Channels = None, mean: Mean = None, std: Std = None,
    dataset: Dataset = None, label_column: LabelColumn = None, text_column: TextColumn = None, feature_columns: FeatureColumns = None,
    task: TaskOption = None, severity: Severity = None, task_output: TaskOutput = None,
    primary_metric: PrimaryMetric = None, tokenizer: Tokenizer = None, max_length: MaxLength = None,
    loss: Annotated[Optional[RegressionLoss], typer.Option(
        "--loss", help="Regression loss (on targets standardised with the train split's mean and std).",
        show_default=False)] = None,
    epochs: Epochs = 10, batch_size: BatchSize = 64, lr: Lr = None, optimizer: Optim = OptimizerKind.SGD,
    momentum: Momentum = 0.9, weight_decay: WeightDecay = 5e-4, schedule: Sched = Schedule.COSINE,
    warmup_epochs: WarmupEpochs = None, label_smoothing: LabelSmoothing = 0.0, augment: Augment = AugmentPolicy.LIGHT,
    accumulate: Accumulate = 1, sync_bn: SyncBN = False,
    init: Annotated[Init, typer.Option(help="Re-initialise Conv/Linear weights before training.")] = Init.DEFAULT,
    freeze_backbone: Annotated[bool, typer.Option(
        "--freeze-backbone", help="Train only the classifier head (transfer learning).")] = False,
    seed: Seed = 0, device: Device = "auto", workers: Workers = 0, resume: Resume = False,
    trust_pickle: TrustPickle = False, trust_code: TrustCode = False, force: Force = False, quiet: Quiet = False,
) -> None:
    """Train (or fine-tune) a model and save it as a bundle with its lineage.

    Example: deepslim train --arch resnet18 --dataset digits --input-size 32 -o base.safetensors

    A table: deepslim train --arch mlp --dataset data.csv --label-column y -o mlp.safetensors

    Text: deepslim train ./my-bert --dataset texts.csv --text-column text --label-column y -o ft (a directory
    that from_pretrained loads; -o ft.safetensors for a bundle)
    """
    dataset = dataset_ref(dataset, label_column, feature_columns, task, text_column)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
                      weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs,
                      label_smoothing=label_smoothing, augment=augment, init=init, freeze_backbone=freeze_backbone,
                      seed=seed, device=device, num_workers=workers, accumulate=accumulate, sync_bn=sync_bn)
    from deepslim.fileio import check_output
    out = check_output(output, force=force, inputs=[model, weights], suffix=".safetensors", directory=True)
    if init is not Init.DEFAULT and (model is not None or weights is not None or pretrained is not None):
        raise ConfigError(f"--init {init.value} would overwrite the loaded weights; use it only for a new --arch "
                          "without --weights or --pretrained.")
    from deepslim.models import check_saveable, save_model
    from deepslim.training import train as run_train
    bundle, data = load_with_data(model, arch=arch, weights=weights, arch_kwargs=arch_kwargs, input_size=input_size,
                                  channels=channels, trust_pickle=trust_pickle, dataset=dataset, severity=severity,
                                  pretrained=pretrained, seed=seed, quiet=quiet, mean=mean, std=std,
                                  task_output=task_output, primary_metric=primary_metric,
                                  loss=loss.value if loss else None, tokenizer=tokenizer, max_length=max_length)
    check_saveable(bundle, out)
    ckpt = out.with_name(out.name + ".ckpt")
    trained = run_train(bundle, data.spec, cfg, severity=data.severity, checkpoint=ckpt, resume=resume,
                        progress=not quiet)
    if not is_main_process():
        return
    save_model(trained, out, force=force)
    ckpt.unlink(missing_ok=True)
    record = trained.lineage[-1]
    print_metrics(f"{out}: test split of {data.label()} (best epoch {record.metrics['best_epoch']}, "
                   f"{record.seconds:.1f} s)", record.metrics["test"], trained.task)


@trusting
def evaluate(
    model: Model = None, arch: Arch = None, weights: Weights = None, arch_kwargs: ArchKwargs = None,
    input_size: InputSize = None, channels: Channels = None, mean: Mean = None, std: Std = None,
    task_output: TaskOutput = None, trust_pickle: TrustPickle = False, tokenizer: Tokenizer = None,
    max_length: MaxLength = None, trust_code: TrustCode = False, dataset: Dataset = None, label_column: LabelColumn = None, text_column: TextColumn = None,
    feature_columns: FeatureColumns = None, task: TaskOption = None, severity: Severity = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    limit: Annotated[Optional[int], typer.Option(help="Evaluate a seeded subset of this many samples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 256,
    device: Device = "auto", as_json: AsJson = False,
) -> None:
    """Print the task's metrics on a dataset split: top-1, top-5, macro ROC-AUC and AP for a classifier; mAP and
    F1 for multilabel; R², MAE and RMSE for a regression.

    Example: deepslim eval base.safetensors --dataset digits
    """
    dataset = dataset_ref(dataset, label_column, feature_columns, task, text_column)
    from deepslim.evaluation import evaluate as run_eval
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be a positive integer, got {limit}.")
    bundle, data = load_with_data(model, arch=arch, weights=weights, arch_kwargs=arch_kwargs, input_size=input_size,
                                  channels=channels, trust_pickle=trust_pickle, dataset=dataset, severity=severity,
                                  quiet=as_json, mean=mean, std=std, task_output=task_output, tokenizer=tokenizer,
                                  max_length=max_length)
    result = run_eval(bundle, data.spec, split=split, limit=limit, batch_size=batch_size, severity=data.severity,
                      device=device)
    if as_json:
        typer.echo(json.dumps({"model": str(model or arch), "dataset": result.dataset, "split": split,
                               "recorded_dataset": data.recorded, "task": bundle.task.kind.value,
                               "primary": bundle.task.primary, "metrics": result.metrics}, indent=2))
    else:
        print_metrics(f"{model or arch} on {result.dataset} ({split})", result.metrics, bundle.task)


@trusting
def info(model: Annotated[Path, typer.Argument(help="A bundle (.safetensors) or an exported .onnx/.xml/.engine.")],
         as_json: AsJson = False,
         layers: Annotated[bool, typer.Option("--layers", help="List a bundle's named layers with their output "
                                              "shapes (the names --feature-pairs and --ignore take).")] = False,
         trust_code: TrustCode = False,
         ) -> None:
    """Show a bundle's header (architecture, signature: inputs with kinds and shapes and outputs, task, structural
    changes, lineage), or the metadata an exported artifact carries."""
    if model.suffix.lower() in (".onnx", ".xml", ".engine", ".plan"):
        if layers:
            raise ConfigError("--layers reads bundles; an exported artifact has no named PyTorch layers.")
        return _artifact_info(model, as_json)
    if layers:
        return _layers(model, as_json)
    header = _header(model)
    data = _shown(header.to_json())
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    console = Console()
    console.print(f"[bold]{model}[/]  format v{data['format_version']}")
    console.print(f"arch      {header.arch.source.value}:{header.arch.name} {_arch_kwargs(header.arch)}",
                  highlight=False)
    _print_model(console, header.signature, header.task)
    console.print(f"structure {len(header.structure.get('modules', {}))} modules changed")
    _print_lineage(console, header.lineage)


def _header(model: Path):
    """A bundle's header, or the ``deepslim.json`` of a Hugging Face directory deepslim wrote."""
    from deepslim import bundle as fmt
    from deepslim.hf import SIDECAR, is_hf_dir
    if model.is_dir():
        if not (model / SIDECAR).is_file():
            hint = " (a Hugging Face directory deepslim did not write)" if is_hf_dir(model) else ""
            raise ConfigError(f"{model} is a directory without {SIDECAR}{hint}; info reads bundles, directories "
                              "deepslim wrote and exported artifacts.")
        try:
            return fmt.Header.from_json(json.loads((model / SIDECAR).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{model / SIDECAR} is not a readable deepslim header ({exc}).") from exc
    header = fmt.read_header(model)
    if header is None:
        raise ConfigError(f"{model} is a plain safetensors file without a deepslim header.")
    return header


def _shown(data: dict) -> dict:
    """The header as printed: a tokenizer by its class, size and hash, not its packed text."""
    text = (data.get("signature") or {}).get("text")
    if text:
        text = {k: v for k, v in text.items() if k != "tokenizer_json"}
        data = {**data, "signature": {**data["signature"], "text": text}}
    return data


_HF_SIZES = ("model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
             "n_layers", "dim", "n_heads", "hidden_dim", "image_size", "patch_size", "vocab_size", "pruned_heads")


def _arch_kwargs(arch) -> str:
    """The architecture's arguments; for a Hugging Face config only the sizes that say what the model is."""
    if arch.source.value != "hf":
        return str(arch.kwargs)
    return str({k: arch.kwargs[k] for k in _HF_SIZES if arch.kwargs.get(k) not in (None, {})})


def _print_model(console, signature, task) -> None:
    """The signature (each input: kind, shape, dtype, preprocessing; the outputs and the one the task reads) and
    the task (kind, names, primary metric)."""
    for i, spec in enumerate(signature.inputs):
        shape = "x".join(map(str, spec.shape))
        prep = f" {spec.channel_order}" if spec.channel_order else ""
        if spec.mean:
            prep += f" mean={_short(spec.mean)} std={_short(spec.std)}"
        console.print(f"{'input' if i == 0 else '':<9} {spec.name}: {spec.kind.value} {shape} {spec.dtype}{prep}",
                      highlight=False)
    outputs = ", ".join(f"{o} (task output)" if o == signature.task_output and len(signature.outputs) > 1 else o
                        for o in signature.outputs)
    console.print(f"outputs   {outputs} ({signature.output_layout})", highlight=False)
    what = {"classification": "classes", "multilabel": "labels"}.get(task.kind.value, "targets")
    names = ", ".join(task.names[:12]) + (" ..." if len(task.names) > 12 else "")
    console.print(f"task      {task.kind.value}, {task.width} {what}: {names}", highlight=False)
    from deepslim.tasks import metric_info
    info = metric_info(task.primary)
    console.print(f"primary   {task.primary} ({info.label}, {'higher' if info.higher_is_better else 'lower'} is "
                  f"better){f'; loss {task.loss}' if task.loss else ''}", highlight=False)
    if signature.text is not None:
        text = signature.text
        console.print(f"tokenizer {text.tokenizer_class}, inputs {', '.join(text.model_input_names)}, max length "
                      f"{text.max_length} (sha256 {text.sha256[:12]})", highlight=False)
    for note in signature.notes:
        console.print(f"assumed   {note}", highlight=False)


def _short(values) -> str:
    shown = ", ".join(f"{v:.4g}" for v in values[:4])
    return f"({shown}{', ...' if len(values) > 4 else ''})"


def _layers(path: Path, as_json: bool) -> None:
    from deepslim.models import load_model
    from deepslim.profile import layer_shapes
    rows = layer_shapes(load_model(path))
    if as_json:
        typer.echo(json.dumps([{"name": n, "type": t, "output": list(s) if s else None} for n, t, s in rows],
                              indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"{path}: layers (output shape for one sample)")
    for col in ("name", "type", "output"):
        table.add_column(col)
    for name, kind, shape in rows:
        table.add_row(name, kind, "x".join(map(str, shape)) if shape else "-")
    Console().print(table)


def _artifact_info(path: Path, as_json: bool) -> None:
    from benchmarks.runners import read_meta
    meta = read_meta(path)
    if as_json:
        typer.echo(meta.to_json())
        return
    from rich.console import Console
    console = Console()
    console.print(f"[bold]{path}[/]")
    console.print(f"export    {', '.join(f'{k}={v}' for k, v in sorted(meta.export.items()))}", highlight=False)
    _print_model(console, meta.signature, meta.task)
    _print_lineage(console, meta.lineage)


def _print_lineage(console, lineage) -> None:
    from rich.table import Table
    table = Table(title="lineage")
    for col in ("stage", "seconds", "metrics", "finished"):
        table.add_column(col)
    for rec in lineage:
        test = rec.metrics.get("test", rec.metrics)
        summary = ", ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float))
        table.add_row(rec.stage, f"{rec.seconds:.1f}", summary, rec.finished_at)
    console.print(table)


def archs() -> None:
    """List the architectures deepslim can build by name."""
    from deepslim.models import BUILTIN, torchvision_names
    typer.echo("built-in:    " + ", ".join(sorted(BUILTIN)))
    typer.echo("torchvision: " + ", ".join(torchvision_names()))
    typer.echo("your own:    path/to/file.py:build_fn")
