"""The recipe: a typed, validated description of a whole compression run (`deepslim run recipe.yaml`).

    name: resnet18-digits
    dataset: digits
    model: {arch: resnet18, input_size: 32}
    stages:
      - {stage: train, epochs: 10}
      - {stage: prune, speedup: 2, finetune_epochs: 5, recover: kd}
      - {stage: quantize, method: ptq, target: openvino}
      - {stage: export, targets: [onnx, openvino]}
    bench: {backends: [torch, onnxruntime, openvino], batches: [1]}

Any model kind: a table names its label column (or writes the options into the reference,
``dataset: data.csv?label=y``), and the task and the metric that judges it may be stated:

    name: wine-mlp
    dataset: wine.csv
    label_column: target          # also feature_columns: [a, b], task: regression
    primary_metric: f1_macro      # default by task: top1, map, r2 (mae: lower is better)
    model: {arch: mlp, arch_kwargs: {hidden: [64, 32]}}

``model`` may state an image model's preprocessing (``input_size: 28x56``, ``channels``, ``mean``,
``std``) and, for a model with several outputs, ``output``: the one the task reads.

Everything is checked before any work: field types and allowed values (pydantic; the error
names the field path), files that must exist, the order of stages (what each one produces
must be what the next one takes), and whether the backends it needs are installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compress.options import Calibration, Importance, Method, QuantTarget, Recover
from deepslim.errors import ConfigError, InputFileError

PositiveInt = Annotated[int, Field(ge=1)]
Size = Union[PositiveInt, Annotated[str, Field(pattern=r"^[1-9][0-9]*(x[1-9][0-9]*)?$")]]  # 32 or "28x56"
TaskName = Literal["classification", "multilabel", "regression"]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """The starting model: a file (bundle, or ONNX for quantize/export only) or an architecture to build."""

    path: str | None = None
    arch: str | None = None
    input_size: Size | None = None
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    channels: PositiveInt | None = None
    mean: list[float] | None = Field(default=None, min_length=1)
    std: list[Annotated[float, Field(gt=0)]] | None = Field(default=None, min_length=1)
    output: str | None = None  # the output the task reads, for a model with several
    tokenizer: str | None = None  # a new Hugging Face text model: a tokenizer directory or tokenizer.json
    max_length: PositiveInt | None = None  # a new text model: texts truncated to this many tokens

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.path is None) == (self.arch is None):
            raise ValueError("give exactly one of path and arch")
        given = [name for name in ("input_size", "channels", "mean", "std", "output", "tokenizer", "max_length")
                 if getattr(self, name) is not None]
        if self.path is not None and (given or self.arch_kwargs):
            raise ValueError(f"{', '.join(given or ['arch_kwargs'])} apply to arch, not to a model file (which "
                             "records its own)")
        return self

    @property
    def size(self) -> int | tuple[int, int] | None:
        """``input_size`` as the model builders take it: N, or (H, W)."""
        if self.input_size is None or isinstance(self.input_size, int):
            return self.input_size
        h, _, w = self.input_size.partition("x")
        return int(h) if not w or h == w else (int(h), int(w))


class TrainStage(_Strict):
    stage: Literal["train"]
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    lr: Annotated[float, Field(gt=0)] | None = None
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    augment: bool = True
    loss: Literal["mse", "huber"] | None = None  # regression only
    optimizer: Literal["sgd", "adamw"] | None = None  # None: the train loop's default (SGD)


class PruneStage(_Strict):
    stage: Literal["prune"]
    ratio: Fraction | None = None
    speedup: Annotated[float, Field(gt=1)] | None = None
    importance: Importance = Importance.L2
    global_pruning: bool = False
    iterative_steps: PositiveInt = 1
    round_to: PositiveInt = 8
    finetune_epochs: NonNegInt = 0
    finetune_lr: Annotated[float, Field(gt=0)] = 0.03
    recover: Recover = Recover.FINETUNE
    temperature: Annotated[float, Field(gt=0)] = 4.0
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.5
    head_ratio: Annotated[float, Field(ge=0, lt=1)] | None = None  # Hugging Face encoders: heads removed per layer
    depth: PositiveInt | None = None  # Hugging Face encoders: keep this many layers, evenly spaced
    finetune_optimizer: Literal["sgd", "adamw"] | None = None  # None: SGD

    @model_validator(mode="after")
    def _target(self) -> PruneStage:
        if (self.ratio is None) == (self.speedup is None):
            raise ValueError("give exactly one of ratio and speedup")
        if self.recover is Recover.KD and not self.finetune_epochs:
            raise ValueError("recover: kd distills during fine-tuning; set finetune_epochs >= 1")
        return self


class DistillStage(_Strict):
    stage: Literal["distill"]
    teacher: str = "original"   # "original": the model before compression (after training); or a file
    epochs: PositiveInt = 5
    lr: Annotated[float, Field(gt=0)] | None = None
    temperature: Annotated[float, Field(gt=0)] = 4.0
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.5
    hidden_weight: Annotated[float, Field(ge=0)] | None = None      # transformers: hidden-state MSE
    attention_weight: Annotated[float, Field(ge=0)] | None = None   # transformers: attention-map loss
    layer_map: str | None = None                                    # "auto" or "0:1,1:3" (student:teacher)
    attention_loss: Literal["kl", "mse"] | None = None


class QuantizeStage(_Strict):
    stage: Literal["quantize"]
    method: Method = Method.PTQ
    target: QuantTarget = QuantTarget.OPENVINO
    calibration: Calibration | None = None
    calibration_samples: PositiveInt | None = None
    max_accuracy_drop: Annotated[float, Field(ge=0)] | None = None
    input_size: PositiveInt | None = None
    qat_epochs: PositiveInt = 3


class ExportStage(_Strict):
    stage: Literal["export"]
    targets: list[Literal["onnx", "openvino", "tensorrt"]] = Field(default_factory=lambda: ["onnx", "openvino"],
                                                                    min_length=1)
    input_size: PositiveInt | None = None


Stage = Annotated[Union[TrainStage, PruneStage, DistillStage, QuantizeStage, ExportStage],
                  Field(discriminator="stage")]


class BenchSpec(_Strict):
    backends: list[Literal["torch", "onnxruntime", "openvino", "tensorrt"]] = Field(
        default_factory=lambda: ["torch", "onnxruntime", "openvino"], min_length=1)
    batches: list[PositiveInt] = Field(default_factory=lambda: [1], min_length=1)
    input_size: PositiveInt | None = None
    duration: Annotated[float, Field(gt=0)] = 2.0
    rounds: PositiveInt = 3
    accuracy: bool = True


class Recipe(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    dataset: str | None = None  # None: the dataset model.path records in its lineage
    label_column: str | list[str] | None = None      # a table's target column(s)
    feature_columns: str | list[str] | None = None   # a table's feature columns (default: all but the label)
    task: TaskName | None = None                     # default: inferred from the targets
    primary_metric: str | None = None                # what the guards, best epoch and search read
    seed: int = 0
    model: ModelSpec
    stages: list[Stage] = Field(default_factory=list)
    bench: BenchSpec | None = Field(default_factory=BenchSpec)

    @model_validator(mode="after")
    def _data_options(self) -> Recipe:
        given = [n for n in ("label_column", "feature_columns", "task") if getattr(self, n) is not None]
        if given and self.dataset is None:
            raise ValueError(f"{', '.join(given)} describe the dataset; give dataset too")
        if self.primary_metric is not None:
            from deepslim.tasks import METRICS
            if self.primary_metric not in METRICS:
                raise ValueError(f"primary_metric '{self.primary_metric}' is not one of {', '.join(METRICS)}")
            if self.model.path is not None and self.model.path.lower().endswith(".onnx"):
                raise ValueError("primary_metric applies to a PyTorch model; an ONNX model.path keeps its task")
        return self

    def dataset_options(self) -> dict[str, str | None]:
        """label / features / task as a dataset reference's options (:func:`deepslim.data.with_options`)."""
        def joined(value: str | list[str] | None) -> str | None:
            return ",".join(value) if isinstance(value, list) else value
        return {"label": joined(self.label_column), "features": joined(self.feature_columns), "task": self.task}

    @model_validator(mode="after")
    def _formats_chain(self) -> Recipe:
        """What each stage produces must be what the next takes (e.g. no prune after quantize)."""
        kind = "onnx" if self.model.path and self.model.path.lower().endswith(".onnx") else "bundle"
        for i, stage in enumerate(self.stages):
            needs = ("bundle", "onnx") if isinstance(stage, QuantizeStage) and stage.method is not Method.QAT \
                else ("bundle",)
            if kind not in needs:
                made = f"stage {i - 1} ({self.stages[i - 1].stage})" if i else "the model"
                raise ValueError(f"stages.{i} ({stage.stage}) takes a PyTorch bundle, but {made} gives "
                                 f"{'a quantized artifact' if kind == 'quantized' else 'an ONNX file'}; put "
                                 f"{stage.stage} before quantize")
            if isinstance(stage, QuantizeStage):
                kind = "quantized"
        return self


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate a recipe file; every problem is one sentence naming the field."""
    import yaml
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"The recipe {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{where}.") from None
    return parse_recipe(data, source=path)


def parse_recipe(data: Any, *, source: str | Path = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping with name, model and stages.")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None
    base = Path(source).parent if isinstance(source, Path) else Path(".")
    _check_files(recipe, base)
    return recipe


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    parts = list(first["loc"])
    tags = {"train", "prune", "distill", "quantize", "export"}
    parts = [p for i, p in enumerate(parts) if not (i and isinstance(parts[i - 1], int) and p in tags)]
    loc = ".".join(str(p) for p in parts)  # the union member's tag dropped: stages.0.epochs
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc or 'recipe'}: {msg}{more}."


def _check_files(recipe: Recipe, base: Path) -> None:
    if recipe.model.path is not None:
        path = resolve(recipe.model.path, base)
        if path.is_dir() and (path / "config.json").is_file() and not (path / "deepslim.json").is_file():
            raise InputFileError(f"model.path: {recipe.model.path} is a Hugging Face directory deepslim did not write; "
                                 f"give it as model.arch: hf:{recipe.model.path} (its head is fitted to the dataset).")
        if not (path.is_file() or (path / "deepslim.json").is_file()):
            raise InputFileError(f"model.path: {recipe.model.path} does not exist.")
    for i, stage in enumerate(recipe.stages):
        if isinstance(stage, DistillStage) and stage.teacher != "original" and not resolve(stage.teacher, base).is_file():
            raise InputFileError(f"stages.{i}.teacher: {stage.teacher} does not exist (use 'original' for the model "
                                 "before compression).")


def resolve(path: str, base: Path) -> Path:
    """Recipe paths are relative to the recipe file."""
    p = Path(path)
    return p if p.is_absolute() else base / p


def resolve_arch(arch: str, base: Path) -> str:
    """A recipe's ``model.arch``: a ``file.py:fn`` is relative to the recipe file like every recipe path."""
    head, sep, fn = arch.rpartition(":")
    if sep and head.endswith(".py"):
        return f"{resolve(head, base)}:{fn}"
    if arch.startswith("hf:") and resolve(arch[3:], base).is_dir():  # hf:./my-bert, relative to the recipe
        return f"hf:{resolve(arch[3:], base).resolve()}"
    return arch


