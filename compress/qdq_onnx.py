"""Turn a fake-quantized (QAT) Q/DQ ONNX export into a deployable int8 Q/DQ graph, the form onnxruntime's PTQ writes.

The TorchScript export of an NNCF QAT model keeps fp32 weights behind QuantizeLinear ->
DequantizeLinear, every scale and zero-point in a Constant node, and each BatchNormalization
after its convolution. onnxruntime cannot fuse that into integer kernels, so it runs slower
than fp32 and the file is four times the int8 size. :func:`finalize_qat_onnx` rewrites it:

* Constant nodes become initializers;
* each weight's QuantizeLinear is evaluated once (the same rounding onnxruntime applies at run
  time), so the file stores int8 weights read by a DequantizeLinear;
* a BatchNormalization that only follows a convolution is folded into that convolution's
  per-channel weight scale (the int8 values stay those QAT learned, up to the sign of the
  BatchNorm factor) and its bias, exactly;
* optionally (onnxruntime), each float bias becomes int32 with scale input scale x weight scale,
  as onnxruntime's own quantizer stores it, so the CPU provider fuses the layer into QLinearConv.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Single-input ops that onnxruntime's QDQ propagation moves a DequantizeLinear through.
_PASS_THROUGH = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice")
_PARAMETER = re.compile(r"[A-Za-z_]\w*(?:\.\w+)*\.weight")  # a state-dict name: layer2.0.conv1.weight
_INT_RANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255), np.dtype(np.int32): (-2**31, 2**31 - 1)}


@dataclass
class FoldReport:
    constants_folded: int = 0
    int8_weights: int = 0
    batchnorms_folded: int = 0
    int32_biases: int = 0
    batchnorms_left: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


class _Graph:
    """An ONNX graph with its initializers as numpy arrays and producer/consumer lookups."""

    def __init__(self, model) -> None:
        from onnx import numpy_helper
        self.model, self.graph = model, model.graph
        self.values: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}

    def producers(self) -> dict[str, Any]:
        return {o: n for n in self.graph.node for o in n.output}

    def consumers(self) -> dict[str, list]:
        users: dict[str, list] = {}
        for n in self.graph.node:
            for i in n.input:
                users.setdefault(i, []).append(n)
        return users

    def outputs(self) -> set[str]:
        return {o.name for o in self.graph.output}

    def add(self, name: str, value: np.ndarray) -> str:
        self.values[name] = value
        return name

    def unique(self, base: str) -> str:
        name, k = base, 0
        while name in self.values:
            k += 1
            name = f"{base}_{k}"
        return name

    def save_initializers(self) -> None:
        """Write back the initializers that some node still reads."""
        from onnx import numpy_helper
        used = {i for n in self.graph.node for i in n.input} | self.outputs()
        del self.graph.initializer[:]
        self.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in self.values.items() if k in used)
        kept = {i.name for i in self.graph.initializer}
        inputs = [i for i in self.graph.input if i.name not in self.values or i.name in kept]
        del self.graph.input[:]
        self.graph.input.extend(inputs)


def finalize_qat_onnx(model, *, quantize_bias: bool) -> FoldReport:
    """Rewrite the Q/DQ ONNX ``model`` (a ModelProto, in place); see the module docstring."""
    g, report = _Graph(model), FoldReport()
    report.constants_folded = _constants_to_initializers(g)
    report.int8_weights = _store_int8_weights(g)
    report.batchnorms_folded = _fold_batchnorms(g)
    if quantize_bias:
        report.int32_biases = _quantize_biases(g)
    report.batchnorms_left = sum(n.op_type == "BatchNormalization" for n in g.graph.node)
    g.save_initializers()
    return report


def _constants_to_initializers(g: _Graph) -> int:
    from onnx import numpy_helper
    folded = [n for n in g.graph.node if n.op_type == "Constant" and len(n.attribute) == 1
              and n.attribute[0].name == "value"]
    for n in folded:
        g.add(n.output[0], numpy_helper.to_array(n.attribute[0].t))
        g.graph.node.remove(n)
    aliases = [n for n in g.graph.node if n.op_type == "Identity" and n.input[0] in g.values
               and n.output[0] not in g.outputs()]  # the TorchScript exporter's shared-weight copies
    for n in aliases:
        g.add(n.output[0], g.values[n.input[0]])
        g.graph.node.remove(n)
    return len(folded) + len(aliases)


def _axis(node, default: int = 1) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), default)


def _along(value: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-axis (1-D) or scalar quantization parameter shaped to broadcast against an ``ndim`` tensor."""
    if value.ndim == 0 or value.size == 1:
        return value.reshape(())
    shape = [1] * ndim
    shape[axis] = value.size
    return value.reshape(shape)


