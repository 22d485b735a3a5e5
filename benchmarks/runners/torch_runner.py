"""PyTorch eager (optionally torch.compile) runner for deepslim bundles."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.runners.base import Backend, Batch, Runner, RunnerOptions, as_tuple, resized
from deepslim.artifact import ArtifactMeta
from deepslim.modelio import all_outputs, call, feed, task_output
from deepslim.models import ModelBundle, load_model


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """CUDA matmuls, convolutions and RNNs in IEEE fp32 (TF32 off) while inside; the settings are restored after.

    Uses torch's per-operator ``fp32_precision`` settings (mixing them with the legacy
    ``allow_tf32`` flags is an error in torch >= 2.9)."""
    settings = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)
    saved = [s.fp32_precision for s in settings]
    try:
        for s in settings:
            s.fp32_precision = "ieee"
        yield
    finally:
        for s, value in zip(settings, saved):
            s.fp32_precision = value


@dataclass
class TorchRunner(Runner):
    module: torch.nn.Module | None = None   # what runs (compiled when asked)
    eager: torch.nn.Module | None = None    # the plain module (for MACs, parameters)
    backend: Backend = Backend.TORCH
    _saved_threads: int = field(default=0, repr=False)
    _scopes: list[contextlib.ExitStack] = field(default_factory=list, repr=False)

    @classmethod
    def load(cls, path: str | Path, options: RunnerOptions, bundle: ModelBundle | None = None,
             input_size: int | tuple[int, int] | None = None) -> TorchRunner:
        """``input_size`` runs a one-image model at another resolution (a ConfigError for other models)."""
        bundle = bundle or load_model(path)
        device = torch.device(options.device if options.device != "cpu" else "cpu")
        eager = bundle.model.eval().to(device)
        module = torch.compile(eager) if options.compile else eager
        meta = resized(ArtifactMeta(bundle.signature, bundle.task, list(bundle.lineage), {"target": "torch"}),
                       input_size, Path(path))
        details = {"threads": options.threads, "device": str(device), "compile": options.compile,
                   "torch": torch.__version__}
        if device.type == "cuda":
            details["tf32"] = False
        return cls(Path(path), meta, options, details, module=module, eager=eager)

    def __enter__(self) -> TorchRunner:
        # torch's thread count and TF32 settings are process-wide: set them while this runner measures, restore after
        scope = contextlib.ExitStack()
        scope.enter_context(self._precision())
        self._scopes.append(scope)
        self._saved_threads = torch.get_num_threads()
        torch.set_num_threads(self.details["threads"])
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._saved_threads)
        self._scopes.pop().close()

    def _precision(self) -> contextlib.AbstractContextManager:
        """On CUDA, fp32 means fp32: TF32 off (the reference TensorRT and onnxruntime fp32 are compared with)."""
        return full_fp32() if self.options.device.startswith("cuda") else contextlib.nullcontext()

    def run(self, batch: Batch) -> np.ndarray:
        return _numpy(task_output(self._forward(batch), self.signature))

    def run_all(self, batch: Batch) -> dict[str, np.ndarray]:
        return {name: _numpy(t) for name, t in all_outputs(self._forward(batch), self.signature).items()}

    @torch.inference_mode()
    def _forward(self, batch: Batch):
        device = next(self.module.parameters()).device
        arrays = feed(self.signature, as_tuple(batch)).values()  # each cast to its input's dtype
        x = tuple(torch.from_numpy(a).to(device) for a in arrays)
        with contextlib.nullcontext() if self._scopes else self._precision():
            return call(self.module, x if len(x) > 1 else x[0])


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().cpu().numpy()
