"""Reproduce the README's benchmark table in one run.

    python -m scripts.readme_table [--out runs/readme-table] [--duration 10] [--rounds 5]

Trains resnet18 on digits (32x32, the foundation's recipe), exports it to ONNX and
OpenVINO IR with parity checks at the trained size and at 224x224, and benchmarks
every artifact on the torch, onnxruntime and openvino CPU backends: one `deepslim bench`
run per input size, batch 1, the torch eager model as the baseline of every ratio.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks import Backend, BenchTarget, LatencyConfig, bench, write_report
from benchmarks.report import summary_rows
from deepslim.config import TrainConfig
from deepslim.models import save_model
from deepslim.training import model_for_dataset, train
from export import OnnxConfig, VerifyConfig, export_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/readme-table"))
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / "resnet18.safetensors"
    bundle = train(model_for_dataset("resnet18", "digits", input_size=32, seed=0), "digits", TrainConfig(epochs=10),
                   progress=False)
    save_model(bundle, base, force=True)
    for size in (32, 224):
        targets = [BenchTarget(base, Backend.TORCH, input_size=size)]
        for target, backend, suffix in (("onnx", Backend.ONNXRUNTIME, ".onnx"), ("openvino", Backend.OPENVINO, ".xml")):
            result = export_model(bundle, target, args.out / f"resnet18_{size}{suffix}",
                                  onnx_config=OnnxConfig(input_size=size), verify=VerifyConfig("digits"), force=True)
            print(result.parity.summary())
            targets.append(BenchTarget(result.artifact, backend))
        report = bench(targets, LatencyConfig(batches=(1,), rounds=args.rounds, duration=args.duration),
                       dataset="digits")
        write_report(report, args.out / f"report_{size}")
        head, rows = summary_rows(report)
        print(f"\n{size}x{size}, batch 1, {report.environment['cpu']['model']}, "
              f"{report.environment['threads']} threads, torch {torch.__version__}")
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
