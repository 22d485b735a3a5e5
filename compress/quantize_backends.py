"""The quantization paths behind :func:`compress.quantize.quantize`, one function per method and format.

Each writes its artifact into the stage's temporary directory and returns its path; what it
chose (activation type, calibration, layers kept in fp32, per-layer errors) goes into ``details``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from compress.options import Activations, Calibration, QuantTarget
from compress.qdq_onnx import module_name
from compress.quant_data import Inputs, as_inputs, metric_words, trim_tokens
from compress.quantize import QUANTIZED_OPS, QuantData, QuantizeConfig, QuantizeError, score
from compress.quantize_openvino import import_nncf, nncf_kwargs, nncf_output, ptq_openvino  # noqa: F401 (qat, quantize)
from deepslim.errors import first_line

Say = Callable[[str], None]


# --- onnxruntime Q/DQ (targets onnxruntime and tensorrt) ------------------------------------------

def ptq_onnx(fp32_onnx: Path, tmp: Path, cfg: QuantizeConfig, data: QuantData, details: dict[str, Any],
             fp32_metrics: dict[str, Any], *, say: Say) -> Path:
    """Static int8 Q/DQ with onnxruntime.quantization; the accuracy guard keeps the noisiest layers in fp32."""
    source = _preprocess(fp32_onnx, tmp, details)
    settings = ort_settings(cfg)
    details.update({k: v for k, v in settings.items() if k in ("activation_type", "reduce_range", "calibration")})
    cache = tmp / "calibration.json"
    ops = None
    if has_attention(source):  # TensorRT takes per-channel weights only, and an embedding table has one scale
        ops = tuple(op for op in TRANSFORMER_OPS if op != "Gather" or cfg.target is not QuantTarget.TENSORRT)
    if ops:
        details["op_types"] = list(ops)

    def build(exclude: list[str]) -> Path:
        out = tmp / f"int8-{len(exclude)}.onnx"
        _quantize_static(source, out, cfg, data.calibration, exclude, cache, ops)
        return out

    quantized = build([])
    try:
        errors = layer_errors(source, quantized, data.calibration, tmp)
    except Exception as exc:  # a diagnostic: say it failed, keep the model
        details.setdefault("warnings", []).append(f"the per-layer error analysis failed ({type(exc).__name__}: "
                                                  f"{first_line(exc)}); the accuracy guard has no ranking")
        errors = []
    details["layer_errors"] = errors[:15]
    if cfg.max_accuracy_drop is None:
        return quantized
    return _guard(build, quantized, errors, cfg, data, details, fp32_metrics["val"], source, say)


def ort_settings(cfg: QuantizeConfig, vnni: bool | None = None) -> dict[str, Any]:
    """Activation type, weight range and calibration for onnxruntime, as its documentation advises per target.

    onnxruntime on x86 CPUs: unsigned activations with signed weights (U8S8); 7-bit weights
    (``reduce_range``) on CPUs without VNNI, whose 8-bit multiply-add can saturate. TensorRT:
    symmetric signed int8 everywhere (S8S8, zero-points 0), per-channel weights, float bias.
    """
    if vnni is None:
        from compress.quantize import _environment
        vnni = _environment()["vnni"]
    tensorrt = cfg.target is QuantTarget.TENSORRT
    act = cfg.activations
    if act is Activations.AUTO:
        act = Activations.S8 if tensorrt else Activations.U8
    extra: dict[str, Any] = {}
    if tensorrt:
        extra.update(ActivationSymmetric=True, WeightSymmetric=True, QuantizeBias=False)
    if cfg.calibration is Calibration.PERCENTILE:
        extra.update(CalibPercentile=99.99)
    return {"activation_type": act.value, "reduce_range": not vnni and not tensorrt and act is Activations.U8,
            "calibration": (cfg.calibration or Calibration.MINMAX).value, "extra_options": extra}


# A transformer's static int8: its weighted layers and the embeddings. Quantizing everything onnxruntime can
# (LayerNormalization, Softmax, Where, the residual Adds) cost a tiny BERT 7 points of top-1; these cost none.
TRANSFORMER_OPS = ("MatMul", "Gemm", "Conv", "Gather")


def has_attention(model: Path) -> bool:
    """The ONNX graph has attention: a fused attention op, or a MatMul of two activations (no weight)."""
    import onnx
    graph = onnx.load(str(model), load_external_data=False).graph
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant"
                                                        for o in n.output}
    return any(n.op_type in ("Attention", "MultiHeadAttention") or n.op_type == "MatMul"
               and not any(i in constants for i in n.input) for n in graph.node)


def _quantize_static(source: Path, out: Path, cfg: QuantizeConfig, calibration: np.ndarray | Inputs,
                     exclude: list[str], cache: Path, ops: tuple[str, ...] | None = None) -> None:
    """Static Q/DQ quantization calibrated on ``calibration`` (one array per graph input, or one array); only
    float tensors are quantized (onnxruntime leaves integer inputs such as tokens and masks alone); ``ops``:
    the operator types to quantize (None: every type onnxruntime can)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    settings = ort_settings(cfg)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings["calibration"]]
    act = QuantType.QUInt8 if settings["activation_type"] == "u8" else QuantType.QInt8
    try:
        quantize_static(str(source), str(out), _calibration_reader(source, calibration, settings["calibration"]),
                        quant_format=QuantFormat.QDQ,
                        per_channel=cfg.per_channel, reduce_range=settings["reduce_range"], activation_type=act,
                        weight_type=QuantType.QInt8, nodes_to_exclude=exclude or None, calibrate_method=method,
                        op_types_to_quantize=list(ops) if ops else None,
                        extra_options=settings["extra_options"], calibration_cache_path=str(cache))
    except Exception as exc:  # onnxruntime raises many types for graphs it cannot quantize
        raise QuantizeError(f"onnxruntime could not quantize {source.name}: {first_line(exc)}.") from exc
    if cfg.target is QuantTarget.TENSORRT:
        require_tensorrt_rules(out, "The int8 model", "use --activations s8 and per-channel weights for "
                                                      "--target tensorrt")


