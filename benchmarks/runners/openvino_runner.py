"""OpenVINO runner: an IR (or ONNX file) compiled per batch size with the latency hint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runners.base import (Backend, Batch, Runner, RunnerOptions, as_tuple, batch_size, feed_names,
                                    require, resized)
from deepslim.artifact import META_KEY, ArtifactMeta, read_onnx_meta
from deepslim.errors import InputFileError
from deepslim.modelio import feed, select_output


@dataclass
class OpenVINORunner(Runner):
    model: Any = None
    core: Any = None
    compiled: dict[tuple, Any] = field(default_factory=dict)  # (batch, named-dim sizes or None) -> request
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

    def prepare(self, batch: int, sizes: dict[str, int] | None = None) -> None:
        """Compile for ``batch`` (static when ``static_batch``), with the named dims at ``sizes`` (static: a
        latency shape) or dynamic (-1: any length, as accuracy batches padded to their split's longest)."""
        key = (batch, _sizes_key(sizes))
        if key not in self.compiled:
            model = self.model.clone()
            first = batch if self.options.static_batch else -1
            model.reshape({port: [first, *_dims(spec.sample_shape, sizes)]
                           for port, spec in zip(self.input_ports, self.signature.inputs)})
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                      "INFERENCE_NUM_THREADS": self.options.threads}
            compiled = self.core.compile_model(model, self.options.device.upper(), config)
            self.compiled[key] = compiled.create_infer_request()
        self.current = self.compiled[key]

    def run(self, batch: Batch) -> np.ndarray:
        return select_output(self._outputs(batch), list(self.output_names), self.signature)

    def run_all(self, batch: Batch) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self._outputs(batch)))

    @property
    def named_dims(self) -> bool:
        """Some input has a named dim (a text model's sequence): its static compiles are keyed by its size."""
        return any(isinstance(d, str) for spec in self.signature.inputs for d in spec.sample_shape)

    @property
    def input_ports(self) -> tuple[int, ...]:
        """The model's input port index of each signature input, in the signature's order."""
        if self._ports is None:
            names = [_port_name(p, i) for i, p in enumerate(self.model.inputs)]
            self._ports = tuple(names.index(n) for n in self.input_names)
        return self._ports

    def _outputs(self, batch: Batch) -> list[np.ndarray]:
        request = self._request(batch)
        request.infer(dict(zip(self.input_ports, feed(self.signature, batch, self.input_names).values())))
        return [np.array(request.get_output_tensor(i).data) for i in range(len(self.output_names))]

    def _request(self, batch: Batch) -> Any:
        """The compiled request for this batch's shape: static at its named-dim sizes when prepared so, else
        dynamic in them (compiled now if needed)."""
        size = batch_size(batch)
        named = {}
        if self.named_dims:
            named = {d: a.shape[k + 1] for a, spec in zip(as_tuple(batch), self.signature.inputs)
                     for k, d in enumerate(spec.sample_shape) if isinstance(d, str) and k + 1 < a.ndim}
        for key in ((size, _sizes_key(named)), (size, None)):
            if key in self.compiled:
                return self.compiled[key]
        self.prepare(size)
        return self.compiled[(size, None)]


def _sizes_key(sizes: dict[str, int] | None) -> tuple[tuple[str, int], ...] | None:
    return tuple(sorted(sizes.items())) if sizes else None


def _dims(sample_shape: tuple, sizes: dict[str, int] | None) -> list[int]:
    """An input's sample dims for ``reshape``: numbers as they are, a named dim at ``sizes`` or -1 (dynamic)."""
    return [d if isinstance(d, int) else (sizes or {}).get(d, -1) for d in sample_shape]


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
