"""The model bundle in memory and the one loader behind every command that takes a model (and saving it).

The architectures themselves (the built-in CNN, the torchvision zoo, user files) live in
:mod:`deepslim.architectures`; their names stay importable from here.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepslim import bundle as bundle_format
from deepslim.architectures import (BUILTIN, SmallCNN, build_model, check_shape_options, find_head,
                                    known_architectures, replace_head, resolve_arch, torchvision_names)
from deepslim.codespec import parse_code_spec
from deepslim.errors import ConfigError, InputFileError, ModelError, StateDictMismatchError, UnsafePickleError, first_line
from deepslim.fileio import check_new_outputs, require_file, sha256_file
from deepslim.described import Described
from deepslim.signature import InputKind, Signature, TensorSpec
from deepslim.spec import ArchSource, ArchSpec, InputSpec, StageRecord
from deepslim.modelio import bind_inputs, forward_names, probe_outputs
from deepslim.tasks import Task
from deepslim.trust import allow_code, authorise, current_policy

__all__ = ["BUILTIN", "EXPORTED_SUFFIXES", "IMAGENET_MEAN", "IMAGENET_STD", "PICKLE_SUFFIXES", "ModelBundle",
           "SmallCNN", "build_model", "check_finite", "check_saveable", "find_head", "known_architectures",
           "load_model", "load_weights", "replace_head", "resolve_arch", "save_model", "torchvision_names"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".bin", ".ckpt", ".tar"}
EXPORTED_SUFFIXES = {".onnx", ".xml", ".engine", ".plan"}


@dataclass
class ModelBundle(Described):
    """A model together with everything needed to rebuild, feed and trace it: its architecture, its
    :class:`~deepslim.signature.Signature` (inputs, outputs) and :class:`~deepslim.tasks.Task`.

    An :class:`InputSpec` and a class list are accepted for ``signature`` and ``task`` (a one-image
    classifier); ``input_spec`` and ``classes`` read them back for image-only code."""

    model: nn.Module
    arch: ArchSpec
    signature: Signature
    task: Task
    lineage: list[StageRecord] = field(default_factory=list)
    path: Path | None = None

    def __post_init__(self) -> None:
        self._coerce()

    @property
    def num_classes(self) -> int:
        return self.task.width

    def with_record(self, record: StageRecord, model: nn.Module | None = None) -> ModelBundle:
        """A copy with ``record`` appended to the lineage (and optionally a new module)."""
        return replace(self, model=model if model is not None else self.model,
                       lineage=[*self.lineage, record], path=None)


# --- loading and saving -----------------------------------------------------------------------

def load_model(source: str | Path | None = None, *, arch: str | None = None, weights: str | Path | None = None,
               num_classes: int | None = None, input_size: int | tuple[int, int] | None = None,
               channels: int | None = None, arch_kwargs: dict[str, Any] | None = None, pretrained: str | None = None,
               classes: list[str] | None = None, mean: tuple[float, ...] | None = None,
               std: tuple[float, ...] | None = None, trust_pickle: bool = False,
               trust_code: bool = False, task: Task | None = None, inputs: tuple[TensorSpec, ...] | None = None,
               inputs_by_name: bool = False, output: str | None = None, tokenizer: str | Path | None = None,
               max_length: int | None = None) -> ModelBundle:
    """Load a model from a bundle, an architecture (+ state_dict), or a pickled module.

    ``source`` is a deepslim bundle (``.safetensors``) or, with ``trust_pickle``, a whole
    pickled module. Without ``source``, ``arch`` names a built-in or torchvision
    architecture or ``path/file.py:build_fn``; ``weights`` is a state_dict file loaded with
    ``weights_only=True`` (or a plain safetensors file). Never unpickles unless asked.

    A new model takes one image (``channels``, ``input_size`` ``N`` or ``(H, W)``, ``mean``/``std``)
    unless ``inputs`` describes its inputs (from the data, :func:`deepslim.samples.propose_inputs`),
    renamed after ``forward``'s parameters (checked by name with ``inputs_by_name``). ``task`` (default:
    classification over ``classes``) sets the output width; ``output`` names the output the task
    reads when the model returns several.

    ``arch="hf:bert"`` (a model type, config from ``arch_kwargs``) or ``"hf:DIR"`` (a local Hugging Face
    directory) builds a Hugging Face classifier (:mod:`deepslim.hf_bundle`): a text one fed by ``tokenizer``
    (or the directory's) when ``inputs`` are tokens, else an image one. ``source`` may be a directory deepslim
    wrote (``deepslim.json`` beside the config).

    A bundle whose architecture is the user's ``file.py:fn`` runs that file only with
    ``trust_code`` or inside :func:`deepslim.trust.allow_code` naming it, and only when its
    sha256 matches the one recorded.
    """
    if source is not None and arch is not None:
        raise ConfigError("Give either a model file or --arch (with --weights), not both.")
    if source is None and arch is None:
        raise ConfigError("Give a model file (bundle) or --arch NAME.")
    if source is not None:
        with allow_code(trust_code=trust_code):
            return _load_file(Path(source), trust_pickle=trust_pickle, input_size=input_size, channels=channels,
                              mean=mean, std=std)
    if task is None:
        if classes is None:
            classes = [str(i) for i in range(num_classes or 1000)]
        task = Task.classification(classes)
    elif num_classes is not None and num_classes != task.width:
        raise ConfigError(f"--num-classes {num_classes} does not match the data's {task.width} outputs.")
    if arch.startswith("hf:"):
        from deepslim.hf_bundle import new_model
        return new_model(arch[len("hf:"):], task=task, inputs=inputs, arch_kwargs=dict(arch_kwargs or {}),
                         weights=weights, input_size=input_size, channels=channels, mean=mean, std=std,
                         tokenizer=tokenizer, max_length=max_length, trust_code=trust_code)
    if tokenizer is not None or max_length is not None:
        raise ConfigError("--tokenizer and --max-length apply to Hugging Face text models (--arch hf:NAME).")
    kwargs = {**_data_kwargs(arch, inputs), **(arch_kwargs or {})}
    spec, size, chans = resolve_arch(arch, num_classes=task.width, input_size=input_size, channels=channels,
                                     kwargs=kwargs)
    model = build_model(spec, pretrained=pretrained)
    if weights is not None:
        load_weights(model, weights, label=spec.name)
    if inputs is None:
        image = InputSpec.create(chans, size, mean or IMAGENET_MEAN, std or IMAGENET_STD)
        names = forward_names(model)
        inputs = (TensorSpec.from_input_spec(image, names[0] if names else "input"),)
    else:
        inputs = bind_inputs(model, _sized(inputs, size, chans, input_size is not None, channels is not None),
                             by_name=inputs_by_name)
    signature = probe_outputs(model, Signature(inputs, (_single_output(task),), _single_output(task)), task,
                              choice=output)
    return ModelBundle(model.eval(), spec, signature, task)


def _single_output(task: Task) -> str:
    return "prediction" if task.kind.value == "regression" else "logits"


def _data_kwargs(arch: str, inputs: tuple[TensorSpec, ...] | None) -> dict[str, Any]:
    """What a built-in architecture learns from the data's inputs (an MLP's ``in_features``)."""
    if arch == "mlp" and inputs:
        widths = [i.sample_shape[-1] for i in inputs if i.kind is InputKind.FEATURES]
        return {"in_features": int(widths[0])} if len(widths) == 1 and isinstance(widths[0], int) else {}
    return {}


def _sized(inputs: tuple[TensorSpec, ...], size: Any, chans: int, size_given: bool,
           chans_given: bool) -> tuple[TensorSpec, ...]:
    """The data's image input resized to ``--input-size`` / given ``--channels`` when the user said so."""
    out = []
    for spec in inputs:
        if spec.kind is InputKind.IMAGE and (size_given or chans_given):
            h, w = (size, size) if isinstance(size, int) else size
            c = chans if chans_given else spec.channels
            mean = spec.mean if len(spec.mean) == c else (sum(spec.mean) / len(spec.mean),) * c
            std = spec.std if len(spec.std) == c else (sum(spec.std) / len(spec.std),) * c
            spec = replace(spec, shape=("batch", c, h, w), mean=tuple(mean), std=tuple(std),
                           channel_order="GRAY" if c == 1 else "RGB")
        out.append(spec)
    return tuple(out)