def require_tensorrt_rules(model: Path, what: str, advice: str) -> None:
    """Raise unless the Q/DQ ONNX ``model`` follows TensorRT's explicit-quantization rules (nothing is written yet)."""
    import onnx

    from export.tensorrt import check_qdq_for_tensorrt
    problems = check_qdq_for_tensorrt(onnx.load(str(model), load_external_data=False))
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise QuantizeError(f"{what} breaks TensorRT's explicit-quantization rules ({problems[0]}{more}); {advice}.")


def graph_inputs(model: Path) -> list[tuple[str, np.dtype]]:
    """The ONNX file's real inputs (not initializers), in order, with their numpy dtypes."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype
    graph = onnx.load(str(model), load_external_data=False).graph
    constants = {i.name for i in graph.initializer}
    return [(i.name, np.dtype(tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)))
            for i in graph.input if i.name not in constants]


def _calibration_reader(model: Path, calibration: np.ndarray | Inputs, method: str):
    """The reader ``method`` needs: MinMax takes batches of any shape (a text batch cut to its longest text);
    onnxruntime's histogram calibrators (entropy, percentile) stack every batch's outputs, so they get batches
    of one shape: a batch size that divides the sample count, texts at their common padded length."""
    if method == "minmax":
        return _reader(model, calibration)
    count = len(as_inputs(calibration)[0])
    return _reader(model, calibration, max(b for b in range(1, 17) if count % b == 0), trim=False)


def _reader(model: Path, calibration: np.ndarray | Inputs, batch: int = 16, *, trim: bool = True):
    """onnxruntime's CalibrationDataReader: ``{input name: batch}`` for every input of ``model``, each array in
    its input's own dtype (integer inputs are fed as integers, never as floats to quantize). With ``trim``, a
    text batch is cut to its longest text (MinMax takes any shapes; the histogram calibrators need one)."""
    from onnxruntime.quantization import CalibrationDataReader
    arrays, inputs = as_inputs(calibration), graph_inputs(model)
    if len(arrays) != len(inputs):
        raise QuantizeError(f"{model.name} takes {len(inputs)} inputs ({', '.join(n for n, _ in inputs)}) but "
                            f"calibration has {len(arrays)}.")
    count = len(arrays[0])

    names = [name for name, _ in inputs] if trim else []

    class Reader(CalibrationDataReader):  # a text batch cut to its longest text: calibrated on real tokens
        def __init__(self) -> None:
            self.batches = iter([{name: np.ascontiguousarray(a.astype(dtype, copy=False)) for (name, dtype), a in
                                  zip(inputs, trim_tokens(tuple(a[i:i + batch] for a in arrays), names))}
                                 for i in range(0, count, batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    return Reader()


def _preprocess(fp32_onnx: Path, tmp: Path, details: dict[str, Any]) -> Path:
    """onnxruntime's recommended pre-processing (shape inference, graph optimisation); the fp32 file if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    out = tmp / "preprocessed.onnx"
    try:
        # onnxruntime's symbolic shape inference dumps sym_shape_infer_temp.onnx (+ a .data file) into the working
        # directory when it gives up (a dynamic sequence axis does that): let it dump them into our temp folder
        with contextlib.chdir(tmp):
            quant_pre_process(str(fp32_onnx), str(out))
        return out
    except Exception as exc:  # optional step: try without symbolic shapes (dynamic sequence graphs), then skip it
        first = exc
    try:
        quant_pre_process(str(fp32_onnx), str(out), skip_symbolic_shape=True)
        details["preprocess"] = f"ONNX shape inference only (symbolic shape inference failed: {first_line(first)})"
        return out
    except Exception as exc:  # optional step: say so and go on without it
        details.setdefault("warnings", []).append(f"onnxruntime's pre-processing failed ({first_line(exc)}); "
                                                  "quantized the exported graph as is")
        return fp32_onnx


