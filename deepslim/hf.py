"""Hugging Face models: built from a config (``--arch hf:bert``), loaded from a local directory, saved back as
one that ``from_pretrained`` loads.

An architecture is ``ArchSpec(source=hf, name=HEAD, kwargs=CONFIG)``: ``HEAD`` is one of :data:`HEADS`
(the ``AutoModelFor…`` class that builds it) and ``CONFIG`` the model's whole ``config.json``, so a bundle
rebuilds it without pickle and without the directory; pruning rewrites the config (``pruned_heads``,
``intermediate_size``, ``num_hidden_layers``) and the rebuilt model has the pruned sizes. Only model types
that ``transformers`` itself registers are built without asking; a directory with its own modelling code
(``auto_map`` in ``config.json``) runs it only under ``--trust-code``. Its ``*.py`` files and their sha256 are
recorded in the config JSON (:data:`CODE_KEY`), so a bundle rebuilds the model from that directory, and only
while each file still has its recorded hash; a directory deepslim writes carries a copy of the files.
``transformers`` imports them through its modules cache (``HF_MODULES_CACHE``, by default
``~/.cache/huggingface/modules``). Nothing is ever downloaded: every load runs under
``HF_HUB_OFFLINE=1`` with ``local_files_only``, and a hub id is refused with one sentence.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from deepslim.errors import ConfigError, ModelError, UntrustedCodeError, first_line
from deepslim.fileio import SIDECAR  # noqa: F401  (hf.SIDECAR: the name the directory code uses)
from deepslim.signature import BATCH, InputKind, TensorSpec
from deepslim.spec import ArchSource, ArchSpec
from deepslim.tasks import Task, TaskKind
from deepslim.textspec import TextSpec

HEADS = {"sequence-classification": "AutoModelForSequenceClassification",
         "image-classification": "AutoModelForImageClassification"}
CUSTOM_CODE = ("the model needs its own modelling code (auto_map in config.json), and running a model "
               "directory's Python files needs --trust-code")
CODE_KEY = "_deepslim_code"  # in a config's JSON: {"directory": DIR, "sha256": {file.py: hash}} of its custom code
HEADS_AUTO = {"AutoModelForSequenceClassification": "ForSequenceClassification",
              "AutoModelForImageClassification": "ForImageClassification"}
_DROPPED = ("transformers_version", "_name_or_path", "_commit_hash", "_attn_implementation_autoset",
            "torch_dtype", "dtype", "architectures")


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` (and ``TRANSFORMERS_OFFLINE=1``) while Hugging Face libraries read local files."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def is_hf_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def require_local(text: str) -> Path:
    """The local directory ``text`` names; a hub id (``bert-base-uncased``, ``org/name``) is refused."""
    path = Path(text).expanduser()
    if is_hf_dir(path):
        return path.resolve()
    if path.exists():
        raise ConfigError(f"{path} is not a Hugging Face model directory (it has no config.json).")
    raise ConfigError(f"'{text}' is not a local directory; deepslim never downloads models, so download it first "
                      f"(e.g. `huggingface-cli download {text} --local-dir ./{Path(text).name}`) and give that "
                      "directory.")


# --- configs ----------------------------------------------------------------------------------

def config_dict(config: Any) -> dict[str, Any]:
    """A config as plain JSON (string keys), without what describes the file rather than the model."""
    data = json.loads(config.to_json_string(use_diff=False))
    return {k: v for k, v in data.items() if k not in _DROPPED}


def make_config(kwargs: dict[str, Any], *, trust_code: bool = False) -> Any:
    """A ``transformers`` config from its JSON: a model type ``transformers`` registers, or one whose own code
    (:data:`CODE_KEY`) the user allowed (``trust_code`` or ``--trust-code``) and whose files are unchanged."""
    from transformers import CONFIG_MAPPING
    kwargs = dict(kwargs)
    model_type = kwargs.pop("model_type", None)
    code = kwargs.pop(CODE_KEY, None)
    if isinstance(kwargs.get("pruned_heads"), dict):  # JSON keys are strings; transformers indexes layers by int
        try:
            kwargs["pruned_heads"] = {int(k): sorted(int(h) for h in v) for k, v in kwargs["pruned_heads"].items()}
        except (TypeError, ValueError) as exc:
            raise ModelError(f"The config's pruned_heads is not a map of layer to head indices ({first_line(exc)}).") \
                from exc
    if kwargs.get("auto_map") and code is None:
        raise ModelError(f"The {model_type} config: {CUSTOM_CODE}, and the directory that holds them; give that "
                         "directory as the model.")
    if code is not None and "AutoConfig" in kwargs.get("auto_map", {}):
        factory = custom_class(code, kwargs["auto_map"], "AutoConfig", trust_code=trust_code)
    elif model_type in CONFIG_MAPPING:  # a known config whose model classes may still be the directory's own
        if code is not None:
            checked_code(code, trust_code=trust_code)
        factory = CONFIG_MAPPING[model_type]
    else:
        raise ModelError(f"'{model_type}' is not a model type transformers knows; give a config with model_type "
                         "one of bert, distilbert, roberta, vit, deit, ... (transformers.CONFIG_MAPPING).")
    try:
        config = factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"The {model_type} config is invalid: {first_line(exc)}.") from exc
    if code is not None:
        setattr(config, CODE_KEY, code)  # config_dict gives it back; save_dir keeps it out of config.json
    return config


# --- custom modelling code (--trust-code) -----------------------------------------------------

def code_record(directory: Path) -> dict[str, Any]:
    """The Python files of a model directory with custom code, and their sha256: what a bundle records."""
    from deepslim.fileio import sha256_file
    files = sorted(p for p in directory.glob("*.py") if p.is_file())
    return {"directory": str(directory.resolve()), "sha256": {p.name: sha256_file(p) for p in files}}


def checked_code(code: Any, *, trust_code: bool = False) -> Path:
    """The directory of a recorded custom-code record, once the user allowed running it and every file still
    has its recorded sha256."""
    from deepslim.fileio import sha256_file
    from deepslim.trust import check_importable, current_policy
    if not (isinstance(code, dict) and isinstance(code.get("directory"), str)
            and isinstance(code.get("sha256"), dict)):
        raise ModelError(f"The config's {CODE_KEY} is not a record of a directory and its files' sha256.")
    directory = Path(code["directory"])
    if not (trust_code or current_policy().trust_code):
        raise UntrustedCodeError(f"The model runs its own modelling code from {directory} (auto_map in its "
                                 "config); pass --trust-code if you trust that directory's Python files.")
    if not directory.is_dir():
        raise ModelError(f"The model's modelling code lay in {directory}, which is gone; restore that directory "
                         "(its Python files with their recorded sha256).")
    for name, recorded in sorted(code["sha256"].items()):
        file = directory / name
        if not file.is_file():
            raise ModelError(f"{file}, part of the model's modelling code, is gone; restore it.")
        check_importable(file)
        if (actual := sha256_file(file)) != recorded:
            raise ModelError(f"{file} has sha256 {actual}, but the model was saved with modelling code of sha256 "
                             f"{recorded}; restore that file (or load the directory afresh).")
    return directory


def custom_class(code: Any, auto_map: Any, auto_name: str, *, trust_code: bool = False) -> Any:
    """The class ``auto_map[auto_name]`` names (``module.Class``), imported by ``transformers`` from the recorded,
    checked directory."""
    directory = checked_code(code, trust_code=trust_code)
    ref = auto_map.get(auto_name) if isinstance(auto_map, dict) else None
    if not isinstance(ref, str) or "--" in ref:
        raise ModelError(f"The config's auto_map names no local {auto_name} class in {directory}"
                         + (" (it points to another repository)" if isinstance(ref, str) else "") + ".")
    module = ref.split(".")[0]
    if module + ".py" not in code["sha256"]:
        raise ModelError(f"The config's auto_map names {ref}, but {module}.py is not among the recorded files of "
                         f"{directory}.")
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    with offline():
        try:
            return get_class_from_dynamic_module(ref, str(directory), local_files_only=True)
        except Exception as exc:  # the user's own code: any failure to import it is one sentence
            raise ModelError(f"Cannot import {ref} from {directory}: {type(exc).__name__}: {first_line(exc)}.") \
                from exc


def head_for(config: Any, *, text: bool | None = None) -> str:
    """The head (:data:`HEADS`) a config is built with: the one its ``architectures`` names, else the one its
    model type supports (``text`` decides when it supports both)."""
    from transformers.models.auto import modeling_auto as auto
    names = list(getattr(config, "architectures", None) or [])
    names += [HEADS_AUTO.get(k, "") for k in (getattr(config, "auto_map", None) or {})]
    for head, suffix in (("sequence-classification", "ForSequenceClassification"),
                         ("image-classification", "ForImageClassification")):
        if any(n.endswith(suffix) for n in names):
            return head
    seq = config.model_type in auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    img = config.model_type in auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
    if seq and (not img or text):
        return "sequence-classification"
    if img:
        return "image-classification"
    raise ModelError(f"transformers has no sequence or image classification head for '{config.model_type}'.")


def with_task(kwargs: dict[str, Any], task: Task) -> dict[str, Any]:
    """Config JSON whose head fits ``task``: ``num_labels``, label names and ``problem_type``."""
    problem = {TaskKind.CLASSIFICATION: "single_label_classification",
               TaskKind.MULTILABEL: "multi_label_classification", TaskKind.REGRESSION: "regression"}[task.kind]
    labels = list(task.names)
    return {**kwargs, "num_labels": task.width, "problem_type": problem,
            "id2label": {str(i): n for i, n in enumerate(labels)}, "label2id": {n: i for i, n in enumerate(labels)}}


def task_of(config: Any) -> Task:
    """The task a fine-tuned head's config describes (classification unless ``problem_type`` says otherwise)."""
    names = [str(config.id2label[i]) for i in sorted(config.id2label)] if config.id2label else None
    if config.problem_type == "regression":
        return Task(TaskKind.REGRESSION, tuple(names or [f"target_{i}" for i in range(config.num_labels)]))
    names = names or [str(i) for i in range(config.num_labels)]
    if config.problem_type == "multi_label_classification":
        return Task(TaskKind.MULTILABEL, tuple(names))
    return Task.classification(names)


