"""Bench for every model kind without exporting anything: inputs fed by name, latency inputs per input, the task
output read, the task's metrics scored, and reports that lead with the task's primary metric (issue #13)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.accuracy import agreement, check_task, score
from benchmarks.bench import BenchReport, Entry, count_macs
from benchmarks.latency import NAMED_DIM, latency_inputs, named_dims, summarize
from benchmarks.report import input_words, pareto_front, primary_metric, summary_rows, title_line, to_markdown
from benchmarks.runners.base import RunnerOptions, feed_names
from benchmarks.runners.tensorrt_runner import EngineRunError, TensorRTRunner
from benchmarks.runners.torch_runner import TorchRunner
from deepslim.artifact import ArtifactMeta
from deepslim.data import DatasetInfo
from deepslim.errors import ConfigError, DatasetError, ModelError
from deepslim.signature import BATCH, InputKind, Signature, TensorSpec
from deepslim.tasks import Task, TaskKind

ENV = {"cpu": {"model": "cpu", "usable_cores": 2, "flags": []}, "gpu": None, "threads": 1, "os": "linux",
       "versions": {"torch": "2"}}

TWO_INPUTS = Signature((TensorSpec("image", (BATCH, 1, 8, 8), kind=InputKind.IMAGE, mean=(0.5,), std=(0.5,),
                                   channel_order="GRAY"),
                        TensorSpec("meta", (BATCH, 4), kind=InputKind.FEATURES)),
                       outputs=("logits", "embedding"), task_output="logits", output_layout="dict")
TOKENS = Signature((TensorSpec("ids", (BATCH, "sequence"), "int64", InputKind.TOKENS),
                    TensorSpec("mask", (BATCH, "sequence"), "int64", InputKind.MASK)))


class DictModel(torch.nn.Module):
    """Two inputs in, a dict out: the task output is ``logits``, ``embedding`` is the other output."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.meta = torch.nn.Linear(4, 2)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, image, meta):
        embedding = torch.cat([self.conv(image).mean((2, 3)), self.meta(meta)], dim=1)
        return {"embedding": embedding, "logits": self.head(embedding)}


def test_artifact_inputs_are_matched_by_name_else_by_position_else_refused():
    assert feed_names(TWO_INPUTS, ["meta", "image"], "m.onnx") == ("image", "meta")  # the signature's order
    old = Signature.from_input_spec(TWO_INPUTS.inputs[0].to_input_spec())  # an image model named "x"
    assert feed_names(old, ["input"], "old.onnx") == ("input",)  # exported before signatures
    with pytest.raises(ModelError, match=r"m.onnx takes the inputs \['input'\] but its metadata describes "
                                         r"\['image', 'meta'\]"):
        feed_names(TWO_INPUTS, ["input"], "m.onnx")


def test_latency_inputs_give_every_input_its_shape_and_dtype_at_each_batch():
    for batch in (1, 4):
        image, meta = latency_inputs(TWO_INPUTS, batch)
        assert image.shape == (batch, 1, 8, 8) and meta.shape == (batch, 4)
        assert image.dtype == meta.dtype == np.float32
    ids, mask = latency_inputs(TOKENS, 4)
    assert ids.shape == mask.shape == (4, NAMED_DIM) and ids.dtype == mask.dtype == np.int64
    assert mask.min() == 1 and set(np.unique(ids)) <= {0, 1}
    assert named_dims(TOKENS) == {"sequence": NAMED_DIM} and named_dims(TWO_INPUTS) == {}
    one = latency_inputs(Signature((TensorSpec("signal", (BATCH, 1, 64)),)), 2)
    assert isinstance(one, np.ndarray) and one.shape == (2, 1, 64)  # one input: a bare array, as before


def _torch_runner(model: torch.nn.Module, signature: Signature, task: Task) -> TorchRunner:
    meta = ArtifactMeta(signature, task)
    return TorchRunner(Path("m.safetensors"), meta, RunnerOptions(threads=1), {"threads": 1}, module=model.eval(),
                       eager=model)


def test_the_torch_runner_feeds_both_inputs_and_returns_the_task_output_of_a_dict():
    torch.manual_seed(0)
    model = DictModel()
    runner = _torch_runner(model, TWO_INPUTS, Task.classification(["a", "b", "c"]))
    image, meta = latency_inputs(TWO_INPUTS, 3)
    with torch.no_grad():
        want = model(torch.from_numpy(image), torch.from_numpy(meta))
    np.testing.assert_allclose(runner.run((image, meta)), want["logits"].numpy(), rtol=1e-6)
    outputs = runner.run_all((image, meta))
    assert list(outputs) == ["logits", "embedding"] and outputs["embedding"].shape == (3, 4)
    macs, params = count_macs(model, TWO_INPUTS)
    assert params == sum(p.numel() for p in model.parameters()) and macs > 0


