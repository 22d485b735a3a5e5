"""OpenVINO runner: an IR (or ONNX file) compiled per batch size with the latency hint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runners.base import Backend, Runner, RunnerOptions, as_batch, require
from deepslim.artifact import META_KEY, ArtifactMeta, read_onnx_meta
from deepslim.errors import InputFileError


@dataclass
class OpenVINORunner(Runner):
    model: Any = None
    core: Any = None
    compiled: dict[int, Any] = field(default_factory=dict)
    current: Any = None
    backend: Backend = Backend.OPENVINO

    @classmethod
    def load(cls, path: str | Path, options: RunnerOptions, input_size: int | None = None) -> OpenVINORunner:
        """``input_size`` reshapes the model to another square resolution (convolutional models allow it)."""
        ov = require("openvino", "openvino", "Running OpenVINO models")
        path = Path(path)
        if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
            raise InputFileError(f"{path} has no weights file {path.with_suffix('.bin').name} next to it.")
        if path.suffix.lower() == ".xml" and not _looks_like_ir(path):
            raise InputFileError(f"{path} is not an OpenVINO IR (.xml with a <net> root).")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as exc:
            raise InputFileError(f"OpenVINO cannot read {path}: {ov_reason(exc)}.") from exc
        meta = read_ov_meta(model, path)
        if input_size is not None and tuple(meta.input_spec.size) != (input_size, input_size):
            meta = ArtifactMeta(meta.input_spec.with_size(input_size), meta.classes, meta.lineage, meta.export)
        details = {"threads": options.threads, "device": options.device.upper(),
                   "static_batch": options.static_batch, "hint": "LATENCY", "openvino": ov.__version__}
        return cls(path, meta, options, details, model=model, core=core)

    def prepare(self, batch: int) -> None:
        if batch not in self.compiled:
            model = self.model.clone()
            shape = [batch if self.options.static_batch else -1, *self.meta.input_spec.shape]
            model.reshape({0: shape})
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                      "INFERENCE_NUM_THREADS": self.options.threads}
            compiled = self.core.compile_model(model, self.options.device.upper(), config)
            self.compiled[batch] = compiled.create_infer_request()
        self.current = self.compiled[batch]

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.current is None or batch.shape[0] not in self.compiled:
            self.prepare(batch.shape[0])
        request = self.compiled[batch.shape[0]]
        request.infer({0: as_batch(batch)})
        return np.array(request.get_output_tensor(0).data)


def _looks_like_ir(path: Path) -> bool:
    """Sniff the header, so a non-IR file never reaches OpenVINO's other frontends (which log to stderr)."""
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip()
    return head.startswith(b"<?xml") or head.startswith(b"<net")


def ov_reason(exc: BaseException) -> str:
    """The informative line of an OpenVINO exception (its first lines are source locations)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '")) and ".cpp:" not in ln]
    return (useful or lines or [type(exc).__name__])[0].rstrip(".")


def read_ov_meta(model: Any, path: Path) -> ArtifactMeta:
    """deepslim's metadata from an IR's rt_info (or, for an ONNX file, its metadata_props)."""
    meta = None
    if model.has_rt_info([META_KEY, "meta"]):
        meta = ArtifactMeta.from_json(model.get_rt_info([META_KEY, "meta"]).astype(str), path)
    elif path.suffix.lower() == ".onnx":
        meta = read_onnx_meta(path)
    if meta is None:
        raise InputFileError(f"{path} has no deepslim metadata (input spec, classes); export it with "
                             "`deepslim export`.")
    return meta