# --- building and loading ---------------------------------------------------------------------

def spec_for(config: Any, head: str) -> ArchSpec:
    return ArchSpec(ArchSource.HF, head, config_dict(config))


def build(spec: ArchSpec, *, pretrained: str | Path | None = None, trust_code: bool = False) -> Any:
    """The model ``spec`` describes, with random weights or those of the local directory ``pretrained`` (a head
    that does not fit the config is initialised afresh, as ``from_pretrained`` does)."""
    import transformers
    if spec.name not in HEADS:
        raise ModelError(f"Unknown Hugging Face head '{spec.name}'; deepslim builds {', '.join(HEADS)}.")
    config = make_config(spec.kwargs, trust_code=trust_code)
    code = getattr(config, CODE_KEY, None)
    if code is not None:
        model_class = custom_class(code, config.auto_map, HEADS[spec.name], trust_code=trust_code)
        make, load = model_class._from_config, model_class.from_pretrained
    else:
        auto = getattr(transformers, HEADS[spec.name])
        make, load = auto.from_config, auto.from_pretrained
    with offline():
        if pretrained is None:
            return make(config)
        try:
            return load(str(pretrained), config=config, local_files_only=True, ignore_mismatched_sizes=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"Cannot load the weights of {pretrained}: {first_line(exc)}.") from exc


