"""The built-in end-to-end run on scikit-learn's digits (``deepslim demo`` / ``make demo``).

Today: train the built-in CNN on ``digits``, evaluate it on the clean and the corrupted
(``digits-c``) test split, export it to ONNX and OpenVINO IR (parity-checked) and
benchmark all three artifacts in one run. Later stages (prune, distill, quantize) join
as they land.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmarks import Backend, BenchReport, BenchTarget, LatencyConfig, bench, write_report
from deepslim.config import TrainConfig
from deepslim.evaluation import evaluate
from deepslim.models import save_model
from deepslim.training import model_for_dataset, train
from export import VerifyConfig, export_model

DEMO_ARCH, DEMO_SIZE, DEMO_DATASET = "small_cnn", 16, "digits"


@dataclass
class DemoResult:
    model_path: Path
    train_seconds: float
    evaluations: dict[str, dict[str, float]] = field(default_factory=dict)
    bench: BenchReport | None = None
    report: Path | None = None


def run_demo(out_dir: str | Path = "runs/demo", *, epochs: int = 10, progress: bool = True,
             bench_seconds: float = 3.0) -> DemoResult:
    """Train the built-in CNN on digits, save it, evaluate on digits and digits-c (severity 3),
    export it to ONNX and OpenVINO IR and benchmark the three artifacts in one run."""
    out = Path(out_dir)
    config = TrainConfig(epochs=epochs, seed=0)
    bundle = model_for_dataset(DEMO_ARCH, DEMO_DATASET, input_size=DEMO_SIZE, seed=0)
    trained = train(bundle, DEMO_DATASET, config, progress=progress)
    path = save_model(trained, out / "base.safetensors")
    result = DemoResult(path, trained.lineage[-1].seconds)
    for name in ("digits", "digits-c"):
        label = name if name == "digits" else f"{name} (severity 3)"
        result.evaluations[label] = evaluate(trained, name, severity=3).metrics
    trained = replace(trained, path=path)
    targets = [BenchTarget(path, Backend.TORCH)]
    for target, backend, suffix in (("onnx", Backend.ONNXRUNTIME, ".onnx"), ("openvino", Backend.OPENVINO, ".xml")):
        exported = export_model(trained, target, out / f"base{suffix}", verify=VerifyConfig(DEMO_DATASET))
        targets.append(BenchTarget(exported.artifact, backend, note=exported.parity.summary()))
    result.bench = bench(targets, LatencyConfig(batches=(1, 8), rounds=3, duration=bench_seconds), dataset=DEMO_DATASET)
    result.report = write_report(result.bench, out / "bench")["report.html"]
    return result
