"""Quantization without the CLI: settings per target and CPU, the formats written, the accuracy guard."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

from compress.options import Activations, QuantTarget
from compress.quantize import QuantizeConfig, QuantizeError, quantize
from compress.quantize_backends import ort_settings
from deepslim.errors import ConfigError, DatasetError
from export.tensorrt import check_qdq_for_tensorrt
from quantized import fp32_and_int8_layers, val_top1


@pytest.mark.parametrize("kwargs, message", [
    ({"calibration_samples": 0}, "--calibration-samples must be a positive integer, got 0"),
    ({"method": "dynamic", "target": "openvino"}, "--method dynamic is onnxruntime's"),
    ({"method": "int4"}, "--method must be one of ptq, qat, dynamic, fp16, got 'int4'"),
    ({"target": "openvino", "calibration": "entropy"}, "entropy is onnxruntime's calibrator"),
    ({"method": "fp16", "calibration": "minmax"}, "--calibration applies to --method ptq and qat"),
    ({"max_accuracy_drop": -1}, "--max-accuracy-drop"),
    ({"method": "fp16", "max_accuracy_drop": 1.0}, "guards int8 static quantization"),
])
def test_config_rejects_bad_requests(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        QuantizeConfig(**kwargs)


def test_onnxruntime_settings_follow_the_cpu_and_tensorrt_gets_symmetric_s8():
    cpu = QuantizeConfig(target=QuantTarget.ONNXRUNTIME)
    assert ort_settings(cpu, vnni=False) | {"extra_options": None} == \
        {"activation_type": "u8", "reduce_range": True, "calibration": "minmax", "extra_options": None}
    assert ort_settings(cpu, vnni=True)["reduce_range"] is False
    trt = ort_settings(QuantizeConfig(target=QuantTarget.TENSORRT), vnni=False)
    assert trt["activation_type"] == "s8" and trt["reduce_range"] is False
    assert trt["extra_options"] == {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
    signed = ort_settings(QuantizeConfig(activations=Activations.S8), vnni=False)
    assert signed["activation_type"] == "s8" and signed["reduce_range"] is False


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_ptq_onnxruntime_and_tensorrt_write_checked_qdq_models(tmp_path, trained_cnn):
    ort = quantize(copy.deepcopy(trained_cnn), tmp_path / "q.onnx", QuantizeConfig(latency=False), "digits",
                   progress=False)
    m = ort.record.metrics
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(ort.artifact)
    assert m["val_drop_points"] <= 2.0 and m["quantized"]["test"]["agreement"] >= 0.95
    assert m["layer_errors"] and {"layer", "node", "op", "input_sqnr_db", "output_sqnr_db", "lost_db"} <= set(m["layer_errors"][0])
    modules = dict(trained_cnn.model.named_modules())  # the table names the PyTorch module, not node_Conv_82
    assert all(isinstance(modules.get(r["layer"]), (torch.nn.Conv2d, torch.nn.Linear)) for r in m["layer_errors"]), \
        m["layer_errors"]
    assert {r["node"] for r in m["layer_errors"]} <= {n.name for n in onnx.load(str(ort.artifact)).graph.node}
    assert ort.record.config["environment"]["vnni"] in (True, False)
    trt = quantize(copy.deepcopy(trained_cnn), tmp_path / "t.onnx", QuantizeConfig(target="tensorrt", latency=False),
                   "digits", progress=False)
    assert check_qdq_for_tensorrt(onnx.load(str(trt.artifact))) == []
    from deepslim.artifact import read_onnx_meta
    meta = read_onnx_meta(trt.artifact)
    assert meta.export["precision"] == "int8" and meta.lineage[-1].stage == "quantize"


def test_tensorrt_rules_are_enforced_before_anything_is_written(tmp_path, trained_cnn):
    with pytest.raises(QuantizeError, match="breaks TensorRT's explicit-quantization rules"):
        quantize(copy.deepcopy(trained_cnn), tmp_path / "t.onnx",
                 QuantizeConfig(target="tensorrt", activations="u8", latency=False), "digits", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_more_calibration_samples_than_the_train_split_is_one_error(tmp_path, trained_cnn):
    with pytest.raises(DatasetError, match="--calibration-samples 5000 asks for more than the 1078 samples"):
        quantize(copy.deepcopy(trained_cnn), tmp_path / "q.onnx", QuantizeConfig(calibration_samples=5000),
                 "digits", progress=False)


def _fragile(bundle):
    """The trained model with one channel of the first block replaced by a constant 1000 that the next conv
    ignores: per-tensor int8 of that activation cannot represent the real signal next to it, so the layer
    reading it is fragile while fp32 accuracy stays."""
    fragile = copy.deepcopy(bundle)
    with torch.no_grad():
        bn = fragile.model.features[1]
        bn.weight[0], bn.bias[0] = 0.0, 1000.0
        fragile.model.features[3].weight[:, 0] = 0.0
    return fragile


def _assert_guard_held(artifact, metrics: dict, fragile, limit: float) -> tuple[dict, dict]:
    """The written graph keeps in fp32 exactly the weighted layers the record names, quantizes the others, and its
    val top-1 measured by the benchmarks harness is the one reported, within ``limit`` of the fp32 model's."""
    from deepslim.evaluation import evaluate
    fp32, int8 = fp32_and_int8_layers(artifact)
    assert int8 and set(fp32) == set(metrics["fp32_layers"]) & (set(fp32) | set(int8)), (fp32, int8, metrics)
    top1 = val_top1(artifact)
    assert top1 == pytest.approx(metrics["quantized"]["val"]["top1"])
    fp32_top1 = metrics["fp32"]["val"]["top1"]
    assert fp32_top1 == pytest.approx(evaluate(fragile, "digits", split="val").metrics["top1"], abs=0.003)  # 1 image
    assert 100 * (fp32_top1 - top1) == pytest.approx(metrics["val_drop_points"], abs=1e-3)
    assert 100 * (fp32_top1 - top1) <= limit
    return fp32, int8


