"""The artifacts :mod:`scripts.transformer_int8` compares: deepslim's paths (its Python API, what the CLI
runs) and the ecosystem's own (optimum's ONNX Runtime quantizer, optimum-intel's OpenVINO export and NNCF
quantizer), every one of the same model, each artifact stamped with the model's signature so that the one
set of benchmark runners feeds and times them all."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
Say = Callable[[str], None]


@dataclass(frozen=True)
class Size:
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int | None = None  # None: the tokenizer's own vocabulary

    def config(self, vocab: int) -> dict[str, Any]:
        return {"vocab_size": self.vocab or vocab, "hidden_size": self.hidden, "num_hidden_layers": self.layers,
                "num_attention_heads": self.heads, "intermediate_size": self.intermediate,
                "max_position_embeddings": 512}


@dataclass
class Variant:
    """One row: an artifact on one runtime, and the fp32 row (by key) its ratio is taken against."""

    key: str
    pipeline: str            # deepslim | optimum | optimum-intel | by hand
    runtime: str             # torch | onnxruntime | openvino
    precision: str
    path: Path | None
    base: str | None = None  # the key of its fp32 row on the same runtime
    how: str = ""
    status: str = "ok"       # ok | pending: ... | failed: ...


def text_fixtures(out: Path, texts: int, seed: int) -> tuple[Path, Path]:
    """A CSV of the synthetic text task and a directory with a WordPiece tokenizer trained in memory (the
    fixtures of tests/data/text_models.py), written under ``out`` once."""
    import sys
    sys.path.insert(0, str(ROOT / "tests" / "data"))
    from text_models import tokenizer, write_texts
    csv, tok_dir = out / f"texts{texts}.csv", out / "tokenizer"
    if not csv.is_file():
        write_texts(csv, texts, seed=seed)
    if not tok_dir.is_dir():
        tok = tokenizer()
        tok.model_max_length = 512
        tok.save_pretrained(str(tok_dir))
    return csv, tok_dir


def new_bert(size: Size, tok_dir: Path, *, max_length: int, seed: int = 0):
    """A BERT sequence classifier (2 classes, random weights) built from a config by deepslim (``hf:bert``)."""
    import torch

    from deepslim.models import load_model
    from deepslim.signature import BATCH, InputKind, TensorSpec
    from deepslim.tasks import Task
    from transformers import AutoTokenizer
    torch.manual_seed(seed)
    vocab = len(AutoTokenizer.from_pretrained(str(tok_dir)))
    tokens = (TensorSpec("input_ids", (BATCH, "sequence"), "int64", InputKind.TOKENS),)
    return load_model(arch="hf:bert", arch_kwargs=size.config(vocab), tokenizer=tok_dir, max_length=max_length,
                      task=Task.classification(["negative", "positive"]), inputs=tokens)


# --- deepslim ----------------------------------------------------------------------------------------

def deepslim_variants(bundle, prefix: str, out: Path, texts: Path, samples: int, say: Say) -> list[Variant]:
    """fp32 on torch, onnxruntime and OpenVINO (export.to_onnx, export.to_openvino) and int8 on both runtimes
    (compress.quantize: dynamic for onnxruntime, NNCF PTQ for OpenVINO), written as ``out/PREFIX_*``."""
    from compress.quantize import QuantizeConfig, quantize
    from export import to_onnx, to_openvino
    tag, onnx, xml = prefix.replace("_", " "), out / f"{prefix}_fp32.onnx", out / f"{prefix}_fp32.xml"
    say(f"{tag}: export.to_onnx, export.to_openvino")
    to_onnx(bundle, onnx)
    to_openvino(onnx, xml)
    from deepslim.models import save_model
    torch_file = save_model(bundle, out / f"{prefix}.safetensors", force=True)  # the torch runner reads bundles
    rows = [Variant(f"{prefix}/torch", "deepslim", "torch", "fp32", torch_file, None, "the bundle (eager PyTorch)"),
            Variant(f"{prefix}/ort", "deepslim", "onnxruntime", "fp32", onnx, None, "export.to_onnx (dynamo)"),
            Variant(f"{prefix}/ov", "deepslim", "openvino", "fp32", xml, None, "export.to_openvino (from the ONNX)")]
    jobs = ((f"{prefix}_int8_dynamic.onnx", QuantizeConfig(method="dynamic", latency=False), "ort",
             "compress.quantize --method dynamic"),
            (f"{prefix}_int8_ptq.xml", QuantizeConfig(method="ptq", target="openvino", latency=False,
                                                      calibration_samples=samples), "ov",
             "compress.quantize --method ptq --target openvino (NNCF)"))
    for name, cfg, runtime, how in jobs:
        say(f"{tag}: {how}")
        with quiet():
            result = quantize(onnx, out / name, cfg, str(texts), progress=False)
        chose = result.record.metrics
        facts = [f"{k} {chose[k]}" for k in ("activation_type", "model_type") if chose.get(k)]
        if isinstance(chose.get("smooth_quant"), dict):
            facts.append(f"SmoothQuant {'on' if chose['smooth_quant'].get('chosen') else 'off'}")
        facts += [f"warning: {w}" for w in result.warnings]
        rows.append(Variant(f"{prefix}/{runtime}-int8", "deepslim", "onnxruntime" if runtime == "ort" else "openvino",
                            "int8", result.artifact, f"{prefix}/{runtime}", "; ".join([how, *facts])))
    return rows


def graph_facts(path: Path) -> str:
    """What an int8 artifact's graph holds: integer vs float MatMuls (ONNX), FakeQuantize ops (OpenVINO)."""
    from collections import Counter
    if path.suffix == ".onnx":
        import onnx
        ops = Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
        return f"{ops['MatMulInteger']} MatMulInteger, {ops['MatMul']} float MatMul"
    import openvino as ov
    ops = Counter(op.get_type_name() for op in ov.Core().read_model(str(path)).get_ordered_ops())
    return f"{ops['FakeQuantize']} FakeQuantize, {ops['MatMul']} MatMul"