def resolve_dataset_spec(dataset: str, base: Path) -> str:
    """A recipe's ``dataset``: built-in names as they are; a directory, table or ``file.py:fn`` relative to the
    recipe; its ``?`` options kept."""
    from deepslim.provenance import BUILTIN, split_reference
    name, query = split_reference(dataset)
    if name in BUILTIN:
        return name + query
    head, sep, fn = name.rpartition(":")
    if sep and head.endswith(".py"):
        return f"{resolve(head, base).resolve()}:{fn}{query}"
    return str(resolve(name, base).resolve()) + query


def recipe_dataset(recipe: Recipe, base: Path) -> str:
    """The dataset every stage of ``recipe`` uses: its ``dataset`` (with label_column, feature_columns and task
    written into the reference), else the one its ``model.path`` records."""
    if recipe.dataset is not None:
        spec = resolve_dataset_spec(recipe.dataset, base)
        options = recipe.dataset_options()
        if not any(options.values()):
            return spec
        from deepslim.data import with_options
        return with_options(spec, **options)
    from deepslim.provenance import resolve_dataset
    if recipe.model.path is None:
        raise ConfigError(f"The recipe builds a new model (model.arch {recipe.model.arch}), so it needs a `dataset:` "
                          "(digits, digits-c, a directory, or path/file.py:fn).")
    path = resolve(recipe.model.path, base)
    lineage, classes = _recorded(path)
    return resolve_dataset(None, lineage, classes=classes, what=f"The recipe's model {path.name}").spec


