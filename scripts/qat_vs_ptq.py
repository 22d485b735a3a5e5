"""QAT against PTQ on onnxruntime: resnet18 on digits at 32x32, fp32 vs PTQ vs QAT int8, timed together in one run.

    .venv/bin/python -m scripts.qat_vs_ptq [--arch resnet18] [--epochs 5] [--qat-epochs 2] [--rounds 7]
                                              [--out runs/qat-vs-ptq] [--no-raw]

Trains the model (seed 0) unless OUT/base.safetensors exists, exports the fp32 ONNX, writes
the PTQ (onnxruntime Q/DQ) and the QAT (NNCF, made deployable by compress.qdq_onnx) artifacts,
and, unless ``--no-raw``, the QAT graph as NNCF's export leaves it (fp32 weights behind Q/DQ,
BatchNorm unfolded: what `--method qat` wrote before) for the before/after. All artifacts are
timed by the benchmarks harness in one interleaved run at batch 1 (median of the rounds'
medians); prints ms/img, file size, test top-1, the int8 kernels onnxruntime runs, the speedup
over fp32 and QAT's time over PTQ's. Results go to OUT/qat_vs_ptq.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path


RAW = "qat int8, NNCF graph as exported (before)"


def _base(args) -> Path:
    from deepslim.config import TrainConfig
    from deepslim.models import save_model
    from deepslim.training import model_for_dataset, train
    path = args.out / "base.safetensors"
    if not path.exists():
        bundle = model_for_dataset(args.arch, "digits", input_size=args.size, seed=0)
        save_model(train(bundle, "digits", TrainConfig(epochs=args.epochs, seed=0), progress=False), path)
    return path


def _quantize(base: Path, out: Path, method: str, qat_epochs: int, raw: bool = False) -> dict:
    from unittest import mock

    from compress.quantize import QuantizeConfig, quantize
    from deepslim.models import load_model
    cfg = QuantizeConfig(method=method, latency=False, qat_epochs=qat_epochs, seed=0)
    patch = mock.patch("compress.qat._finalize", lambda *a, **k: None) if raw else contextlib.nullcontext()
    with patch:
        result = quantize(load_model(base), out, cfg, "digits", progress=False)
    m = result.record.metrics
    return {"test_top1": m["quantized"]["test"]["top1"], "fp32_test_top1": m["fp32"]["test"]["top1"],
            "val_drop_points": m["val_drop_points"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=float, default=14.0, help="seconds per artifact, over all rounds")
    parser.add_argument("--no-raw", action="store_true", help="skip the QAT graph as NNCF exports it")
    parser.add_argument("--out", type=Path, default=Path("runs/qat-vs-ptq"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from deepslim.models import load_model
    from export.onnx import to_onnx
    base = _base(args)
    paths = {"fp32": args.out / "fp32.onnx", "ptq int8": args.out / "ptq.onnx", "qat int8": args.out / "qat.onnx"}
    if not args.no_raw:
        paths[RAW] = args.out / "qat_raw.onnx"
    to_onnx(load_model(base), paths["fp32"])
    rows = {"fp32": {}}
    rows["ptq int8"] = _quantize(base, paths["ptq int8"], "ptq", args.qat_epochs)
    rows["fp32"]["test_top1"] = rows["ptq int8"]["fp32_test_top1"]
    rows["qat int8"] = _quantize(base, paths["qat int8"], "qat", args.qat_epochs)
    if not args.no_raw:
        rows[RAW] = _quantize(base, paths[RAW], "qat", args.qat_epochs, raw=True)
    _time_and_print(paths, rows, args)


def _time_and_print(paths: dict[str, Path], rows: dict[str, dict], args) -> None:
    from benchmarks.latency import LatencyConfig, measure
    from benchmarks.runners import RunnerOptions, open_runner
    from compress.qdq_onnx import ort_kernel_counts
    from deepslim.units import format_size, format_speedup
    runners = [open_runner(p, "onnxruntime", RunnerOptions()) for p in paths.values()]
    stats = measure(runners, LatencyConfig(batches=(1,), rounds=args.rounds, duration=args.duration, warmup=20))
    for (name, path), stat in zip(paths.items(), stats):
        rows[name].update(p50_ms=stat[1].p50_ms, spread_ms=list(stat[1].spread_ms), size_bytes=path.stat().st_size,
                          kernels_int8_fp32=ort_kernel_counts(path))
    fp32, ptq = rows["fp32"]["p50_ms"], rows["ptq int8"]["p50_ms"]
    print(f"{args.arch} on digits at {args.size}x{args.size}, onnxruntime CPU, batch 1, {args.rounds} rounds")
    print(f"{'artifact':44} {'ms/img':>8} {'size':>10} {'test top-1':>10} {'int8/fp32 layers':>16}  vs fp32")
    for name, row in rows.items():
        kernels = row["kernels_int8_fp32"]
        print(f"{name:44} {row['p50_ms']:8.3f} {format_size(row['size_bytes']):>10} {row['test_top1']:10.4f} "
              f"{'%d/%d' % tuple(kernels) if kernels else '-':>16}  {format_speedup(fp32 / row['p50_ms'])}")
    for name in rows:
        if name.startswith("qat"):
            row = rows[name]
            print(f"{name}: {row['p50_ms'] / ptq:.2f} x PTQ's time, {row['size_bytes'] / rows['ptq int8']['size_bytes']:.2f}"
                  f" x PTQ's size ({format_speedup(ptq / row['p50_ms'])} than PTQ)")
    (args.out / "qat_vs_ptq.json").write_text(json.dumps({"arch": args.arch, "size": args.size, "rows": rows},
                                                         indent=2))


if __name__ == "__main__":
    main()
