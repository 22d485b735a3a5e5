"""Options, loaders and printers shared by the commands."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deepslim.config import Augment as AugmentPolicy
from deepslim.config import OptimizerKind, Schedule
from deepslim.errors import ConfigError
from deepslim.tasks import TaskKind

# --- shared options ---------------------------------------------------------------------------

Model = Annotated[Optional[Path], typer.Argument(
    help="A deepslim bundle (.safetensors), or a pickled module (.pt) with --trust-pickle.", show_default=False)]
Arch = Annotated[Optional[str], typer.Option(
    "--arch", help="Architecture: small_cnn, a torchvision name (resnet18, ...), or path/file.py:build_fn.")]
Weights = Annotated[Optional[Path], typer.Option(
    "--weights", help="state_dict file for --arch (.pth loaded with weights_only=True, or .safetensors).")]
ArchKwargs = Annotated[Optional[str], typer.Option(
    "--arch-kwargs", help='JSON keyword arguments for the architecture, e.g. \'{"width": 16}\'.')]
InputSize = Annotated[Optional[str], typer.Option(
    "--input-size", help="Image input size N or HxW, e.g. 28x56 (default: 16 for small_cnn, the data's own size for "
    "a path/file.py:fn architecture, 224 otherwise).", show_default=False)]
Channels = Annotated[Optional[int], typer.Option("--channels", help="Image input channels (default: from the data).",
                                                 show_default=False)]
Mean = Annotated[Optional[str], typer.Option(
    "--mean", help="Image normalisation mean: one value or one per channel, comma-separated, e.g. "
    "0.485,0.456,0.406 (default: the data's; a bundle records its own).", show_default=False)]
Std = Annotated[Optional[str], typer.Option(
    "--std", help="Image normalisation std, like --mean (default: the data's).", show_default=False)]
TaskOutput = Annotated[Optional[str], typer.Option(
    "--task-output", help="For a model with several outputs: the one the task reads (a key of its dict output, or "
    "output_N of a tuple); the error lists the candidates.", show_default=False)]
PrimaryMetric = Annotated[Optional[str], typer.Option(
    "--primary-metric", help="The metric that picks the best epoch, guards --max-accuracy-drop and ranks candidates "
    "(default by task: top1, map, r2), e.g. mae or f1_macro; a bundle records the one it was trained with.",
    show_default=False)]
TrustPickle = Annotated[bool, typer.Option(
    "--trust-pickle", help="Allow loading a whole pickled module; unpickling runs code from the file.")]
TrustCode = Annotated[bool, typer.Option(
    "--trust-code", help="Allow a model file to run the Python architecture file it names, or a Hugging Face "
    "directory its own modelling code (auto_map); recorded sha256 must still match. Naming a file yourself with "
    "--arch FILE.py:fn allows just that file.")]
Dataset = Annotated[Optional[str], typer.Option(
    "--dataset", "-d", help="digits, digits-c, mnist, breast-cancer, wine, diabetes, a .csv/.parquet table (with "
    "--label-column), an ImageFolder or CIFAR-10 directory, or path/file.py:fn (default: the dataset recorded in "
    "the model's lineage).", show_default=False)]
LabelColumn = Annotated[Optional[str], typer.Option(
    "--label-column", help="Table dataset (.csv/.parquet): the target column; several, comma-separated, for "
    "multilabel or multi-target regression. Recorded with the dataset.", show_default=False)]
FeatureColumns = Annotated[Optional[str], typer.Option(
    "--feature-columns", help="Table dataset: the numeric columns to feed, comma-separated (default: every column "
    "but the label and split).", show_default=False)]
TextColumn = Annotated[Optional[str], typer.Option(
    "--text-column", help="Text table (.csv/.jsonl/.parquet): the text column, or two comma-separated for sentence "
    "pairs (default: a column named text or sentence). Recorded with the dataset.", show_default=False)]
Tokenizer = Annotated[Optional[Path], typer.Option(
    "--tokenizer", help="For a new Hugging Face text model (--arch hf:bert): a local directory with tokenizer.json "
    "or vocab.txt, or a tokenizer.json file (default: the model directory's own). Recorded in the model.",
    show_default=False)]
MaxLength = Annotated[Optional[int], typer.Option(
    "--max-length", help="For a new text model: texts are truncated to this many tokens (default: 128, or less if "
    "the model takes less). Recorded in the model.", show_default=False)]
TaskOption = Annotated[Optional[TaskKind], typer.Option(
    "--task", help="The task of the dataset's targets (default: inferred: integers -> classification, 0/1 vectors "
    "-> multilabel, floats -> regression), e.g. regression for integer targets.", show_default=False)]
Severity = Annotated[Optional[int], typer.Option("--severity", help="Corruption severity 1-5 for digits-c "
                                                 "(default 3).", show_default=False)]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or epoch lines.")]

# --- the shared training loop's options (train, compress distill) ------------------------------

Epochs = Annotated[int, typer.Option(help="Training epochs.")]
BatchSize = Annotated[int, typer.Option(help="Batch size (per process under torchrun).")]
Lr = Annotated[Optional[float], typer.Option(help="Peak learning rate (default 0.05 SGD, 1e-3 AdamW).")]
Optim = Annotated[OptimizerKind, typer.Option("--optimizer", help="Optimizer.")]
Momentum = Annotated[float, typer.Option(help="SGD momentum (Nesterov).")]
WeightDecay = Annotated[float, typer.Option(help="Weight decay.")]
Sched = Annotated[Schedule, typer.Option("--schedule", help="Learning-rate schedule.")]
WarmupEpochs = Annotated[Optional[int], typer.Option(help="Linear warm-up epochs (default 1 if epochs > 2).")]
LabelSmoothing = Annotated[float, typer.Option(help="Label smoothing of the cross-entropy.")]
Augment = Annotated[AugmentPolicy, typer.Option(
    "--augment", help="Training augmentation: none; light (small shifts, scaling and rotation, no flips: safe for "
    "digits and text); standard (random resized crops and horizontal flips, for natural photos).")]
Accumulate = Annotated[int, typer.Option(help="Gradient accumulation: one optimizer step every N batches.")]
SyncBN = Annotated[bool, typer.Option(
    "--sync-bn", help="Under torchrun on GPUs: BatchNorm statistics over all ranks (SyncBatchNorm) while training; "
    "the saved model keeps plain BatchNorm. Refused under torchrun on CPU, where PyTorch's SyncBatchNorm does not "
    "run; in one process, a note only.")]
Seed = Annotated[int, typer.Option(help="Random seed (data order, augmentation, initialisation).")]
Workers = Annotated[int, typer.Option(help="DataLoader worker processes.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT.ckpt (written after every epoch) "
                                      "after an interruption.")]


def parse_kwargs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--arch-kwargs is not valid JSON ({exc.msg} at character {exc.pos}).") from None
    if not isinstance(value, dict):
        raise ConfigError("--arch-kwargs must be a JSON object such as '{\"width\": 16}'.")
    return value


_CODE_OPTIONS = ("arch", "student")  # options whose path/file.py:fn the user names, and so allows


def trusting(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``command`` with the code its options allow: ``--trust-code``, and the .py files it names.

    A bundle that names a Python architecture file runs it only inside this scope, and only if
    the user passed --trust-code or named that file (``--arch FILE.py:fn``, ``--student``).
    """
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from deepslim.trust import allow_code
        named = [v for k, v in kwargs.items() if k in _CODE_OPTIONS and isinstance(v, str)]
        with allow_code(trust_code=bool(kwargs.get("trust_code")), files=named):
            return command(*args, **kwargs)
    return wrapper


