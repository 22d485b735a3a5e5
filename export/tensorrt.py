"""ONNX -> TensorRT engine with the ``tensorrt`` Python API (strongly typed networks).

Everything that does not need a GPU is plain Python and tested here: the build plan
(profile shapes, network and builder flags per TensorRT version and precision), the
equivalent ``trtexec`` command line, and the static check that a QDQ ONNX meets
TensorRT's explicit-quantization rules. Only :func:`build_engine` needs ``tensorrt``
and a CUDA GPU; without them it fails with one sentence.

TensorRT 11 removed the weak-typing precision flags (``BuilderFlag.FP16``/``INT8``):
precision lives in the graph. deepslim therefore always builds a strongly typed
network: fp16 engines come from an fp16 copy of the ONNX (I/O kept fp32), int8
engines from a Q/DQ ONNX (explicit quantization; there is no implicit calibrator).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.runners.tensorrt_runner import import_tensorrt
from deepslim.artifact import ArtifactMeta, read_onnx_meta
from deepslim.errors import ConfigError, InputFileError, first_line
from deepslim.fileio import atomic_files, require_file
from deepslim.signature import BATCH, Signature
from export.errors import ExportError
from export.options import Precision


DEFAULT_DIM_RANGE = (1, 16, 256)  # min, opt, max of a named dim (sequence, length...) no range was given for
SEQUENCE = "sequence"  # a text model's token axis: its range is --seq-len


@dataclass(frozen=True)
class TensorRTConfig:
    precision: Precision = Precision.FP32
    batches: tuple[int, ...] = (1,)       # the optimization profile covers min..max, tuned for opt
    opt_batch: int | None = None          # default: the largest requested batch
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    dim_ranges: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)  # named dim -> (min, opt, max)

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision(self.precision))
        if not self.batches or min(self.batches) < 1:
            raise ConfigError(f"--batch sizes must be positive integers, got {list(self.batches)}.")
        if self.workspace_mib < 1:
            raise ConfigError(f"--workspace must be a positive number of MiB, got {self.workspace_mib}.")
        if self.opt_batch is not None and not min(self.batches) <= self.opt_batch <= max(self.batches):
            raise ConfigError(f"The optimal batch {self.opt_batch} is outside the profile {min(self.batches)}.."
                              f"{max(self.batches)}.")
        for name, span in self.dim_ranges.items():
            if name == BATCH:
                raise ConfigError("The batch range of a TensorRT profile comes from --batch, not a dim range.")
            if len(span) != 3 or not 1 <= span[0] <= span[1] <= span[2]:
                raise ConfigError(f"The range of dim '{name}' must be min <= opt <= max, all positive; got "
                                  f"{list(span)}.")


@dataclass(frozen=True)
class InputProfile:
    """One input's shape range in the optimization profile (``IOptimizationProfile.set_shape``)."""

    name: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]


@dataclass(frozen=True)
class BuildPlan:
    """What :func:`build_engine` will ask TensorRT for; computed without TensorRT."""

    inputs: tuple[InputProfile, ...]        # every input of the network, in the signature's order
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]          # set on the builder config
    cleared_builder_flags: tuple[str, ...]  # cleared: TF32 is on by default, and fp32 must mean fp32
    convert_to_fp16: bool
    requires_qdq: bool
    workspace_bytes: int
    dim_ranges: tuple[tuple[str, tuple[int, int, int]], ...] = ()  # the (min, opt, max) used per named dim

    # the first input's (what one-input plans were described by)
    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    @property
    def min_shape(self) -> tuple[int, ...]:
        return self.inputs[0].min_shape

    @property
    def opt_shape(self) -> tuple[int, ...]:
        return self.inputs[0].opt_shape

    @property
    def max_shape(self) -> tuple[int, ...]:
        return self.inputs[0].max_shape


def plan_build(meta: ArtifactMeta, config: TensorRTConfig, *, input_names: Sequence[str] | None = None,
               input_name: str | None = None) -> BuildPlan:
    """The build plan of an ONNX file described by ``meta``: one shape range per input (``input_names``: the
    graph's names in the signature's order; default: those the export recorded)."""
    signature = meta.signature
    names = tuple(input_names or ((input_name,) if input_name else engine_input_names(meta)))
    if len(names) != len(signature.inputs):
        raise ConfigError(f"The ONNX graph has the inputs {list(names)} but its metadata describes "
                          f"{signature.describe()}.")
    text_limit = signature.text.position_limit if signature.text is not None else None
    ranges = _dim_ranges(signature, config, meta.export.get("dim_limits") or
                         ({SEQUENCE: text_limit} if text_limit else None))
    spans = {BATCH: (min(config.batches), config.opt_batch or max(config.batches), max(config.batches)), **ranges}
    profiles = tuple(InputProfile(name, *(tuple(spans[d][k] if isinstance(d, str) else d for d in spec.shape)
                                          for k in range(3)))
                     for name, spec in zip(names, signature.inputs))
    return BuildPlan(profiles, network_flags=("STRONGLY_TYPED",), builder_flags=(),
                     cleared_builder_flags=("TF32",) if config.precision is Precision.FP32 else (),
                     convert_to_fp16=config.precision is Precision.FP16,
                     requires_qdq=config.precision is Precision.INT8,
                     workspace_bytes=config.workspace_mib * 1024 * 1024, dim_ranges=tuple(ranges.items()))