def read_config(directory: Path, *, trust_code: bool = False) -> Any:
    """A local directory's config; one with its own modelling code needs ``trust_code`` (or ``--trust-code``),
    and then records its Python files (:func:`code_record`)."""
    from transformers import AutoConfig
    from deepslim.trust import current_policy
    trusted = trust_code or current_policy().trust_code
    try:
        declared = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{directory}/config.json cannot be read: {first_line(exc)}.") from exc
    custom = isinstance(declared, dict) and bool(declared.get("auto_map"))
    if custom and not trusted:
        raise UntrustedCodeError(f"{directory}: {CUSTOM_CODE} (they run as Python when the model is built).")
    code, load = (code_record(directory) if custom else None), AutoConfig.from_pretrained
    if custom and "AutoConfig" in declared["auto_map"]:
        load = custom_class(code, declared["auto_map"], "AutoConfig", trust_code=True).from_pretrained
    with offline():
        try:
            config = load(str(directory), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{directory}/config.json cannot be read: {first_line(exc)}.") from exc
    if code is not None:
        setattr(config, CODE_KEY, code)
    return config


def read_tokenizer(source: str | Path, *, max_length: int | None = None, model_limit: int | None = None) -> TextSpec:
    """The tokenizer of a local directory (or a ``tokenizer.json`` file) as a :class:`TextSpec`."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    path = Path(source).expanduser()
    with offline():
        try:
            if path.is_file():
                tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
            else:
                tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, use_fast=True)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"Cannot read a tokenizer from {path}: {first_line(exc)}.") from exc
    return TextSpec.from_tokenizer(tok, max_length=max_length, model_limit=model_limit)


def has_tokenizer(directory: Path) -> bool:
    return any((directory / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"))


def position_limit(config: Any) -> int | None:
    """The longest sequence the model's position embeddings take (RoBERTa's start after its padding index)."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int):
        return None
    return limit - 2 if config.model_type in ("roberta", "xlm-roberta", "camembert") else limit


