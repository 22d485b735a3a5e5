"""Checks of a quantized artifact made from the file itself, not from the record the quantizer wrote: its val
top-1 by the benchmarks harness, and which weighted layers its graph keeps in fp32."""

from __future__ import annotations

from pathlib import Path

WEIGHTED_ONNX = ("Conv", "Gemm", "MatMul")
WEIGHTED_OPENVINO = ("Convolution", "GroupConvolution", "MatMul")


def val_top1(artifact: str | Path, dataset: str = "digits") -> float:
    from benchmarks.accuracy import predict, score
    from benchmarks.runners import RunnerOptions, open_runner
    backend = {".xml": "openvino", ".onnx": "onnxruntime"}[Path(artifact).suffix]
    return score(*predict(open_runner(artifact, backend, RunnerOptions()), dataset, split="val"))["top1"]


def fp32_and_int8_layers(artifact: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """Weighted layers (name -> the name of their weight's source) whose weights are stored in fp32, and those
    whose weights are stored in int8 (ONNX: and whose input is dequantized from int8 too)."""
    artifact = Path(artifact)
    return _openvino_layers(artifact) if artifact.suffix == ".xml" else _onnx_layers(artifact)


def _onnx_layers(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    import onnx
    graph = onnx.load(str(path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    initializers = {i.name for i in graph.initializer}
    fp32, int8 = {}, {}
    for node in graph.node:
        if node.op_type not in WEIGHTED_ONNX:
            continue
        weight = producers.get(node.input[1])
        if node.input[1] in initializers:
            fp32[node.name] = node.input[1]
        elif weight is not None and weight.op_type == "DequantizeLinear" and \
                getattr(producers.get(node.input[0]), "op_type", None) == "DequantizeLinear":
            int8[node.name] = weight.input[0]
    return fp32, int8


def _openvino_layers(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    import openvino as ov
    fp32, int8 = {}, {}
    for op in ov.Core().read_model(str(path)).get_ordered_ops():
        if op.get_type_name() not in WEIGHTED_OPENVINO:
            continue
        weight = op.input_value(1).get_node()
        if weight.get_type_name() == "Constant" and weight.get_output_element_type(0).is_real():
            fp32[op.get_friendly_name()] = weight.get_friendly_name()
        elif (source := _constant_behind(weight)) is not None and not source.get_output_element_type(0).is_real():
            int8[op.get_friendly_name()] = source.get_friendly_name()
    return fp32, int8


def _constant_behind(node, depth: int = 4):
    """The Constant that a decompression chain (Convert, Subtract, Multiply) starts from."""
    for _ in range(depth):
        if node.get_type_name() == "Constant":
            return node
        if node.get_type_name() not in ("Convert", "Subtract", "Multiply"):
            return None
        node = node.input_value(0).get_node()
    return None