def dataset_ref(dataset: str | None, label: str | None = None, features: str | None = None,
                task: TaskKind | str | None = None, text: str | None = None) -> str | None:
    """``--dataset`` with ``--label-column`` / ``--feature-columns`` / ``--task`` written into its reference
    (``data.csv?label=y``), so they are recorded with it and it reopens the same."""
    task = getattr(task, "value", task)
    named = (("--label-column", label), ("--feature-columns", features), ("--task", task), ("--text-column", text))
    if not (label or features or task or text):
        return dataset
    if dataset is None:
        given = [n for n, v in named if v]
        raise ConfigError(f"{', '.join(given)} describe{'s' if len(given) == 1 else ''} the --dataset; pass "
                          "--dataset too.")
    base = dataset.partition("?")[0]
    if base in ("digits", "digits-c", "mnist"):
        given = [n for n, v in named if v]
        raise ConfigError(f"{', '.join(given)} apply to tables and file datasets; {base} is a built-in image "
                          "classification dataset.")
    from deepslim.data import with_options
    return with_options(dataset, label=label, features=features, task=task, text=text)


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    """``--mean 0.5`` or ``--mean 0.485,0.456,0.406`` as floats (None stays None)."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated numbers such as 0.5 or 0.485,0.456,0.406, "
                          f"got '{text}'.") from None
    if option == "--std" and min(values) <= 0:
        raise ConfigError(f"--std values must be positive, got '{text}'.")
    return values


def parse_input_size(text: str | int | None) -> tuple[int, int] | None:
    """``--input-size N`` or ``HxW`` as (H, W) (:func:`deepslim.signature.parse_size`)."""
    from deepslim.signature import parse_size
    if isinstance(text, str) and text.strip().lstrip("-").isdigit() and int(text) < 1:
        raise ConfigError(f"--input-size must be a positive size N or HxW (e.g. 28x56), got {int(text)}.")
    return parse_size(text)


def _size(text: str | int | None) -> int | tuple[int, int] | None:
    """``--input-size``: N (a square, as an int) or HxW (a tuple)."""
    size = parse_input_size(text)
    return None if size is None else size[0] if size[0] == size[1] else size


def load_bundle(model: Path | None, *, arch: str | None, weights: Path | None, arch_kwargs: str | None,
                input_size: str | int | None, channels: int | None, trust_pickle: bool, dataset: str | None,
                severity: int | None, pretrained: str | None = None, seed: int | None = None,
                mean: str | None = None, std: str | None = None, task_output: str | None = None,
                primary_metric: str | None = None, loss: str | None = None, tokenizer: Path | None = None,
                max_length: int | None = None):
    """The one model loader of the CLI: a file, or an architecture shaped for the dataset.

    A bundle carries its own signature and task (``--primary-metric`` may override its primary metric); a
    pickled module and a new architecture take their input statistics (and task) from ``dataset``, which
    must then be given; ``--mean``/``--std``/``--input-size``/``--channels`` state the image preprocessing,
    ``--loss`` a regression's loss."""
    return with_loss(_load(model, arch=arch, weights=weights, arch_kwargs=arch_kwargs, input_size=input_size,
                           channels=channels, trust_pickle=trust_pickle, dataset=dataset, severity=severity,
                           pretrained=pretrained, seed=seed, mean=mean, std=std, task_output=task_output,
                           primary_metric=primary_metric, tokenizer=tokenizer, max_length=max_length), loss)


