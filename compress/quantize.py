"""Quantization: static int8 (PTQ), dynamic int8, fp16 and QAT, each written in the format its runtime runs fastest.

    from compress.quantize import QuantizeConfig, quantize
    result = quantize(bundle, "model_int8.onnx", QuantizeConfig(method="ptq", target="onnxruntime"), "digits")

Every path starts from the fp32 ONNX export (or a given deepslim ONNX file) and uses the
libraries made for the job: onnxruntime.quantization for Q/DQ ONNX (U8S8 on CPUs, as
onnxruntime advises, with 7-bit weights on CPUs without VNNI; symmetric S8S8 with
per-channel weights and float bias for TensorRT, checked against its explicit-quantization
rules), NNCF for OpenVINO IR (with its accuracy-control loop for ``max_accuracy_drop``).
Accuracy and latency of the fp32 and the quantized artifact are measured by the benchmark
runners, the same harness as ``deepslim bench``, and recorded in the artifact's lineage.

Any model kind (#13): calibration feeds every input of the signature (integer inputs such as
tokens and masks are fed as integers and never quantized), the task's own metrics judge both
artifacts (:func:`deepslim.metrics.task_metrics`), and the accuracy guard reads the task's
primary metric: ``max_accuracy_drop`` is in its points (top-1 for classifiers, mAP, R²), or in
percent of the fp32 value for an unbounded one (MAE, RMSE), as :meth:`deepslim.tasks.Task.drop`.

Transformers (#14): calibration and evaluation batches of texts are cut to their longest text
(the attention mask says where), as a deployed model is fed. A graph with attention is quantized
statically on its MatMul/Gemm/Conv weights and embeddings only (quantizing LayerNorm, Softmax and
the residual adds too cost a tiny BERT 7 points), and by NNCF with ``ModelType.TRANSFORMER``,
SmoothQuant measured on and off on val unless ``smooth_quant`` decides.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compress.options import Activations, Calibration, Method, QuantTarget, Recover
from compress.quant_data import QuantData, load_data, metric_words, run_outputs, score
from deepslim.artifact import ArtifactMeta, read_onnx_meta
from deepslim.provenance import recorded_name
from deepslim.errors import ConfigError, DeepSlimError, InputFileError, first_line
from deepslim.fileio import atomic_files
from deepslim.models import ModelBundle
from deepslim.spec import StageRecord
from deepslim.tasks import Task

SUFFIX = {QuantTarget.ONNXRUNTIME: ".onnx", QuantTarget.TENSORRT: ".onnx", QuantTarget.OPENVINO: ".xml"}
BACKEND = {QuantTarget.ONNXRUNTIME: "onnxruntime", QuantTarget.TENSORRT: "onnxruntime",
           QuantTarget.OPENVINO: "openvino"}
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")


class QuantizeError(DeepSlimError):
    """The quantized model cannot meet what was asked (accuracy, TensorRT's rules)."""


@dataclass(frozen=True)
class QuantizeConfig:
    method: Method = Method.PTQ
    target: QuantTarget = QuantTarget.ONNXRUNTIME
    calibration: Calibration | None = None   # None: the library's default (onnxruntime MinMax, NNCF's presets)
    calibration_samples: int | None = None   # None: 300, or the whole train split when it is smaller
    per_channel: bool = True
    activations: Activations = Activations.AUTO
    max_accuracy_drop: float | None = None   # the primary metric's points (top-1 for classifiers) on val; None: no guard
    input_size: int | None = None            # export (and measure) at another resolution
    qat_epochs: int = 3
    qat_lr: float = 0.005
    recover: Recover = Recover.FINETUNE      # qat: kd distills from the fp32 model
    temperature: float = 4.0
    alpha: float = 0.5
    latency: bool = True                     # time fp32 vs quantized on the target's runner
    smooth_quant: bool | None = None         # NNCF SmoothQuant for transformers (None: measured on and off on val)
    seed: int = 0

    def __post_init__(self) -> None:
        for name, enum in (("method", Method), ("target", QuantTarget), ("activations", Activations),
                           ("recover", Recover)):
            object.__setattr__(self, name, _enum(enum, getattr(self, name), name))
        if self.calibration is not None:
            object.__setattr__(self, "calibration", _enum(Calibration, self.calibration, "calibration"))
        if self.calibration_samples is not None and (not isinstance(self.calibration_samples, int)
                                                     or self.calibration_samples < 1):
            raise ConfigError(f"--calibration-samples must be a positive integer, got {self.calibration_samples}.")
        if self.max_accuracy_drop is not None and not self.max_accuracy_drop >= 0:
            raise ConfigError(f"--max-accuracy-drop is in points of the primary metric (top-1 for classifiers) and "
                              f"must be >= 0, got {self.max_accuracy_drop}.")
        if self.method is Method.DYNAMIC and self.target is not QuantTarget.ONNXRUNTIME:
            raise ConfigError("--method dynamic is onnxruntime's dynamic int8 (activations quantized at run time); "
                              "use --target onnxruntime.")
        if self.calibration is not None and self.method not in (Method.PTQ, Method.QAT):
            raise ConfigError(f"--calibration applies to --method ptq and qat, not {self.method.value}.")
        if self.calibration is Calibration.ENTROPY and (self.target is QuantTarget.OPENVINO
                                                        or self.method is Method.QAT):
            raise ConfigError("--calibration entropy is onnxruntime's calibrator; NNCF (--target openvino, "
                              "--method qat) offers minmax or percentile.")
        if self.method is Method.QAT and self.qat_epochs < 1:
            raise ConfigError(f"--qat-epochs must be a positive integer, got {self.qat_epochs}.")
        if self.smooth_quant is not None and (self.method is not Method.PTQ or self.target is not QuantTarget.OPENVINO):
            raise ConfigError("--smooth-quant/--no-smooth-quant choose NNCF's SmoothQuant for --method ptq --target "
                              "openvino.")
        if self.method in (Method.FP16, Method.DYNAMIC) and self.max_accuracy_drop is not None:
            raise ConfigError(f"--max-accuracy-drop guards int8 static quantization (ptq, qat), not "
                              f"{self.method.value}.")
        if self.recover is Recover.KD:
            from compress.distill import DistillConfig
            DistillConfig(temperature=self.temperature, alpha=self.alpha)  # same checks as distill

    @property
    def suffix(self) -> str:
        return SUFFIX[self.target]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("method", "target", "activations", "recover", "calibration"):
            data[key] = getattr(self, key).value if getattr(self, key) is not None else None
        return data


def _enum(enum, value, name: str):
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(e.value for e in enum)
        raise ConfigError(f"--{name.replace('_', '-')} must be one of {choices}, got '{value}'.") from None


@dataclass
class QuantizeResult:
    artifact: Path
    extra_files: tuple[Path, ...]
    record: StageRecord
    warnings: list[str] = field(default_factory=list)


# --- measuring through the benchmark runners ------------------------------------------------------

def compare_latency(fp32: Path, quantized: Path, backend: str) -> dict[str, float]:
    """p50 at batch 1 of both artifacts, interleaved in one run (short: a sanity check, not the benchmark).

    ``speedup`` is fp32 time / quantized time, the meaning of "x" everywhere in deepslim (above 1: faster)."""
    from benchmarks.latency import LatencyConfig, measure
    from benchmarks.runners import RunnerOptions, open_runner
    runners = [open_runner(p, backend, RunnerOptions()) for p in (fp32, quantized)]
    stats = measure(runners, LatencyConfig(batches=(1,), rounds=3, duration=1.5, warmup=3))
    a, b = stats[0][1].p50_ms, stats[1][1].p50_ms
    return {"fp32_p50_ms": round(a, 3), "quantized_p50_ms": round(b, 3), "speedup": round(a / b, 3),
            "within_noise": bool(stats[1][1].within_noise)}


# --- the stage --------------------------------------------------------------------------------------

def quantize(source: ModelBundle | str | Path, output: str | Path, cfg: QuantizeConfig | None = None,
             dataset: str = "digits", *, severity: int = 3, progress: bool = True,
             log: Callable[[str], None] | None = None) -> QuantizeResult:
    """Quantize ``source`` (a bundle, or a deepslim ONNX file for ptq/dynamic/fp16) into ``output``.

    Writes nothing unless everything succeeds (accuracy guard and TensorRT checks included).
    """
    cfg = cfg or QuantizeConfig()
    say = log or (lambda _msg: None)
    out = Path(output)
    start = time.perf_counter()
    _check_request(source, out, cfg)
    with tempfile.TemporaryDirectory(prefix="deepslim-quantize-") as tmp_name:
        tmp = Path(tmp_name)
        fp32_onnx, bundle = _fp32_onnx(source, tmp, cfg)
        meta = read_onnx_meta(fp32_onnx)
        task = meta.task
        data = load_data(dataset, meta.signature, task, cfg.calibration_samples, severity=severity, seed=cfg.seed)
        backend = BACKEND[cfg.target]
        fp32_artifact = _fp32_artifact(fp32_onnx, tmp, cfg, meta)
        fp32_metrics, fp32_outputs = score(fp32_artifact, backend, data)
        label, unit = metric_words(task)
        say(f"fp32 {fp32_artifact.suffix.lstrip('.')}: val {label} {_primary(task, fp32_metrics, 'val'):.4f}, "
            f"test {label} {_primary(task, fp32_metrics, 'test'):.4f}")
        details: dict[str, Any] = {}
        if cfg.method is Method.QAT:  # a bundle: _check_request refused an ONNX source
            from compress.qat import qat
            quantized = qat(bundle, tmp, cfg, dataset, severity, details, progress=progress, say=say)
            from deepslim.distributed import launched_rank
            if launched_rank() != 0:  # under torchrun every rank trained its shard; rank 0 checks and writes
                return QuantizeResult(out, (), StageRecord("quantize", cfg.to_json(), 0.0), [])
        else:
            quantized = _post_training(fp32_onnx, fp32_artifact, tmp, cfg, data, details, fp32_metrics, progress, say)
        _stamp(quantized, meta)
        q_metrics, _ = score(quantized, backend, data, reference=fp32_outputs)
        drop = task.drop(fp32_metrics["val"], q_metrics["val"])
        say(f"{cfg.method.value} {cfg.target.value}: val {label} {_primary(task, q_metrics, 'val'):.4f} "
            f"({-drop:+.2f} {unit}), test {label} {_primary(task, q_metrics, 'test'):.4f}")
        _check_guard(cfg, task, drop, details)
        warnings = list(details.pop("warnings", []))
        metrics: dict[str, Any] = {"fp32": fp32_metrics, "quantized": q_metrics, "primary": task.primary,
                                   "drop_unit": task.drop_unit(), "val_drop_points": round(drop, 3),
                                   "test_drop_points": round(task.drop(fp32_metrics["test"], q_metrics["test"]), 3),
                                   **details}
        if cfg.latency and cfg.method is not Method.FP16:
            _latency(cfg, fp32_artifact, quantized, meta, metrics, details, warnings)
        for w in warnings:
            say(f"warning: {w}")
        record = StageRecord("quantize", {**cfg.to_json(), "dataset": recorded_name(dataset, severity),
                                          "data": data.policies,
                                          "environment": _environment()},
                             round(time.perf_counter() - start, 2), {**metrics, "warnings": warnings},
                             versions=_versions())
        files = _finish(quantized, out, meta, record, cfg)
    return QuantizeResult(out, files[1:], record, warnings)


def _primary(task: Task, metrics: dict[str, Any], split: str) -> float:
    """The primary metric of ``split`` (NaN where the split cannot measure it, e.g. R² of one sample)."""
    return float(metrics[split].get(task.primary, float("nan")))


def _check_guard(cfg: QuantizeConfig, task: Task, drop: float, details: dict[str, Any]) -> None:
    """A QuantizeError when the val drop of the primary metric exceeds ``--max-accuracy-drop``."""
    if cfg.max_accuracy_drop is None or drop <= cfg.max_accuracy_drop + 1e-9:
        return
    steps = details.get("guard_steps") or [{"val_drop_points": drop, "fp32_layers": details.get("fp32_layers", [])}]
    best = min(steps, key=lambda step: step["val_drop_points"])
    hint = "raise the limit" + (" or try --method qat" if cfg.method is not Method.QAT else "")
    raise QuantizeError(f"No quantization fits --max-accuracy-drop {cfg.max_accuracy_drop:g}: the best reached "
                        f"loses {best['val_drop_points']:.2f} {task.drop_unit()} of val {metric_words(task)[0]} "
                        f"(with {len(best['fp32_layers'])} layers kept in fp32); {hint}.")


def _latency(cfg: QuantizeConfig, fp32: Path, quantized: Path, meta: ArtifactMeta, metrics: dict[str, Any],
             details: dict[str, Any], warnings: list[str]) -> None:
    """Time both artifacts on the target's runner; the runners time one-image models (others: a warning)."""
    try:
        metrics["latency"] = compare_latency(fp32, quantized, BACKEND[cfg.target])
    except ConfigError as exc:
        if meta.signature.single_image:
            raise
        warnings.append(f"fp32 and quantized latency were not compared: the benchmark runners cannot time "
                        f"this model yet ({first_line(exc)})")
        return
    if metrics["latency"]["speedup"] <= 1.0:
        warnings.append(_slow_warning(cfg, metrics, details, quantized))


def _post_training(fp32_onnx: Path, fp32_artifact: Path, tmp: Path, cfg: QuantizeConfig, data: QuantData,
                   details: dict[str, Any], fp32_metrics: dict[str, Any], progress: bool, say: Callable[[str], None]) -> Path:
    """The quantized artifact of the methods that need no training: fp16, dynamic int8, static int8 (PTQ)."""
    from compress import quantize_backends as qb
    if cfg.method is Method.FP16:
        return qb.fp16(fp32_onnx, tmp, cfg, details)
    if cfg.method is Method.DYNAMIC:
        return qb.dynamic(fp32_onnx, tmp, cfg, details)
    if cfg.target is QuantTarget.OPENVINO:
        return qb.ptq_openvino(fp32_artifact, tmp, cfg, data, details, fp32_metrics, say=say, progress=progress)
    return qb.ptq_onnx(fp32_onnx, tmp, cfg, data, details, fp32_metrics, say=say)


def check_suffix(out: Path, cfg: QuantizeConfig) -> None:
    if out.suffix != cfg.suffix:
        what = {".onnx": "a Q/DQ ONNX file (*.onnx)", ".xml": "an OpenVINO IR (*.xml, with a .bin beside it)"}
        raise ConfigError(f"--target {cfg.target.value} writes {what[cfg.suffix]}; got {out.name}.")


def _check_request(source, out: Path, cfg: QuantizeConfig) -> None:
    check_suffix(out, cfg)
    if not isinstance(source, ModelBundle):
        path = Path(source)
        if path.suffix.lower() != ".onnx":
            raise InputFileError(f"Quantization starts from a bundle (.safetensors) or a deepslim ONNX file; got "
                                 f"{path.name}.")
        if cfg.method is Method.QAT:
            raise ConfigError("--method qat fine-tunes a PyTorch model; give a bundle, not an ONNX file.")
        if cfg.input_size is not None:
            raise ConfigError(f"--input-size applies when exporting a bundle; {path.name} keeps its size.")


def _fp32_onnx(source, tmp: Path, cfg: QuantizeConfig) -> tuple[Path, ModelBundle | None]:
    from compress.quant_export import fp32_onnx
    if isinstance(source, ModelBundle):
        return fp32_onnx(source, tmp / "fp32.onnx", cfg.input_size), source
    path = Path(source)
    meta = read_onnx_meta(path)
    if meta is None:
        raise InputFileError(f"{path} has no deepslim metadata; export it with `deepslim export --target onnx`.")
    if meta.export.get("precision", "fp32") != "fp32" or _has_qdq(path):
        raise InputFileError(f"{path.name} is already quantized ({meta.export.get('precision', 'Q/DQ')}); start from "
                             "the fp32 model.")
    copy = tmp / "fp32.onnx"
    shutil.copyfile(path, copy)
    return copy, None


def _has_qdq(path: Path) -> bool:
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear") for n in graph.node)


def _fp32_artifact(fp32_onnx: Path, tmp: Path, cfg: QuantizeConfig, meta: ArtifactMeta) -> Path:
    """The fp32 reference on the target's runtime: the ONNX file, or its OpenVINO IR."""
    if cfg.target is not QuantTarget.OPENVINO:
        return fp32_onnx
    from compress.quant_export import fp32_openvino
    return fp32_openvino(fp32_onnx, tmp / "fp32.xml", meta.signature)


def _finish(quantized: Path, out: Path, meta: ArtifactMeta, record: StageRecord, cfg: QuantizeConfig) -> tuple[Path, ...]:
    """Stamp the metadata (signature, task, lineage + this stage) and move the artifact into place atomically."""
    precision = "fp16" if cfg.method is Method.FP16 else "int8"
    export = {**meta.export, "target": cfg.target.value, "precision": precision, "quantization": cfg.method.value}
    if cfg.method is Method.QAT:  # exported again from the fake-quantized model: not the fp32 file's graph
        export.update(simplified=False, exporter="legacy" if quantized.suffix == ".onnx" else "openvino")
        if "qdq_graph" in record.metrics:
            export["qdq_graph"] = record.metrics["qdq_graph"]
    new_meta = ArtifactMeta(meta.signature, meta.task, [*meta.lineage, record], export)
    files = (out, out.with_suffix(".bin")) if quantized.suffix == ".xml" else (out,)
    with atomic_files(*files) as tmp:
        _save_with_meta(quantized, tmp[0], new_meta, fp16=cfg.method is Method.FP16)
    return files


def _stamp(path: Path, meta: ArtifactMeta) -> None:
    """Give an interim artifact the fp32 model's metadata so the runners can feed it (QAT exports have none)."""
    if _has_meta(path):
        return
    stamped = path.with_name("stamped-" + path.name)
    _save_with_meta(path, stamped, meta)
    stamped.replace(path)
    if path.suffix == ".xml":
        stamped.with_suffix(".bin").replace(path.with_suffix(".bin"))


def _has_meta(path: Path) -> bool:
    from benchmarks.runners import read_meta
    try:
        read_meta(path)
    except InputFileError:
        return False
    return True


def _save_with_meta(source: Path, target: Path, meta: ArtifactMeta, *, fp16: bool = False) -> None:
    """Write the ONNX file or OpenVINO IR ``source`` to ``target`` carrying ``meta`` (an IR's .bin follows its .xml)."""
    if source.suffix == ".xml":
        import openvino as ov

        from deepslim.artifact import META_KEY
        model = ov.Core().read_model(str(source))
        model.set_rt_info(meta.to_json(), [META_KEY, "meta"])
        ov.save_model(model, str(target), compress_to_fp16=fp16)
        return
    import onnx

    from export.onnx import set_metadata
    proto = onnx.load(str(source))
    meta.export["opset"] = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    set_metadata(proto, meta)
    onnx.save_model(proto, str(target))


def _slow_warning(cfg: QuantizeConfig, metrics: dict[str, Any], details: dict[str, Any], quantized: Path) -> str:
    from compress.qdq_onnx import ort_kernel_counts
    lat = metrics["latency"]
    causes = []
    kernels = ort_kernel_counts(quantized) if BACKEND[cfg.target] == "onnxruntime" else None
    if details.get("activation_type") == "s8" and not _environment()["vnni"]:
        causes.append("signed int8 activations on a CPU without VNNI (use --activations u8)")
    if details.get("fp32_layers"):
        causes.append(f"{len(details['fp32_layers'])} layers left in fp32 by the accuracy guard")
    if cfg.target is QuantTarget.TENSORRT:
        causes.append("the TensorRT-style Q/DQ graph is built for GPUs; onnxruntime's CPU kernels fuse it less well")
    if kernels is not None and kernels[1]:
        causes.append(f"onnxruntime runs {kernels[1]} of {sum(kernels)} weighted layers in fp32 (their Q/DQ did "
                      "not fuse into integer kernels)")
    if not causes and kernels is not None and kernels[0]:
        causes.append(f"all {kernels[0]} weighted layers run as int8 kernels, so the time goes to the quantize, "
                      "dequantize and layout steps around them")
    if not causes:
        causes.append("none identified")
    return (f"the quantized model is not faster than fp32 on {BACKEND[cfg.target]} here ({lat['quantized_p50_ms']} "
            f"vs {lat['fp32_p50_ms']} ms at batch 1); likely cause: {'; '.join(causes)}.")



def _environment() -> dict[str, Any]:
    from benchmarks.env import cpu_info
    info = cpu_info()
    return {"cpu": info["model"], "vnni": info["vnni"], "flags": info["flags"]}


def _versions() -> dict[str, str]:
    from deepslim.training import versions
    out = versions()
    for module in ("onnxruntime", "openvino", "nncf"):
        try:
            out[module] = __import__(module).__version__
        except ImportError:
            continue
    return out


__all__ = ["QuantData", "QuantizeConfig", "QuantizeError", "QuantizeResult", "load_data", "quantize", "run_outputs",
           "score"]