def pruned_variants(bundle, out: Path, texts: Path, samples: int, say: Say) -> list[Variant]:
    """50% of the heads and 50% of the FFN width removed by compress.prune (no fine-tuning: latency only), then
    the same exports and int8 as the unpruned model."""
    from compress.prune import PruneConfig, prune
    from deepslim.models import save_model
    say("pruned: compress.prune --head-ratio 0.5 --ratio 0.5")
    with quiet():
        pruned = prune(bundle, PruneConfig(ratio=0.5, head_ratio=0.5), dataset=None, progress=False)
    save_model(pruned, out / "pruned", force=True)  # the from_pretrained directory, as the CLI's -o DIR writes
    rows = deepslim_variants(pruned, "pruned", out, texts, samples, say)
    before, after = (sum(p.numel() for p in b.model.parameters()) / 1e6 for b in (bundle, pruned))
    config = pruned.model.config
    rows[0].how = (f"compress.prune --head-ratio 0.5 --ratio 0.5: {before:.1f} M -> {after:.1f} M parameters, "
                   f"FFN {config.intermediate_size}, heads per layer "
                   f"{sorted({config.num_attention_heads - len(v) for v in (config.pruned_heads or {}).values()})}")
    for row, base in zip(rows, ("deepslim/torch", "deepslim/ort", "deepslim/ov")):
        row.base = base
    return rows


# --- optimum (ONNX Runtime) and optimum-intel (OpenVINO) ---------------------------------------------

