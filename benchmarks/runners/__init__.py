"""One runner per backend behind one interface: load an artifact, run a batch, return logits."""

from __future__ import annotations

from pathlib import Path

from benchmarks.runners.base import Backend, Runner, RunnerOptions
from deepslim.artifact import ArtifactKind, artifact_kind
from deepslim.errors import ConfigError, InputFileError

# which backends can run which artifact kinds
RUNS = {Backend.TORCH: {ArtifactKind.BUNDLE}, Backend.ONNXRUNTIME: {ArtifactKind.ONNX},
        Backend.OPENVINO: {ArtifactKind.OPENVINO, ArtifactKind.ONNX}, Backend.TENSORRT: {ArtifactKind.TENSORRT}}


def can_run(backend: Backend, path: str | Path) -> bool:
    return artifact_kind(path) in RUNS[Backend(backend)]


def open_runner(path: str | Path, backend: Backend | str, options: RunnerOptions | None = None,
                **kwargs) -> Runner:
    """Load ``path`` with ``backend``'s runner (heavy libraries are imported here, not before)."""
    backend, options, path = Backend(backend), options or RunnerOptions(), Path(path)
    if not path.exists():
        raise InputFileError(f"The artifact {path} does not exist.")
    if not can_run(backend, path):
        raise ConfigError(f"The {backend.value} backend cannot run {path.name} ({artifact_kind(path).value}); "
                          f"it runs {', '.join(k.value for k in RUNS[backend])} artifacts.")
    if backend is Backend.TORCH:
        from benchmarks.runners.torch_runner import TorchRunner
        return TorchRunner.load(path, options, **kwargs)
    if backend is Backend.ONNXRUNTIME:
        from benchmarks.runners.onnxruntime_runner import OnnxRuntimeRunner
        return OnnxRuntimeRunner.load(path, options)
    if backend is Backend.OPENVINO:
        from benchmarks.runners.openvino_runner import OpenVINORunner
        return OpenVINORunner.load(path, options, **kwargs)
    from benchmarks.runners.tensorrt_runner import TensorRTRunner
    return TensorRTRunner.load(path, options)


def read_meta(path: str | Path):
    """deepslim's metadata of an exported artifact (.onnx, OpenVINO .xml, TensorRT .engine) without running it."""
    import json

    from deepslim.artifact import ArtifactMeta, read_onnx_meta
    path = Path(path)
    kind = artifact_kind(path)
    if not path.is_file():
        raise InputFileError(f"The artifact {path} does not exist.")
    if kind is ArtifactKind.ONNX:
        meta = read_onnx_meta(path)
    elif kind is ArtifactKind.OPENVINO:
        from benchmarks.runners.openvino_runner import OpenVINORunner
        return OpenVINORunner.load(path, RunnerOptions(threads=1)).meta
    elif kind is ArtifactKind.TENSORRT:
        from benchmarks.runners.tensorrt_runner import read_sidecar
        return ArtifactMeta.from_json(json.dumps(read_sidecar(path)["meta"]), path)
    else:
        raise ConfigError(f"{path.name} is a bundle; `deepslim info` reads its header directly.")
    if meta is None:
        raise InputFileError(f"{path} has no deepslim metadata; it was not exported by deepslim.")
    return meta


__all__ = ["Backend", "Runner", "RunnerOptions", "can_run", "open_runner", "read_meta"]