def layer_errors(fp32: Path, quantized: Path, calibration: np.ndarray | Inputs, tmp: Path) -> list[dict[str, Any]]:
    """Per quantized layer: SQNR (dB, higher is better) of the Q/DQ model's activations against the fp32
    model's at the layer's input and output, the dB lost inside the layer, and its weight's SQNR.

    Sorted by dB lost, worst first: the order in which the accuracy guard keeps layers in fp32.
    (onnxruntime's per-tensor ``qdq_err`` is not used: where it folds a Relu into the quantization
    range, the tensor before Q/DQ still holds the negative values and the number means nothing.)"""
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                          compute_weight_error, create_activation_matching,
                                                          create_weight_matching,
                                                          modify_model_output_intermediate_tensors)
    float_aug, q_aug = tmp / "float_aug.onnx", tmp / "q_aug.onnx"
    modify_model_output_intermediate_tensors(str(fp32), str(float_aug))
    modify_model_output_intermediate_tensors(str(quantized), str(q_aug))
    arrays = as_inputs(calibration)
    x = tuple(a[: _diagnostic_samples(arrays)] for a in arrays)
    matched = create_activation_matching(collect_activations(str(q_aug), _reader(q_aug, x, 4)),
                                         collect_activations(str(float_aug), _reader(float_aug, x, 4)))
    sqnr = {k: v["xmodel_err"] for k, v in compute_activation_error(matched).items() if "xmodel_err" in v}
    weights = compute_weight_error(create_weight_matching(str(fp32), str(quantized)))
    graph, producers, consumers = _graph_links(fp32)
    rows = []
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type in QUANTIZED_OPS and len(node.input) > 1 else None
        if weight is None:
            continue  # not quantized (excluded, or an op onnxruntime leaves in float)
        inp = _measured(node.input[0], sqnr, lambda t: [producers[t]] if t in producers else [], "input")
        out = _measured(node.output[0], sqnr, lambda t: consumers.get(t, []), "output")
        lost = inp - out if inp is not None and out is not None else None
        rows.append({"layer": module_name(node), "node": node.name, "op": node.op_type, "weight": node.input[1],
                     "input_sqnr_db": _round(inp),
                     "output_sqnr_db": _round(out), "lost_db": _round(lost), "weight_sqnr_db": _round(weight)})
    return sorted(rows, key=lambda r: (-(r["lost_db"] if r["lost_db"] is not None else -1e9), r["weight_sqnr_db"]))


