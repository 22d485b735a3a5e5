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
from deepslim.spec import ArchSource, ArchSpec, InputSpec, StageRecord
from deepslim.trust import allow_code, authorise, current_policy

__all__ = ["BUILTIN", "EXPORTED_SUFFIXES", "IMAGENET_MEAN", "IMAGENET_STD", "PICKLE_SUFFIXES", "ModelBundle",
           "SmallCNN", "build_model", "check_finite", "check_saveable", "find_head", "known_architectures",
           "load_model", "load_weights", "replace_head", "resolve_arch", "save_model", "torchvision_names"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".bin", ".ckpt", ".tar"}
EXPORTED_SUFFIXES = {".onnx", ".xml", ".engine", ".plan"}


@dataclass
class ModelBundle:
    """A model together with everything needed to rebuild, feed and trace it."""

    model: nn.Module
    arch: ArchSpec
    input_spec: InputSpec
    classes: list[str]
    lineage: list[StageRecord] = field(default_factory=list)
    path: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def with_record(self, record: StageRecord, model: nn.Module | None = None) -> ModelBundle:
        """A copy with ``record`` appended to the lineage (and optionally a new module)."""
        return replace(self, model=model if model is not None else self.model,
                       lineage=[*self.lineage, record], path=None)


# --- loading and saving -----------------------------------------------------------------------

def load_model(source: str | Path | None = None, *, arch: str | None = None, weights: str | Path | None = None,
               num_classes: int | None = None, input_size: int | None = None, channels: int | None = None,
               arch_kwargs: dict[str, Any] | None = None, pretrained: str | None = None,
               classes: list[str] | None = None, mean: tuple[float, ...] | None = None,
               std: tuple[float, ...] | None = None, trust_pickle: bool = False,
               trust_code: bool = False) -> ModelBundle:
    """Load a model from a bundle, an architecture (+ state_dict), or a pickled module.

    ``source`` is a deepslim bundle (``.safetensors``) or, with ``trust_pickle``, a whole
    pickled module. Without ``source``, ``arch`` names a built-in or torchvision
    architecture or ``path/file.py:build_fn``; ``weights`` is a state_dict file loaded with
    ``weights_only=True`` (or a plain safetensors file). Never unpickles unless asked.

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
    if classes is not None:
        num_classes = num_classes or len(classes)
    spec, size, chans = resolve_arch(arch, num_classes=num_classes or 1000, input_size=input_size,
                                     channels=channels, kwargs=arch_kwargs)
    model = build_model(spec, pretrained=pretrained)
    if weights is not None:
        load_weights(model, weights, label=spec.name)
    if mean is None or std is None:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    n = spec.kwargs["num_classes"]
    names = list(classes) if classes is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ConfigError(f"{len(names)} class names were given for a model with {n} classes.")
    return ModelBundle(model.eval(), spec, InputSpec.create(chans, size, mean, std), names)


def _load_file(path: Path, *, trust_pickle: bool, input_size: int | None, channels: int | None,
               mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> ModelBundle:
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
    return ModelBundle(obj.eval(), spec, InputSpec.create(chans, size, mean or IMAGENET_MEAN, std or IMAGENET_STD),
                       [str(i) for i in range(n)], path=path)


def _load_bundle(path: Path, header: bundle_format.Header) -> ModelBundle:
    arch = _authorised_arch(header.arch, path)
    model = build_model(arch)
    bundle_format.apply_structure(model, header.structure)
    _load_state(model, bundle_format.read_tensors(path), label=header.arch.name, source=path)
    return ModelBundle(model.eval(), arch, header.input_spec, header.classes, header.lineage, path)


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


def check_saveable(bundle: ModelBundle) -> None:
    """Fail early (before long work) if ``bundle`` could not be saved as a bundle."""
    if bundle.arch.source is ArchSource.PICKLE:
        raise ModelError("A model loaded from a pickle has no rebuildable architecture; load it with --arch NAME "
                         "--weights FILE to save it as a bundle.")


def save_model(bundle: ModelBundle, path: str | Path, *, force: bool = False) -> Path:
    """Write ``bundle`` as a pickle-free ``.safetensors`` bundle (atomically).

    An existing ``path`` is replaced only with ``force=True`` (the CLI's ``--force`` rule).
    """
    check_saveable(bundle)
    if Path(path).suffix.lower() != ".safetensors":
        raise ConfigError(f"Bundles are .safetensors files; name the output {Path(path).with_suffix('.safetensors')}.")
    check_new_outputs([path], force=force)
    reference = _reference_model(bundle.arch)
    header = bundle_format.Header(bundle.arch, bundle.input_spec, list(bundle.classes),
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