def test_run_at_another_input_size_is_refused_for_a_model_without_one_image():
    from benchmarks.runners.base import resized
    meta = ArtifactMeta(TWO_INPUTS, Task.classification(["a", "b", "c"]))
    with pytest.raises(ConfigError, match=r"--input-size applies to models with one image input; m.xml takes "
                                          r"image: image 1x8x8 float32, meta: features 4 float32"):
        resized(meta, 16, Path("m.xml"))
    one_image = ArtifactMeta(Signature((TWO_INPUTS.inputs[0],)), Task.classification(["a", "b"]))
    assert resized(one_image, (28, 56), Path("w.xml")).signature.inputs[0].shape == (BATCH, 1, 28, 56)


def test_scores_are_the_tasks_metrics_with_the_registrys_names():
    rng = np.random.default_rng(0)
    targets = rng.standard_normal(50).astype(np.float32)
    regression = Task(TaskKind.REGRESSION, ("target",))
    out = score(targets[:, None] + 0.1, targets, task=regression, reference=targets[:, None])
    assert {"mae", "rmse", "r2", "loss", "samples"} <= set(out) and "top1" not in out and "agreement" not in out
    assert out["mae"] == pytest.approx(0.1, abs=1e-6) and out["r2"] > 0.98
    labels = Task(TaskKind.MULTILABEL, tuple("abcde"))
    y = (rng.random((40, 5)) > 0.5).astype(np.float32)
    logits = np.where(y > 0, 2.0, -2.0)
    out = score(logits, y, task=labels, reference=-logits)
    assert out["map"] == pytest.approx(1.0) and out["subset_accuracy"] == 1.0 and out["agreement"] == 0.0
    user = score(logits, y, task=labels, reference=logits, metric=lambda o, t: {"hits": float((o > 0).sum())})
    assert user == {"hits": float(y.sum()), "agreement": 1.0}
    assert agreement(regression, targets, targets) is None


def test_a_dataset_whose_targets_do_not_fit_the_artifacts_task_is_refused():
    info = DatasetInfo("wine", ("0", "1", "2"), 0, (), (), inputs=(TensorSpec("x", (BATCH, 13)),))
    with pytest.raises(DatasetError, match=r"m.onnx solves a multilabel task but dataset 'wine' has classification"):
        check_task(Task(TaskKind.MULTILABEL, tuple("abc")), info, "wine", "m.onnx")
    with pytest.raises(DatasetError, match=r"m.onnx predicts 10 classes but dataset 'wine' has 3\."):
        check_task(Task.classification([str(i) for i in range(10)]), info, "wine", "m.onnx")
    check_task(Task(TaskKind.REGRESSION, ("target",)), info, "wine", "m.onnx")  # integer targets feed a regression


class _Engine:
    def get_tensor_profile_shape(self, name, profile):
        sample = {"image": (1, 8, 8), "meta": (4,)}[name]
        return [(1, *sample), (4, *sample), (4, *sample)]


class _Context:
    def __init__(self):
        self.shapes = []

    def set_input_shape(self, name, shape):
        self.shapes.append((name, shape))
        return shape[0] <= 4 and shape[1:] == {"image": (1, 8, 8), "meta": (4,)}[name]


class HostEngineRunner(TensorRTRunner):
    """The TensorRT runner of a two-input engine with its GPU call done on the host."""

    def _execute_all(self, x):
        image, meta = x
        assert image.dtype == meta.dtype == np.float32
        return {"logits": np.stack([image.reshape(len(image), -1).sum(1), meta.sum(1)], 1),
                "embedding": meta}


def test_a_two_input_engine_sets_every_input_shape_and_runs_in_chunks():
    meta = ArtifactMeta(TWO_INPUTS, Task.classification(["a", "b"]))
    runner = HostEngineRunner(Path("m.engine"), meta, RunnerOptions(threads=1), {}, engine=_Engine(),
                              context=_Context(), input_names=("image", "meta"), output_names=("logits", "embedding"))
    image, feats = latency_inputs(TWO_INPUTS, 10)
    out = runner.run((image, feats.astype(np.float64)))  # cast to the signature's dtype on the way
    np.testing.assert_allclose(out, np.stack([image.reshape(10, -1).sum(1), feats.sum(1)], 1), rtol=1e-5)
    assert [s for s in runner.context.shapes if s[0] == "meta"] == [("meta", (4, 4)), ("meta", (4, 4)),
                                                                     ("meta", (2, 4))]
    assert runner.run_all((image, feats))["embedding"].shape == (10, 4)
    with pytest.raises(EngineRunError, match=r"refused input shape \(2, 1, 8, 8\), \(2, 5\); its profile takes "
                                             r"batches 1..4 of \(1, 8, 8\), \(4,\)\."):
        runner.run((image[:2], np.zeros((2, 5), np.float32)))