def optimum_variants(model_dir: Path, meta, out: Path, calibration: tuple[np.ndarray, ...],
                     say: Say) -> list[Variant]:
    """optimum's own export and quantizers on the directory deepslim saved (save_pretrained, read offline)."""
    rows = []
    for build in (_optimum_onnx, _optimum_openvino):
        try:
            rows += build(model_dir, meta, out, calibration, say)
        except Exception as exc:  # a third-party path: report the row as failed, keep the others
            runtime = "onnxruntime" if build is _optimum_onnx else "openvino"
            say(f"{runtime}: optimum failed: {type(exc).__name__}: {exc}")
            rows.append(Variant(f"optimum/{runtime}", "optimum", runtime, "int8", None, None, "",
                                f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
    return rows


def _optimum_onnx(model_dir: Path, meta, out: Path, calibration, say: Say) -> list[Variant]:
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    say("optimum: ORTModelForSequenceClassification.from_pretrained(export=True), ORTQuantizer avx512_vnni dynamic")
    export_dir, int8_dir = _fresh(out / "optimum_onnx"), _fresh(out / "optimum_onnx_int8")
    with quiet():
        model = ORTModelForSequenceClassification.from_pretrained(str(model_dir), export=True)
        model.save_pretrained(str(export_dir))
        config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
        ORTQuantizer.from_pretrained(model).quantize(quantization_config=config, save_dir=str(int8_dir))
    fp32 = stamp_onnx(export_dir / "model.onnx", out / "optimum_fp32.onnx", meta, "fp32", "optimum export")
    int8 = stamp_onnx(int8_dir / "model_quantized.onnx", out / "optimum_int8_dynamic.onnx", meta, "int8",
                      f"optimum ORTQuantizer {config}")
    return [Variant("optimum/ort", "optimum", "onnxruntime", "fp32", fp32, "deepslim/ort",
                    "ORTModelForSequenceClassification export"),
            Variant("optimum/ort-int8", "optimum", "onnxruntime", "int8", int8, "optimum/ort",
                    "ORTQuantizer, AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)")]


def _optimum_openvino(model_dir: Path, meta, out: Path, calibration, say: Say) -> list[Variant]:
    import nncf
    from optimum.intel import OVConfig, OVModelForSequenceClassification, OVQuantizationConfig, OVQuantizer
    say("optimum-intel: OVModelForSequenceClassification.from_pretrained(export=True), OVQuantizer int8")
    export_dir, int8_dir = _fresh(out / "optimum_openvino"), _fresh(out / "optimum_openvino_int8")
    names = meta.signature.input_names
    items = [{n: a[i:i + 1] for n, a in zip(names, calibration)} for i in range(len(calibration[0]))]
    config = OVQuantizationConfig(num_samples=len(items))  # model_type transformer, mixed preset: its defaults
    with quiet():
        model = OVModelForSequenceClassification.from_pretrained(str(model_dir), export=True, compile=False)
        model.save_pretrained(str(export_dir))
        OVQuantizer.from_pretrained(model).quantize(calibration_dataset=nncf.Dataset(items),
                                                    ov_config=OVConfig(quantization_config=config),
                                                    save_directory=str(int8_dir))
    fp32 = stamp_openvino(export_dir / "openvino_model.xml", out / "optimum_fp32.xml", meta, "fp32",
                          "optimum-intel export")
    int8 = stamp_openvino(int8_dir / "openvino_model.xml", out / "optimum_int8.xml", meta, "int8",
                          "optimum-intel OVQuantizer OVQuantizationConfig()")
    return [Variant("optimum/ov", "optimum-intel", "openvino", "fp32", fp32, "deepslim/ov",
                    "OVModelForSequenceClassification export"),
            Variant("optimum/ov-int8", "optimum-intel", "openvino", "int8", int8, "optimum/ov",
                    f"OVQuantizer, OVQuantizationConfig(num_samples={len(items)}), the same calibration texts")]


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def _meta(meta, precision: str, how: str):
    from deepslim.artifact import ArtifactMeta
    return ArtifactMeta(meta.signature, meta.task, [], {"target": "external", "precision": precision,
                                                         "quantization": how})


def stamp_onnx(source: Path, target: Path, meta, precision: str, how: str) -> Path:
    """A copy of a foreign ONNX file carrying the model's deepslim metadata (the runners read the signature)."""
    import onnx

    from deepslim.artifact import META_KEY
    from deepslim.fileio import atomic_path
    proto = onnx.load(str(source))
    for prop in [p for p in proto.metadata_props if p.key == META_KEY]:
        proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, _meta(meta, precision, how).to_json()
    with atomic_path(target) as tmp:
        onnx.save_model(proto, str(tmp))
    return target


def stamp_openvino(source: Path, target: Path, meta, precision: str, how: str) -> Path:
    """A copy of a foreign OpenVINO IR carrying the model's deepslim metadata in its rt_info."""
    import openvino as ov

    from deepslim.artifact import META_KEY
    model = ov.Core().read_model(str(source))
    model.set_rt_info(_meta(meta, precision, how).to_json(), [META_KEY, "meta"])
    ov.save_model(model, str(target), compress_to_fp16=False)
    return target


@contextlib.contextmanager
def quiet():
    """Progress bars and library chatter off while a library call runs (errors still raise)."""
    levels = {name: logging.getLogger(name).level for name in ("nncf", "optimum", "transformers", "root")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def offline_env() -> None:
    """Hugging Face reads local files only (this script's own process: it is an entry point)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
