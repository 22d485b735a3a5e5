"""The built-in end-to-end run on scikit-learn's digits (``deepslim demo`` / ``make demo``).

resnet18 is trained on digits at 32x32, pruned 2x (MACs) with knowledge-distillation
recovery from the unpruned model, and quantized to int8 for OpenVINO (NNCF) under the
accuracy guard: NNCF keeps layers in fp32 until int8 costs at most ``GUARD_POINTS`` of val
top-1. The run goes through the recipe machinery, so a second ``make demo`` reuses the
trained model and every unchanged stage. Then every stage's model is benchmarked on every
available backend at 224x224 batch 1 in one interleaved run (bundles exported to ONNX and
OpenVINO on the way, the int8 IR reshaped to 224). Accuracy is each stage's test top-1 at the
32x32 the model was trained at: a resnet18 trained on 32x32 digits is at chance on 224x224
upscaled images, so the 224x224 run measures latency only.

The demo promises a final artifact within ``BUDGET_POINTS`` of test top-1 of the trained
original; :func:`budget_miss` says in words when a run breaks that promise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.recipe import Recipe, parse_recipe, tensorrt_available
from pipeline.run import RunResult, Say, run_recipe

SPEEDUP = 2.0         # MACs reduced this many times by pruning (the prune stage lands within 5%)
BUDGET_POINTS = 1.0   # test top-1 points the final artifact may lose against the trained original
GUARD_POINTS = 0.5    # val top-1 points int8 may cost against the pruned fp32 model (NNCF accuracy control)


def demo_recipe(*, epochs: int = 10, finetune_epochs: int = 3, bench_seconds: float | None = 2.0,
                seed: int = 0) -> Recipe:
    """The demo's recipe; ``bench_seconds=None`` leaves the bench out (accuracy and MACs only)."""
    backends = ["torch", "onnxruntime", "openvino"] + (["tensorrt"] if tensorrt_available() else [])
    bench = None if bench_seconds is None else {
        "backends": backends, "batches": [1], "input_size": 224, "duration": bench_seconds, "rounds": 3,
        "accuracy": False}
    return parse_recipe({
        "name": "demo", "dataset": "digits", "seed": seed,
        "model": {"arch": "resnet18", "input_size": 32},
        "stages": [{"stage": "train", "epochs": epochs},
                   {"stage": "prune", "speedup": SPEEDUP, "finetune_epochs": finetune_epochs, "recover": "kd"},
                   {"stage": "quantize", "method": "ptq", "target": "openvino", "max_accuracy_drop": GUARD_POINTS}],
        "bench": bench,
    }, source="the demo recipe")


@dataclass
class DemoResult:
    run: RunResult
    report: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)


def run_demo(out_dir: str | Path = "runs/demo", *, epochs: int = 10, finetune_epochs: int = 3,
             bench_seconds: float = 2.0, seed: int = 0, progress: bool = True, log: Say | None = None) -> DemoResult:
    """Run (or resume) the demo recipe in ``out_dir``; return the run, the bench report and the headline numbers."""
    recipe = demo_recipe(epochs=epochs, finetune_epochs=finetune_epochs, bench_seconds=bench_seconds, seed=seed)
    _clear_old_layout(Path(out_dir))
    run = run_recipe(recipe, out_dir, progress=progress, log=log)
    report = json.loads(run.report.with_name("report.json").read_text())
    return DemoResult(run, report, summarize(run, report))


def _clear_old_layout(out: Path) -> None:
    """Demo directories written before the demo became a recipe run (base.safetensors, pruned.*) are replaced."""
    import shutil
    if out.is_dir() and not (out / "manifest.json").exists() and (out / "base.safetensors").exists():
        shutil.rmtree(out)


def accuracy_summary(run: RunResult) -> dict[str, Any]:
    """Test top-1 of the original, the pruned model and the final artifact; the MAC reduction; the budget."""
    stages = {s.kind: s for s in run.stages}
    original, pruned, final = (stages[k].metrics["test"]["top1"] for k in ("train", "prune", "quantize"))
    drop = round(100 * (original - final), 2)
    return {"original_top1": original, "pruned_top1": pruned, "final_top1": final, "top1_loss_points": drop,
            "mac_reduction": stages["prune"].metrics["mac_reduction"], "budget_points": BUDGET_POINTS,
            "within_budget": drop <= BUDGET_POINTS + 1e-9, "final_artifact": str(stages["quantize"].outputs[0])}


def summarize(run: RunResult, report: dict[str, Any]) -> dict[str, Any]:
    """Original vs final: test top-1 at the trained size, p50 at 224x224 batch 1 against torch eager and OpenVINO fp32."""
    summary = accuracy_summary(run)
    final = Path(summary["final_artifact"]).resolve()
    entries = report["entries"]
    final_entry = next(e for e in entries if Path(e["artifact"]).resolve() == final and e["backend"] == "openvino")
    latency = final_entry["latency"]["1"]
    return {**summary, "final_p50_ms": latency["p50_ms"], "torch_eager_p50_ms": entries[0]["latency"]["1"]["p50_ms"],
            "speedup_vs_torch_eager": latency["speedup"], "speedup_vs_openvino_fp32": latency["speedup_same_backend"]}


def budget_miss(summary: dict[str, Any]) -> str | None:
    """The sentence that says the final artifact broke the demo's accuracy budget; None when it held."""
    if summary["within_budget"]:
        return None
    return (f"the final artifact is {summary['top1_loss_points']:.2f} points of test top-1 below the original, "
            f"over the {summary['budget_points']:g}-point budget")
