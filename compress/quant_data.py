"""The data a quantization stage reads, and running artifacts on it: every input of the model, any task.

``QuantData`` holds the calibration samples (one array per input, in the signature's order), the
val and test splits (inputs and targets) and the model's signature and task. Artifacts are run on
it with :func:`run_outputs` — through the benchmark runners for a one-image model (the harness of
``deepslim bench``), else with a session that feeds every input by name — and judged by
:func:`score` with :func:`deepslim.metrics.task_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepslim.errors import DatasetError, InputFileError, first_line
from deepslim.signature import Signature
from deepslim.tasks import Task

Inputs = tuple[np.ndarray, ...]  # one array per model input, in the signature's order


@dataclass
class QuantData:
    calibration: Inputs                 # per input: (N, ...) prepared for the artifact (normalised, right dtype)
    val: tuple[Inputs, np.ndarray]
    test: tuple[Inputs, np.ndarray]
    signature: Signature
    task: Task
    policies: dict[str, Any] = field(default_factory=dict)  # the source's split and preprocessing, recorded

    @property
    def float_calibration(self) -> Inputs:
        return float_inputs(self.calibration, self.signature)


def float_inputs(arrays: Inputs, signature: Signature) -> Inputs:
    """Each array in its input's own dtype (float inputs float32, tokens and masks their integer type)."""
    return tuple(np.ascontiguousarray(a.astype(s.dtype, copy=False)) for a, s in zip(arrays, signature.inputs))


def as_inputs(x: np.ndarray | Inputs | list) -> Inputs:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def trim_tokens(xs: Inputs, names: tuple[str, ...] | list[str]) -> Inputs:
    """A text batch cut to its longest row: trailing columns where every ``attention_mask`` is 0 dropped (as
    dynamic padding feeds a deployed model); other batches as they are."""
    if "attention_mask" not in names or len(xs) != len(names):
        return xs
    mask = xs[list(names).index("attention_mask")]
    if mask.ndim != 2 or mask.shape[1] == 0 or not mask.any():
        return xs
    keep = int(np.nonzero(mask.any(axis=0))[0].max()) + 1
    return tuple(a[:, :keep] if a.ndim == 2 and a.shape[1] == mask.shape[1] else a for a in xs)


def load_data(dataset: str, signature: Signature, task: Task, samples: int | None, *, severity: int = 3,
              seed: int = 0) -> QuantData:
    """Calibration samples (a seeded subset of the train split, no augmentation) and the val and test splits,
    each prepared for ``signature`` and checked against ``task``."""
    from deepslim.data import calibration_inputs, open_dataset
    from deepslim.provenance import data_policies
    source = open_dataset(dataset, severity=severity)
    _check_task(task, source.info.task_of(), dataset)
    calibration = calibration_inputs(dataset, signature, samples, severity=severity, seed=seed)
    splits = {name: _arrays(source.split(name, signature, task=task), signature) for name in ("val", "test")}
    return QuantData(float_inputs(calibration, signature), splits["val"], splits["test"], signature, task,
                     data_policies(source, signature))


def _check_task(model: Task, data: Task, dataset: str) -> None:
    if model.is_classification and data.is_classification and model.width != data.width:
        raise DatasetError(f"The model predicts {model.width} classes but dataset '{dataset}' has {data.width}.")
    if model.kind is not data.kind and not (model.kind.value == "regression" and data.is_classification):
        raise DatasetError(f"The model solves a {model.kind.value} task but dataset '{dataset}' has "
                           f"{data.kind.value} targets.")
    if model.kind is data.kind and model.width != data.width:
        raise DatasetError(f"The model has {model.width} outputs per sample but dataset '{dataset}' has "
                           f"{data.width} targets.")