def engine_input_names(meta: ArtifactMeta) -> tuple[str, ...]:
    """The ONNX input names an export recorded; files exported before signatures named their one input ``input``."""
    recorded = meta.export.get("input_names")
    if recorded:
        return tuple(recorded)
    return ("input",) if meta.signature.single_image else meta.signature.input_names


def _dim_ranges(signature: Signature, config: TensorRTConfig,
                limits: Mapping[str, int] | None = None) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) per named dim: the configured range, else a text model's ``sequence`` from 1 to its
    tokenizer's ``max_length`` (tuned there), else :data:`DEFAULT_DIM_RANGE`; each checked against ``limits``."""
    named = list(dict.fromkeys(d for spec in signature.inputs for d in spec.shape[1:] if isinstance(d, str)))
    unknown = sorted(set(config.dim_ranges) - set(named))
    if unknown:
        hint = "; --seq-len applies to a text model's sequence axis" if SEQUENCE in unknown else ""
        raise ConfigError(f"The dims {unknown} are not named dims of the model's inputs ({signature.describe()})"
                          f"{hint}.")
    ranges = {}
    for d in named:
        default = (1, signature.text.max_length, signature.text.max_length) \
            if d == SEQUENCE and signature.text is not None else DEFAULT_DIM_RANGE
        ranges[d] = tuple(config.dim_ranges.get(d, default))
        limit = (limits or {}).get(d)
        if limit is not None and ranges[d][2] > limit:
            what = "--seq-len" if d == SEQUENCE else f"The range of dim '{d}'"
            raise ConfigError(f"{what} goes up to {ranges[d][2]} but the model takes at most {limit} (its position "
                              f"embeddings); lower the maximum.")
    return ranges


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, plan: BuildPlan,
                    timing_cache: str | Path | None = None) -> str:
    """The ``trtexec`` line that builds the same engine (for users who prefer NVIDIA's tool)."""
    def shapes(which: str) -> str:
        return ",".join(f"{p.name}:{'x'.join(map(str, getattr(p, which)))}" for p in plan.inputs)

    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}",
            f"--minShapes={shapes('min_shape')}", f"--optShapes={shapes('opt_shape')}",
            f"--maxShapes={shapes('max_shape')}",
            f"--memPoolSize=workspace:{plan.workspace_bytes // (1024 * 1024)}M", "--stronglyTyped"]
    if "TF32" in plan.cleared_builder_flags:
        args.append("--noTF32")
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    return " ".join(shlex.quote(a) for a in args)


# --- explicit quantization rules -------------------------------------------------------------

_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0, "MatMul": 1}


def check_qdq_for_tensorrt(model) -> list[str]:
    """Violations of TensorRT's explicit-quantization rules in a Q/DQ ONNX model (empty: fine).

    Rules: every Q/DQ pair is int8 and symmetric (zero-point 0), scales are positive,
    activations are quantized per tensor, and weights per channel on the output axis.
    """
    import numpy as np
    from onnx import numpy_helper
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    problems: list[str] = []
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        return ["the model has no QuantizeLinear/DequantizeLinear nodes: int8 needs a Q/DQ (explicitly quantized) ONNX"]
    for node in qdq:
        scale = inits.get(node.input[1]) if len(node.input) > 1 else None
        zero = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero is not None and zero.dtype != np.int8:
            problems.append(f"{node.name}: zero-point is {zero.dtype}, TensorRT needs int8 (signed, symmetric)")
        if zero is not None and np.any(zero != 0):
            problems.append(f"{node.name}: zero-point is not 0 (asymmetric quantization)")
        if scale is not None and np.any(scale <= 0):
            problems.append(f"{node.name}: non-positive scale")
        problems += _axis_problems(node, scale, inits, consumers)
    return problems


def _axis_problems(node, scale, inits, consumers) -> list[str]:
    if node.op_type != "DequantizeLinear" or scale is None:
        return []
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    is_weight = node.input[0] in inits or _quantized_initializer(node.input[0], inits, consumers)
    users = [u for u in consumers.get(node.output[0], []) if u.op_type in _WEIGHT_AXIS]
    if not is_weight:
        return [f"{node.name}: activations must be quantized per tensor"] if scale.size > 1 else []
    if scale.size == 1:
        return [f"{node.name}: weights are quantized per tensor; TensorRT expects per-channel scales"]
    wanted = {_WEIGHT_AXIS[u.op_type] for u in users if u.input[1] == node.output[0]}
    return [f"{node.name}: per-channel axis {axis} is not the output axis {sorted(wanted)[0]}"] \
        if wanted and axis not in wanted else []


