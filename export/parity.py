"""Does the exported artifact compute what the source model computes? Checked after every export.

Inputs are real samples of every input where possible: the dataset the user names, else the one
recorded in the model's lineage, and only then seeded noise of each input's shape and dtype (which
sends a network whose BatchNorm statistics came from real data far out of distribution). The
output the task reads is compared:

- values per sample against the output's magnitude, ``|diff| <= atol + rtol * scale``: the row's
  largest logit (classification, multilabel), or the largest ``|prediction|`` of that output over
  the samples (regression, where one prediction may sit near zero);
- decisions: top-1 agreement (classification) and per-label agreement of ``logit > 0``
  (multilabel), flips where the reference's margin is inside the tolerance excused; regression
  counts the samples within the tolerance (int8: within a tenth of the predictions' spread).

When the torch source disagrees with its own fp64 run by more than the tolerance, the inputs are
ill-conditioned for the model and the report says so instead of blaming the export.
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
from deepslim.errors import DatasetError
from deepslim.modelio import call, example_inputs, task_output
from deepslim.models import ModelBundle
from deepslim.signature import Signature
from deepslim.spec import InputSpec, StageRecord
from deepslim.provenance import recorded_dataset, recorded_name, usable_recorded
from deepslim.tasks import Task, TaskKind
from export.errors import ParityError

# A batch: one array (a model with one input) or a tuple of arrays in the signature's input order.
Batch = np.ndarray | tuple[np.ndarray, ...]

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
INT8_REGRESSION_SPREAD = 0.1  # int8 regression: a sample agrees within this fraction of the predictions' std
AGREEMENT = {TaskKind.CLASSIFICATION: "top-1 agreement", TaskKind.MULTILABEL: "label agreement",
             TaskKind.REGRESSION: "samples within tolerance"}


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
    task: str = "classification"           # what top1_agreement counts: see AGREEMENT
    output: str = ""                       # the output compared (the one the task reads)

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        regression = self.task == TaskKind.REGRESSION.value
        scale = "the output's largest |value|" if regression else "the row's largest output"
        compared = f" ({self.output})" if self.output else ""
        text = (f"parity {verdict}: {self.artifact}{compared} on {self.backend} vs {self.reference}, {self.samples} "
                f"{self.inputs} inputs: max |diff| {self.max_abs:.2e}, max rel {self.max_rel:.2e} (of {scale}), "
                f"{AGREEMENT[TaskKind(self.task)]} {self.top1_agreement:.4f}")
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


def parity_inputs(spec: InputSpec | Signature, source: ParityInputs | str | None, samples: int,
                  severity: int = 3, *, task: Task | None = None) -> tuple[Batch, str]:
    """``samples`` real test-split inputs (or seeded random ones) for ``spec``, and their label.

    For a signature the batch is one array per input (a bare array for one input); for an
    :class:`InputSpec` (a one-image model, as before signatures) one array."""
    signature = Signature.from_input_spec(spec) if isinstance(spec, InputSpec) else spec
    if not isinstance(source, ParityInputs):
        source = ParityInputs(source, severity, "--dataset" if source else "no dataset given or recorded")
    if source.dataset is None:
        arrays = tuple(t.numpy() for t in example_inputs(signature, samples, seed=0))
        return _batch(arrays), f"seeded random ({source.why})"
    split = open_dataset(source.dataset, severity=source.severity).split("test", signature, task=task)
    ds = subset(split, samples, seed=0)
    rows = [_as_tuple(ds[i][0]) for i in range(len(ds))]
    if rows and len(rows[0]) != len(signature.inputs):
        raise DatasetError(f"{source.dataset} gives {len(rows[0])} inputs per sample but the model takes "
                           f"{signature.describe()}; pass its own dataset with --dataset.")
    arrays = tuple(torch.stack([r[k] for r in rows]).numpy() for k in range(len(signature.inputs)))
    return _batch(arrays), f"{source.dataset} test ({source.why})"


def check_parity(source: ModelBundle | str | Path, artifact: str | Path, *, precision: str = "fp32",
                 dataset: str | None = None, samples: int = 64, backend: Backend | None = None, batch: int = 16,
                 severity: int = 3, raise_on_failure: bool = True) -> ParityReport:
    """Compare the output the task reads of ``artifact`` with the source's (a bundle in torch, or an ONNX file in
    onnxruntime) on the same inputs (every input of the model); raise ParityError past the precision's tolerance."""
    artifact = Path(artifact)
    tol = TOLERANCES[precision]
    backend = Backend(backend) if backend else DEFAULT_BACKEND[artifact_kind(artifact)]
    runner = open_runner(artifact, backend, RunnerOptions())
    signature, task = runner.meta.signature, runner.meta.task
    lineage = source.lineage if isinstance(source, ModelBundle) else runner.meta.lineage
    chosen = choose_inputs(dataset, lineage, severity, list(task.names))
    if tol.needs_real_inputs and not chosen.real:
        raise ParityError(f"{precision} parity of {artifact.name} needs real inputs (agreement of a quantized "
                          f"model on noise says nothing), and {chosen.why}; pass --dataset.")
    xs, label = _inputs(signature, chosen, samples, task)
    got = np.concatenate([_run(runner, x, batch) for x in xs])
    if isinstance(source, ModelBundle):
        ref, against = _torch_outputs(source.model, xs, source.signature), "torch"
    else:
        reference = open_runner(source, DEFAULT_BACKEND[artifact_kind(source)], RunnerOptions())
        ref, against = np.concatenate([_run(reference, x, batch) for x in xs]), reference.label
    report = compare(ref, got, precision, artifact.name, backend.value, label, against, task=task,
                     output=signature.task_output)
    if not report.passed and isinstance(source, ModelBundle) and tol.atol is not None:
        report = _with_conditioning(report, source, xs, ref, tol, task)
    if raise_on_failure and not report.passed:
        raise ParityError(f"{report.summary()}; the {precision} tolerance is {describe(tol, task)}.")
    return report