def _arrays(ds, signature: Signature) -> tuple[Inputs, np.ndarray]:
    import torch

    from deepslim.modelio import numpy_inputs
    xs: list[Inputs] = []
    ys = []
    for x, y in torch.utils.data.DataLoader(ds, batch_size=256, shuffle=False):
        xs.append(numpy_inputs(x))
        ys.append(y.numpy())
    if not xs:
        raise DatasetError("The evaluation split is empty.")
    inputs = tuple(np.concatenate([batch[k] for batch in xs]) for k in range(len(xs[0])))
    return float_inputs(inputs, signature), np.concatenate(ys)


# --- running an artifact ------------------------------------------------------------------------------

def run_outputs(path: Path, backend: str, x: np.ndarray | Inputs, signature: Signature | None = None,
                batch: int = 32) -> np.ndarray:
    """The task output of the artifact ``path`` on the inputs ``x`` (one array, or one per input)."""
    inputs = as_inputs(x)
    if signature is None or signature.single_image:
        return _runner_outputs(path, backend, inputs[0], batch)
    run = _session(path, backend, signature)
    n = len(inputs[0])
    names = signature.input_names if signature.text is not None else ()
    return np.concatenate([run(trim_tokens(tuple(a[i:i + batch] for a in inputs), names))
                           for i in range(0, n, batch)])


def _runner_outputs(path: Path, backend: str, x: np.ndarray, batch: int) -> np.ndarray:
    """A one-image model through the benchmark runners (static-shape runners get full, padded batches)."""
    from benchmarks.runners import RunnerOptions, open_runner
    with open_runner(path, backend, RunnerOptions()) as runner:
        batch = min(batch, runner.max_batch or batch)
        runner.prepare(batch)
        out = []
        for i in range(0, len(x), batch):
            chunk = x[i:i + batch]
            pad = batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            out.append(np.asarray(runner.run(chunk))[: batch - pad])
    return np.concatenate(out)


def _session(path: Path, backend: str, signature: Signature):
    """``run(inputs) -> task output`` for an ONNX file (onnxruntime) or an IR (OpenVINO), every input fed by name."""
    from deepslim.modelio import feed, select_output
    if backend == "onnxruntime":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for bad files
            raise InputFileError(f"onnxruntime cannot load {path.name}: {first_line(exc)}.") from exc
        names = tuple(i.name for i in session.get_inputs())
        outputs = [o.name for o in session.get_outputs()]
        return lambda xs: np.asarray(select_output(session.run(None, feed(signature, xs, names)), outputs, signature))
    compiled = compile_openvino(path)
    return lambda xs: openvino_output(compiled, signature, xs)


def compile_openvino(path: Path):
    import openvino as ov
    core = ov.Core()
    return core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def openvino_output(compiled, signature: Signature, xs: Inputs) -> np.ndarray:
    """The task output of a compiled OpenVINO model on the inputs ``xs`` (fed by the model's input names)."""
    from deepslim.modelio import feed, select_output
    xs = trim_tokens(xs, signature.input_names) if signature.text is not None else xs
    result = compiled(feed(signature, xs, tuple(range(len(compiled.inputs)))))
    outputs = [result[o] for o in compiled.outputs]
    names = [next(iter(o.get_names()), "") for o in compiled.outputs]
    return np.asarray(select_output(outputs, names, signature))


# --- judging -----------------------------------------------------------------------------------------

def score(path: Path, backend: str, data: QuantData, reference: dict[str, np.ndarray] | None = None):
    """The task's metrics on val and test (with agreement against the reference outputs) and the outputs."""
    from deepslim.metrics import task_metrics
    outputs = {name: run_outputs(path, backend, getattr(data, name)[0], data.signature) for name in ("val", "test")}
    metrics = {name: task_metrics(data.task, outputs[name], getattr(data, name)[1],
                                  reference=None if reference is None else reference[name])
               for name in outputs}
    return metrics, outputs


def metric_words(task: Task) -> tuple[str, str]:
    """How messages name the primary metric and its drop: ("top-1", "pt"), ("R²", "pt"), ("MAE", "%")."""
    from deepslim.tasks import metric_info
    return metric_info(task.primary).label, "pt" if task.drop_unit() == "points" else "%"
