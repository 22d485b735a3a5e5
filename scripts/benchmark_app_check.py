"""Latency fidelity: deepslim's OpenVINO p50 against OpenVINO's own ``benchmark_app`` on the same IR.

    python -m scripts.benchmark_app_check [MODEL.xml] [--threads 2] [--seconds 10]

Without MODEL, a resnet18 (random weights; latency does not depend on them) is exported
to IR at 224x224. deepslim measures batch 1 with its OpenVINO runner (latency hint,
pinned threads, f32), then ``benchmark_app`` runs right after with the same settings
(one stream, the same threads, one synchronous request, f32). Prints both medians and
their ratio; the goal is agreement within 15%.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import Backend, BenchTarget, LatencyConfig, RunnerOptions, bench


def benchmark_app_median(xml: Path, threads: int, seconds: int, shape: str) -> float:
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    cmd = [exe, "-m", str(xml), "-d", "CPU", "-hint", "none", "-nstreams", "1", "-nthreads", str(threads),
           "-nireq", "1", "-api", "sync", "-infer_precision", "f32", "-shape", shape, "-t", str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Median:\s+([\d.]+) ms", out)
    if match is None:
        raise RuntimeError("benchmark_app printed no median:\n" + out[-2000:])
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        xml = args.model or _export_resnet18(Path(tmp))
        report = bench([BenchTarget(xml, Backend.OPENVINO)], LatencyConfig(batches=(1,), rounds=5,
                                                                            duration=args.seconds),
                       dataset=None, options=RunnerOptions(threads=args.threads))
        ours = report.entries[0].latency[1].p50_ms
        shape = "[" + ",".join(str(d) for d in [1, *report.entries[0].input_shape]) + "]"
        theirs = benchmark_app_median(xml, args.threads, args.seconds, shape)
    print(f"{xml.name}: deepslim p50 {ours:.3f} ms, benchmark_app median {theirs:.3f} ms, "
          f"ratio {ours / theirs:.3f} (goal: within 0.85-1.15), {args.threads} threads, batch 1")


def _export_resnet18(tmp: Path) -> Path:
    from deepslim.models import load_model
    from export import OnnxConfig, export_model
    bundle = load_model(arch="resnet18", num_classes=10, input_size=224)
    return export_model(bundle, "openvino", tmp / "resnet18_224.xml", onnx_config=OnnxConfig(), verify=None, force=True).artifact


if __name__ == "__main__":
    main()
