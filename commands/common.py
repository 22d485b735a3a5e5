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
TrustCode = Annotated[bool, typer.Option(
    "--trust-code", help="Allow a model file to run the Python architecture file it names (its recorded sha256 "
    "must still match). Naming that file yourself with --arch FILE.py:fn allows just that file.")]
Dataset = Annotated[Optional[str], typer.Option(
    "--dataset", "-d", help="digits, digits-c, an ImageFolder or CIFAR-10 directory, or path/file.py:fn "
    "(default: the dataset recorded in the model's lineage).", show_default=False)]
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


def load_bundle(model: Path | None, *, arch: str | None, weights: Path | None, arch_kwargs: str | None,
          input_size: int | None, channels: int | None, trust_pickle: bool, dataset: str | None,
          severity: int | None, pretrained: str | None = None, seed: int | None = None):
    """The one model loader of the CLI: a file, or an architecture shaped for the dataset.

    A bundle carries its own input spec; a pickled module and a new architecture take their input
    statistics (and class count) from ``dataset``, which must then be given."""
    from deepslim.data import open_dataset
    from deepslim.models import load_model
    from deepslim.provenance import require_dataset
    from deepslim.training import model_for_dataset
    kwargs = parse_kwargs(arch_kwargs)
    if model is not None:
        _check_model_and_arch(model, arch, weights)
        if model.suffix.lower() == ".safetensors":
            given = [name for name, value in (("--input-size", input_size), ("--channels", channels),
                                              ("--arch-kwargs", arch_kwargs), ("--pretrained", pretrained))
                     if value is not None]
            if given:
                raise ConfigError(f"{', '.join(given)} cannot be used with a bundle, which carries its own "
                                  "architecture and input spec.")
            return load_model(model)
        if not trust_pickle:  # refused (or not a model file at all) before any question of data
            return load_model(model, trust_pickle=False, input_size=input_size, channels=channels)
        data = require_dataset(dataset, severity=severity, what=f"{model.name} (a pickled module)")
        info = open_dataset(data.spec, severity=data.severity).info
        return load_model(model, trust_pickle=trust_pickle, input_size=input_size, channels=channels,
                          mean=info.mean, std=info.std)
    if arch is None:
        raise ConfigError("Give a MODEL file or --arch NAME.")
    data = require_dataset(dataset, severity=severity, what=f"A new --arch {arch}")
    return model_for_dataset(arch, data.spec, severity=data.severity, input_size=input_size,
                             channels=channels, arch_kwargs=kwargs, weights=weights, pretrained=pretrained, seed=seed)


def load_with_data(model: Path | None, *, dataset: str | None, severity: int | None, quiet: bool = False,
                   **load: Any):
    """The model and the dataset its numbers are about (``--dataset``, else the model's recorded one), said once."""
    bundle = load_bundle(model, dataset=dataset, severity=severity, **load)
    data = choose_data(dataset, bundle.lineage, severity=severity, classes=bundle.classes,
                       what=model.name if model is not None else f"--arch {load.get('arch')}", quiet=quiet)
    return bundle, data


def choose_data(given: str | None, lineage, *, severity: int | None, classes, what: str, quiet: bool = False):
    """Resolve the dataset (see :mod:`deepslim.provenance`), check its classes, and say what was chosen."""
    from deepslim.data import check_classes, open_dataset
    from deepslim.provenance import canonical_dataset, resolve_dataset
    choice = resolve_dataset(given, lineage, severity=severity, classes=classes, what=what)
    info = open_dataset(choice.spec, severity=choice.severity).info
    if classes is not None:
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


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
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
