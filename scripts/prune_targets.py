"""Pruning targets, measured: the --ratio -> MAC-reduction curve and the --speedup each model reaches.

    python -m scripts.prune_targets [--size 224] [--before REV] [--only resnet18,mobilenet_v2]

Structure only (random weights, no data; the MACs do not depend on the weights): torchvision models
with 10 classes at the CLI's input size (224 for torchvision). Prints

  1. the MAC reduction of resnet18 at --ratio 0.5 ... 0.95 with this tree's pruning and, with
     ``--before REV`` (e.g. HEAD), with ``compress/prune.py`` of that revision run from a temporary copy;
  2. for resnet18, mobilenet_v2 and efficientnet_b0 at --speedup 1.5, 2, 3, 4 with the defaults: the
     reduction ``prune()`` reaches (its lineage), the uniform ratio, the groups moved and the seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from compress.prune import PruneConfig, PruneError, ignored_layers, macs_after, plan_at, prune, structure
from deepslim.models import load_model
from deepslim.profile import count_macs_params

ROOT = Path(__file__).resolve().parent.parent
RATIOS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
SPEEDUPS = (1.5, 2.0, 3.0, 4.0)
MODELS = ("resnet18", "mobilenet_v2", "efficientnet_b0")


def model(arch: str, size: int):
    torch.manual_seed(0)
    return load_model(arch=arch, num_classes=10, input_size=size)


def old_prune_module(rev: str):
    """``compress/prune.py`` as it was at ``rev``, imported from a temporary file."""
    source = subprocess.run(["git", "show", f"{rev}:compress/prune.py"], cwd=ROOT, check=True, text=True,
                            capture_output=True).stdout
    path = Path(tempfile.mkdtemp()) / "prune_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("prune_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["prune_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def curve(bundle, before) -> list[tuple[float, float, float | None]]:
    base = count_macs_params(bundle.model, bundle.input_spec)[0]
    ignored = ignored_layers(bundle, ())
    cfg = PruneConfig(ratio=0.5)
    s = structure(bundle.model, bundle.input_spec.shape, cfg, ignored)
    rows = []
    for r in RATIOS:
        now = base / macs_after(bundle, cfg, r, ignored, planned=(s, plan_at(s, cfg, r, None)))
        old = base / before.macs_after(bundle, before.PruneConfig(ratio=r), r, ignored) if before else None
        rows.append((r, now, old))
    return rows


def speedup_row(bundle, target: float) -> str:
    lines: list[str] = []
    start = time.perf_counter()
    try:
        pruned = prune(bundle, PruneConfig(speedup=target), dataset=None, progress=False, log=lines.append)
    except PruneError as exc:
        return f"| {target} | failed | | | {time.perf_counter() - start:.1f} | {exc} |"
    m = pruned.lineage[-1].metrics
    moved = next((ln.split(" with ")[1].split(" group")[0] for ln in lines if " group(s) moved" in ln), "?")
    return (f"| {target} | {m['mac_reduction']:.3f}x | {m['ratio']:.3f} | {moved} | "
            f"{time.perf_counter() - start:.1f} | {100 * (m['mac_reduction'] / target - 1):+.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--before", default=None, help="a git revision whose compress/prune.py gives 'before'")
    parser.add_argument("--only", default=",".join(MODELS))
    args = parser.parse_args()
    before = old_prune_module(args.before) if args.before else None
    print(f"## resnet18 at {args.size}px: --ratio -> MAC reduction (max-layer-ratio 0.9, round-to 8)\n")
    print("| ratio | this tree | " + (f"{args.before} |" if before else "") + "\n|---|---|" + ("---|" if before else ""))
    for r, now, old in curve(model("resnet18", args.size), before):
        print(f"| {r} | {now:.2f}x | " + (f"{old:.2f}x |" if old is not None else ""), flush=True)
    for arch in args.only.split(","):
        print(f"\n## {arch} at {args.size}px: --speedup with the defaults\n")
        print("| asked | reached | uniform ratio | groups moved | seconds | off by |\n|---|---|---|---|---|---|")
        bundle = model(arch, args.size)
        for target in SPEEDUPS:
            print(speedup_row(bundle, target), flush=True)


if __name__ == "__main__":
    sys.exit(main())
