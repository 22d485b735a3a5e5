"""NNCF post-training quantization of an OpenVINO IR (``--method ptq --target openvino``), with NNCF's
accuracy-control loop for ``--max-accuracy-drop``, for models of any signature and task."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from compress.options import Calibration
from compress.quant_data import Inputs, QuantData
from compress.quantize import QuantizeConfig, QuantizeError
from deepslim.errors import DeepSlimError, first_line

Say = Callable[[str], None]


# --- NNCF for OpenVINO ------------------------------------------------------------------------------

def ptq_openvino(fp32_xml: Path, tmp: Path, cfg: QuantizeConfig, data: QuantData, details: dict[str, Any],
                 fp32_metrics: dict[str, Any] | None = None, *, say: Say, progress: bool = True) -> Path:
    """NNCF post-training quantization of the OpenVINO model; with a guard, NNCF's accuracy-control loop.

    Calibration and validation feed every input: each item is one sample's inputs (a text cut to its own
    length), and NNCF's ``transform_fn`` turns it into ``{input index: array}`` for ``model(inputs)``. A model
    with attention is quantized with ``ModelType.TRANSFORMER``; SmoothQuant (on by default in NNCF for that
    type) is measured on and off on val and the better kept, unless ``cfg.smooth_quant`` decides."""
    import openvino as ov
    nncf = import_nncf()
    model = ov.Core().read_model(str(fp32_xml))
    count = len(data.calibration[0])
    calibration = nncf.Dataset([tuple(a[i:i + 1] for a in data.calibration) for i in range(count)], _ov_feed(data))
    transformer = is_transformer(model)
    if cfg.smooth_quant and not transformer:
        raise QuantizeError("--smooth-quant applies to transformer models (NNCF's ModelType.TRANSFORMER); this "
                            "model has no attention layers, so leave it out.")
    kwargs: dict[str, Any] = {"subset_size": count,
                              **({"model_type": nncf.ModelType.TRANSFORMER} if transformer else {})}
    details.update(calibration=cfg.calibration.value if cfg.calibration else "nncf-default", library="nncf",
                   model_type="transformer" if transformer else "default")
    try:
        with nncf_output(progress):
            if cfg.max_accuracy_drop is None:
                quantized = _quantize_choosing_smoothing(nncf, model, calibration, cfg, data, kwargs, details,
                                                         transformer, say)
            else:
                quantized = _quantize_guarded(nncf, model, calibration, cfg, data, kwargs, fp32_metrics,
                                              transformer)
        if cfg.max_accuracy_drop is not None:
            details["fp32_layers"] = fp32_layers_openvino(quantized)
            say(f"accuracy guard (NNCF): {len(details['fp32_layers'])} layer(s) kept in fp32")
    except DeepSlimError:
        raise
    except Exception as exc:  # NNCF and OpenVINO raise many types
        raise QuantizeError(f"NNCF could not quantize {fp32_xml.name}: {first_line(exc)}.") from exc
    out = tmp / "int8.xml"
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def _quantize_choosing_smoothing(nncf, model, calibration, cfg: QuantizeConfig, data: QuantData,
                                 kwargs: dict[str, Any], details: dict[str, Any], transformer: bool, say: Say):
    """``nncf.quantize``; for a transformer without ``--smooth-quant``/``--no-smooth-quant``, with SmoothQuant
    and without, keeping the one with the better val score (NNCF's default, SmoothQuant on, on a tie)."""
    if not transformer:
        return nncf.quantize(model, calibration, **kwargs, **nncf_kwargs(cfg))
    choices = (True, False) if cfg.smooth_quant is None else (cfg.smooth_quant,)
    results = {}
    for smooth in choices:
        quantized = nncf.quantize(model, calibration, **kwargs, **nncf_kwargs(cfg, smooth=smooth))
        results[smooth] = (quantized, val_score(quantized, data) if len(choices) > 1 else None)
    chosen = max(choices, key=lambda smooth: results[smooth][1] if len(choices) > 1 else 0.0)
    details["smooth_quant"] = {"chosen": chosen, **({f"val_{data.task.primary}_{'with' if k else 'without'}":
                                                     round(v[1], 4) for k, v in results.items()}
                                                    if len(choices) > 1 else {})}
    if len(choices) > 1:
        say(f"SmoothQuant: val {data.task.primary} {results[True][1]:.4f} with, {results[False][1]:.4f} without; "
            f"kept {'with' if chosen else 'without'}")
    return results[chosen][0]


def _quantize_guarded(nncf, model, calibration, cfg: QuantizeConfig, data: QuantData, kwargs: dict[str, Any],
                      fp32_metrics: dict[str, Any] | None, transformer: bool):
    """NNCF's accuracy-control loop (SmoothQuant as NNCF defaults for a transformer unless ``--smooth-quant``)."""
    x, y = data.val
    validation = nncf.Dataset([(tuple(a[i:i + 1] for a in x), y[i:i + 1]) for i in range(len(y))])
    base = (fp32_metrics or {}).get("val", {})
    advanced = _nncf_advanced(cfg, smooth=cfg.smooth_quant if transformer else None)
    return nncf.quantize_with_accuracy_control(
        model, calibration, validation, validation_fn=nncf_validation(data, base),
        max_drop=cfg.max_accuracy_drop / 100, drop_type=nncf.DropType.ABSOLUTE, **kwargs,
        **({} if advanced is None else {"advanced_quantization_parameters": advanced}))


def val_score(model, data: QuantData) -> float:
    """The task's score (higher is better) of an in-memory OpenVINO model on the val split."""
    import openvino as ov

    from compress.quant_data import openvino_output
    from deepslim.metrics import task_metrics
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x, y = data.val
    out = np.concatenate([openvino_output(compiled, data.signature, tuple(a[i:i + 32] for a in x))
                          for i in range(0, len(y), 32)])
    return float(data.task.score(task_metrics(data.task, out, y)))


def is_transformer(model) -> bool:
    """The OpenVINO model has attention: a ScaledDotProductAttention op (what OpenVINO fuses attention into), or
    a MatMul of two activations (no constant weight on either side)."""
    return any(op.get_type_name() == "ScaledDotProductAttention" or op.get_type_name() == "MatMul"
               and not any(_constant(op.input_value(i).get_node()) for i in range(2))
               for op in model.get_ordered_ops())


def _constant(node, depth: int = 4) -> bool:
    """``node`` is a constant, or is computed from one alone (through Convert, Reshape, Transpose...)."""
    for _ in range(depth):
        if node.get_type_name() == "Constant":
            return True
        if node.get_type_name() not in ("Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "FakeQuantize",
                                        "FakeConvert", "Multiply", "Subtract"):
            return False
        node = node.input_value(0).get_node()
    return False


def import_nncf():
    """nncf, imported without the warning torch prints when NNCF looks for a CUDA toolkit on a CPU machine."""
    import logging
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf
    return nncf


def nncf_output(progress: bool):
    """NNCF draws its progress bars and logs on stdout; without progress they are swallowed."""
    import contextlib
    import io
    import logging
    nncf = import_nncf()
    nncf.set_log_level(logging.INFO if progress else logging.ERROR)
    return contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO())