def _load(model, *, arch, weights, arch_kwargs, input_size, channels, trust_pickle, dataset, severity, pretrained,
          seed, mean, std, task_output, primary_metric, tokenizer=None, max_length=None):
    from deepslim.data import open_dataset
    from deepslim.models import load_model
    from deepslim.provenance import require_dataset
    from deepslim.training import model_for_dataset
    kwargs = parse_kwargs(arch_kwargs)
    check_metric_name(primary_metric)
    size, means, stds = _size(input_size), parse_floats(mean, "--mean"), parse_floats(std, "--std")
    from deepslim.hf import SIDECAR, is_hf_dir
    if model is not None and is_hf_dir(model) and not (model / SIDECAR).is_file():
        if arch is not None:
            raise ConfigError("Give either a model directory or --arch, not both.")
        model, arch = None, f"hf:{model.resolve()}"  # a foreign Hugging Face directory: its head is fitted to the data
    if model is not None:
        _check_model_and_arch(model, arch, weights)
        if model.suffix.lower() == ".safetensors" or model.is_dir():
            given = [name for name, value in (("--input-size", input_size), ("--channels", channels),
                                              ("--arch-kwargs", arch_kwargs), ("--pretrained", pretrained),
                                              ("--mean", mean), ("--std", std), ("--task-output", task_output),
                                              ("--tokenizer", tokenizer), ("--max-length", max_length))
                     if value is not None]
            if given:
                raise ConfigError(f"{', '.join(given)} cannot be used with a bundle, which carries its own "
                                  "architecture, signature (inputs, preprocessing, outputs) and task.")
            return with_primary(load_model(model), primary_metric)
        if not trust_pickle:  # refused (or not a model file at all) before any question of data
            return load_model(model, trust_pickle=False, input_size=size, channels=channels)
        data = require_dataset(dataset, severity=severity, what=f"{model.name} (a pickled module)")
        info = open_dataset(data.spec, severity=data.severity).info
        bundle = load_model(model, trust_pickle=trust_pickle, input_size=size, channels=channels,
                            mean=means or info.mean, std=stds or info.std)
        return with_primary(bundle, primary_metric)
    if arch is None:
        raise ConfigError("Give a MODEL file or --arch NAME.")
    data = require_dataset(dataset, severity=severity, what=f"A new --arch {arch}")
    bundle = model_for_dataset(arch, data.spec, severity=data.severity, input_size=size, channels=channels,
                               arch_kwargs=kwargs, weights=weights, pretrained=pretrained, seed=seed, mean=means,
                               std=stds, output=task_output, primary_metric=primary_metric, tokenizer=tokenizer,
                               max_length=max_length)
    _check_stats(bundle, means, stds)
    return bundle


