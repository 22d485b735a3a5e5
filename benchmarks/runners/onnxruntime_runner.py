"""ONNX Runtime runner (CPU; CUDA and TensorRT execution providers when present and asked for)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runners.base import Backend, Runner, RunnerOptions, as_batch, require
from deepslim.artifact import META_KEY, ArtifactMeta
from deepslim.errors import BackendMissingError, InputFileError, first_line


@dataclass
class OnnxRuntimeRunner(Runner):
    session: Any = None
    input_name: str = "input"
    backend: Backend = Backend.ONNXRUNTIME

    @classmethod
    def load(cls, path: str | Path, options: RunnerOptions) -> OnnxRuntimeRunner:
        ort = require("onnxruntime", "onnxruntime", "Running ONNX models")
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        providers = _providers(ort, options.device)
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise InputFileError(f"onnxruntime cannot load {path}: {first_line(exc)}.") from exc
        meta_json = session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if meta_json is None:
            raise InputFileError(f"{path} has no deepslim metadata (input spec, classes); export it with "
                                 "`deepslim export`.")
        details = {"threads": options.threads, "providers": session.get_providers(),
                   "onnxruntime": ort.__version__}
        return cls(Path(path), ArtifactMeta.from_json(meta_json, path), options, details,
                   session=session, input_name=session.get_inputs()[0].name)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: as_batch(batch)})[0]

    @property
    def max_batch(self) -> int | None:
        first = self.session.get_inputs()[0].shape[0]
        return first if isinstance(first, int) and first > 0 else None


def _providers(ort, device: str) -> list[str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = {"cuda": ["CUDAExecutionProvider"], "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]}
    chosen = [p for p in wanted.get(device.split(":")[0], []) if p in available]
    if not chosen:
        raise BackendMissingError(f"onnxruntime has no {device} execution provider here (available: "
                                  f"{', '.join(available)}); install onnxruntime-gpu on a machine with a GPU.")
    return [*chosen, "CPUExecutionProvider"]
