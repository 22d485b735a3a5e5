"""Export and parity for every model kind (#13): tabular, regression, multi-label, two inputs with a dict
output, a non-square image, a 1-D signal.

The ONNX graph takes the signature's input names (of their dtypes) and returns its outputs by name in the
signature's order, with ``batch`` and named dims dynamic; onnxruntime and OpenVINO compute what torch
computes on real samples of the model's own dataset; the TensorRT plan has a shape range for every input.
The per-kind sweep uses the fast TorchScript exporter; the dynamo exporter (the default) is checked on the
two-input model here, on every kind in the slow test and in the CLI tests.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch

from any_kinds import KINDS
from deepslim.artifact import read_onnx_meta
from deepslim.errors import ConfigError
from deepslim.models import load_model
from deepslim.modelio import all_outputs, call
from deepslim.signature import InputKind, TensorSpec
from deepslim.tasks import Task, TaskKind
from deepslim.trust import allow_code
from export import OnnxConfig, ParityError, TensorRTConfig, check_parity, plan_build, to_onnx, to_openvino
from export import parity, trtexec_command

ALL = list(KINDS)
LEGACY = OnnxConfig(exporter="legacy")


@pytest.fixture(scope="module")
def bundles(any_kind):
    cache = {}

    def get(kind: str):
        if kind not in cache:
            with allow_code(trust_code=True):
                cache[kind] = load_model(any_kind(kind))
        return cache[kind]
    return get


@pytest.fixture(scope="module")
def onnx_files(bundles, tmp_path_factory):
    """Each kind exported once to ONNX (legacy exporter)."""
    root, cache = tmp_path_factory.mktemp("onnx_kinds"), {}

    def get(kind: str):
        if kind not in cache:
            cache[kind] = to_onnx(bundles(kind), root / f"{kind}.onnx", LEGACY)
        return cache[kind]
    return get


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _real(kind: str, bundle, count: int):
    """``count`` test samples of the kind's own dataset, one array per input."""
    with allow_code(trust_code=True):
        x, _ = parity.parity_inputs(bundle.signature, KINDS[kind].dataset, count, task=bundle.task)
    return x if isinstance(x, tuple) else (x,)


def _torch_all(bundle, arrays) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = call(bundle.model.eval(), tuple(torch.from_numpy(a) for a in arrays))
    return {k: v.numpy() for k, v in all_outputs(out, bundle.signature).items()}


