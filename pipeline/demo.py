"""The built-in end-to-end run on scikit-learn's digits (``deepslim demo`` / ``make demo``).

resnet18 is trained on digits at 32x32, pruned 2x (MACs) with knowledge-distillation
recovery from the unpruned model, and quantized to int8 for OpenVINO (NNCF). The run goes
through the recipe machinery, so a second ``make demo`` reuses the trained model and every
unchanged stage. Then every stage's model is benchmarked on every available backend at
224x224 batch 1 in one interleaved run (bundles exported to ONNX and OpenVINO on the way,
the int8 IR reshaped to 224). Accuracy is each stage's test top-1 at the 32x32 the model
was trained at: a resnet18 trained on 32x32 digits is at chance on 224x224 upscaled
images, so the 224x224 run measures latency only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.recipe import Recipe, parse_recipe, tensorrt_available
from pipeline.run import RunResult, Say, run_recipe


def demo_recipe(*, epochs: int = 10, finetune_epochs: int = 3, bench_seconds: float = 2.0) -> Recipe:
    backends = ["torch", "onnxruntime", "openvino"] + (["tensorrt"] if tensorrt_available() else [])
    return parse_recipe({
        "name": "demo", "dataset": "digits", "seed": 0,
        "model": {"arch": "resnet18", "input_size": 32},
        "stages": [{"stage": "train", "epochs": epochs},
                   {"stage": "prune", "speedup": 2.0, "finetune_epochs": finetune_epochs, "recover": "kd"},
                   {"stage": "quantize", "method": "ptq", "target": "openvino"}],
        "bench": {"backends": backends, "batches": [1], "input_size": 224, "duration": bench_seconds, "rounds": 3,
                  "accuracy": False},
    }, source="the demo recipe")


@dataclass
class DemoResult:
    run: RunResult
    report: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)


def run_demo(out_dir: str | Path = "runs/demo", *, epochs: int = 10, finetune_epochs: int = 3,
             bench_seconds: float = 2.0, progress: bool = True, log: Say | None = None) -> DemoResult:
    """Run (or resume) the demo recipe in ``out_dir``; return the run, the bench report and the headline numbers."""
    recipe = demo_recipe(epochs=epochs, finetune_epochs=finetune_epochs, bench_seconds=bench_seconds)
    _clear_old_layout(Path(out_dir))
    run = run_recipe(recipe, out_dir, progress=progress, log=log)
    report = json.loads(run.report.with_name("report.json").read_text())
    return DemoResult(run, report, summarize(run, report))


def _clear_old_layout(out: Path) -> None:
    """Demo directories written before the demo became a recipe run (base.safetensors, pruned.*) are replaced."""
    import shutil
    if out.is_dir() and not (out / "manifest.json").exists() and (out / "base.safetensors").exists():
        shutil.rmtree(out)


def summarize(run: RunResult, report: dict[str, Any]) -> dict[str, Any]:
    """Original vs final: test top-1 at the trained size, p50 at 224x224 batch 1 against torch eager and OpenVINO fp32."""
    stages = {s.kind: s for s in run.stages}
    original, final = stages["train"], stages["quantize"]
    entries = report["entries"]
    torch_original = entries[0]
    final_entry = next(e for e in entries
                       if Path(e["artifact"]).resolve() == final.outputs[0].resolve() and e["backend"] == "openvino")
    p50 = final_entry["latency"]["1"]["p50_ms"]
    return {"original_top1": original.metrics["test"]["top1"], "final_top1": final.metrics["test"]["top1"],
            "top1_loss_points": round(100 * (original.metrics["test"]["top1"] - final.metrics["test"]["top1"]), 2),
            "final_artifact": str(final.outputs[0]), "final_p50_ms": p50,
            "torch_eager_p50_ms": torch_original["latency"]["1"]["p50_ms"],
            "speedup_vs_torch_eager": final_entry["latency"]["1"]["speedup"],
            "speedup_vs_openvino_fp32": final_entry["latency"]["1"]["speedup_same_backend"]}