def _quantized_initializer(name: str, inits, consumers) -> bool:
    return any(name in q.output and q.input[0] in inits for users in consumers.values() for q in users
               if q.op_type == "QuantizeLinear")


# --- building and loading (need tensorrt and a CUDA GPU) ------------------------------------

def require_tensorrt():
    """Import tensorrt and make sure a CUDA GPU is present, or fail with one sentence."""
    return import_tensorrt("TensorRT export")


def to_tensorrt(onnx_path: str | Path, output: str | Path, config: TensorRTConfig | None = None) -> Path:
    """Build an engine from a deepslim ONNX file; writes ``OUT.engine`` and ``OUT.engine.json``."""
    import onnx
    config = config or TensorRTConfig()
    onnx_path = require_file(onnx_path, "ONNX file")
    meta = read_onnx_meta(onnx_path)
    if meta is None:
        raise InputFileError(f"{onnx_path} has no deepslim metadata; export it with `deepslim export --target onnx`.")
    model = onnx.load(str(onnx_path))
    plan = plan_build(meta, config, input_names=_graph_inputs(model))
    if plan.requires_qdq and (problems := check_qdq_for_tensorrt(model)):
        raise ExportError(f"{onnx_path} is not a TensorRT-ready int8 model: {problems[0]}.")
    trt = require_tensorrt()
    if plan.convert_to_fp16:
        from onnxruntime.transformers.float16 import convert_float_to_float16
        model = convert_float_to_float16(model, keep_io_types=True)
    engine, cache = _build(trt, model.SerializeToString(), plan, config)
    out = Path(output)
    sidecar = out.with_name(out.name + ".json")
    with atomic_files(out, sidecar) as (tmp, tmp_sidecar):
        tmp.write_bytes(engine)
        tmp_sidecar.write_text(json.dumps(engine_sidecar(trt, meta, plan, config), indent=2))
    if config.timing_cache is not None and cache is not None:
        with atomic_files(config.timing_cache) as (tmp_cache,):
            tmp_cache.write_bytes(cache)
    return out


def _build(trt, onnx_bytes: bytes, plan: BuildPlan, config: TensorRTConfig) -> tuple[bytes, bytes | None]:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT's ONNX parser failed: {first_line(Exception(errors[0] if errors else '?'))}.")
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    apply_builder_flags(trt, builder_config, plan)
    builder_config.add_optimization_profile(optimization_profile(builder, network, plan))
    cache_bytes = config.timing_cache.read_bytes() if config.timing_cache and config.timing_cache.is_file() else b""
    builder_config.set_timing_cache(builder_config.create_timing_cache(cache_bytes), False)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise ExportError("TensorRT could not build the engine; rerun with --debug for its log.")
    cache = builder_config.get_timing_cache()
    return bytes(serialized), (bytes(cache.serialize()) if cache is not None else None)


def _graph_inputs(model) -> tuple[str, ...]:
    constants = {i.name for i in model.graph.initializer}
    return tuple(i.name for i in model.graph.input if i.name not in constants)


def optimization_profile(builder, network, plan: BuildPlan):
    """One optimization profile with the plan's min/opt/max shape for EVERY network input (TensorRT needs a
    range for each input with a dynamic dim, and checks the rest against their static shape)."""
    present = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(present) != sorted(p.name for p in plan.inputs):
        raise ExportError(f"TensorRT's network has the inputs {present}, not the plan's "
                          f"{[p.name for p in plan.inputs]}.")
    profile = builder.create_optimization_profile()
    for p in plan.inputs:
        profile.set_shape(p.name, p.min_shape, p.opt_shape, p.max_shape)
    return profile


def apply_builder_flags(trt, builder_config, plan: BuildPlan) -> None:
    """Set and clear the plan's builder flags (``BuilderConfig.set_flag``/``clear_flag``)."""
    for name in plan.builder_flags:
        builder_config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_builder_flags:
        builder_config.clear_flag(getattr(trt.BuilderFlag, name))


def engine_sidecar(trt, meta: ArtifactMeta, plan: BuildPlan, config: TensorRTConfig) -> dict[str, Any]:
    import torch
    props = torch.cuda.get_device_properties(0)
    return {"tensorrt": trt.__version__, "gpu": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "precision": config.precision.value, "plan": {k: list(v) if isinstance(v, tuple) else v
                                                          for k, v in asdict(plan).items()},
            "meta": json.loads(meta.to_json())}