def quantize_array(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point) in the zero-point's type."""
    low, high = _INT_RANGE[zero.dtype]
    q = np.rint(x / _along(scale, axis, x.ndim)) + _along(zero, axis, x.ndim).astype(np.float64)
    return np.clip(q, low, high).astype(zero.dtype)


def _store_int8_weights(g: _Graph) -> int:
    """QuantizeLinear(constant weight) -> the constant int8 tensor itself, read by the DequantizeLinear."""
    consumers, done = g.consumers(), 0
    for q in [n for n in g.graph.node if n.op_type == "QuantizeLinear"]:
        users = consumers.get(q.output[0], [])
        params = [g.values.get(i) for i in q.input[:3]]
        if len(q.input) < 3 or any(p is None for p in params) or not users or \
                any(u.op_type != "DequantizeLinear" for u in users) or q.output[0] in g.outputs():
            continue
        w, scale, zero = params
        name = g.unique(q.input[0] + "_quantized")
        g.add(name, quantize_array(w.astype(np.float32), scale, zero, _axis(q)))
        for u in users:
            u.input[0] = name
        g.graph.node.remove(q)
        done += 1
    return done


def _weight_dq(g: _Graph, node, producers):
    """The DequantizeLinear feeding ``node``'s weight from a constant quantized tensor, or None."""
    dq = producers.get(node.input[1]) if len(node.input) > 1 else None
    if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 2:
        return None
    if dq.input[0] not in g.values or dq.input[1] not in g.values:
        return None
    if len(dq.input) > 2 and dq.input[2] and dq.input[2] not in g.values:
        return None
    return dq


def _fold_batchnorms(g: _Graph) -> int:
    """Conv(DQ(int8 w)) -> BatchNormalization  ==>  Conv(DQ(+-int8 w, scale * |k|)) with the folded bias."""
    folded = 0
    for bn in [n for n in g.graph.node if n.op_type == "BatchNormalization"]:
        producers, consumers = g.producers(), g.consumers()
        conv = producers.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or len(consumers.get(conv.output[0], [])) != 1 \
                or conv.output[0] in g.outputs() or len(bn.output) > 1 and any(bn.output[1:]):
            continue
        dq = _weight_dq(g, conv, producers)
        params = [g.values.get(i) for i in bn.input[1:5]]
        if dq is None or any(p is None for p in params) or len(consumers.get(dq.output[0], [])) != 1:
            continue
        _fold_one(g, conv, dq, bn, params)
        g.graph.node.remove(bn)
        folded += 1
    return folded


def _fold_one(g: _Graph, conv, dq, bn, params) -> None:
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    k = gamma / np.sqrt(var + eps)
    q = g.values[dq.input[0]]
    out_ch = q.shape[0]
    scale = np.broadcast_to(g.values[dq.input[1]].astype(np.float64).reshape(-1), (out_ch,)) \
        if _axis(dq) == 0 or g.values[dq.input[1]].size == 1 else None
    if scale is None:
        raise ValueError(f"{dq.name}: weights quantized on axis {_axis(dq)}, not the output channels")
    zero_in = g.values.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros((), q.dtype)
    zero = np.broadcast_to(zero_in.reshape(-1), (out_ch,)).astype(np.int64)
    sign = np.where(k < 0, -1, 1)
    low, high = _INT_RANGE[q.dtype]
    shape = (-1,) + (1,) * (q.ndim - 1)
    dead = k == 0  # a channel BatchNorm zeroes: its weights are 0 at the old scale (a scale of 0 is not valid)
    new_q = np.clip(q.astype(np.int64) * sign.reshape(shape), low, high)
    new_q[dead] = 0
    new_zero = np.clip(zero * sign, low, high)
    new_zero[dead] = 0
    new_q, new_zero = new_q.astype(q.dtype), new_zero.astype(q.dtype)
    new_scale = np.where(dead, scale, scale * np.abs(k)).astype(np.float32)
    bias = g.values[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else 0.0
    base = conv.name or conv.output[0]
    dq.input[0] = g.add(g.unique(base + "_weight_int8"), new_q)
    while len(dq.input) < 3:
        dq.input.append("")
    dq.input[1] = g.add(g.unique(base + "_weight_scale"), new_scale)
    dq.input[2] = g.add(g.unique(base + "_weight_zero_point"), new_zero)
    _set_axis(dq, 0)
    new_bias = g.add(g.unique(base + "_bias"), (beta + (bias - mean) * k).astype(np.float32))
    if len(conv.input) > 2:
        conv.input[2] = new_bias
    else:
        conv.input.append(new_bias)
    conv.output[0] = bn.output[0]


def _set_axis(node, axis: int) -> None:
    from onnx import helper
    for a in list(node.attribute):
        if a.name == "axis":
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute("axis", axis))