@pytest.mark.parametrize("kind", ALL)
def test_onnx_graph_names_axes_metadata_and_batches_match_torch(kind, bundles, onnx_files):
    import onnxruntime as ort
    bundle, path = bundles(kind), onnx_files(kind)
    sig = bundle.signature
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == list(sig.input_names)
    assert [o.name for o in proto.graph.output] == list(sig.outputs)
    for value, spec in zip(proto.graph.input, sig.inputs):
        assert _dims(value) == list(spec.shape)  # batch named, every other dim static as in the signature
    assert all(_dims(o)[0] == "batch" for o in proto.graph.output)
    meta = read_onnx_meta(path)
    assert meta.signature == sig and meta.task == bundle.task
    assert meta.export["input_names"] == list(sig.input_names) and meta.export["output_names"] == list(sig.outputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _real(kind, bundle, 5)
    for n in (1, 5):
        got = session.run(None, {name: a[:n] for name, a in zip(sig.input_names, x)})
        want = _torch_all(bundle, tuple(a[:n] for a in x))
        for name, value in zip(sig.outputs, got):
            assert value.shape == want[name].shape and value.shape[0] == n
            np.testing.assert_allclose(value, want[name], rtol=1e-4, atol=1e-4 * np.abs(want[name]).max())


@pytest.mark.parametrize("kind", ALL)
def test_onnx_and_openvino_pass_parity_on_the_models_own_data(kind, bundles, onnx_files, tmp_path):
    import openvino as ov
    bundle, path = bundles(kind), onnx_files(kind)
    with allow_code(trust_code=True):
        report = check_parity(bundle, path, dataset=KINDS[kind].dataset, samples=32)
        xml = to_openvino(path, tmp_path / f"{kind}.xml")
        ir_report = check_parity(bundle, xml, dataset=KINDS[kind].dataset, samples=32)
    for r in (report, ir_report):
        assert r.passed and 20 <= r.samples <= 32 and r.inputs.startswith(KINDS[kind].dataset)  # wine: 27
        assert r.output == bundle.signature.task_output and r.task == bundle.task.kind.value
        assert r.max_rel < 1e-3 and r.top1_agreement >= 0.99
    model = ov.Core().read_model(str(xml))
    assert [p.get_any_name() for p in model.inputs] == list(bundle.signature.input_names)
    assert [p.get_any_name() for p in model.outputs] == list(bundle.signature.outputs)
    for port, spec in zip(model.inputs, bundle.signature.inputs):
        shape = port.get_partial_shape()
        assert shape[0].is_dynamic and [d.get_length() for d in list(shape)[1:]] == list(spec.sample_shape)
    from benchmarks.runners.openvino_runner import read_ov_meta
    meta = read_ov_meta(model, xml)
    assert meta.signature == bundle.signature and meta.task == bundle.task and meta.export["target"] == "openvino"


def test_dynamo_export_of_two_inputs_and_a_dict_output(bundles, tmp_path):
    import onnxruntime as ort
    bundle = bundles("two_input")
    path = to_onnx(bundle, tmp_path / "m.onnx")  # the default: dynamo, onnxslim
    proto = onnx.load(str(path))
    assert [(i.name, _dims(i)) for i in proto.graph.input] == [("image", ["batch", 1, 8, 8]), ("meta", ["batch", 4])]
    assert [(o.name, _dims(o)) for o in proto.graph.output] == [("logits", ["batch", 10]), ("embedding", ["batch", 16])]
    x = _real("two_input", bundle, 5)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, dict(zip(("image", "meta"), x)))
    want = _torch_all(bundle, x)
    np.testing.assert_allclose(got[0], want["logits"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[1], want["embedding"], rtol=1e-4, atol=1e-4)
    with allow_code(trust_code=True):
        assert check_parity(bundle, path, dataset=KINDS["two_input"].dataset, samples=16).passed


def test_graph_outputs_follow_the_signature_order_not_the_dicts(bundles, tmp_path):
    """A signature listing the dict's keys in another order: the graph's outputs are named and ordered by it
    (the dynamo exporter goes through the same wrapper: test_dynamo_export_of_two_inputs_and_a_dict_output)."""
    import onnxruntime as ort
    bundle = bundles("two_input")
    flipped = replace(bundle, signature=replace(bundle.signature, outputs=("embedding", "logits")))
    path = to_onnx(flipped, tmp_path / "m.onnx", LEGACY)
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["embedding", "logits"]
    x = _real("two_input", bundle, 4)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, dict(zip(("image", "meta"), x)))
    want = _torch_all(bundle, x)
    assert got[0].shape == (4, 16) and got[1].shape == (4, 10)
    np.testing.assert_allclose(got[1], want["logits"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_named_dims_become_dynamic_axes(exporter, bundles, tmp_path):
    """The Conv1d model's length as a named dim: the graph runs at any length, the TensorRT plan ranges over it."""
    import onnxruntime as ort
    bundle = bundles("signal")
    spec = replace(bundle.signature.inputs[0], shape=("batch", 1, "length"))
    free = replace(bundle, signature=bundle.signature.replace_input(spec))
    path = to_onnx(free, tmp_path / "m.onnx", OnnxConfig(exporter=exporter))
    assert _dims(onnx.load(str(path)).graph.input[0]) == ["batch", 1, "length"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, length in ((1, 64), (3, 100)):
        x = np.random.default_rng(length).standard_normal((n, 1, length)).astype(np.float32)
        want = bundle.model(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(session.run(None, {"signal": x})[0], want, rtol=1e-4, atol=1e-4)
    plan = plan_build(read_onnx_meta(path), TensorRTConfig(batches=(1, 8), dim_ranges={"length": (32, 64, 512)}))
    assert (plan.min_shape, plan.opt_shape, plan.max_shape) == ((1, 1, 32), (8, 1, 64), (8, 1, 512))
    default = plan_build(read_onnx_meta(path), TensorRTConfig(batches=(2,)))
    assert default.inputs[0].min_shape == (2, 1, 1) and default.inputs[0].max_shape == (2, 1, 256)
    with pytest.raises(ConfigError, match="not named dims"):
        plan_build(read_onnx_meta(path), TensorRTConfig(dim_ranges={"sequence": (1, 2, 3)}))


def test_tensorrt_plan_has_a_range_for_every_input(onnx_files):
    meta = read_onnx_meta(onnx_files("two_input"))
    plan = plan_build(meta, TensorRTConfig(batches=(1, 4, 8)))
    assert [(p.name, p.min_shape, p.opt_shape, p.max_shape) for p in plan.inputs] == [
        ("image", (1, 1, 8, 8), (8, 1, 8, 8), (8, 1, 8, 8)), ("meta", (1, 4), (8, 4), (8, 4))]
    line = trtexec_command("m.onnx", "m.engine", plan).split()
    assert "--minShapes=image:1x1x8x8,meta:1x4" in line and "--maxShapes=image:8x1x8x8,meta:8x4" in line

    from export.tensorrt import optimization_profile

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (lo, opt, hi)

    class Builder:
        def create_optimization_profile(self):
            return Profile()

    class Network:
        num_inputs = 2

        def get_input(self, i):
            return type("T", (), {"name": ("image", "meta")[i]})()

    profile = optimization_profile(Builder(), Network(), plan)  # what _build adds to the builder config
    assert profile.shapes == {"image": ((1, 1, 8, 8), (8, 1, 8, 8), (8, 1, 8, 8)), "meta": ((1, 4), (8, 4), (8, 4))}
    Network.num_inputs = 1
    with pytest.raises(Exception, match="not the plan's"):
        optimization_profile(Builder(), Network(), plan)


def test_input_size_is_for_one_image_models_and_takes_h_by_w(bundles, tmp_path):
    assert OnnxConfig(input_size=(28, 56)).size == (28, 56) and OnnxConfig(input_size="28x56").size == (28, 56)
    assert OnnxConfig(input_size=32).size == (32, 32)
    for bad in (0, (0, 4), (1, 2, 3), "a", True):
        with pytest.raises(ConfigError, match="--input-size"):
            OnnxConfig(input_size=bad)
    for kind in ("tabular", "two_input"):
        with pytest.raises(ConfigError, match="one image input"):
            to_onnx(bundles(kind), tmp_path / "x.onnx", OnnxConfig(exporter="legacy", input_size=16))
    assert not (tmp_path / "x.onnx").exists()
    path = to_onnx(bundles("wide"), tmp_path / "w.onnx", OnnxConfig(exporter="legacy", input_size=(32, 64)))
    assert _dims(onnx.load(str(path)).graph.input[0]) == ["batch", 1, 32, 64]
    meta = read_onnx_meta(path)
    assert meta.export["input_size"] == [32, 64] and meta.export["trained_input_size"] == [28, 56]
    assert meta.signature.inputs[0].size == (32, 64)


def test_profile_counts_every_input(bundles):
    import torch_pruning as tp

    from deepslim.profile import count_macs_params, layer_shapes
    bundle = bundles("two_input")
    macs, params = count_macs_params(bundle.model, bundle.signature)
    want = tp.utils.count_ops_and_params(bundle.model, (torch.zeros(1, 1, 8, 8), torch.zeros(1, 4)))
    assert (macs, params) == (int(want[0]), int(want[1])) and macs > 0
    shapes = dict((n, s) for n, _, s in layer_shapes(bundle))
    assert shapes["head"] == (10,) and shapes["meta"] == (8,)
    assert count_macs_params(bundles("tabular").model, bundles("tabular").signature)[0] > 0


# --- parity judged per task ------------------------------------------------------------------

REGRESSION = Task(TaskKind.REGRESSION, ("y",))
MULTILABEL = Task(TaskKind.MULTILABEL, ("a", "b", "c"))


def test_regression_tolerance_scales_with_the_outputs_magnitude_not_each_prediction():
    ref = np.array([[300.0], [150.0], [0.001]])
    near_zero = ref + np.array([[0.0], [0.0], [0.05]])  # 1.7e-4 of the largest prediction: fine
    report = parity.compare(ref, near_zero, "fp32", "m", "ort", "x", "torch", task=REGRESSION)
    assert report.passed and report.task == "regression"
    off = ref + np.array([[0.0], [3.0], [0.0]])  # 1% of the largest prediction: a real difference
    report = parity.compare(ref, off, "fp32", "m", "ort", "x", "torch", task=REGRESSION)
    assert not report.passed and report.top1_agreement == pytest.approx(2 / 3)
    assert "samples within tolerance" in report.summary()
    with pytest.raises(ParityError, match="shape"):
        parity.compare(ref, np.ones((3, 2)), "fp32", "m", "ort", "x", "torch", task=REGRESSION)


def test_int8_regression_is_judged_against_the_predictions_spread():
    rng = np.random.default_rng(0)
    ref = rng.normal(150, 50, (100, 1))
    close = ref + rng.normal(0, 1.0, ref.shape)    # 1/50 of the spread
    assert parity.compare(ref, close, "int8", "m", "ort", "x", "torch", task=REGRESSION).passed
    far = ref + rng.normal(0, 20.0, ref.shape)     # 2/5 of the spread
    assert not parity.compare(ref, far, "int8", "m", "ort", "x", "torch", task=REGRESSION).passed


def test_multilabel_parity_counts_label_decisions():
    ref = np.array([[3.0, -2.0, 1.0]] * 10)
    flipped = ref.copy()
    flipped[:, 2] = -1.0  # every sample's third label flips: a third of the decisions
    report = parity.compare(ref, flipped, "fp16", "m", "ort", "x", "torch", task=MULTILABEL)
    assert not report.passed and report.top1_agreement == pytest.approx(2 / 3)
    assert "label agreement" in report.summary()
    on_edge = ref.copy()
    on_edge[:, 1] = 1e-7  # the reference sits on the boundary: a flip inside the tolerance is excused
    crossed = on_edge.copy()
    crossed[:, 1] = -1e-7
    report = parity.compare(on_edge, crossed, "fp32", "m", "ort", "x", "torch", task=MULTILABEL)
    assert report.passed and report.top1_agreement == pytest.approx(2 / 3)


def test_parity_feeds_every_input_and_blames_a_wrong_one(bundles, monkeypatch):
    """An artifact that ignores the second input (zeros for 'meta') fails parity on the two-input model."""
    bundle = bundles("two_input")
    seen = []

    class Runner:
        label = "fake"
        meta = type("M", (), {"signature": bundle.signature, "task": bundle.task, "lineage": []})()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def __init__(self, drop_meta):
            self.drop_meta = drop_meta

        def run(self, x):
            image, meta = x
            seen.append((image.shape, meta.shape))
            meta = np.zeros_like(meta) if self.drop_meta else meta
            with torch.no_grad():
                return bundle.model(torch.from_numpy(image), torch.from_numpy(meta))["logits"].numpy()

    monkeypatch.setattr(parity, "artifact_kind", lambda p: parity.ArtifactKind.ONNX)
    for drop, passes in ((False, True), (True, False)):
        monkeypatch.setattr(parity, "open_runner", lambda *a, **k: Runner(drop))
        with allow_code(trust_code=True):
            report = parity.check_parity(bundle, "m.onnx", dataset=KINDS["two_input"].dataset, samples=20,
                                         batch=8, raise_on_failure=False)
        assert report.passed is passes and report.samples == 20
    assert seen[0] == ((8, 1, 8, 8), (8, 4)) and seen[2] == ((4, 1, 8, 8), (4, 4))


def test_parity_inputs_of_every_input_with_their_dtypes():
    from deepslim.signature import Signature
    sig = Signature((TensorSpec("tokens", ("batch", "sequence"), "int64", kind=InputKind.TOKENS),
                     TensorSpec("mask", ("batch", "sequence"), "int64", kind=InputKind.MASK),
                     TensorSpec("x", ("batch", 3))))
    (tokens, mask, x), label = parity.parity_inputs(sig, None, 6)
    assert tokens.dtype == np.int64 and mask.dtype == np.int64 and x.dtype == np.float32
    assert tokens.shape == mask.shape == (6, 16) and x.shape == (6, 3) and label.startswith("seeded random")
