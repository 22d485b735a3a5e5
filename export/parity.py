"""Does the exported artifact compute what the source model computes? Checked after every export.

Inputs are real samples where possible: the dataset the user names, else the one recorded in the
model's lineage, and only then seeded N(0, 1) noise (which sends a network whose BatchNorm
statistics came from real images far out of distribution). Values are judged per sample against
the row's magnitude, ``|diff| <= atol + rtol * max|ref_row|``, and classifiers by top-1 agreement
where the reference's margin exceeds that tolerance. When the torch source disagrees with its own
fp64 run by more than the tolerance, the inputs are ill-conditioned for the model and the report
says so instead of blaming the export.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.runners import Backend, RunnerOptions, open_runner
from deepslim.artifact import ArtifactKind, artifact_kind
from deepslim.data import open_dataset, subset
from deepslim.models import ModelBundle
from deepslim.spec import InputSpec, StageRecord
from deepslim.provenance import recorded_dataset, recorded_name, usable_recorded
from export.errors import ParityError

DEFAULT_BACKEND = {ArtifactKind.ONNX: Backend.ONNXRUNTIME, ArtifactKind.OPENVINO: Backend.OPENVINO,
                   ArtifactKind.TENSORRT: Backend.TENSORRT, ArtifactKind.BUNDLE: Backend.TORCH}


@dataclass(frozen=True)
class Tolerance:
    atol: float | None      # per sample: |a - b| <= atol + rtol * max|ref_row|; None: not judged by values
    rtol: float
    min_agreement: float    # top-1 agreement with the source model (flips inside the tolerance excused)
    needs_real_inputs: bool = False


# fp32 must match tightly; fp16 loosely; int8 is judged by top-1 agreement on real inputs only (agreement of a
# quantized model on noise says nothing; accuracy is the quantizer's job)
TOLERANCES = {"fp32": Tolerance(1e-4, 1e-3, 0.99), "fp16": Tolerance(1e-2, 2e-2, 0.98),
              "int8": Tolerance(None, 0.0, 0.95, needs_real_inputs=True)}


@dataclass(frozen=True)
class ParityInputs:
    """Where the compared inputs come from: a dataset split, or seeded noise; and why."""

    dataset: str | None
    severity: int = 3
    why: str = "no dataset given or recorded"

    @property
    def real(self) -> bool:
        return self.dataset is not None


@dataclass(frozen=True)
class ParityReport:
    artifact: str
    backend: str
    reference: str
    precision: str
    samples: int
    inputs: str
    max_abs: float
    max_rel: float           # max over samples of |diff| / max|ref_row|
    mean_abs: float
    top1_agreement: float
    passed: bool
    source_fp64_rel: float | None = None   # the torch source vs its own fp64 run, when measured
    ill_conditioned: bool = False

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        text = (f"parity {verdict}: {self.artifact} on {self.backend} vs {self.reference}, {self.samples} "
                f"{self.inputs} inputs: max |diff| {self.max_abs:.2e}, max rel {self.max_rel:.2e} (of the row's "
                f"largest output), top-1 agreement {self.top1_agreement:.4f}")
        if self.ill_conditioned:
            advice = "compare on real inputs (--dataset)" if self.inputs.startswith("seeded random") else \
                "the model's outputs are not stable enough for an fp32 comparison on them"
            text += (f"; the source model itself is ill-conditioned on these inputs (torch fp32 vs fp64 differ by "
                     f"{self.source_fp64_rel:.2e} of the row's largest output), so they cannot judge the export: "
                     f"{advice}")
        return text


def choose_inputs(dataset: str | None, lineage: list[StageRecord], severity: int = 3,
                  classes: list[str] | None = None) -> ParityInputs:
    """The dataset the user named, else the model's own (last recorded in its lineage), else noise.

    A model file's word never runs code or walks an arbitrary directory: a recorded ``file.py:fn``
    is not used (the user can pass it as --dataset), and a recorded directory only when its class
    folders are the model's classes (see :mod:`deepslim.provenance`).
    """
    recorded = recorded_dataset(lineage)
    if dataset is not None:
        made_on = recorded_name(*recorded) if recorded else None
        differs = made_on is not None and made_on != recorded_name(dataset, severity)
        return ParityInputs(dataset, severity, f"--dataset{f'; the model was made on {made_on}' if differs else ''}")
    if recorded is None:
        return ParityInputs(None)
    name, recorded_severity = recorded
    why = usable_recorded(name, classes)
    return ParityInputs(None, why=why) if why else ParityInputs(name, recorded_severity, "the model's own dataset")


def parity_inputs(spec: InputSpec, source: ParityInputs | str | None, samples: int,
                  severity: int = 3) -> tuple[np.ndarray, str]:
    """``samples`` real test-split inputs (or seeded random ones) shaped by ``spec``, and their label."""
    if not isinstance(source, ParityInputs):
        source = ParityInputs(source, severity, "--dataset" if source else "no dataset given or recorded")
    if source.dataset is None:
        gen = torch.Generator().manual_seed(0)
        return torch.randn(samples, *spec.shape, generator=gen).numpy(), f"seeded random ({source.why})"
    ds = subset(open_dataset(source.dataset, severity=source.severity).split("test", spec), samples, seed=0)
    return torch.stack([ds[i][0] for i in range(len(ds))]).numpy(), f"{source.dataset} test ({source.why})"


def check_parity(source: ModelBundle | str | Path, artifact: str | Path, *, precision: str = "fp32",
                 dataset: str | None = None, samples: int = 64, backend: Backend | None = None, batch: int = 16,
                 severity: int = 3, raise_on_failure: bool = True) -> ParityReport:
    """Compare ``artifact``'s outputs with the source's (a bundle in torch, or an ONNX file in onnxruntime)
    on the same inputs; raise ParityError past the precision's tolerance."""
    artifact = Path(artifact)
    tol = TOLERANCES[precision]
    backend = Backend(backend) if backend else DEFAULT_BACKEND[artifact_kind(artifact)]
    runner = open_runner(artifact, backend, RunnerOptions())
    lineage = source.lineage if isinstance(source, ModelBundle) else runner.meta.lineage
    chosen = choose_inputs(dataset, lineage, severity, list(runner.meta.classes))
    if tol.needs_real_inputs and not chosen.real:
        raise ParityError(f"{precision} parity of {artifact.name} needs real inputs (top-1 agreement of a quantized "
                          f"model on noise says nothing), and {chosen.why}; pass --dataset.")
    x, label = parity_inputs(runner.meta.input_spec, chosen, samples)
    got = _run(runner, x, batch)
    if isinstance(source, ModelBundle):
        ref, against = _torch_outputs(source.model, x), "torch"
    else:
        reference = open_runner(source, DEFAULT_BACKEND[artifact_kind(source)], RunnerOptions())
        ref, against = _run(reference, x, batch), reference.label
    report = compare(ref, got, precision, artifact.name, backend.value, label, against)
    if not report.passed and isinstance(source, ModelBundle) and tol.atol is not None:
        report = _with_conditioning(report, source.model, x, ref, tol)
    if raise_on_failure and not report.passed:
        raise ParityError(f"{report.summary()}; the {precision} tolerance is {describe(tol)}.")
    return report