def with_loss(bundle, loss: str | None):
    """A regression bundle trained with ``--loss`` (recorded in its task); refused for other tasks."""
    if loss is None:
        return bundle
    if bundle.task.kind.value != "regression":
        raise ConfigError(f"--loss {loss} applies to regression; this model's task is {bundle.task.kind.value} "
                          "(its loss follows from the task).")
    from dataclasses import replace
    return replace(bundle, task=replace(bundle.task, loss=loss))


def check_metric_name(name: str | None) -> None:
    """--primary-metric names a metric deepslim measures (the task's own are checked against the model)."""
    from deepslim.tasks import METRICS
    if name and name not in METRICS:
        raise ConfigError(f"--primary-metric {name} is not a metric deepslim measures; choose one of "
                          f"{', '.join(m for m in METRICS if m != 'agreement')}.")


def with_primary(bundle, primary_metric: str | None):
    """``bundle`` whose task is judged by ``--primary-metric`` (the accuracy guard, the best epoch, the search)."""
    check_metric_name(primary_metric)
    if not primary_metric:
        return bundle
    from dataclasses import replace
    return replace(bundle, task=bundle.task.with_primary(primary_metric))


def _check_stats(bundle, mean, std) -> None:
    """--mean/--std have one value or one per channel of the model's image input (never averaged silently)."""
    image = bundle.signature.image
    for option, values in (("--mean", mean), ("--std", std)):
        if values is None:
            continue
        if image is None:
            raise ConfigError(f"{option} applies to a model with one image input; this one takes "
                              f"{bundle.signature.describe()}.")
        if len(values) not in (1, image.channels):
            one = "give 1 value" if image.channels == 1 else f"give 1 or {image.channels}"
            raise ConfigError(f"{option} has {len(values)} values but the model's image input has "
                              f"{image.channels} channel{'s' if image.channels != 1 else ''}; {one}.")


def load_with_data(model: Path | None, *, dataset: str | None, severity: int | None, quiet: bool = False,
                   **load: Any):
    """The model and the dataset its numbers are about (``--dataset``, else the model's recorded one), said once;
    with what was assumed about its inputs (``assumed: input size 28x56 from the data ...``)."""
    bundle = load_bundle(model, dataset=dataset, severity=severity, **load)
    say = _stderr(quiet)
    for note in bundle.signature.notes if model is None else ():
        say(f"assumed: {note}")
    data = choose_data(dataset, bundle.lineage, severity=severity, classes=bundle.classes, task=bundle.task,
                       what=model.name if model is not None else f"--arch {load.get('arch')}", quiet=quiet)
    return bundle, data


def choose_data(given: str | None, lineage, *, severity: int | None, classes, what: str, quiet: bool = False,
                task=None):
    """Resolve the dataset (see :mod:`deepslim.provenance`), check its classes (a classifier's), and say what
    was chosen."""
    from deepslim.data import check_classes, open_dataset
    from deepslim.provenance import canonical_dataset, resolve_dataset
    classifier = task is None or task.is_classification
    choice = resolve_dataset(given, lineage, severity=severity, classes=classes if classifier else None, what=what)
    info = open_dataset(choice.spec, severity=choice.severity).info
    if classes is not None and classifier and info.task_of().is_classification:
        check_classes(list(classes), info, choice.label())
    say = _stderr(quiet)
    if choice.note():
        say(choice.note())
    elif choice.why != "--dataset":
        say(f"dataset: {choice.label()} ({choice.why})")
    if getattr(info, "split_policy", "") and choice.spec not in ("digits", "digits-c"):  # built-ins: fixed, documented
        say(f"splits: {info.split_policy}")
    if choice.spec not in ("digits", "digits-c"):
        from dataclasses import replace
        choice = replace(choice, spec=canonical_dataset(choice.spec))
    return choice