# --- signatures -------------------------------------------------------------------------------

def text_inputs(model: Any, text: TextSpec) -> tuple[TensorSpec, ...]:
    """The token inputs of a text model: the tokenizer's inputs its ``forward`` takes, in ``forward``'s order,
    each ``(batch, sequence)`` int64."""
    import inspect
    params = list(inspect.signature(model.forward).parameters)
    names = [p for p in params if p in text.model_input_names]
    if "input_ids" not in names:
        raise ModelError("The model's forward takes no input_ids, so it cannot read text.")
    kinds = {"attention_mask": InputKind.MASK}
    return tuple(TensorSpec(n, (BATCH, "sequence"), "int64", kinds.get(n, InputKind.TOKENS)) for n in names)


def image_input(config: Any, mean: tuple[float, ...], std: tuple[float, ...], name: str = "pixel_values"
                ) -> TensorSpec:
    """The image input of an image model: its config's channels and size, the data's (or processor's) stats."""
    channels = int(getattr(config, "num_channels", 3))
    size = getattr(config, "image_size", 224)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    mean = mean if len(mean) == channels else (sum(mean) / len(mean),) * channels
    std = std if len(std) == channels else (sum(std) / len(std),) * channels
    return TensorSpec(name, (BATCH, channels, int(h), int(w)), "float32", InputKind.IMAGE, tuple(mean), tuple(std),
                      "GRAY" if channels == 1 else "RGB")


def processor_stats(directory: Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``image_mean``/``image_std`` of a directory's ``preprocessor_config.json``, if it has one."""
    file = directory / "preprocessor_config.json"
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
        return tuple(map(float, data["image_mean"])), tuple(map(float, data["image_std"]))
    except (ValueError, KeyError, TypeError):
        return None


def resized(spec: ArchSpec, size: int | tuple[int, int] | None, channels: int | None) -> ArchSpec:
    """An image model's config with ``--input-size`` / ``--channels`` applied."""
    kwargs = dict(spec.kwargs)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        kwargs["image_size"] = h if h == w else [h, w]
    if channels is not None:
        kwargs["num_channels"] = channels
    return replace(spec, kwargs=kwargs)
