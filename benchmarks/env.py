"""The environment every report records: CPU model and flags, cores, GPU, OS, library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16",
                     "amx_int8", "f16c")
PACKAGES = ("deepslim", "torch", "torchvision", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt",
            "onnxslim", "torch-pruning", "numpy")


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return {"model": model, "flags": [f for f in INTERESTING_FLAGS if f in flags],
            "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}), "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0))}


def gpu_info() -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1), "count": torch.cuda.device_count()}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def environment(threads: int | None = None) -> dict[str, Any]:
    return {"cpu": cpu_info(), "gpu": gpu_info(), "threads": threads, "os": platform.platform(),
            "versions": versions()}