def data_line(record) -> str:
    """'test split of digits' for a stage record: which data its numbers are about."""
    config = record.config if isinstance(record.config, dict) else {}
    return f"test split of {config.get('dataset') or 'an unrecorded dataset'}"


def _stderr(quiet: bool) -> Callable[[str], None]:
    from rich.console import Console
    console = Console(stderr=True, quiet=quiet or not is_main_process())
    return lambda text: console.print(text, highlight=False, soft_wrap=True)


def _check_model_and_arch(model: Path, arch: str | None, weights: Path | None) -> None:
    """With a MODEL file, --arch may only name the bundle's own architecture file (to allow it)."""
    from deepslim.trust import is_code_spec
    if weights is not None or (arch is not None and not is_code_spec(arch)):
        raise ConfigError("Give either a MODEL file or --arch (with --weights), not both; with a bundle, --arch "
                          "may only name the bundle's own architecture file (path/file.py:fn) to allow it.")
    if arch is not None and model.suffix.lower() != ".safetensors":
        raise ConfigError(f"--arch {arch} with a MODEL file names a bundle's architecture file; {model} is not a "
                          "bundle (.safetensors).")


def is_main_process() -> bool:
    """False on the ranks of a torchrun job that must not write files or print results (all but rank 0)."""
    from deepslim.distributed import launched_rank
    return launched_rank() == 0


def severity_for(dataset: str, severity: int | None) -> int:
    """--severity belongs to digits-c; refuse it elsewhere rather than ignore it."""
    if severity is not None and dataset != "digits-c":
        raise ConfigError(f"--severity applies to --dataset digits-c only, not '{dataset}'.")
    return 3 if severity is None else severity


IMAGE_METRICS = ("top1", "top5", "roc_auc_macro", "ap_macro", "samples")


def metric_keys(task) -> list[str]:
    """The metrics a table shows, primary first: a classifier judged by top-1 as before, else the task's own."""
    if task is None or (task.is_classification and task.primary == "top1"):
        return list(IMAGE_METRICS)
    return [task.primary, *(m for m in task.metrics if m != task.primary), "samples"]


def metric_label(name: str, task=None) -> str:
    """The row name of a metric: its key where deepslim printed keys before (top-1 classifiers), else its label."""
    from deepslim.tasks import metric_info
    if task is None or (task.is_classification and task.primary == "top1"):
        return name
    label = "samples" if name == "samples" else metric_info(name).label
    return f"{label} (primary)" if name == task.primary else label


def primary_label(task) -> str:
    """'top-1', 'R²', 'MAE': how tables name the task's primary metric."""
    from deepslim.tasks import metric_info
    return "top-1" if task is None else metric_info(task.primary).label


def print_metrics(title: str, metrics: dict[str, Any], task=None) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in metric_keys(task):
        if key in metrics:
            value = metrics[key]
            table.add_row(metric_label(key, task), f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--batch must be comma-separated positive integers such as 1,8,32, got '{text}'.") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--batch sizes must be positive integers, got '{text}'.")
    return values


def print_bench(result) -> None:
    from rich.console import Console
    from rich.table import Table
    from benchmarks.report import summary_rows, title_line
    head, rows = summary_rows(result, compact=True)
    table = Table(title=f"deepslim bench: {title_line(result)} (p50 = median of round medians; "
                  "speed = baseline p50 / this p50; ~ = inside the noise)")
    for col in head:
        table.add_column(col, justify="left" if col in ("artifact", "backend") else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    console = Console()
    console = console if console.is_terminal else Console(width=160)
    console.print(table)
    for note in result.notes + [n for e in result.entries for n in e.notes]:
        console.print(f"note: {note}", highlight=False)