def _entry(name: str, accuracy: dict, p50: float, task: str = "regression", primary: str = "r2",
           inputs: dict | None = None) -> Entry:
    inputs = inputs or {"x": {"shape": [10], "dtype": "float32", "kind": "features"}}
    shape = next(iter(inputs.values()))["shape"] if len(inputs) == 1 else [1, 8, 8]
    entry = Entry(f"{name} [torch]", name, "torch", "bundle", "fp32", 4096, 10, 100, shape, None, {}, 0.1, None,
                  accuracy=accuracy, inputs=inputs, task=task, primary=primary)
    entry.latency = {1: summarize([[p50, p50]], 1)}
    entry.latency[1].speedup = 1.0
    return entry


def _report(entries: list[Entry], primary: str, label: str, higher: bool, unit: str) -> BenchReport:
    config = {"batches": [1], "dataset": "diabetes", "split": "test", "limit": None, "task": "regression",
              "primary_metric": primary, "primary_label": label, "higher_is_better": higher, "drop_unit": unit,
              "images": False}
    return BenchReport("now", ENV, config, entries)


def test_a_regression_report_leads_with_r2_and_its_drop_in_points():
    base = _entry("base.safetensors", {"mae": 40.0, "rmse": 50.0, "r2": 0.45, "samples": 66}, 2.0)
    small = _entry("small.onnx", {"mae": 42.0, "rmse": 52.0, "r2": 0.43, "samples": 66}, 1.0)
    small.drop = Task(TaskKind.REGRESSION, ("target",)).drop(base.accuracy, small.accuracy)
    report = _report([base, small], "r2", "R²", True, "points")
    head, rows = summary_rows(report)
    assert head[4:7] == ["R²", "R² drop (points)", "agree"] and "top-1" not in head
    assert [r[4] for r in rows] == ["0.450", "0.430"] and [r[5] for r in rows] == ["-", "2.00"]
    assert title_line(report) == "accuracy on diabetes, test split (all 66 samples)"
    md = to_markdown(report)
    assert "A regression task, judged by R² (higher is better; a drop is in points against the first artifact)." in md
    kept = json.loads(json.dumps(report.to_json()))
    assert primary_metric(kept) == ("r2", "R²", True, "points") and kept["entries"][1]["accuracy"]["mae"] == 42.0
    assert kept["entries"][1]["drop"] == pytest.approx(2.0)


def test_a_lower_is_better_primary_metric_drops_in_percent_and_its_pareto_front_prefers_low_values():
    task = Task(TaskKind.REGRESSION, ("target",), primary="mae")
    assert task.drop({"mae": 40.0}, {"mae": 42.0}) == pytest.approx(5.0) and task.drop_unit() == "% of the baseline"
    points = [(2.0, 40.0), (1.0, 42.0), (1.5, 45.0)]  # (latency, MAE): the third is slower and worse than the second
    assert pareto_front(points, higher_is_better=False) == [0, 1]
    assert pareto_front(points) == [1, 2]  # read as higher-is-better it would keep the worst one
    report = _report([_entry("a.onnx", {"mae": 40.0, "samples": 66}, 2.0, primary="mae")], "mae", "MAE", False,
                     "% of the baseline")
    head, _ = summary_rows(report, compact=True)
    assert "MAE" in head and not any("drop" in h for h in head)  # the terminal's compact view keeps its width


def test_reports_before_tasks_and_image_models_keep_top1_and_images():
    report = BenchReport("now", ENV, {"batches": [1], "dataset": "digits", "split": "test", "limit": None},
                         [_entry("cnn.safetensors", {"top1": 0.9, "samples": 360}, 1.0, "classification", "top1",
                                 {"x": {"shape": [1, 8, 8], "kind": "image"}})])
    head, rows = summary_rows(report)
    assert "top-1" in head and rows[0][head.index("top-1")] == "0.900" and rows[0][3] == "8x8"  # as before
    assert title_line(report) == "accuracy on digits, test split (all 360 images)"
    two = _entry("two.onnx", {}, 1.0, "classification", "top1", {"image": {"shape": [1, 8, 8], "kind": "image"},
                                                                  "meta": {"shape": [4], "kind": "features"}})
    assert input_words(two) == "image 1x8x8, meta 4" and input_words(two.to_json()) == "image 1x8x8, meta 4"
    assert input_words(_entry("reg.onnx", {}, 1.0)) == "10"
    tokens = _entry("t.onnx", {}, 1.0, inputs={"ids": {"shape": ["sequence"], "kind": "tokens"}})
    assert input_words(tokens) == "sequence"