def _ov_feed(data: QuantData):
    """NNCF's transform_fn: one item's inputs -> ``{input index: array}``, each in its input's dtype."""
    from compress.quant_data import trim_tokens
    names = data.signature.input_names if data.signature.text is not None else ()

    def transform(item: Inputs) -> dict[int, np.ndarray]:
        return {k: np.ascontiguousarray(a.astype(s.dtype, copy=False))
                for k, (a, s) in enumerate(zip(trim_tokens(item, names), data.signature.inputs))}
    return transform


def nncf_validation(data: QuantData, base: dict[str, float]):
    """NNCF's validation_fn for the task's primary metric: ``(value, per-item values)``.

    The value is the task's score (higher is better) and, for a metric that is not bounded (mae, rmse),
    divided by the fp32 model's, so that NNCF's absolute drop is ``task.drop / 100`` either way. The
    per-item values (correct / not for classes, label accuracy for multilabel, -|error| for
    regression) only rank which samples react to quantization."""
    from deepslim.metrics import task_metrics
    from compress.quant_data import openvino_output
    task = data.task
    scale = 1.0 if task.primary_info.bounded else max(abs(float(base.get(task.primary, 1.0))), 1e-12)

    def validate(compiled_model, items) -> tuple[float, list[float]]:
        outs, targets = [], []
        for x, y in items:
            outs.append(openvino_output(compiled_model, data.signature, x))
            targets.append(y)
        out, target = np.concatenate(outs), np.concatenate(targets)
        per_item = _item_values(task, out, target)
        metrics = task_metrics(task, out, target)
        value = task.score(metrics) / scale if task.primary in metrics else float(np.mean(per_item))
        return float(value), per_item
    return validate


def _item_values(task, out: np.ndarray, target: np.ndarray) -> list[float]:
    if task.is_classification:
        return [float(v) for v in out.argmax(axis=1) == target]
    if task.kind.value == "multilabel":
        return [float(v) for v in ((out >= 0) == (target >= 0.5)).mean(axis=1)]
    return [float(v) for v in -np.abs(out.reshape(len(target), -1) - target.reshape(len(target), -1)).mean(axis=1)]


def _nncf_advanced(cfg: QuantizeConfig, smooth: bool | None = None):
    """NNCF's advanced parameters for ``cfg`` (None: its defaults); ``smooth=False`` turns SmoothQuant off (NNCF
    runs it for ModelType.TRANSFORMER), True or None keeps NNCF's default alphas."""
    if cfg.calibration is None and cfg.per_channel and smooth is not False:
        return None
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, AdvancedSmoothQuantParameters,
                                                       QuantizationParameters)
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet
    kwargs: dict[str, Any] = {}
    if cfg.calibration is not None:
        kwargs["activations_range_estimator_params"] = {
            Calibration.MINMAX: RangeEstimatorParametersSet.MINMAX,
            Calibration.PERCENTILE: RangeEstimatorParametersSet.MEAN_QUANTILE}[cfg.calibration]
    if not cfg.per_channel:
        kwargs["weights_quantization_params"] = QuantizationParameters(per_channel=False)
    if smooth is False:
        kwargs["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(convolution=-1, matmul=-1)
    return AdvancedQuantizationParameters(**kwargs)


def nncf_kwargs(cfg: QuantizeConfig, *, smooth: bool | None = None) -> dict[str, Any]:
    advanced = _nncf_advanced(cfg, smooth)
    return {} if advanced is None else {"advanced_parameters": advanced}


def fp32_layers_openvino(model) -> list[str]:
    """Convolution/MatMul ops of an NNCF-quantized model whose inputs pass through no FakeQuantize."""
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData"):
            continue
        sources = [op.input_value(i).get_node() for i in range(op.get_input_size())]
        if not any(_through_fake_quantize(s) for s in sources):
            names.append(op.get_friendly_name())
    return names


def _through_fake_quantize(node, depth: int = 3) -> bool:
    for _ in range(depth):
        if node.get_type_name() == "FakeQuantize":
            return True
        if node.get_input_size() == 0:
            return False
        node = node.input_value(0).get_node()
    return False


__all__ = ["import_nncf", "is_transformer", "nncf_kwargs", "nncf_output", "nncf_validation", "ptq_openvino",
           "val_score"]
