"""Architectures: the built-in CNN, the torchvision zoo by name, the user's ``file.py:fn``; resolving a name and
building it, and finding or replacing the classifier head."""

from __future__ import annotations

import difflib
import functools
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepslim.codespec import code_file, describe_callables, file_callables, parse_code_spec
from deepslim.errors import ConfigError, ModelError, UnknownArchitectureError, first_line
from deepslim.fileio import require_file, sha256_file
from deepslim.spec import ArchSource, ArchSpec
from deepslim.usercode import user_attribute

# --- the built-in CNN -------------------------------------------------------------------------

class SmallCNN(nn.Module):
    """VGG-style CNN for 8x8 to 32x32 inputs: three conv stages, global pooling, linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32,
                 batch_norm: bool = True, dropout: float = 0.2) -> None:
        super().__init__()
        if min(num_classes, in_channels, width) < 1 or not 0 <= dropout < 1:
            raise ValueError("num_classes, in_channels and width must be >= 1 and dropout in [0, 1)")
        chans = [width, width * 2, width * 4]
        layers: list[nn.Module] = []
        cin = in_channels
        for stage, cout in enumerate(chans):
            for _ in range(2 if stage < 2 else 1):
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm)]
                layers += [nn.BatchNorm2d(cout)] if batch_norm else []
                layers += [nn.ReLU(inplace=True)]
                cin = cout
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _mlp(**kwargs: Any) -> nn.Module:
    from deepslim.mlp import MLP
    if "in_features" not in kwargs:
        raise ValueError("mlp needs in_features (the data gives it for feature inputs; else --arch-kwargs)")
    return MLP(**kwargs)


BUILTIN: dict[str, Any] = {"small_cnn": SmallCNN, "mlp": _mlp}
_IMAGE_BUILTINS = {"small_cnn"}
_DEFAULT_SIZE = {ArchSource.BUILTIN: 16, ArchSource.TORCHVISION: 224, ArchSource.FILE: 224}
# Builder kwargs that make torchvision models trainable from scratch at any input size.
_TV_FIXED_KWARGS = {"inception_v3": {"aux_logits": False, "init_weights": False},
                    "googlenet": {"aux_logits": False, "init_weights": False}}


@functools.cache
def torchvision_names() -> tuple[str, ...]:
    import torchvision
    return tuple(torchvision.models.list_models(module=torchvision.models))


def known_architectures() -> list[str]:
    return sorted(BUILTIN) + list(torchvision_names())


# --- resolving and building -------------------------------------------------------------------

def resolve_arch(name: str, *, num_classes: int, input_size: int | tuple[int, int] | None = None,
                 channels: int | None = None, kwargs: dict[str, Any] | None = None) -> tuple[ArchSpec, int, int]:
    """Turn a user's architecture name into an :class:`ArchSpec`; return it, input size and channels."""
    kwargs = dict(kwargs or {})
    if num_classes < 1:
        raise ConfigError(f"--num-classes must be a positive integer, got {num_classes}.")
    check_shape_options(input_size, channels)
    if (named := parse_code_spec(name)) is not None:
        file = require_file(named[0], "architecture file").resolve()
        spec = ArchSpec(ArchSource.FILE, f"{file}:{named[1]}", {"num_classes": num_classes, **kwargs},
                        sha256_file(file))
        return spec, input_size or _DEFAULT_SIZE[ArchSource.FILE], channels or 3
    if (file := code_file(name)) is not None:
        _missing_function(name, require_file(file, "architecture file"))
    if name in BUILTIN:
        chans = channels or 1
        image = {"in_channels": chans} if name in _IMAGE_BUILTINS else {}
        spec = ArchSpec(ArchSource.BUILTIN, name, {"num_classes": num_classes, **image, **kwargs})
        return spec, input_size or _DEFAULT_SIZE[ArchSource.BUILTIN], chans
    if name.startswith("timm:"):
        return _resolve_timm(name[len("timm:"):], num_classes, input_size, channels, kwargs)
    if name in torchvision_names():
        if channels not in (None, 3):
            raise ConfigError(f"torchvision architectures take 3 input channels, not {channels}; grayscale data "
                              "is repeated to 3 channels automatically.")
        size = input_size or _DEFAULT_SIZE[ArchSource.TORCHVISION]
        kwargs = {**_TV_FIXED_KWARGS.get(name, {}), **_size_kwargs(name, size), **kwargs}
        return ArchSpec(ArchSource.TORCHVISION, name, {"num_classes": num_classes, **kwargs}), size, 3
    close = difflib.get_close_matches(name, known_architectures(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "`deepslim archs` lists them."
    raise UnknownArchitectureError(f"Unknown architecture '{name}'; {hint}")


@functools.cache
def timm_names() -> frozenset[str]:
    try:
        import timm
    except ImportError as exc:  # a pinned dependency; only a broken install lacks it
        raise ConfigError("timm architectures need the timm package; install it with pip install timm.") from exc
    return frozenset(timm.list_models())


def _resolve_timm(name: str, num_classes: int, input_size: int | tuple[int, int] | None, channels: int | None,
                  kwargs: dict[str, Any]) -> tuple[ArchSpec, int | tuple[int, int], int]:
    """``timm:NAME``: any model of timm's registry, random weights (``--weights`` loads a state_dict). A model
    that takes an image size (ViT, DeiT, Swin...) is built for ``--input-size``; others take any size."""
    import timm
    if name not in timm_names():
        close = difflib.get_close_matches(name, sorted(timm_names()), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join('timm:' + c for c in close)}?" if close else "timm.list_models() lists them."
        raise UnknownArchitectureError(f"Unknown timm architecture '{name}'; {hint}")
    chans = channels or 3
    default = tuple(timm.get_pretrained_cfg(name).input_size[1:]) if timm.get_pretrained_cfg(name) else (224, 224)
    size = input_size or (default[0] if default[0] == default[1] else default)
    kwargs = {"num_classes": num_classes, "in_chans": chans, **kwargs}
    if input_size is not None and "img_size" not in kwargs and _takes_img_size(name, kwargs, size):
        kwargs["img_size"] = size if isinstance(size, int) else list(size)
    return ArchSpec(ArchSource.TIMM, name, kwargs), size, chans


def _takes_img_size(name: str, kwargs: dict[str, Any], size: Any) -> bool:
    import timm
    try:
        with torch.device("meta"):
            timm.create_model(name, pretrained=False, **kwargs, img_size=size)
    except TypeError:
        return False
    except Exception:  # any other failure shows when the model is really built
        return True
    return True


def _missing_function(text: str, file: Path) -> None:
    """Raise for ``--arch file.py`` without ``:function``, naming the file's callables (read, never run)."""
    try:
        names = file_callables(file)
    except (SyntaxError, OSError):
        names = []
    hint = f"use {file}:{names[0]} ({describe_callables(file)})" if names else describe_callables(file)
    raise ConfigError(f"--arch {text} names a Python file but no function; {hint}.")


def check_shape_options(input_size: int | tuple[int, int] | None, channels: int | None) -> None:
    sizes = input_size if isinstance(input_size, tuple) else (input_size,) if input_size is not None else ()
    if any(s < 1 for s in sizes):
        raise ConfigError(f"--input-size must be a positive size N or HxW, got {input_size}.")
    if channels is not None and channels < 1:
        raise ConfigError(f"--channels must be a positive integer, got {channels}.")


def _size_kwargs(name: str, size: int | tuple[int, int]) -> dict[str, Any]:
    if isinstance(size, tuple):
        if size[0] != size[1] and name.startswith(("vit_", "maxvit")):
            raise ConfigError(f"{name} takes square inputs; give --input-size N.")
        size = size[0]
    if name.startswith("vit_"):
        return {"image_size": size}
    if name.startswith("maxvit"):
        return {"input_size": [size, size]}
    return {}


def build_model(spec: ArchSpec, *, pretrained: str | None = None) -> nn.Module:
    """Instantiate ``spec`` (random weights unless ``pretrained`` names torchvision weights).

    Built-in and torchvision names resolve only through their registries (an allow-list), with
    plain JSON keyword arguments. A ``file.py:fn`` spec runs the user's code: callers pass only
    specs the user named or that :func:`deepslim.trust.authorise` allowed.
    """
    _check_plain_kwargs(spec)
    if pretrained is not None and spec.source is not ArchSource.TORCHVISION:  # before building anything
        raise ConfigError("--pretrained works only with torchvision architectures (it names torchvision weights); "
                          "for another architecture pass a state_dict file with --weights.")
    try:
        if spec.source is ArchSource.BUILTIN:
            model = _registered(BUILTIN, spec)(**spec.kwargs)
        elif spec.source is ArchSource.TORCHVISION:
            model = _build_torchvision(spec, pretrained)
        elif spec.source is ArchSource.FILE:
            model = _build_from_file(spec)
        elif spec.source is ArchSource.TIMM:
            model = _build_timm(spec)
        elif spec.source is ArchSource.HF:
            from deepslim import hf
            model = hf.build(spec)
        else:
            raise ModelError(f"A model of source '{spec.source.value}' cannot be rebuilt; load it from its file.")
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as exc:
        raise ModelError(f"Cannot build {spec.name} with {spec.kwargs}: {first_line(exc)}.") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec.name} returned {type(model).__name__}, not a torch.nn.Module.")
    return model


_JSON_SCALARS = (str, int, float, bool, type(None))


def _plain_json(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    return isinstance(value, _JSON_SCALARS)


def _check_plain_kwargs(spec: ArchSpec) -> None:
    bad = [k for k, v in spec.kwargs.items() if not _plain_json(v)]
    if bad:
        raise ModelError(f"The architecture arguments of {spec.name} must be plain JSON values; '{bad[0]}' is a "
                         f"{type(spec.kwargs[bad[0]]).__name__}.")
    if spec.source is not ArchSource.FILE and {"weights", "weights_backbone"} & set(spec.kwargs):
        raise ModelError(f"The architecture arguments of {spec.name} may not name weights to fetch; a bundle "
                         "carries its own weights.")


def _registered(registry: dict[str, Any], spec: ArchSpec) -> Any:
    if spec.name not in registry:
        raise UnknownArchitectureError(f"Unknown built-in architecture '{spec.name}'; `deepslim archs` lists them.")
    return registry[spec.name]


def _build_torchvision(spec: ArchSpec, pretrained: str | None) -> nn.Module:
    import torchvision
    if spec.name not in torchvision_names():  # the registry is the allow-list, never getattr on a module
        raise UnknownArchitectureError(f"Unknown torchvision architecture '{spec.name}'; `deepslim archs` lists them.")
    kwargs = dict(spec.kwargs)
    if pretrained is None:
        return torchvision.models.get_model(spec.name, weights=None, **kwargs)
    num_classes = kwargs.pop("num_classes")
    model = torchvision.models.get_model(spec.name, weights=pretrained, **kwargs)  # downloads once
    if num_classes != 1000:
        replace_head(model, num_classes)
    return model


def _build_timm(spec: ArchSpec) -> nn.Module:
    import timm
    if spec.name not in timm_names():  # the registry is the allow-list
        raise UnknownArchitectureError(f"Unknown timm architecture '{spec.name}'.")
    return timm.create_model(spec.name, pretrained=False, **spec.kwargs)


def _build_from_file(spec: ArchSpec) -> nn.Module:
    named = parse_code_spec(spec.name)
    if named is None:
        raise ModelError(f"The architecture '{spec.name}' is not path/file.py:function.")
    file, fn_name = require_file(named[0], "architecture file"), named[1]
    fn = user_attribute(file, fn_name, error=ModelError, sha256=spec.file_sha256, defined_here=True)
    if not callable(fn):
        raise ModelError(f"{file} has no function '{fn_name}' ({describe_callables(file)}).")
    kwargs = dict(spec.kwargs)
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    try:
        return fn(**kwargs)
    except Exception as exc:  # user code: any failure becomes one sentence
        raise ModelError(f"{spec.name} failed: {type(exc).__name__}: {first_line(exc)}.") from exc


def find_head(model: nn.Module, num_classes: int | None = None) -> tuple[str, nn.Module]:
    """The classifier head: the last Linear (or 1x1 Conv) layer producing ``num_classes`` outputs."""
    found = None
    for name, module in model.named_modules():
        out = getattr(module, "out_features", getattr(module, "out_channels", None))
        if isinstance(module, (nn.Linear, nn.Conv2d)) and (num_classes is None or out == num_classes):
            found = (name, module)
    if found is None:
        raise ModelError("Cannot find the classifier head (a final Linear or Conv2d layer).")
    return found


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    name, head = find_head(model)
    if not isinstance(head, nn.Linear):
        raise ModelError(f"Cannot replace the head '{name}' ({type(head).__name__}); only Linear heads are supported.")
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Linear(head.in_features, num_classes))
    return model