def _torch_outputs(model: torch.nn.Module, x: np.ndarray, dtype: torch.dtype = torch.float32) -> np.ndarray:
    model = model.eval().cpu()  # moved outside inference mode (see deepslim.evaluation.predict)
    with torch.inference_mode():
        return model(torch.from_numpy(x).to(dtype)).double().numpy()


def _with_conditioning(report: ParityReport, model: torch.nn.Module, x: np.ndarray, ref: np.ndarray,
                       tol: Tolerance) -> ParityReport:
    """Run the source in fp64 too: if fp32 torch already misses the tolerance, blame the inputs, not the export."""
    exact = _torch_outputs(copy.deepcopy(model).double(), x.astype(np.float64), torch.float64)
    rel = float(np.max(_row_rel(np.abs(ref - exact), exact)))
    ill = not _values_ok(np.abs(ref - exact), exact, tol)
    return ParityReport(**{**report.to_json(), "source_fp64_rel": rel, "ill_conditioned": ill})


def _run(runner, x: np.ndarray, batch: int) -> np.ndarray:
    with runner:
        return np.concatenate([runner.run(x[i:i + batch]) for i in range(0, len(x), batch)])


def _row_scale(ref: np.ndarray) -> np.ndarray:
    flat = np.abs(ref.reshape(len(ref), -1))
    return flat.max(axis=1).reshape((len(ref),) + (1,) * (ref.ndim - 1))


def _row_rel(diff: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return diff / np.maximum(_row_scale(ref), 1e-12)


def _values_ok(diff: np.ndarray, ref: np.ndarray, tol: Tolerance) -> bool:
    return tol.atol is None or bool(np.all(diff <= tol.atol + tol.rtol * _row_scale(ref)))


def _agreement(ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> tuple[float, float]:
    """Raw top-1 agreement, and the one that excuses flips between classes the reference ties within tolerance."""
    if ref.ndim != 2 or ref.shape[1] < 2:
        return 1.0, 1.0
    a, b = ref.argmax(1), got.argmax(1)
    rows = np.arange(len(ref))
    margin = ref[rows, a] - ref[rows, b]
    slack = (tol.atol or 0.0) + tol.rtol * _row_scale(ref).ravel()
    return float(np.mean(a == b)), float(np.mean((a == b) | (margin <= slack)))


def compare(ref: np.ndarray, got: np.ndarray, precision: str, name: str, backend: str, label: str,
            against: str) -> ParityReport:
    tol = TOLERANCES[precision]
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(ref - got)
    raw, excused = _agreement(ref, got, tol)
    passed = _values_ok(diff, ref, tol) and excused >= tol.min_agreement and bool(np.isfinite(got).all())
    return ParityReport(name, backend, against, precision, len(ref), label, float(diff.max()),
                        float(_row_rel(diff, ref).max()), float(diff.mean()), raw, passed)


def describe(tol: Tolerance) -> str:
    values = f"|diff| <= {tol.atol:g} + {tol.rtol:g}*max|ref row| and " if tol.atol is not None else ""
    return f"{values}top-1 agreement >= {tol.min_agreement:g}"
