"""The QAT graph rewrite (compress.qdq_onnx) on a fake-quantized export of the kind NNCF writes, without NNCF:
int8 weight initializers, BatchNorm folded exactly, constants folded, a graph onnxruntime runs with int8 kernels."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
import torch
from torch import nn

from compress.qdq_onnx import finalize_qat_onnx, module_name, ort_kernel_counts


class FakeQuantized(nn.Module):
    """conv -> BN -> ReLU twice, then a linear head; int8 input, per-channel int8 weights and uint8 ReLU outputs
    fake-quantized the way NNCF's QAT model exports them (TorchScript exporter, QuantizeLinear/DequantizeLinear
    pairs with scales in Constant nodes, fp32 weights behind them)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=True), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)
        with torch.no_grad():
            for k, bn in enumerate((self.b1, self.b2)):
                bn.weight.copy_(torch.linspace(-1.5, 2.0 + k, 8))  # negative factors flip the int8 weights' sign
                bn.bias.uniform_(-0.5, 0.5)
                bn.running_mean.uniform_(-0.3, 0.3)
                bn.running_var.uniform_(0.5, 2.0)

            for i, layer in enumerate((self.c1, self.c2, self.fc)):  # NNCF's learned scales: graph constants
                self.register_buffer(f"s{i}", layer.weight.flatten(1).abs().amax(dim=1) / 127)

    def _weight(self, i, layer):
        scale = getattr(self, f"s{i}")
        return torch.fake_quantize_per_channel_affine(layer.weight, scale, torch.zeros(len(scale), dtype=torch.int32),
                                                      0, -128, 127)

    def forward(self, x):
        x = torch.fake_quantize_per_tensor_affine(x, 0.02, 0, -128, 127)
        for i, (conv, bn) in enumerate(((self.c1, self.b1), (self.c2, self.b2))):
            x = nn.functional.conv2d(x, self._weight(i, conv), conv.bias, padding=1)
            x = torch.fake_quantize_per_tensor_affine(torch.relu(bn(x)), 0.03, 0, 0, 255)
        x = torch.fake_quantize_per_tensor_affine(nn.functional.adaptive_avg_pool2d(x, 1), 0.03, 0, 0, 255)
        return nn.functional.linear(torch.flatten(x, 1), self._weight(2, self.fc), self.fc.bias)


@pytest.fixture(scope="module")
def exported():
    buffer = io.BytesIO()
    torch.onnx.export(FakeQuantized().eval(), (torch.zeros(1, 3, 8, 8),), buffer, dynamo=False, opset_version=13,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
    return buffer.getvalue()


def _run(model: bytes, x: np.ndarray, optimize: bool = False) -> np.ndarray:
    import onnxruntime as ort
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _finalized(exported: bytes, quantize_bias: bool):
    proto = onnx.load_from_string(exported)
    report = finalize_qat_onnx(proto, quantize_bias=quantize_bias)
    onnx.checker.check_model(proto, full_check=True)
    return proto, report


def test_raw_export_has_what_the_rewrite_removes(exported):
    ops = [n.op_type for n in onnx.load_from_string(exported).graph.node]
    assert ops.count("BatchNormalization") == 2 and "Constant" in ops
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in onnx.load_from_string(exported).graph.initializer)


@pytest.mark.parametrize("quantize_bias", [False, True])
def test_int8_weights_folded_batchnorm_and_no_constants(exported, quantize_bias):
    proto, report = _finalized(exported, quantize_bias)
    graph = proto.graph
    ops = [n.op_type for n in graph.node]
    assert "BatchNormalization" not in ops and "Constant" not in ops
    assert report.batchnorms_folded == 2 and report.batchnorms_left == 0 and report.int8_weights == 3
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    for node in (n for n in graph.node if n.op_type in ("Conv", "Gemm")):
        dq = producers[node.input[1]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == onnx.TensorProto.INT8, node.name
        if quantize_bias:
            bias = producers[node.input[2]]
            assert bias.op_type == "DequantizeLinear" and inits[bias.input[0]].data_type == onnx.TensorProto.INT32
    assert not any(i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 4 for i in graph.initializer)
    stored = sum(numpy_helper.to_array(i).nbytes for i in graph.initializer)  # names dominate a graph this small
    raw = onnx.load_from_string(exported).graph.initializer
    assert stored < 0.5 * sum(numpy_helper.to_array(i).nbytes for i in raw)


def test_the_rewrite_computes_what_the_fake_quantized_graph_computes(exported):
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    reference = _run(exported, x)
    float_bias = _run(_finalized(exported, False)[0].SerializeToString(), x)
    np.testing.assert_allclose(float_bias, reference, atol=1e-4 * np.abs(reference).max())
    int32_bias = _run(_finalized(exported, True)[0].SerializeToString(), x)  # bias rounded to input x weight scale
    np.testing.assert_allclose(int32_bias, reference, atol=2e-2 * np.abs(reference).max())
    assert (int32_bias.argmax(1) == reference.argmax(1)).all()


def test_onnxruntime_runs_every_convolution_as_an_int8_kernel(exported, tmp_path):
    raw, fixed = tmp_path / "raw.onnx", tmp_path / "fixed.onnx"
    raw.write_bytes(exported)
    onnx.save_model(_finalized(exported, True)[0], str(fixed))
    assert ort_kernel_counts(raw)[0] == 0  # BatchNorm between Conv and Q: nothing fuses today
    int8, _ = ort_kernel_counts(fixed)
    assert int8 >= 2, "both convolutions should run as QLinearConv"


def test_module_names_come_from_the_weight_or_the_exporters_scope():
    node = onnx.helper.make_node("Conv", ["x", "layer2.0.conv1.weight"], ["y"], name="node_Conv_326")
    assert module_name(node) == "layer2.0.conv1"
    scoped = onnx.helper.make_node("Conv", ["x", "val_12"], ["y"], name="node_Conv_7")
    entry = scoped.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.name_scopes", "['', 'layer1', 'layer1.0.conv2', 'conv2d']"
    assert module_name(scoped) == "layer1.0.conv2"
    assert module_name(onnx.helper.make_node("Conv", ["x", "onnx::Conv_5"], ["y"], name="Conv_3")) == "Conv_3"