def test_accuracy_guard_keeps_the_fragile_layer_in_fp32(tmp_path, trained_cnn):
    fragile = _fragile(trained_cnn)
    plain = quantize(copy.deepcopy(fragile), tmp_path / "plain.onnx", QuantizeConfig(latency=False), "digits",
                     progress=False).record.metrics
    assert plain["fp32"]["val"]["top1"] >= 0.8
    assert plain["val_drop_points"] > 10, "the outlier should break plain int8"
    worst = plain["layer_errors"][0]
    assert worst["weight"].startswith("features.3") and worst["layer"] == "features.3", plain["layer_errors"][:3]
    assert worst["node"] in fp32_and_int8_layers(tmp_path / "plain.onnx")[1]  # plain int8 quantizes it
    guarded = quantize(copy.deepcopy(fragile), tmp_path / "guarded.onnx",
                       QuantizeConfig(max_accuracy_drop=1.0, latency=False), "digits", progress=False).record.metrics
    fp32, _ = _assert_guard_held(tmp_path / "guarded.onnx", guarded, fragile, 1.0)
    assert worst["node"] in fp32 and len(guarded["fp32_layers"]) <= 3
    assert "features.3" in guarded["fp32_modules"], guarded["fp32_modules"]
    assert guarded["guard_steps"][0]["val_drop_points"] > 10


def test_openvino_guard_uses_nncf_accuracy_control(tmp_path, trained_cnn):
    fragile = _fragile(trained_cnn)
    guarded = quantize(copy.deepcopy(fragile), tmp_path / "g.xml",
                       QuantizeConfig(target="openvino", max_accuracy_drop=1.0, latency=False), "digits",
                       progress=False)
    fp32, _ = _assert_guard_held(tmp_path / "g.xml", guarded.record.metrics, fragile, 1.0)
    assert "features.3.weight" in fp32.values(), fp32  # the conv that reads the outlier channel stays fp32
    assert (tmp_path / "g.bin").is_file()


