"""Fingerprints of what decides a result: user code, datasets, starting weights, the environment.

A run key (``pipeline.run``) and a training checkpoint's identity (``deepslim.training``) are
built from these. Python files count by content (sha256). A dataset directory counts by the
relative name, size and mtime of every file under it, not by its bytes: cheap for large image
trees, and editing, adding, removing or touching a file changes it. Nothing here imports or runs
user code or an optional backend.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from deepslim.fileio import sha256_file

# The packages whose versions decide what a backend's export, quantization or benchmark gives.
BACKEND_PACKAGES = {"torch": (), "onnx": ("onnx", "onnxruntime"), "onnxruntime": ("onnx", "onnxruntime"),
                    "openvino": ("openvino", "nncf"), "tensorrt": ("tensorrt",)}
# Distributions that install a module under another name (the GPU or CUDA-specific wheels).
_DISTRIBUTIONS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
                  "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13")}


def user_file(spec: str) -> Path | None:
    """The Python file of a ``path/file.py:fn`` spec (an architecture, a dataset), or None."""
    head, sep, _ = spec.rpartition(":")
    return Path(head) if sep and head.endswith(".py") else None


def file_digest(path: str | os.PathLike) -> str:
    """The sha256 of a file, or ``"missing"`` (the stage that needs it then reports it)."""
    return sha256_file(path) if Path(path).is_file() else "missing"


def directory_fingerprint(root: str | os.PathLike) -> str:
    """A sha256 over (relative name, size, mtime_ns) of every file under ``root``, sorted by name."""
    root = Path(root)
    rows = []
    for folder, _dirs, files in os.walk(root, followlinks=True):
        for name in files:
            path = Path(folder, name)
            stat = path.stat()
            rows.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps(sorted(rows)).encode()).hexdigest()


def dataset_fingerprint(spec: str) -> dict[str, str]:
    """What a dataset spec reads: a built-in name, a ``file.py:fn`` by content, a directory by its files."""
    base = spec.partition("?")[0]  # options after "?" are part of the spec, not of the path
    file = user_file(base)
    if file is not None:
        return {"spec": spec, "file_sha256": file_digest(file)}
    if Path(base).is_file():  # a table
        return {"spec": spec, "file_sha256": file_digest(base)}
    if Path(base).is_dir():
        return {"spec": spec, "directory": directory_fingerprint(base)}
    return {"spec": spec}


def state_fingerprint(model: nn.Module) -> str:
    """A sha256 of a model's weights and buffers (names and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def environment_facts(backends: Iterable[str] = ()) -> dict[str, Any]:
    """The facts of this machine that decide a stage's outcome.

    Always torch's version; for each backend named, the versions of its packages (None: not
    installed); with ``tensorrt``, also the CUDA GPU engines would be built on (None: none).
    """
    wanted = sorted(set(backends))
    packages = sorted({"torch", *(p for b in wanted for p in BACKEND_PACKAGES.get(b, (b,)))})
    facts: dict[str, Any] = {p: installed_version(p) for p in packages}
    if "tensorrt" in wanted:
        facts["cuda_gpu"] = cuda_gpu()
    return facts


def installed_version(module: str) -> str | None:
    """The installed version of the package providing ``module``; None when it cannot be imported."""
    if importlib.util.find_spec(module) is None:
        return None
    for dist in _DISTRIBUTIONS.get(module, (module,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def cuda_gpu() -> str | None:
    """The name of the first CUDA GPU, or None when torch sees none."""
    import torch
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