def _graph_links(model: Path):
    """An ONNX graph with, per tensor, the node that produces it and the nodes that read it."""
    import onnx
    graph = onnx.load(str(model), load_external_data=False).graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return graph, producers, consumers


def _measured(tensor: str, sqnr: dict[str, float], neighbours, side: str, depth: int = 3) -> float | None:
    """The SQNR of ``tensor``, or of the nearest measured tensor through single-input/-output ops around it."""
    for _ in range(depth):
        if tensor in sqnr:
            return sqnr[tensor]
        nodes = neighbours(tensor)
        if len(nodes) != 1:
            return None
        tensor = nodes[0].input[0] if side == "input" else nodes[0].output[0]
    return sqnr.get(tensor)


def _diagnostic_samples(calibration: Inputs) -> int:
    """Few enough samples that every intermediate tensor of both models fits in memory comfortably."""
    per_sample = sum(a[0].nbytes for a in calibration) * 400  # a deep CNN keeps a few hundred input-sized tensors
    return int(max(1, min(32, 500_000_000 // max(per_sample, 1))))


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def _guard(build: Callable[[list[str]], Path], quantized: Path, errors: list[dict[str, Any]], cfg: QuantizeConfig,
           data: QuantData, details: dict[str, Any], fp32_val: dict[str, float], source: Path, say: Say) -> Path:
    """Keep the layers that lose the most in fp32 (1, 2, 4, ... of them, then bisected down) until the drop fits.

    Keeping a layer in fp32 also keeps its input in fp32: in a Q/DQ graph an activation is
    quantized at the output of the op that produces it, so that producer is excluded too."""
    def drop_of(path: Path) -> float:  # in the primary metric's points (or % of the baseline)
        return data.task.drop(fp32_val, score(path, "onnxruntime", data)[0]["val"])

    groups = _exclusion_groups(source, [row["node"] for row in errors])  # most dB lost first
    unit = metric_words(data.task)[1]

    def excluded(k: int) -> list[str]:
        return list(dict.fromkeys(name for group in groups[:k] for name in group))

    drop, count, steps = drop_of(quantized), 0, []
    steps.append({"layers": 0, "fp32_layers": [], "val_drop_points": round(drop, 3)})
    while drop > cfg.max_accuracy_drop + 1e-9 and count < len(groups):
        count = min(len(groups), max(1, 2 * count))
        quantized = build(excluded(count))
        drop = drop_of(quantized)
        steps.append({"layers": count, "fp32_layers": excluded(count), "val_drop_points": round(drop, 3)})
        say(f"accuracy guard: {', '.join(excluded(count))} kept in fp32 -> val drop {drop:.2f} {unit}")
    if count > 1 and drop <= cfg.max_accuracy_drop + 1e-9:
        low, high = count // 2, count  # bisect down to the fewest layers that still fit
        while high - low > 1:
            mid = (low + high) // 2
            mid_drop = drop_of(build(excluded(mid)))
            steps.append({"layers": mid, "fp32_layers": excluded(mid), "val_drop_points": round(mid_drop, 3)})
            low, high = (low, mid) if mid_drop <= cfg.max_accuracy_drop + 1e-9 else (mid, high)
        count = high
        quantized = build(excluded(count))
    modules = {row["node"]: row["layer"] for row in errors}
    details.update(fp32_layers=excluded(count), guard_steps=steps,
                   fp32_modules=[modules[n] for n in excluded(count) if n in modules])
    return quantized



def _exclusion_groups(model: Path, ranked: list[str]) -> list[list[str]]:
    """For each ranked layer, the nodes to exclude so that the layer really computes on fp32 inputs.

    In a Q/DQ graph an activation is quantized where it is produced, or where any quantized
    reader asks for it; so the group holds the layer, the ops between it and the quantized ops
    that produce its input (Relu, pooling, Flatten, a residual Add), those producers, and every
    other reader of the tensors on that path."""
    graph, producers, consumers = _graph_links(model)
    by_name = {n.name: n for n in graph.node}
    groups = []
    for name in ranked:
        group = [name]
        frontier, seen = ([by_name[name].input[0]] if name in by_name else []), set()
        for _ in range(4):
            following = []
            for tensor in frontier:
                if tensor in seen:
                    continue
                seen.add(tensor)
                group += [u.name for u in consumers.get(tensor, []) if u.name not in group]
                node = producers.get(tensor)
                if node is None:
                    continue
                if node.name not in group:
                    group.append(node.name)
                if node.op_type not in QUANTIZED_OPS:
                    following += [i for i in node.input if i in producers]
            frontier = following
        groups.append(group)
    return groups


# --- dynamic int8 and fp16 ------------------------------------------------------------------------------

def dynamic(fp32_onnx: Path, tmp: Path, cfg: QuantizeConfig, details: dict[str, Any]) -> Path:
    """onnxruntime dynamic quantization: int8 weights, activations quantized per batch at run time.

    What onnxruntime (and optimum's ``AutoQuantizationConfig.avx512_vnni``) advise for x86 CPUs: signed
    symmetric weights with unsigned activations (U8S8, ``MatMulInteger``/``DynamicQuantizeMatMul``),
    per-channel weights unless ``--per-tensor``, and 7-bit weights (``reduce_range``) on CPUs without VNNI,
    whose 8-bit multiply-add can saturate. Every MatMul is quantized, the attention's two activation-by-
    activation products too, as optimum's ``ORTQuantizer`` does: on a BERT-base-sized encoder at sequence 128
    leaving those 24 in float was 1.11x slower than optimum at the same accuracy (scripts/transformer_int8);
    the accuracy guard still judges the result."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from compress.quantize import _environment
    out = tmp / "dynamic.onnx"
    source = _preprocess(fp32_onnx, tmp, details)
    reduce_range = not _environment()["vnni"]
    try:
        quantize_dynamic(str(source), str(out), per_channel=cfg.per_channel, reduce_range=reduce_range,
                         weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": False})
    except Exception as exc:  # onnxruntime raises many types
        raise QuantizeError(f"onnxruntime could not quantize {fp32_onnx.name} dynamically: {first_line(exc)}.") from exc
    details.update(activation_type="dynamic u8", library="onnxruntime", per_channel=cfg.per_channel,
                   reduce_range=reduce_range, int8_ops=_int8_ops(out))
    return out


def _int8_ops(model: Path) -> dict[str, int]:
    """How many nodes of each integer operator the quantized graph holds (MatMulInteger, DynamicQuantizeLinear...)."""
    import onnx
    from collections import Counter
    ops = Counter(n.op_type for n in onnx.load(str(model), load_external_data=False).graph.node)
    return {op: n for op, n in sorted(ops.items()) if "Integer" in op or "Quant" in op}


def fp16(fp32_onnx: Path, tmp: Path, cfg: QuantizeConfig, details: dict[str, Any]) -> Path:
    """Half-precision weights: an fp16 ONNX graph (fp32 inputs and outputs kept), or an IR with fp16 weights."""
    details["library"] = "openvino" if cfg.target is QuantTarget.OPENVINO else "onnxruntime.transformers"
    if cfg.target is QuantTarget.OPENVINO:
        import openvino as ov
        out = tmp / "fp16.xml"
        ov.save_model(ov.Core().read_model(str(tmp / "fp32.xml")), str(out), compress_to_fp16=True)
        return out
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    out = tmp / "fp16.onnx"
    onnx.save_model(convert_float_to_float16(onnx.load(str(fp32_onnx)), keep_io_types=True), str(out))
    if cfg.target is QuantTarget.ONNXRUNTIME:
        details.setdefault("warnings", []).append("fp16 on onnxruntime's CPU provider is emulated and slower than "
                                                  "fp32; it is meant for GPUs (CUDA/TensorRT providers)")
    return out