def _inputs(signature: Signature, chosen: ParityInputs, samples: int, task: Task) -> tuple[list[Batch], str]:
    """The compared inputs as batches: one, or for a text model on its real texts one per sequence length."""
    if signature.text is not None and chosen.real:
        source = open_dataset(chosen.dataset, severity=chosen.severity)
        if callable(getattr(source, "texts_of", None)):
            return text_inputs(signature, source.texts_of("test"), samples,
                               f"{chosen.dataset} test ({chosen.why})")
    x, label = parity_inputs(signature, chosen, samples, task=task)
    return [x], label


def sequence_lengths(natural: int, max_length: int) -> tuple[int, ...]:
    """The lengths a text model is compared at: half its texts' longest (truncated), the longest itself, and
    the tokenizer's ``max_length`` (padded), so a fixed sequence axis cannot pass unnoticed."""
    return tuple(sorted({max(2, natural // 2), natural, max_length}))


def text_inputs(signature: Signature, texts: list[tuple[str, ...]], samples: int, where: str
                ) -> tuple[list[Batch], str]:
    """``samples`` of ``texts`` (seeded) tokenized at each of :func:`sequence_lengths`: truncated to it or padded
    to it (attention mask 0), one batch per length in the signature's input order."""
    if not texts:
        raise DatasetError(f"{where} has no texts to compare the export on.")
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))[:samples].tolist()
    picked = [texts[i] for i in order]
    natural = int(tokens_at(signature, picked, None)["input_ids"].shape[1])
    lengths = sequence_lengths(natural, signature.text.max_length)
    batches = [_batch(tuple(v for v in tokens_at(signature, picked, n).values())) for n in lengths]
    return batches, f"{where} at sequence lengths {', '.join(map(str, lengths))}"


def tokens_at(signature: Signature, texts: list[tuple[str, ...]], length: int | None) -> dict[str, np.ndarray]:
    """The model's inputs for ``texts`` at ``length`` tokens (truncated or padded; None: the longest text, up to
    ``max_length``), in the signature's order; an input the tokenizer does not give is zeros."""
    tokenizer = signature.text.tokenizer()
    first, second = [t[0] for t in texts], ([t[1] for t in texts] if len(texts[0]) > 1 else None)
    out = tokenizer(first, second, truncation=True, max_length=length or signature.text.max_length,
                    padding="max_length" if length else "longest", return_tensors="np")
    shape = out["input_ids"].shape
    return {spec.name: np.asarray(out[spec.name], dtype=spec.dtype) if spec.name in out
            else np.zeros(shape, dtype=spec.dtype) for spec in signature.inputs}


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _batch(arrays: tuple[np.ndarray, ...]) -> Batch:
    return arrays[0] if len(arrays) == 1 else arrays


def _rows(x: Batch, start: int, stop: int) -> Batch:
    return _batch(tuple(a[start:stop] for a in _as_tuple(x)))


def _torch_outputs(model: torch.nn.Module, x: Batch | list[Batch], signature: Signature | None = None,
                   dtype: torch.dtype = torch.float32) -> np.ndarray:
    """The task output of ``model`` on ``x`` (float inputs in ``dtype``, integer inputs as they are); a list of
    batches (one per sequence length) gives their outputs one after the other."""
    if isinstance(x, list):
        return np.concatenate([_torch_outputs(model, b, signature, dtype) for b in x])
    model = model.eval().cpu()  # moved outside inference mode (see deepslim.evaluation.predict)
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in _as_tuple(x))
    args = tuple(a.to(dtype) if a.is_floating_point() else a for a in args)
    with torch.inference_mode():
        out = call(model, args)
        out = task_output(out, signature) if signature is not None else out
        return out.double().numpy()


def _with_conditioning(report: ParityReport, bundle: ModelBundle, x: Batch | list[Batch], ref: np.ndarray,
                       tol: Tolerance, task: Task | None = None) -> ParityReport:
    """Run the source in fp64 too: if fp32 torch already misses the tolerance, blame the inputs, not the export."""
    exact = _torch_outputs(copy.deepcopy(bundle.model).double(), x, bundle.signature, torch.float64)
    rel = float(np.max(_row_rel(np.abs(ref - exact), exact, task)))
    ill = not _values_ok(np.abs(ref - exact), exact, tol, task)
    return ParityReport(**{**report.to_json(), "source_fp64_rel": rel, "ill_conditioned": ill})


def _run(runner, x: Batch, batch: int) -> np.ndarray:
    n = len(_as_tuple(x)[0])
    with runner:
        return np.concatenate([runner.run(_rows(x, i, i + batch)) for i in range(0, n, batch)])


def _is_regression(task: Task | None) -> bool:
    return task is not None and task.kind is TaskKind.REGRESSION


def _row_scale(ref: np.ndarray, task: Task | None = None) -> np.ndarray:
    """Per sample, the magnitude its tolerance scales with: the row's largest |output| (logits), or for a
    regression the largest |prediction| of each output over all samples (one prediction can sit near 0)."""
    flat = np.abs(ref.reshape(len(ref), -1))
    if _is_regression(task):
        return np.broadcast_to(flat.max(axis=0, keepdims=True), flat.shape).reshape(ref.shape)
    return flat.max(axis=1).reshape((len(ref),) + (1,) * (ref.ndim - 1))


def _row_rel(diff: np.ndarray, ref: np.ndarray, task: Task | None = None) -> np.ndarray:
    return diff / np.maximum(_row_scale(ref, task), 1e-12)


def _values_ok(diff: np.ndarray, ref: np.ndarray, tol: Tolerance, task: Task | None = None) -> bool:
    return tol.atol is None or bool(np.all(diff <= tol.atol + tol.rtol * _row_scale(ref, task)))


def _agreement(ref: np.ndarray, got: np.ndarray, tol: Tolerance, task: Task | None = None) -> tuple[float, float]:
    """Raw agreement of the task's decisions, and the one that excuses flips the reference ties within tolerance."""
    kind = task.kind if task is not None else TaskKind.CLASSIFICATION
    slack = (tol.atol or 0.0) + tol.rtol * _row_scale(ref, task)
    if kind is TaskKind.REGRESSION:
        flat_ref, flat_got = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
        slack = slack.reshape(flat_ref.shape) if tol.atol is not None else \
            INT8_REGRESSION_SPREAD * flat_ref.std(axis=0, keepdims=True)  # int8: a tenth of the predictions' spread
        within = float(np.mean(np.all(np.abs(flat_ref - flat_got) <= slack, axis=1)))
        return within, within
    if kind is TaskKind.MULTILABEL:
        same = (ref > 0) == (got > 0)
        return float(np.mean(same)), float(np.mean(same | (np.abs(ref) <= slack)))
    if ref.ndim != 2 or ref.shape[1] < 2:
        return 1.0, 1.0
    a, b = ref.argmax(1), got.argmax(1)
    rows = np.arange(len(ref))
    margin = ref[rows, a] - ref[rows, b]
    return float(np.mean(a == b)), float(np.mean((a == b) | (margin <= slack.reshape(len(ref), -1)[:, 0])))


def compare(ref: np.ndarray, got: np.ndarray, precision: str, name: str, backend: str, label: str,
            against: str, *, task: Task | None = None, output: str = "") -> ParityReport:
    """Judge ``got`` against ``ref`` (one task output, samples first) at ``precision``'s tolerance for ``task``
    (None: a classifier's logits)."""
    tol = TOLERANCES[precision]
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    if ref.shape != got.shape:
        raise ParityError(f"{name} returns shape {got.shape[1:]} per sample where the source returns {ref.shape[1:]}"
                          f"; the artifact does not compute the same output ({output or 'the task output'}).")
    diff = np.abs(ref - got)
    raw, excused = _agreement(ref, got, tol, task)
    passed = _values_ok(diff, ref, tol, task) and excused >= tol.min_agreement and bool(np.isfinite(got).all())
    kind = (task.kind if task is not None else TaskKind.CLASSIFICATION).value
    return ParityReport(name, backend, against, precision, len(ref), label, float(diff.max()),
                        float(_row_rel(diff, ref, task).max()), float(diff.mean()), raw, passed, task=kind,
                        output=output)


def describe(tol: Tolerance, task: Task | None = None) -> str:
    kind = task.kind if task is not None else TaskKind.CLASSIFICATION
    scale = "max|ref output|" if kind is TaskKind.REGRESSION else "max|ref row|"
    values = f"|diff| <= {tol.atol:g} + {tol.rtol:g}*{scale} and " if tol.atol is not None else ""
    if kind is TaskKind.REGRESSION and tol.atol is None:
        values = f"|diff| <= {INT8_REGRESSION_SPREAD:g}*std of the predictions for "
    return f"{values}{AGREEMENT[kind]} >= {tol.min_agreement:g}"
