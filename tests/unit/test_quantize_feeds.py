"""Quantization's data path for models beyond one image (#13): every input fed, integer inputs never quantized,
the accuracy guard in the primary metric's units (NNCF's validation function too)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from compress import quantize_backends as qb
from compress.quant_data import QuantData
from compress.quantize import QuantizeConfig
from compress.quantize_openvino import nncf_validation
from deepslim.signature import BATCH, InputKind, Signature, TensorSpec
from deepslim.tasks import Task, TaskKind


class TokensAndFeatures(nn.Module):
    """Token ids (int64) and a float feature vector -> 3 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.feat = nn.Linear(4, 8)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.embed(tokens).mean(dim=1), torch.relu(self.feat(feats))], dim=1))


SIGNATURE = Signature((TensorSpec("tokens", (BATCH, "sequence"), "int64", InputKind.TOKENS),
                       TensorSpec("feats", (BATCH, 4), "float32", InputKind.FEATURES)), ("logits",), "logits")


@pytest.fixture(scope="module")
def token_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "fp32.onnx"
    torch.manual_seed(0)
    model = TokensAndFeatures().eval()
    example = (torch.randint(0, 20, (2, 6)), torch.randn(2, 4))
    torch.onnx.export(model, example, str(path), dynamo=False, opset_version=17, input_names=["tokens", "feats"],
                      output_names=["logits"], dynamic_axes={"tokens": {0: "batch", 1: "sequence"},
                                                             "feats": {0: "batch"}, "logits": {0: "batch"}})
    rng = np.random.default_rng(0)
    calibration = (rng.integers(0, 20, (32, 6)).astype(np.int64), rng.standard_normal((32, 4)).astype(np.float32))
    return path, model, calibration


def _consumers(graph, tensor: str) -> list[str]:
    return [n.op_type for n in graph.node if tensor in n.input]


def test_the_calibration_reader_feeds_every_input_in_its_own_dtype(token_model):
    path, _, calibration = token_model
    batch = qb._reader(path, calibration, batch=8).get_next()
    assert set(batch) == {"tokens", "feats"}
    assert batch["tokens"].dtype == np.int64 and batch["feats"].dtype == np.float32
    assert batch["tokens"].shape == (8, 6) and batch["feats"].shape == (8, 4)


def test_onnxruntime_quantizes_the_float_input_and_never_the_token_ids(tmp_path, token_model):
    path, _, calibration = token_model
    out = tmp_path / "int8.onnx"
    qb._quantize_static(path, out, QuantizeConfig(), calibration, [], tmp_path / "cache.json")
    graph = onnx.load(str(out)).graph
    inputs = {i.name: i.type.tensor_type.elem_type for i in graph.input}
    assert inputs["tokens"] == onnx.TensorProto.INT64 and inputs["feats"] == onnx.TensorProto.FLOAT
    assert "QuantizeLinear" not in _consumers(graph, "tokens"), _consumers(graph, "tokens")
    assert _consumers(graph, "feats") == ["QuantizeLinear"]  # the float input is quantized
    rows = qb.layer_errors(path, out, calibration, tmp_path)  # the SQNR analysis feeds both inputs
    assert rows and all(r["weight_sqnr_db"] is not None for r in rows)


def test_nncf_quantizes_the_float_input_and_never_the_token_ids(tmp_path, token_model):
    import openvino as ov
    path, model, calibration = token_model
    xml = tmp_path / "fp32.xml"
    ov.save_model(ov.convert_model(str(path)), str(xml), compress_to_fp16=False)
    task = Task(TaskKind.CLASSIFICATION, ("a", "b", "c"))
    with torch.no_grad():
        labels = model(*map(torch.from_numpy, calibration)).argmax(1).numpy()
    data = QuantData(calibration, (calibration, labels), (calibration, labels), SIGNATURE, task)
    out = qb.ptq_openvino(xml, tmp_path, QuantizeConfig(target="openvino"), data, {}, say=print, progress=False)
    quantized = ov.Core().read_model(str(out))
    params = {p.get_friendly_name(): p for p in quantized.get_parameters()}
    readers = {name: [t.get_node().get_type_name() for t in p.output(0).get_target_inputs()]
               for name, p in params.items()}
    assert "FakeQuantize" not in readers["tokens"] and readers["tokens"], readers
    assert "FakeQuantize" in readers["feats"], readers
    assert params["tokens"].get_element_type() == ov.Type.i64


def test_nncf_validation_measures_the_drop_in_the_primary_metrics_units(tmp_path):
    """NNCF's absolute drop of the value it is given must equal task.drop / 100: points for R², percent of the
    fp32 value for MAE (lower is better)."""
    import openvino as ov

    from deepslim.metrics import task_metrics
    signature = Signature((TensorSpec("x", (BATCH, 3), "float32", InputKind.FEATURES),))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3 * rng.standard_normal(40)).astype(np.float32)
    path = tmp_path / "lin.onnx"
    torch.onnx.export(nn.Linear(3, 1).eval(), (torch.zeros(2, 3),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    compiled = ov.Core().compile_model(ov.convert_model(str(path)), "CPU")
    items = [((x[i:i + 1],), y[i:i + 1]) for i in range(len(y))]
    prediction = np.concatenate([compiled({0: x[i:i + 1]})[0] for i in range(len(y))])
    for primary in ("r2", "mae"):
        task = Task(TaskKind.REGRESSION, ("target",), primary=primary)
        data = QuantData((x,), ((x,), y), ((x,), y), signature, task)
        base = task_metrics(task, prediction + 0.5, y)  # a better or worse "fp32" model, as a reference
        value, per_item = nncf_validation(data, base)(compiled, items)
        reference, _ = nncf_validation(data, base)(_Shifted(compiled, 0.5), items)
        assert len(per_item) == len(y)
        assert 100 * (reference - value) == pytest.approx(task.drop(base, task_metrics(task, prediction, y)), rel=1e-4)


class _Shifted:
    """A compiled model whose output is shifted by a constant (stands in for the fp32 model)."""

    def __init__(self, compiled, shift: float) -> None:
        self.compiled, self.shift = compiled, shift
        self.outputs = compiled.outputs
        self.inputs = compiled.inputs

    def __call__(self, feed):
        result = self.compiled(feed)
        return {o: result[o] + self.shift for o in self.compiled.outputs}
