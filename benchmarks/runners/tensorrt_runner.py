"""TensorRT engine runner (needs ``tensorrt`` and a CUDA GPU; torch manages the device buffers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runners.base import (Backend, Batch, Runner, RunnerOptions, as_tuple, batch_size, feed_names,
                                    from_tuple, pad_batch, slice_batch)
from deepslim.artifact import ArtifactMeta
from deepslim.errors import ArtifactMismatchError, BackendMissingError, DeepSlimError, InputFileError
from deepslim.modelio import feed, select_output


class EngineRunError(DeepSlimError):
    """A TensorRT engine refused an input shape (outside its optimization profile) or failed to run."""


def import_tensorrt(purpose: str):
    """Import tensorrt and make sure a CUDA GPU is present, or fail with one sentence naming both."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendMissingError(f"{purpose} needs the 'tensorrt' package and an NVIDIA GPU; install it with "
                                  "`pip install tensorrt` on a machine with a CUDA GPU.") from exc
    import torch
    if not torch.cuda.is_available():
        raise BackendMissingError(f"{purpose} needs an NVIDIA CUDA GPU, and none is visible on this machine.")
    return trt


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def check_engine_compatible(sidecar: dict[str, Any], trt_version: str, gpu: str, capability: str,
                            path: str | Path = "engine") -> None:
    """An engine runs only on the TensorRT version and GPU it was built for: say so clearly."""
    if sidecar.get("tensorrt") != trt_version:
        raise ArtifactMismatchError(f"{path} was built with TensorRT {sidecar.get('tensorrt')} but this machine has "
                                    f"{trt_version}; rebuild it here with `deepslim export --target tensorrt`.")
    if sidecar.get("compute_capability") != capability:
        raise ArtifactMismatchError(f"{path} was built for {sidecar.get('gpu')} (compute capability "
                                    f"{sidecar.get('compute_capability')}) but this GPU is {gpu} ({capability}); "
                                    "rebuild it here.")


def read_sidecar(engine: Path) -> dict[str, Any]:
    side = sidecar_path(engine)
    if not side.is_file():
        raise InputFileError(f"{engine} has no sidecar {side.name} (TensorRT version, GPU, input spec); "
                             "rebuild it with `deepslim export --target tensorrt`.")
    try:
        return json.loads(side.read_text())
    except ValueError as exc:
        raise InputFileError(f"{side} is not valid JSON.") from exc


@dataclass
class TensorRTRunner(Runner):
    engine: Any = None
    context: Any = None
    input_names: tuple[str, ...] = ("input",)   # the engine's input tensors, in the signature's order
    output_names: tuple[str, ...] = ("logits",)
    backend: Backend = Backend.TENSORRT

    @classmethod
    def load(cls, path: str | Path, options: RunnerOptions) -> TensorRTRunner:
        path = Path(path)
        sidecar = read_sidecar(path)
        trt = import_tensorrt("Running TensorRT engines")
        import torch
        props = torch.cuda.get_device_properties(0)
        check_engine_compatible(sidecar, trt.__version__, props.name, f"{props.major}.{props.minor}", path)
        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise InputFileError(f"TensorRT could not deserialize {path}.")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = tuple(n for n in names if n not in inputs)
        meta = ArtifactMeta.from_json(json.dumps(sidecar["meta"]), path)
        details = {"tensorrt": trt.__version__, "gpu": props.name, "precision": sidecar.get("precision")}
        runner = cls(path, meta, options, details, engine=engine, context=engine.create_execution_context(),
                     input_names=feed_names(meta.signature, inputs, path), output_names=outputs)
        runner.details["profile_batches"] = list(runner.batch_range)
        return runner

    @property
    def batch_range(self) -> tuple[int, int]:
        """The smallest and largest batch of the engine's optimization profile (of its first input)."""
        shapes = self.engine.get_tensor_profile_shape(self.input_names[0], 0)  # [min, opt, max]
        return int(shapes[0][0]), int(shapes[2][0])

    @property
    def max_batch(self) -> int | None:
        return self.batch_range[1]

    def run(self, batch: Batch) -> np.ndarray:
        """The task output of any batch: run in chunks of at most the profile's max batch (a chunk below its
        min batch is zero-padded and the padding dropped)."""
        low, high = self.batch_range
        return run_in_chunks(self._cast(batch), low, high, self._run_chunk)

    def run_all(self, batch: Batch) -> dict[str, np.ndarray]:
        low, high = self.batch_range
        return run_in_chunks(self._cast(batch), low, high, self._set_and_run)

    def _cast(self, batch: Batch) -> Batch:
        return from_tuple(list(feed(self.signature, batch, self.input_names).values()))

    def _run_chunk(self, x: Batch) -> np.ndarray:
        self._set_shapes(x)
        return self._execute(x)

    def _set_and_run(self, x: Batch) -> dict[str, np.ndarray]:
        self._set_shapes(x)
        return self._execute_all(x)

    def _set_shapes(self, x: Batch) -> None:
        arrays = as_tuple(x)
        if not all(self.context.set_input_shape(n, tuple(a.shape)) for n, a in zip(self.input_names, arrays)):
            low, high = self.batch_range
            got = ", ".join(str(tuple(a.shape)) for a in arrays)
            want = ", ".join(str(tuple(s.sample_shape)) for s in self.signature.inputs)
            raise EngineRunError(f"The TensorRT engine {self.artifact.name} refused input shape {got}; "
                                 f"its profile takes batches {low}..{high} of {want}.")

    def _execute(self, x: Batch) -> np.ndarray:
        """The task output of one chunk (its shapes already set on the context)."""
        outs = self._execute_all(x)
        return select_output(list(outs.values()), list(outs), self.signature)

    def _execute_all(self, x: Batch) -> dict[str, np.ndarray]:
        """Every output of one chunk on the GPU (its shapes already set on the context)."""
        import torch
        device_x = [torch.from_numpy(a).cuda() for a in as_tuple(x)]
        outs = {n: torch.empty(tuple(self.context.get_tensor_shape(n)), device="cuda", dtype=torch.float32)
                for n in self.output_names}
        for name, t in [*zip(self.input_names, device_x), *outs.items()]:
            self.context.set_tensor_address(name, t.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineRunError(f"TensorRT failed to run {self.artifact.name} on a batch of shape "
                                 f"{shapes_text(x)}; rerun with --debug for its log.")
        stream.synchronize()
        return {n: t.cpu().numpy() for n, t in outs.items()}


def shapes_text(x: Batch) -> str:
    return ", ".join(str(tuple(a.shape)) for a in as_tuple(x))


def run_in_chunks(x: Batch, low: int, high: int, run: Callable[[Batch], Any]) -> Any:
    """``run`` over ``x`` in order, in chunks of ``low``..``high`` rows; the outputs (an array, or a dict of
    arrays) concatenated."""
    out = []
    for start in range(0, batch_size(x), high):
        chunk = slice_batch(x, start, start + high)
        rows = batch_size(chunk)
        result = run(pad_batch(chunk, low))
        out.append({k: np.asarray(v)[:rows] for k, v in result.items()} if isinstance(result, dict)
                   else np.asarray(result)[:rows])
    if isinstance(out[0], dict):
        return {k: np.concatenate([o[k] for o in out]) for k in out[0]}
    return np.concatenate(out)