def _load_file(path: Path, *, trust_pickle: bool, input_size: int | None, channels: int | None,
               mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> ModelBundle:
    from deepslim import hf
    if path.is_dir():
        if (path / hf.SIDECAR).is_file():
            from deepslim.hf_bundle import load_dir
            return load_dir(path.resolve(), trust_code=current_policy().trust_code)
        if hf.is_hf_dir(path):
            raise ConfigError(f"{path} is a Hugging Face directory that deepslim did not write; its task comes from "
                              f"the data, so give --dataset (or load it with --arch hf:{path}).")
    require_file(path, "model file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        header = bundle_format.read_header(path)
        if header is None:
            raise ModelError(f"{path} holds weights without a deepslim header; load it with --arch NAME "
                             f"--weights {path}.")
        return _load_bundle(path, header)
    if suffix in EXPORTED_SUFFIXES:
        raise ModelError(f"{path} is an exported artifact; this command needs a PyTorch model (a bundle, "
                         "--arch with --weights, or a pickled module with --trust-pickle).")
    if suffix not in PICKLE_SUFFIXES:
        raise InputFileError(f"{path} has an unknown model format '{suffix}'; use a .safetensors bundle, "
                             "or --arch NAME --weights FILE.")
    obj = _torch_load(path, trust_pickle=trust_pickle)
    if isinstance(obj, dict):
        raise ModelError(f"{path} is a state_dict, not a model; load it with --arch NAME --weights {path}.")
    if not isinstance(obj, nn.Module):
        raise ModelError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module.")
    check_shape_options(input_size, channels)
    if input_size is None:
        raise ConfigError(f"{path} is a pickled module without an input spec; pass --input-size (and --channels "
                          "if its first layer does not tell).")
    check_finite(obj.state_dict(), source=path)
    spec = ArchSpec(ArchSource.PICKLE, f"{type(obj).__module__}.{type(obj).__qualname__}")
    chans, size = channels or _guess_channels(obj), input_size
    n = _guess_num_classes(obj)
    image = InputSpec.create(chans, size, mean or IMAGENET_MEAN, std or IMAGENET_STD)
    names = forward_names(obj)
    signature = Signature((TensorSpec.from_input_spec(image, names[0] if names else "input"),), ("logits",), "logits")
    task = Task.classification([str(i) for i in range(n)])
    return ModelBundle(obj.eval(), spec, probe_outputs(obj, signature, task), task, path=path)


def _load_bundle(path: Path, header: bundle_format.Header) -> ModelBundle:
    arch = _authorised_arch(header.arch, path)
    model = build_model(arch)
    bundle_format.apply_structure(model, header.structure)
    _load_state(model, bundle_format.read_tensors(path), label=header.arch.name, source=path)
    return ModelBundle(model.eval(), arch, header.signature, header.task, header.lineage, path)


def _authorised_arch(spec: ArchSpec, bundle_path: Path) -> ArchSpec:
    """The architecture file a bundle names, located and allowed (:func:`deepslim.trust.authorise`)."""
    if spec.source is not ArchSource.FILE:
        return spec
    named = parse_code_spec(spec.name)
    if named is None:
        raise ModelError(f"{bundle_path} names the architecture '{spec.name}', which is not path/file.py:function.")
    file, fn = named
    located = _locate_arch_file(file, spec.file_sha256, bundle_path)
    resolved = authorise(located, fn, spec.file_sha256, source=bundle_path)
    return replace(spec, name=f"{resolved}:{fn}")


def _locate_arch_file(file: Path, sha256: str | None, bundle_path: Path) -> Path:
    """The architecture file to run: a file the user named, the recorded path (a relative one is relative to
    the bundle) or the same-named copy beside the bundle, the first whose content matches the recorded sha256;
    without a match (or a hash), the first of the last two that exists (authorise then names both hashes)."""
    located = [p for p in dict.fromkeys([file if file.is_absolute() else bundle_path.parent / file,
                                         bundle_path.parent / file.name]) if p.is_file()]
    if sha256 is not None:
        named = [f for f in sorted(current_policy().files) if f.is_file()]
        matching = [c for c in named + located if sha256_file(c) == sha256]
        if matching:
            return matching[0]
    if not located:
        raise ModelError(f"{bundle_path} is built by {file}, which does not exist; put that file beside the bundle "
                         "(or name it with --arch FILE.py:fn).")
    return located[0]


def _torch_load(path: Path, *, trust_pickle: bool, weights: bool = False) -> Any:
    """torch.load with ``weights_only=True``; full unpickling only for a module the user trusts."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():
            raise InputFileError(f"{path} is corrupt or not a PyTorch file (torch.load cannot read it).") from exc
        if weights:
            raise ModelError(f"{path} holds pickled Python objects, not a plain state_dict; re-save it with "
                             "torch.save(model.state_dict(), path).") from exc
        if not trust_pickle:
            raise UnsafePickleError(
                f"{path} is a pickled Python object and unpickling can run arbitrary code; pass --trust-pickle "
                "if you trust its source, or save a state_dict and use --arch NAME --weights FILE.") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputFileError(f"{path} is corrupt or truncated and cannot be read ({first_line(exc)}).") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # arbitrary unpickling failures of a trusted file
        raise InputFileError(f"{path} cannot be unpickled: {type(exc).__name__}: {first_line(exc)}.") from exc


def load_weights(model: nn.Module, weights: str | Path, *, label: str) -> nn.Module:
    """Load a state_dict file (``weights_only=True`` or safetensors) into ``model``, strictly."""
    path = require_file(weights, "weights file")
    if path.suffix.lower() == ".safetensors":
        state = bundle_format.read_tensors(path)
    else:
        state = _torch_load(path, trust_pickle=False, weights=True)
    state = _unwrap_state_dict(state, path)
    return _load_state(model, state, label=label, source=path)


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} is not a state_dict (a mapping of parameter names to tensors).")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], *, label: str, source: Path) -> nn.Module:
    own = model.state_dict()
    shapes = [f"'{k}' has shape {tuple(v.shape)} in the file but {tuple(own[k].shape)} in the model"
              for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    missing = [f"the model's '{k}' is missing from the file" for k in own if k not in state]
    extra = [f"the file has '{k}', which the model does not" for k in state if k not in own]
    problems = shapes + missing + extra
    if problems:
        more = f" (and {len(problems) - 1} more mismatches)" if len(problems) > 1 else ""
        raise StateDictMismatchError(f"Weights {source} do not fit {label}: {problems[0]}{more}.")
    check_finite({k: state[k] for k in own}, source=source)
    # safetensors keeps no per-module version metadata; the architecture's own is right for it (MNASNet checks it)
    state = OrderedDict(state)
    state._metadata = getattr(own, "_metadata", None)
    model.load_state_dict(state, strict=True)
    return model


def check_finite(state: dict[str, torch.Tensor], *, source: str | Path) -> None:
    """Raise a ModelError naming the floating-point tensors of ``state`` that hold NaN or Inf (first few + count):
    such weights come from a corrupt file or a diverged training run, and would give NaN outputs later."""
    bad = [k for k, v in state.items() if (v.is_floating_point() or v.is_complex()) and not torch.isfinite(v).all()]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ModelError(f"{source} has weights that are not finite (NaN or Inf) in {len(bad)} "
                         f"tensor{'s' if len(bad) > 1 else ''}: {', '.join(bad[:3])}{more}; the file is corrupt or "
                         "training diverged, so restore it or retrain.")


def check_saveable(bundle: ModelBundle, out: str | Path | None = None) -> None:
    """Fail early (before long work) if ``bundle`` could not be saved as a bundle (or at ``out``: a directory
    is for Hugging Face models only)."""
    if out is not None and Path(out).suffix == "" and bundle.arch.source is not ArchSource.HF:
        raise ConfigError(f"Only Hugging Face models are saved as directories; name the output "
                          f"{Path(out).with_suffix('.safetensors')}.")
    if bundle.arch.source is ArchSource.PICKLE:
        raise ModelError("A model loaded from a pickle has no rebuildable architecture; load it with --arch NAME "
                         "--weights FILE to save it as a bundle.")


def save_model(bundle: ModelBundle, path: str | Path, *, force: bool = False) -> Path:
    """Write ``bundle`` as a pickle-free ``.safetensors`` bundle (atomically).

    An existing ``path`` is replaced only with ``force=True`` (the CLI's ``--force`` rule).
    """
    check_saveable(bundle)
    if Path(path).suffix == "" and bundle.arch.source is ArchSource.HF:
        from deepslim.hf_bundle import save_dir
        return save_dir(bundle, path, force=force)
    if Path(path).suffix.lower() != ".safetensors":
        raise ConfigError(f"Bundles are .safetensors files; name the output {Path(path).with_suffix('.safetensors')}.")
    check_new_outputs([path], force=force)
    reference = _reference_model(bundle.arch)
    header = bundle_format.Header(bundle.arch, bundle.signature, bundle.task,
                                  bundle_format.capture_structure(bundle.model, reference), list(bundle.lineage))
    return bundle_format.write(path, bundle.model.state_dict(), header)


def _reference_model(spec: ArchSpec) -> nn.Module:
    """A freshly built model to diff against, built on the meta device (no memory, no RNG use)."""
    try:
        with torch.device("meta"):
            return build_model(spec)
    except (ModelError, NotImplementedError, RuntimeError):
        with torch.random.fork_rng():
            return build_model(spec)


def _guess_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    return first.in_channels if isinstance(first, nn.Conv2d) else 3


def _guess_num_classes(model: nn.Module) -> int:
    name, head = find_head(model)
    return int(getattr(head, "out_features", getattr(head, "out_channels", 0)))

