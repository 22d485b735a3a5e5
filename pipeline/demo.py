"""The built-in end-to-end run on scikit-learn's digits (``deepslim demo`` / ``make demo``).

Train the built-in CNN on ``digits``, prune it 2x (MACs) with fine-tuning, evaluate both on
the clean and the corrupted (``digits-c``) test split, export both to ONNX and OpenVINO IR
(parity-checked), quantize the pruned model to int8 for onnxruntime (Q/DQ) and OpenVINO
(NNCF), and benchmark all eight artifacts in one run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmarks import Backend, BenchReport, BenchTarget, LatencyConfig, bench, write_report
from compress.prune import PruneConfig, prune
from compress.quantize import QuantizeConfig, QuantizeResult, quantize
from deepslim.config import TrainConfig
from deepslim.evaluation import evaluate
from deepslim.models import ModelBundle, save_model
from deepslim.training import model_for_dataset, train
from export import VerifyConfig, export_model

DEMO_ARCH, DEMO_SIZE, DEMO_DATASET = "small_cnn", 16, "digits"


@dataclass
class DemoResult:
    model_path: Path
    train_seconds: float
    evaluations: dict[str, dict[str, float]] = field(default_factory=dict)
    pruned: ModelBundle | None = None
    quantized: list[QuantizeResult] = field(default_factory=list)
    bench: BenchReport | None = None
    report: Path | None = None


def run_demo(out_dir: str | Path = "runs/demo", *, epochs: int = 10, speedup: float = 2.0, finetune_epochs: int = 3,
             progress: bool = True, bench_seconds: float = 2.0) -> DemoResult:
    """Train the built-in CNN on digits, prune it ``speedup``x (MACs) with fine-tuning, evaluate both on
    digits and digits-c (severity 3), export both to ONNX and OpenVINO IR, quantize the pruned one to
    int8 for both runtimes, benchmark all eight in one run."""
    out = Path(out_dir)
    bundle = model_for_dataset(DEMO_ARCH, DEMO_DATASET, input_size=DEMO_SIZE, seed=0)
    trained = train(bundle, DEMO_DATASET, TrainConfig(epochs=epochs, seed=0), progress=progress)
    trained = replace(trained, path=save_model(trained, out / "base.safetensors"))
    pruned = prune(trained, PruneConfig(speedup=speedup, finetune_epochs=finetune_epochs, round_to=None),
                   dataset=DEMO_DATASET, progress=progress)
    pruned = replace(pruned, path=save_model(pruned, out / "pruned.safetensors"))
    result = DemoResult(trained.path, trained.lineage[-1].seconds, pruned=pruned)
    targets = []
    for stem, model in (("base", trained), ("pruned", pruned)):
        for name in ("digits", "digits-c"):
            label = f"{stem}: {name}" + (" (severity 3)" if name == "digits-c" else "")
            result.evaluations[label] = evaluate(model, name, severity=3).metrics
        targets.append(BenchTarget(model.path, Backend.TORCH))
        for target, backend, suffix in (("onnx", Backend.ONNXRUNTIME, ".onnx"), ("openvino", Backend.OPENVINO, ".xml")):
            exported = export_model(model, target, out / f"{stem}{suffix}", verify=VerifyConfig(DEMO_DATASET))
            targets.append(BenchTarget(exported.artifact, backend, note=exported.parity.summary()))
    for target, backend, suffix in (("onnxruntime", Backend.ONNXRUNTIME, ".onnx"), ("openvino", Backend.OPENVINO, ".xml")):
        q = quantize(pruned, out / f"pruned_int8{suffix}", QuantizeConfig(target=target, latency=False), DEMO_DATASET,
                     progress=progress)
        result.quantized.append(q)
        targets.append(BenchTarget(q.artifact, backend, note=f"{q.artifact.name}: int8 ptq for {target}, val top-1 "
                                                             f"drop {q.record.metrics['val_drop_points']:+.2f} pt"))
    result.bench = bench(targets, LatencyConfig(batches=(1, 8), rounds=3, duration=bench_seconds), dataset=DEMO_DATASET)
    result.report = write_report(result.bench, out / "bench")["report.html"]
    return result