def _recorded(path: Path) -> tuple[list, list[str] | None]:
    """The lineage and classes a model file records (nothing for a file deepslim did not write)."""
    from deepslim.fileio import require_model
    require_model(path, "model")
    from deepslim.artifact import is_bundle
    if is_bundle(path):
        from deepslim.bundle import read_header
        meta = read_header(path)
    else:
        from deepslim.artifact import read_onnx_meta
        meta = read_onnx_meta(path)
    return (list(meta.lineage), list(meta.classes)) if meta else ([], None)


def feasibility(recipe: Recipe) -> list[str]:
    """Notes on what this machine cannot run: missing backends fail now; TensorRT without a GPU is skipped."""
    missing = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
    wanted = set(recipe.bench.backends if recipe.bench else [])
    for stage in recipe.stages:
        if isinstance(stage, ExportStage):
            wanted |= {"onnxruntime" if t == "onnx" else t for t in stage.targets}
        if isinstance(stage, QuantizeStage):
            wanted.add("openvino" if stage.target is QuantTarget.OPENVINO else "onnxruntime")
    for backend, module in missing.items():
        if backend in wanted and importlib.util.find_spec(module) is None:
            raise ConfigError(f"The recipe needs {backend}, which is not installed; `pip install {module}`.")
    notes = []
    if "tensorrt" in wanted and not tensorrt_available():
        notes.append("TensorRT targets are skipped: this machine has no tensorrt package or no CUDA GPU")
    return notes


def tensorrt_available() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import torch
    return torch.cuda.is_available()