def test_openvino_guard_within_budget_from_the_start(tmp_path, trained_cnn):
    """The demo's case: a model whose plain int8 already fits the budget keeps (nearly) every layer in int8."""
    guarded = quantize(copy.deepcopy(trained_cnn), tmp_path / "g.xml",
                       QuantizeConfig(target="openvino", max_accuracy_drop=1.0, latency=False), "digits",
                       progress=False)
    fp32, int8 = _assert_guard_held(tmp_path / "g.xml", guarded.record.metrics, trained_cnn, 1.0)
    assert len(int8) >= 5 and len(fp32) <= 1, (fp32, int8)


def test_no_configuration_fits_gives_the_best_drop(tmp_path, trained_cnn, monkeypatch):
    import compress.quantize_backends as qb
    real = qb.score

    def pessimistic(path, backend, data, reference=None):  # every quantized model scores 0
        metrics, logits = real(path, backend, data, reference)
        if "int8" in path.name:
            metrics = {k: {**v, "top1": 0.0} for k, v in metrics.items()}
        return metrics, logits
    monkeypatch.setattr(qb, "score", pessimistic)
    monkeypatch.setattr("compress.quantize.score", pessimistic)
    with pytest.raises(QuantizeError, match="best reached"):
        quantize(copy.deepcopy(trained_cnn), tmp_path / "q.onnx", QuantizeConfig(max_accuracy_drop=0.5,
                                                                                 latency=False), "digits",
                 progress=False)
    assert list(tmp_path.iterdir()) == []


def test_dynamic_and_fp16_formats(tmp_path, trained_cnn):
    dyn = quantize(copy.deepcopy(trained_cnn), tmp_path / "d.onnx", QuantizeConfig(method="dynamic", latency=False),
                   "digits", progress=False)
    assert "DynamicQuantizeLinear" in _ops(dyn.artifact) or "MatMulInteger" in _ops(dyn.artifact) \
        or "ConvInteger" in _ops(dyn.artifact)
    half = quantize(copy.deepcopy(trained_cnn), tmp_path / "h.onnx", QuantizeConfig(method="fp16", target="tensorrt",
                                                                                    latency=False), "digits",
                    progress=False)
    types = {i.data_type for i in onnx.load(str(half.artifact)).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types
    assert half.record.metrics["quantized"]["test"]["agreement"] >= 0.99
    np.testing.assert_equal(half.record.metrics["fp32"]["test"]["samples"], 360)


def test_a_layer_kept_in_fp32_reads_an_fp32_input_even_behind_a_residual_add(tmp_path):
    from torch import nn

    from compress import quantize_backends as qb

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.c2(torch.relu(self.c1(x))) + x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.b1, self.b2, self.fc = nn.Conv2d(3, 8, 3, padding=1), Block(), Block(), nn.Linear(8, 10)

        def forward(self, x):
            x = self.b2(self.b1(torch.relu(self.stem(x))))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    path = tmp_path / "net.onnx"
    torch.onnx.export(Net().eval(), (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    source = qb._preprocess(path, tmp_path, {})
    layers = ["/b2/c1/Conv", "/fc/Gemm"]
    calibration = np.random.default_rng(0).random((16, 3, 16, 16), dtype=np.float32)
    for layer, group in zip(layers, qb._exclusion_groups(source, layers)):
        out = tmp_path / "q.onnx"
        qb._quantize_static(source, out, QuantizeConfig(), calibration, group, tmp_path / "cache.json")
        graph = onnx.load(str(out)).graph
        producers = {o: n for n in graph.node for o in n.output}
        node = next(n for n in graph.node if n.name == layer)
        assert producers[node.input[0]].op_type != "DequantizeLinear", (layer, group)
        assert all(producers[i].op_type != "DequantizeLinear" for i in node.input[1:] if i in producers), layer
