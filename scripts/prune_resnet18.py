"""The pruning acceptance numbers: resnet18 on digits pruned 2x, accuracy and OpenVINO latency in one run.

    python -m scripts.prune_resnet18 [--out runs/prune-resnet18] [--speedup 2] [--duration 10]

Trains resnet18 on digits (32x32, 10 epochs), prunes it with L2 importance to the MAC
speedup (5 fine-tuning epochs), then benchmarks the unpruned and pruned models on
OpenVINO fp32 at 224x224 batch 1 in one interleaved `bench` run (exported with parity
checks). Prints top-1 before/after, the MAC reduction and the latency ratio (goal <= 0.6).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import Backend, BenchTarget, LatencyConfig, bench, write_report
from benchmarks.report import summary_rows
from compress.prune import PruneConfig, prune
from deepslim.config import TrainConfig
from deepslim.models import save_model
from deepslim.training import model_for_dataset, train
from export import OnnxConfig, VerifyConfig, export_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/prune-resnet18"))
    parser.add_argument("--speedup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = train(model_for_dataset("resnet18", "digits", input_size=32, seed=0), "digits", TrainConfig(epochs=10),
                 progress=False)
    pruned = prune(base, PruneConfig(speedup=args.speedup, importance="l2", finetune_epochs=5), dataset="digits",
                   progress=False)
    m = pruned.lineage[-1].metrics
    targets = []
    for name, bundle in (("base", base), ("pruned", pruned)):
        bundle.path = save_model(bundle, args.out / f"{name}.safetensors", force=True)
        ir = export_model(bundle, "openvino", args.out / f"{name}_224.xml", onnx_config=OnnxConfig(input_size=224),
                          verify=VerifyConfig("digits"), force=True)
        targets.append(BenchTarget(ir.artifact, Backend.OPENVINO))
    report = bench(targets, LatencyConfig(batches=(1,), rounds=5, duration=args.duration), dataset=None)
    write_report(report, args.out / "report")
    before, after = (e.latency[1] for e in report.entries)
    print(f"top-1 {m['test_before']['top1']:.4f} -> {m['test']['top1']:.4f} "
          f"({100 * (m['test']['top1'] - m['test_before']['top1']):+.2f} pt); MACs {m['mac_reduction']:.2f}x fewer; "
          f"params {m['params_before'] / m['params_after']:.2f}x fewer")
    print(f"OpenVINO fp32 224x224 batch 1 p50: {before.p50_ms:.3f} -> {after.p50_ms:.3f} ms, "
          f"ratio {after.p50_ms / before.p50_ms:.3f} (goal <= 0.6), {report.environment['cpu']['model']}, "
          f"{report.environment['threads']} threads, one interleaved run")
    head, rows = summary_rows(report)
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    print("\n".join("| " + " | ".join(r) + " |" for r in rows))


if __name__ == "__main__":
    main()
