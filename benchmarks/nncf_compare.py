"""deepslim's OpenVINO int8 against NNCF's default `nncf.quantize` of the same OpenVINO model, same calibration images.

    .venv/bin/python -m benchmarks.nncf_compare [--model runs/quantize-resnet18/base.safetensors] [--input-size 224]

Exports the fp32 IR, quantizes it with `deepslim compress quantize --target openvino` and with
a plain `nncf.quantize(model, nncf.Dataset(images), subset_size=N)` on the same N calibration
images (deepslim.data.calibration_images), then times and scores all three IRs in one
`deepslim bench` run. Prints the latency ratio deepslim/NNCF (goal <= 1.05) and both accuracies.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.drive import deepslim


def nncf_default(fp32_xml: Path, out: Path, dataset: str, samples: int) -> None:
    """NNCF's defaults on the same images; the fp32 IR's deepslim metadata is copied so the runners can feed it."""
    import nncf
    import openvino as ov

    from deepslim.artifact import META_KEY
    from deepslim.data import calibration_images
    from benchmarks.runners import read_meta
    meta = read_meta(fp32_xml)
    images = calibration_images(dataset, meta.input_spec, samples, seed=0)
    model = ov.Core().read_model(str(fp32_xml))
    quantized = nncf.quantize(model, nncf.Dataset([images[i:i + 1] for i in range(len(images))]), subset_size=samples)
    from deepslim.artifact import ArtifactMeta
    labelled = ArtifactMeta(meta.input_spec, meta.classes, meta.lineage,
                            {**meta.export, "precision": "int8", "quantization": "nncf-default"})
    quantized.set_rt_info(labelled.to_json(), [META_KEY, "meta"])
    ov.save_model(quantized, str(out), compress_to_fp16=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("runs/quantize-resnet18/base.safetensors"))
    parser.add_argument("--out", type=Path, default=Path("runs/nncf-compare"))
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not args.model.exists():
        args.model.parent.mkdir(parents=True, exist_ok=True)
        deepslim("train", "--arch", "resnet18", "--input-size", "32", "--epochs", "10", "--seed", "0", "--quiet",
            "-o", str(args.model))
    size = ["--input-size", str(args.input_size)]
    fp32, ours, theirs = out / "fp32.xml", out / "deepslim_int8.xml", out / "nncf_default_int8.xml"
    deepslim("export", str(args.model), "--target", "openvino", *size, "--force", "-o", str(fp32))
    deepslim("compress", "quantize", str(args.model), "--target", "openvino", *size, "--calibration-samples",
        str(args.samples), "--dataset", args.dataset, "--no-latency", "--quiet", "--force", "-o", str(ours))
    nncf_default(fp32, theirs, args.dataset, args.samples)
    report = out / "bench"
    deepslim("bench", str(fp32), str(ours), str(theirs), "--backend", "openvino", "--batch", "1", "--dataset", args.dataset,
        "--duration", str(args.duration), "--force", "--report", str(report))
    entries = {Path(e["artifact"]).name: e for e in json.loads((report / "report.json").read_text())["entries"]}
    print("| IR | test top-1 | p50 batch 1 |")
    print("|---|---|---|")
    for name in (fp32.name, ours.name, theirs.name):
        e = entries[name]
        print(f"| {name} | {e['accuracy']['top1']:.4f} | {e['latency']['1']['p50_ms']:.3f} ms |")
    a, b = entries[ours.name], entries[theirs.name]
    ratio = a["latency"]["1"]["p50_ms"] / b["latency"]["1"]["p50_ms"]
    print(f"\ndeepslim / NNCF default p50 ratio: {ratio:.3f} (goal <= 1.05); top-1 {a['accuracy']['top1']:.4f} vs "
          f"{b['accuracy']['top1']:.4f} ({'at least as accurate' if a['accuracy']['top1'] >= b['accuracy']['top1'] else 'LESS accurate'})")


if __name__ == "__main__":
    main()
