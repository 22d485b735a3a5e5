"""PyTorch eager (optionally torch.compile) runner for deepslim bundles."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.runners.base import Backend, Runner, RunnerOptions, as_batch
from deepslim.artifact import ArtifactMeta
from deepslim.models import ModelBundle, load_model


@dataclass
class TorchRunner(Runner):
    module: torch.nn.Module | None = None   # what runs (compiled when asked)
    eager: torch.nn.Module | None = None    # the plain module (for MACs, parameters)
    backend: Backend = Backend.TORCH
    _saved_threads: int = field(default=0, repr=False)

    @classmethod
    def load(cls, path: str | Path, options: RunnerOptions, bundle: ModelBundle | None = None,
             input_size: int | None = None) -> TorchRunner:
        bundle = bundle or load_model(path)
        spec = bundle.input_spec.with_size(input_size) if input_size else bundle.input_spec
        device = torch.device(options.device if options.device != "cpu" else "cpu")
        eager = bundle.model.eval().to(device)
        module = torch.compile(eager) if options.compile else eager
        meta = ArtifactMeta(spec, list(bundle.classes), list(bundle.lineage), {"target": "torch"})
        details = {"threads": options.threads, "device": str(device), "compile": options.compile,
                   "torch": torch.__version__}
        return cls(Path(path), meta, options, details, module=module, eager=eager)

    def __enter__(self) -> TorchRunner:
        # torch's thread count is process-wide: pin it while this runner measures, restore after
        self._saved_threads = torch.get_num_threads()
        torch.set_num_threads(self.details["threads"])
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._saved_threads)

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> np.ndarray:
        device = next(self.module.parameters()).device
        out = self.module(torch.from_numpy(as_batch(batch)).to(device))
        return out.float().cpu().numpy()
