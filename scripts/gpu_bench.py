"""GPU latency of the torch and ONNX Runtime paths, measured by deepslim's harness in one run per device.

    python -m scripts.gpu_bench [--out runs/gpu-bench]

resnet18 (random weights; latency does not depend on them) at 224x224, batch 1 and 32:
torch eager on CUDA (fp32), torch.compile on CUDA, onnxruntime with the CUDA execution
provider when the installed onnxruntime has it, each against the torch CUDA eager
baseline; parity of the ONNX file on the GPU provider. Prints the report table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks import Backend, BenchTarget, LatencyConfig, RunnerOptions, bench, write_report
from benchmarks.report import summary_rows
from deepslim.models import load_model, save_model
from export import OnnxConfig, to_onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-bench"))
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this script needs a CUDA GPU")
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = load_model(arch="resnet18", num_classes=10, input_size=224)
    base = save_model(bundle, args.out / "resnet18.safetensors", force=True)
    onnx_path = to_onnx(bundle, args.out / "resnet18.onnx", OnnxConfig())
    latency = LatencyConfig(batches=(1, 32), rounds=4, duration=args.duration, warmup=20)
    targets = [BenchTarget(base, Backend.TORCH), BenchTarget(base, Backend.TORCH, compile=True, note="torch.compile")]
    report = bench(targets, latency, dataset=None, options=RunnerOptions(device="cuda"))
    write_report(report, args.out / "report_torch_cuda")
    rows = [("torch eager vs torch.compile, CUDA, one interleaved run", report)]
    import onnxruntime as ort
    providers = ort.get_available_providers()
    print("onnxruntime", ort.__version__, "providers:", providers)
    if "CUDAExecutionProvider" in providers:
        report = bench([BenchTarget(base, Backend.TORCH), BenchTarget(onnx_path, Backend.ONNXRUNTIME)], latency,
                       dataset=None, options=RunnerOptions(device="cuda"))
        write_report(report, args.out / "report_ort_cuda")
        rows.append(("torch eager vs onnxruntime CUDA EP", report))
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for title, report in rows:
        head, table = summary_rows(report)
        print(f"\n{title}\n| " + " | ".join(head) + " |")
        for row in table:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
