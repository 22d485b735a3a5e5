"""The model bundle: one ``.safetensors`` file, weights plus a versioned JSON header.

Header (``metadata["deepslim"]``)::

    {"format": "deepslim.bundle", "format_version": 1,
     "arch": {"source": "torchvision", "name": "resnet18", "kwargs": {...}},
     "signature": {"inputs": [{"name": "x", "shape": ["batch", 3, 32, 32], "kind": "image",
                               "dtype": "float32", "mean": [...], "std": [...], "channel_order": "RGB"}],
                   "outputs": ["logits"], "task_output": "logits", "output_layout": "tensor"},
     "task": {"kind": "classification", "names": ["0", "1", ...], "primary": "top1"},
     "input": {...}, "classes": [...],   # one-image classifiers: what readers before signatures read
     "structure": {"modules": {"layer1.0.conv1": {"out_channels": 32}},
                   "tensors": {"layer1.0.conv1.weight": [32, 64, 3, 3]}},
     "lineage": [{"stage": "train", "config": {...}, "seconds": 12.3, "metrics": {...}}]}

``structure`` records how the model differs from a freshly built architecture
(pruning changes channel counts): the changed scalar attributes of each module
and the new shapes of its tensors. Loading rebuilds the architecture, applies
those changes, then loads the weights — bit-exact, and without pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from deepslim.errors import ConfigError, InputFileError, ModelError, first_line
from deepslim.fileio import SIDECAR, atomic_path, require_model
from deepslim.described import Described
from deepslim.signature import Signature
from deepslim.spec import ArchSpec, InputSpec, StageRecord
from deepslim.tasks import Task

FORMAT = "deepslim.bundle"
FORMAT_VERSION = 1
METADATA_KEY = "deepslim"

_ATTR_TYPES = (int, float, bool, str, type(None))


@dataclass
class Header(Described):
    """A bundle's header. An :class:`InputSpec` and a class list are accepted for ``signature`` and ``task``
    (a one-image classifier, as headers before signatures described it; they still load)."""

    arch: ArchSpec
    signature: Signature
    task: Task
    structure: dict[str, Any] = field(default_factory=lambda: {"modules": {}, "tensors": {}})
    lineage: list[StageRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._coerce()

    def to_json(self) -> dict[str, Any]:
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": self.arch.to_json(),
                "signature": self.signature.to_json(), "task": self.task.to_json(), "classes": self.classes,
                "structure": self.structure, "lineage": [r.to_json() for r in self.lineage]}
        if self.signature.single_image:  # what deepslim before signatures reads
            data["input"] = self.input_spec.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Header:
        signature = (Signature.from_json(data["signature"]) if "signature" in data
                     else Signature.from_input_spec(InputSpec.from_json(data["input"])))
        task = Task.from_json(data["task"]) if "task" in data else Task.classification(list(data["classes"]))
        return cls(ArchSpec.from_json(data["arch"]), signature, task,
                   data.get("structure") or {"modules": {}, "tensors": {}},
                   [StageRecord.from_json(r) for r in data.get("lineage", [])])


def write(path: str | Path, state_dict: dict[str, torch.Tensor], header: Header) -> Path:
    """Write weights and header atomically to ``path``."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    metadata = {"format": "pt", METADATA_KEY: json.dumps(header.to_json(), sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_header(path: str | Path) -> Header | None:
    """Return the deepslim header of a safetensors file or of a directory deepslim wrote (its ``deepslim.json``),
    or None if it has none (weights alone, a Hugging Face directory deepslim did not write)."""
    path = require_model(path, "model file")
    if path.is_dir():
        sidecar = path / SIDECAR
        try:
            raw = sidecar.read_text() if sidecar.is_file() else None
        except OSError as exc:
            raise InputFileError(f"{sidecar} cannot be read ({exc}).") from exc
    else:
        raw = _read_metadata(path).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            raise ValueError("not a deepslim header")
        version = int(data["format_version"])
        if version > FORMAT_VERSION:
            raise InputFileError(f"{path} is a bundle of format version {version}; this deepslim reads up to "
                                 f"{FORMAT_VERSION}, so upgrade deepslim.")
        return Header.from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
        raise InputFileError(f"{path} has a corrupt deepslim header ({exc}).") from exc


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file (never unpickles)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise InputFileError(f"{path} is not a readable safetensors file ({first_line(exc)}).") from exc


