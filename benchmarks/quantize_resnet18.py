"""The quantization acceptance numbers: resnet18 on digits, int8 vs fp32 on OpenVINO and onnxruntime, one bench run.

    .venv/bin/python -m benchmarks.quantize_resnet18 [--out runs/quantize-resnet18] [--duration 10]

Trains resnet18 on digits (32x32, 10 epochs, seed 0). Accuracy: PTQ for OpenVINO (NNCF) and
onnxruntime (Q/DQ) at the trained 32x32, test top-1 against fp32 from the lineage the quantize
stage records. Latency: the fp32 exports and the PTQ artifacts at 224x224, all timed in one
interleaved `deepslim bench` run at batch 1. Drives the CLI in subprocesses, as a user would.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.drive import deepslim


def lineage(path: Path) -> dict:
    return json.loads(deepslim("info", str(path), "--json"))["lineage"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/quantize-resnet18"))
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    base = out / "base.safetensors"
    if not base.exists():
        deepslim("train", "--arch", "resnet18", "--input-size", "32", "--epochs", "10", "--seed", "0", "--quiet",
            "-o", str(base))
    rows = []
    for target, suffix in (("openvino", ".xml"), ("onnxruntime", ".onnx")):
        q = out / f"int8_32{suffix}"
        deepslim("compress", "quantize", str(base), "--target", target, "--no-latency", "--quiet", "--force", "-o", str(q))
        m = lineage(q)["metrics"]
        rows.append((target, m["fp32"]["test"]["top1"], m["quantized"]["test"]["top1"], m["test_drop_points"]))
    artifacts = []
    for target, suffix in (("openvino", ".xml"), ("onnxruntime", ".onnx")):
        fp32, q = out / f"fp32_224{suffix}", out / f"int8_224{suffix}"
        deepslim("export", str(base), "--target", "onnx" if suffix == ".onnx" else "openvino", "--input-size", "224",
            "--force", "-o", str(fp32))
        deepslim("compress", "quantize", str(base), "--target", target, "--input-size", "224", "--no-latency", "--quiet",
            "--force", "--calibration-samples", "100", "-o", str(q))
        artifacts += [str(fp32), str(q)]
    report = out / "bench"
    deepslim("bench", *artifacts, "--backend", "openvino,onnxruntime", "--batch", "1", "--duration", str(args.duration),
        "--no-accuracy", "--force", "--report", str(report))
    entries = json.loads((report / "report.json").read_text())["entries"]
    p50 = {(Path(e["artifact"]).name, e["backend"]): e["latency"]["1"]["p50_ms"] for e in entries}
    print("| target | fp32 test top-1 (32x32) | int8 test top-1 | drop |")
    print("|---|---|---|---|")
    for target, a, b, drop in rows:
        print(f"| {target} | {a:.4f} | {b:.4f} | {drop:+.2f} pt |")
    print()
    print("| runtime | fp32 p50 224x224 b1 | int8 p50 | ratio |")
    print("|---|---|---|---|")
    for backend, suffix in (("openvino", ".xml"), ("onnxruntime", ".onnx")):
        a, b = p50[(f"fp32_224{suffix}", backend)], p50[(f"int8_224{suffix}", backend)]
        print(f"| {backend} | {a:.3f} ms | {b:.3f} ms | {b / a:.3f} |")
    print(f"\nreport: {report / 'report.html'}")


if __name__ == "__main__":
    main()
