"""Does the exported artifact compute what the source model computes? Checked after every export."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.runners import Backend, RunnerOptions, open_runner
from deepslim.artifact import ArtifactKind, artifact_kind
from deepslim.data import open_dataset, subset
from deepslim.models import ModelBundle
from deepslim.spec import InputSpec
from export.errors import ParityError

DEFAULT_BACKEND = {ArtifactKind.ONNX: Backend.ONNXRUNTIME, ArtifactKind.OPENVINO: Backend.OPENVINO,
                   ArtifactKind.TENSORRT: Backend.TENSORRT, ArtifactKind.BUNDLE: Backend.TORCH}


@dataclass(frozen=True)
class Tolerance:
    atol: float | None      # element-wise |a - b| <= atol + rtol * |ref|; None: not judged by values
    rtol: float
    min_agreement: float    # top-1 agreement with the source model


# fp32 must match tightly; fp16 loosely; int8 is judged by top-1 agreement (accuracy is the quantizer's job)
TOLERANCES = {"fp32": Tolerance(1e-4, 1e-4, 0.99), "fp16": Tolerance(2e-2, 2e-2, 0.98),
              "int8": Tolerance(None, 0.0, 0.95)}


@dataclass(frozen=True)
class ParityReport:
    artifact: str
    backend: str
    reference: str
    precision: str
    samples: int
    inputs: str
    max_abs: float
    max_rel: float
    mean_abs: float
    top1_agreement: float
    passed: bool

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (f"parity {verdict}: {self.artifact} on {self.backend} vs {self.reference}, {self.samples} {self.inputs} inputs: "
                f"max |diff| {self.max_abs:.2e}, max rel {self.max_rel:.2e}, top-1 agreement {self.top1_agreement:.4f}")


def parity_inputs(spec: InputSpec, dataset: str | None, samples: int, severity: int = 3) -> tuple[np.ndarray, str]:
    """``samples`` real test-split inputs from ``dataset`` (or seeded random ones) shaped by ``spec``."""
    if dataset is None:
        gen = torch.Generator().manual_seed(0)
        return torch.randn(samples, *spec.shape, generator=gen).numpy(), "random"
    ds = subset(open_dataset(dataset, severity=severity).split("test", spec), samples, seed=0)
    return torch.stack([ds[i][0] for i in range(len(ds))]).numpy(), f"{dataset} test"


def check_parity(source: ModelBundle | str | Path, artifact: str | Path, *, precision: str = "fp32",
                 dataset: str | None = None, samples: int = 64, backend: Backend | None = None, batch: int = 16,
                 raise_on_failure: bool = True) -> ParityReport:
    """Compare ``artifact``'s logits with the source's (a bundle in torch, or an ONNX file in onnxruntime)
    on the same inputs; raise ParityError past the precision's tolerance."""
    artifact = Path(artifact)
    backend = Backend(backend) if backend else DEFAULT_BACKEND[artifact_kind(artifact)]
    runner = open_runner(artifact, backend, RunnerOptions())
    x, label = parity_inputs(runner.meta.input_spec, dataset, samples)
    got = _run(runner, x, batch)
    if isinstance(source, ModelBundle):
        model = source.model.eval().cpu()  # moved outside inference mode (see deepslim.evaluation.predict)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).float().numpy()
        against = "torch"
    else:
        reference = open_runner(source, DEFAULT_BACKEND[artifact_kind(source)], RunnerOptions())
        ref, against = _run(reference, x, batch), reference.label
    report = _compare(ref, got, precision, artifact.name, backend.value, label, against)
    if raise_on_failure and not report.passed:
        raise ParityError(f"{report.summary()}; the {precision} tolerance is {_describe(TOLERANCES[precision])}.")
    return report


def _run(runner, x: np.ndarray, batch: int) -> np.ndarray:
    with runner:
        return np.concatenate([runner.run(x[i:i + batch]) for i in range(0, len(x), batch)])


def _compare(ref: np.ndarray, got: np.ndarray, precision: str, name: str, backend: str, label: str,
             against: str) -> ParityReport:
    tol = TOLERANCES[precision]
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    rel = diff / np.maximum(np.abs(ref), 1e-6)
    agreement = float(np.mean(ref.argmax(1) == got.argmax(1)))
    values_ok = tol.atol is None or bool(np.all(diff <= tol.atol + tol.rtol * np.abs(ref)))
    passed = values_ok and agreement >= tol.min_agreement and bool(np.isfinite(got).all())
    return ParityReport(name, backend, against, precision, len(ref), label, float(diff.max()), float(rel.max()),
                        float(diff.mean()), agreement, passed)


def _describe(tol: Tolerance) -> str:
    values = f"|diff| <= {tol.atol:g} + {tol.rtol:g}*|ref| and " if tol.atol is not None else ""
    return f"{values}top-1 agreement >= {tol.min_agreement:g}"
