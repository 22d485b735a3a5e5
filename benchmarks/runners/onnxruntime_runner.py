"""ONNX Runtime runner (CPU; CUDA and TensorRT execution providers when present and asked for)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runners.base import Backend, Batch, Runner, RunnerOptions, feed_names, require
from deepslim.artifact import META_KEY, ArtifactMeta
from deepslim.errors import BackendMissingError, InputFileError, first_line
from deepslim.modelio import feed, select_output


@dataclass
class OnnxRuntimeRunner(Runner):
    session: Any = None
    input_names: tuple[str, ...] = ("input",)   # the session's input names, in the signature's order
    output_names: tuple[str, ...] = ("logits",)
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
        meta = ArtifactMeta.from_json(meta_json, path)
        names = feed_names(meta.signature, [i.name for i in session.get_inputs()], path)
        return cls(Path(path), meta, options, details, session=session, input_names=names,
                   output_names=tuple(o.name for o in session.get_outputs()))

    def run(self, batch: Batch) -> np.ndarray:
        return select_output(self._outputs(batch), list(self.output_names), self.signature)

    def run_all(self, batch: Batch) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self._outputs(batch)))

    def _outputs(self, batch: Batch) -> list[np.ndarray]:
        return self.session.run(None, feed(self.signature, batch, self.input_names))

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
