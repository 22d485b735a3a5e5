"""OpenVINO runner: an IR (or ONNX file) compiled per batch size with the latency hint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runners.base import (Backend, Batch, Runner, RunnerOptions, batch_size, feed_names, require,
                                    resized)
from deepslim.artifact import META_KEY, ArtifactMeta, read_onnx_meta
from deepslim.errors import InputFileError
from deepslim.modelio import feed, select_output


@dataclass
class OpenVINORunner(Runner):
    model: Any = None
    core: Any = None
    compiled: dict[int, Any] = field(default_factory=dict)
    current: Any = None
    input_names: tuple[str, ...] = ()    # the model's input names, in the signature's order
    output_names: tuple[str, ...] = ()
    backend: Backend = Backend.OPENVINO
    _ports: tuple[int, ...] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: str | Path, options: RunnerOptions,
             input_size: int | tuple[int, int] | None = None) -> OpenVINORunner:
        """``input_size`` reshapes a one-image model to another resolution (convolutional models allow it)."""
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
        meta = resized(read_ov_meta(model, path), input_size, path)
        details = {"threads": options.threads, "device": options.device.upper(),
                   "static_batch": options.static_batch, "hint": "LATENCY", "openvino": ov.__version__}
        names = [_port_name(p, i) for i, p in enumerate(model.inputs)]
        return cls(path, meta, options, details, model=model, core=core,
                   input_names=feed_names(meta.signature, names, path),
                   output_names=tuple(_port_name(p, i) for i, p in enumerate(model.outputs)))

    def prepare(self, batch: int) -> None:
        if batch not in self.compiled:
            model = self.model.clone()
            first = batch if self.options.static_batch else -1
            model.reshape({port: [first, *(d if isinstance(d, int) else -1 for d in spec.sample_shape)]
                           for port, spec in zip(self.input_ports, self.signature.inputs)})
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                      "INFERENCE_NUM_THREADS": self.options.threads}
            compiled = self.core.compile_model(model, self.options.device.upper(), config)
            self.compiled[batch] = compiled.create_infer_request()
        self.current = self.compiled[batch]

    def run(self, batch: Batch) -> np.ndarray:
        return select_output(self._outputs(batch), list(self.output_names), self.signature)

    def run_all(self, batch: Batch) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self._outputs(batch)))

    @property
    def input_ports(self) -> tuple[int, ...]:
        """The model's input port index of each signature input, in the signature's order."""
        if self._ports is None:
            names = [_port_name(p, i) for i, p in enumerate(self.model.inputs)]
            self._ports = tuple(names.index(n) for n in self.input_names)
        return self._ports

    def _outputs(self, batch: Batch) -> list[np.ndarray]:
        size = batch_size(batch)
        if self.current is None or size not in self.compiled:
            self.prepare(size)
        request = self.compiled[size]
        request.infer(dict(zip(self.input_ports, feed(self.signature, batch, self.input_names).values())))
        return [np.array(request.get_output_tensor(i).data) for i in range(len(self.output_names))]


def _port_name(port: Any, index: int) -> str:
    """A model input's or output's name (OpenVINO ports may have none: then its position)."""
    try:
        return port.get_any_name()
    except RuntimeError:
        return f"port_{index}"


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
