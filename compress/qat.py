"""Quantization-aware training through NNCF's PyTorch backend (``deepslim compress quantize --method qat``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.options import QuantTarget
from compress.quantize import QuantizeConfig, QuantizeError
from compress.quantize_backends import Say, nncf_kwargs, nncf_output, import_nncf, require_tensorrt_rules
from deepslim.errors import first_line
from deepslim.modelio import example_inputs


def qat(bundle, tmp: Path, cfg: QuantizeConfig, dataset: str, severity: int, details: dict[str, Any], *,
        progress: bool, say: Say) -> Path:
    """Quantization-aware training with NNCF's PyTorch backend, exported to the target's int8 format.

    NNCF inserts fake quantizers initialised by post-training calibration; the shared train loop
    then fine-tunes weights and quantizer ranges together (with KD from the fp32 model when
    ``recover`` is kd). onnxruntime and TensorRT get a Q/DQ ONNX, OpenVINO an IR with FakeQuantize.
    """
    import copy
    import os

    # NNCF compiles a small C++ extension on first use (about 30 s on 2 cores) and gives up after
    # 60 s by default, falling back to slow kernels; give a fresh machine's first build time.
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "600")
    nncf = import_nncf()

    from compress.distill import kd_finetune_loss
    from compress.options import Recover
    from deepslim.config import TrainConfig
    from deepslim.data import calibration_inputs, open_dataset
    from deepslim.training import fit, val_metric
    fp32 = copy.deepcopy(bundle.model).cpu().eval()
    signature, task = bundle.signature, bundle.task  # QAT calibrates and trains at the model's own size
    arrays = calibration_inputs(dataset, signature, cfg.calibration_samples, severity=severity, seed=cfg.seed)
    transformer = _is_transformer(bundle)
    names = signature.input_names if signature.text is not None else ()
    qmodel = _insert_quantizers(nncf, fp32, arrays, names, cfg, bundle.arch.name, transformer, progress)
    source = open_dataset(dataset, severity=severity)
    splits = {"train": source.split("train", signature, augment=True, task=task),
              "val": source.split("val", signature, task=task)}
    train_cfg = TrainConfig(epochs=cfg.qat_epochs, lr=cfg.qat_lr, seed=cfg.seed, warmup_epochs=0)
    loss = kd_finetune_loss(copy.deepcopy(fp32), cfg.temperature, cfg.alpha, task=task, signature=signature) \
        if cfg.recover is Recover.KD else None
    say(f"QAT: {cfg.qat_epochs} epochs of fake-quantized fine-tuning"
        + (" distilled from the fp32 model" if loss is not None else ""))
    result = fit(qmodel, splits["train"], splits["val"], train_cfg, loss_fn=loss, progress=progress, keep_start=True,
                 task=task, signature=signature)
    qmodel.cpu().eval()
    details.update({f"qat_{k}": v for k, v in val_metric(task, result.best_val).items()})
    details.update(library="nncf", qat_best_epoch=result.best_epoch, qat_history=result.history,
                   calibration=cfg.calibration.value if cfg.calibration else "nncf-default")
    exported = signature.with_image_size(cfg.input_size) if cfg.input_size else signature
    example = example_inputs(exported, 1)
    if transformer:  # a Hugging Face ModelOutput is traced and exported as the signature's tuple of outputs
        from export.onnx import OrderedOutputs
        qmodel = OrderedOutputs(qmodel, exported) if exported.output_layout != "tensor" else qmodel
    if cfg.target is QuantTarget.OPENVINO:
        return _qat_openvino(qmodel, example, tmp)
    # transformers (Hugging Face, timm) call scaled_dot_product_attention, exported from opset 14 on
    opset = 17 if transformer or bundle.arch.source.value == "timm" else 13
    return _qat_onnx(qmodel, example, exported, tmp, cfg, details, opset)


def _is_transformer(bundle) -> bool:
    """A Hugging Face model or a text model: NNCF quantizes it with ``ModelType.TRANSFORMER``."""
    return bundle.arch.source.value == "hf" or bundle.signature.text is not None


def _insert_quantizers(nncf, fp32, arrays, names: tuple[str, ...], cfg: QuantizeConfig, name: str, transformer: bool,
                       progress: bool):
    """NNCF's fake-quantized copy of ``fp32``, calibrated on ``arrays`` (texts in batches cut to their longest);
    a transformer with NNCF's transformer patterns (without them NNCF quantizes BERT's integer position adds)."""
    batches = [_batch(arrays, i, 32, names) for i in range(0, len(arrays[0]), 32)]
    extra = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    try:
        with nncf_output(progress):
            return nncf.quantize(fp32, nncf.Dataset(batches), subset_size=len(batches), **extra, **nncf_kwargs(cfg))
    except Exception as exc:  # NNCF raises many types for models it cannot trace
        raise QuantizeError(f"NNCF could not insert fake quantizers into {name}: {first_line(exc)}.") from exc


def _batch(arrays, start: int, size: int, names: tuple[str, ...] = ()):
    """A calibration batch as NNCF's torch backend calls the model: a tensor, or a tuple for ``model(*inputs)``
    (a text batch cut to its longest text)."""
    import torch

    from compress.quant_data import trim_tokens
    chunk = trim_tokens(tuple(a[start:start + size] for a in arrays), names)
    tensors = tuple(torch.from_numpy(a.copy() if names else a) for a in chunk)
    return tensors[0] if len(tensors) == 1 else tensors


def _qat_onnx(qmodel, example: tuple, signature, tmp: Path, cfg: QuantizeConfig, details: dict[str, Any],
              opset: int = 13) -> Path:
    """Q/DQ ONNX: NNCF's quantizers export as QuantizeLinear/DequantizeLinear pairs (TorchScript exporter), then
    the graph is made deployable (int8 weight initializers, BatchNorm folded, constants folded; see qdq_onnx)."""
    import copy

    from compress.quant_export import export_graph
    from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode
    model = copy.deepcopy(qmodel).eval()
    for module in model.modules():
        if isinstance(module, BaseQuantizer):
            module.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    out = tmp / "int8-qat.onnx"
    try:
        export_graph(model, example, signature, out, opset=opset)  # every input and output, named by the signature
    except Exception as exc:  # the exporter raises many types
        raise QuantizeError(f"The QAT model could not be exported to ONNX: {first_line(exc)}.") from exc
    _finalize(out, cfg, details)
    if cfg.target is QuantTarget.TENSORRT:
        require_tensorrt_rules(out, "The QAT model", "use --method ptq --target tensorrt")
    return out


def _qat_openvino(qmodel, example: tuple, tmp: Path) -> Path:
    import contextlib
    import io
    import warnings

    import openvino as ov
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript tracer's deprecation and constant warnings
            model = ov.convert_model(qmodel, example_input=example[0] if len(example) == 1 else example)
    except Exception as exc:  # OpenVINO's frontends raise many types
        raise QuantizeError(f"OpenVINO could not convert the QAT model: {first_line(exc)}.") from exc
    out = tmp / "int8-qat.xml"
    ov.save_model(model, str(out), compress_to_fp16=False)
    return out


def _finalize(path: Path, cfg: QuantizeConfig, details: dict[str, Any]) -> None:
    """Rewrite the exported fake-quantized graph in place into the int8 form onnxruntime's PTQ writes."""
    import onnx

    from compress.qdq_onnx import finalize_qat_onnx
    proto = onnx.load(str(path))
    try:
        report = finalize_qat_onnx(proto, quantize_bias=cfg.target is QuantTarget.ONNXRUNTIME)
        onnx.checker.check_model(proto, full_check=True)
    except (ValueError, onnx.checker.ValidationError) as exc:
        raise QuantizeError(f"The QAT ONNX graph could not be turned into int8 weights: {first_line(exc)}.") from exc
    onnx.save_model(proto, str(path))
    details["qdq_graph"] = report.to_json()
    if report.batchnorms_left:
        details.setdefault("warnings", []).append(
            f"{report.batchnorms_left} BatchNormalization node(s) do not follow a convolution and stay in fp32")