def _input_scale(g: _Graph, tensor: str, producers) -> np.ndarray | None:
    """The scale of the DequantizeLinear that ``tensor`` comes from, directly or through pass-through ops."""
    for _ in range(4):
        node = producers.get(tensor)
        if node is None:
            return None
        if node.op_type == "DequantizeLinear":
            scale = g.values.get(node.input[1])
            return scale if scale is not None and scale.size == 1 else None
        if node.op_type not in _PASS_THROUGH:
            return None
        tensor = node.input[0]
    return None


def _quantize_biases(g: _Graph) -> int:
    """Float bias of a Conv/Gemm whose input and weight are dequantized -> int32 bias read by a DequantizeLinear."""
    from onnx import helper
    producers, done = g.producers(), 0
    for node in list(g.graph.node):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in g.values:
            continue
        dq, x_scale = _weight_dq(g, node, producers), _input_scale(g, node.input[0], producers)
        if dq is None or x_scale is None or (node.op_type == "Gemm" and not _gemm_bias_on_axis0(node, dq)):
            continue
        bias = g.values[node.input[2]].astype(np.float64)
        w_scale = g.values[dq.input[1]].astype(np.float64).reshape(-1)
        if bias.ndim != 1 or w_scale.size not in (1, bias.size):
            continue
        scale = np.broadcast_to(float(x_scale) * w_scale, bias.shape).astype(np.float32)
        base = node.name or node.output[0]
        q = np.rint(bias / scale)
        if not np.all(np.abs(q) < 2**31 - 1):
            continue  # a scale too small for this bias in int32: leave it in float, as onnxruntime would
        q = q.astype(np.int32)
        names = [g.add(g.unique(base + suffix), value) for suffix, value in
                 (("_bias_int32", q), ("_bias_scale", scale), ("_bias_zero_point", np.zeros(bias.shape, np.int32)))]
        out = g.unique(base + "_bias_dequantized")
        g.graph.node.insert(list(g.graph.node).index(node),
                            helper.make_node("DequantizeLinear", names, [out], name=out, axis=0))
        node.input[2] = out
        done += 1
    return done


def module_name(node) -> str:
    """The PyTorch module a weighted ONNX node came from (``layer2.0.conv1``), else the node's own name.

    The exporters name a weight initializer after its parameter (``layer2.0.conv1.weight``), and
    that name survives onnxslim and onnxruntime's pre-processing; the dynamo exporter's node
    metadata (``pkg.torch.onnx.name_scopes``) is the fallback, dropped by onnxslim and pointing at
    the BatchNorm for a convolution it was folded into."""
    weight = node.input[1] if len(node.input) > 1 else ""
    if _PARAMETER.fullmatch(weight):
        return weight.rsplit(".", 1)[0]
    scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
    if scopes:
        import ast
        try:
            names = [s for s in ast.literal_eval(scopes) if s]
        except (ValueError, SyntaxError):
            names = []
        if len(names) > 1:
            return names[-2]  # the last entry is the aten op, the one before it the module
    return node.name


# --- what onnxruntime runs -------------------------------------------------------------------------

INT8_KERNELS = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
                "DynamicQuantizeMatMul")
FLOAT_KERNELS = ("Conv", "FusedConv", "NchwcConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "ConvTranspose")


def ort_kernel_counts(path: Path) -> tuple[int, int] | None:
    """(int8, fp32) weighted kernels in the graph onnxruntime's CPU provider runs for the ONNX file ``path``."""
    import onnx
    import onnxruntime as ort
    optimized = path.with_name(path.stem + ".ort-optimized.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath, options.log_severity_level = str(optimized), 3
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(str(optimized), load_external_data=False).graph.node]
    except Exception:  # noqa: BLE001 - a diagnostic for a warning; the caller goes on without it
        return None
    finally:
        optimized.unlink(missing_ok=True)
    return sum(op in INT8_KERNELS for op in ops), sum(op in FLOAT_KERNELS for op in ops)


def _gemm_bias_on_axis0(node, dq) -> bool:
    """Gemm's per-channel weight scales follow its output features only when B is transposed (transB=1)."""
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return trans_b == 1 and _axis(dq) == 0