def _read_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise InputFileError(f"{path} is not a readable safetensors file: it is corrupt or truncated "
                             f"({first_line(exc)}).") from exc


# --- structural changes -----------------------------------------------------------------------

def capture_structure(model: nn.Module, reference: nn.Module) -> dict[str, Any]:
    """Describe how ``model`` differs structurally from a freshly built ``reference``."""
    ref_modules = dict(reference.named_modules())
    modules: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        ref = ref_modules.get(name)
        # by name: a user architecture file imported twice gives two distinct but identical classes
        if ref is None or type(ref).__qualname__ != type(module).__qualname__:
            raise ModelError(f"Module '{name}' ({type(module).__name__}) is not part of the architecture, so the "
                             "model cannot be saved as a rebuildable bundle.")
        ref_attrs = _scalar_attrs(ref)
        changed = {k: _jsonable(v) for k, v in _scalar_attrs(module).items()
                   if ref_attrs.get(k, _MISSING) != v}
        if changed:
            modules[name] = changed
    ref_state = reference.state_dict()
    tensors = {k: list(v.shape) for k, v in model.state_dict().items()
               if k in ref_state and tuple(ref_state[k].shape) != tuple(v.shape)}
    return {"modules": modules, "tensors": tensors}


def apply_structure(model: nn.Module, structure: dict[str, Any]) -> nn.Module:
    """Reshape a freshly built ``model`` in place as ``structure`` describes (only plain settings the
    architecture has, with values of their type, and tensor shapes); anything else is a ModelError."""
    try:
        return _apply_structure(model, structure)
    except (AttributeError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"The bundle's structure section is malformed ({first_line(exc)}).") from exc


def _apply_structure(model: nn.Module, structure: dict[str, Any]) -> nn.Module:
    named = dict(model.named_modules())
    for name, attrs in structure.get("modules", {}).items():
        module = _lookup(named, name)
        allowed = _scalar_attrs(module)  # only plain settings the architecture has (out_channels, ...)
        for key, value in attrs.items():
            if key.startswith("__") or key not in allowed or not _same_kind(allowed[key], value):
                raise ModelError(f"The bundle changes '{name}.{key}', which is not a plain setting of that module.")
            setattr(module, key, tuple(value) if isinstance(value, list) else value)
    for name, shape in structure.get("tensors", {}).items():
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ModelError(f"The bundle gives '{name}' the shape {shape}, which is not a list of sizes.")
        owner, _, attr = name.rpartition(".")
        module = _lookup(named, owner)
        old = getattr(module, attr, None)
        if not isinstance(old, torch.Tensor):
            raise ModelError(f"The bundle reshapes '{name}', which the architecture does not have.")
        new = torch.empty(shape, dtype=old.dtype, device=old.device)
        if isinstance(old, nn.Parameter):
            setattr(module, attr, nn.Parameter(new, requires_grad=old.requires_grad))
        else:
            module._buffers[attr] = new
    return model


_MISSING = object()


def _scalar_attrs(module: nn.Module) -> dict[str, Any]:
    out = {}
    for key, value in vars(module).items():
        if key == "training" or key.startswith("_forward") or key.startswith("_backward"):
            continue
        if isinstance(value, _ATTR_TYPES) or (isinstance(value, (tuple, list))
                                              and all(isinstance(v, _ATTR_TYPES) for v in value)):
            out[key] = value
    return out


def _same_kind(old: Any, new: Any) -> bool:
    """``new`` (from JSON) may replace ``old``: both scalars of one type (int for float, None either way), or
    a list for a tuple/list of scalars."""
    if isinstance(old, (tuple, list)):
        return isinstance(new, list) and all(isinstance(v, _ATTR_TYPES) for v in new)
    if old is None or new is None:
        return isinstance(new, _ATTR_TYPES) or (isinstance(new, list) and all(isinstance(v, _ATTR_TYPES) for v in new))
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, float):
        return isinstance(new, (int, float))
    return type(new) is type(old)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _lookup(named: dict[str, nn.Module], name: str) -> nn.Module:
    if name not in named:
        raise ModelError(f"The bundle changes module '{name}', which the architecture does not have.")
    return named[name]
