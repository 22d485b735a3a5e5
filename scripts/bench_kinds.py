"""Bench every model kind of issue #13 on torch, onnxruntime and OpenVINO in one interleaved run per kind.

    .venv/bin/python scripts/bench_kinds.py [--out runs/bench_kinds] [--batch 1,32] [--duration 3]

Trains (or reuses) the tiny models of ``tests/any_kinds.py`` (tabular, regression, multilabel, two-input dict
output, 1x28x56 image, Conv1d signal), exports each to ONNX and an OpenVINO IR, benches bundle/torch,
ONNX/onnxruntime and IR/openvino, writes one report per kind under ``--out`` and prints, per kind, the primary
metric of each artifact and the speed ratios against the torch bundle (measured in that run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def bench_kind(kind: str, out: Path, batches: tuple[int, ...], duration: float, threads: int | None):
    from any_kinds import KINDS, train_kind
    from benchmarks import Backend, BenchTarget, LatencyConfig, RunnerOptions, bench, write_report
    from deepslim.models import load_model
    from export import to_onnx, to_openvino
    bundle_path = out / f"{kind}.safetensors"
    if not bundle_path.is_file():
        train_kind(kind, out)
    bundle = load_model(bundle_path)
    onnx = to_onnx(bundle, out / f"{kind}.onnx")
    ir = to_openvino(bundle, out / f"{kind}.xml")
    targets = [BenchTarget(bundle_path, Backend.TORCH), BenchTarget(onnx, Backend.ONNXRUNTIME),
               BenchTarget(ir, Backend.OPENVINO)]
    report = bench(targets, LatencyConfig(batches=batches, rounds=5, duration=duration), dataset=KINDS[kind].dataset,
                   options=RunnerOptions(threads=threads))
    write_report(report, out / kind)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_kinds")
    parser.add_argument("--batch", default="1,32")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("kinds", nargs="*")
    args = parser.parse_args()
    from any_kinds import KINDS
    from deepslim.trust import allow_code
    args.out.mkdir(parents=True, exist_ok=True)
    batches = tuple(int(b) for b in args.batch.split(","))
    with allow_code(trust_code=True):
        for kind in args.kinds or list(KINDS):
            report = bench_kind(kind, args.out, batches, args.duration, args.threads)
            metric, label = report.config["primary_metric"], report.config["primary_label"]
            cells = []
            for e in report.entries:
                speed = ", ".join(f"b{b} {e.latency[b].speedup:.2f}x{' ~' if e.latency[b].within_noise else ''}"
                                  for b in batches)
                cells.append(f"{e.backend} {label} {e.accuracy.get(metric, float('nan')):.4f} ({speed})")
            print(f"{kind}: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
