"""Prune the torchvision classification zoo: prune -> reload -> ONNX export -> parity, one row per model.

    python -m scripts.prune_zoo [--ratio 0.3] [--size 64] [--out runs/prune-zoo]

Each architecture is built with random weights at a small input size, pruned with L2
importance at ``--ratio``, saved as a bundle, reloaded (bit-exact check), exported to ONNX
and compared with the pruned torch model on random inputs. Every model runs in its own
process under a memory watchdog (``--max-rss-gib``) and a time limit, so one that blows up
is recorded as failing instead of taking the machine down. Prints a Markdown table (the
README's) and writes it with a JSON copy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from compress.prune import PruneConfig, prune
from deepslim.models import load_model, save_model
from deepslim.profile import count_macs_params
from export import VerifyConfig, export_model

ZOO = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_small",
       "mobilenet_v3_large", "efficientnet_b0", "efficientnet_v2_s", "regnet_x_400mf", "regnet_y_400mf",
       "densenet121", "convnext_tiny", "vit_b_16", "swin_t", "swin_v2_t", "shufflenet_v2_x1_0", "mnasnet1_0",
       "squeezenet1_1", "googlenet", "inception_v3", "vgg11_bn", "alexnet", "maxvit_t"]
SIZES = {"inception_v3": 96, "alexnet": 96, "maxvit_t": 224}


def sweep_one(arch: str, size: int, ratio: float, tmp: Path) -> dict:
    row: dict = {"arch": arch, "input": SIZES.get(arch, size)}
    start = time.perf_counter()
    try:
        torch.manual_seed(0)
        bundle = load_model(arch=arch, num_classes=10, input_size=row["input"])
        macs, params = count_macs_params(bundle.model, bundle.input_spec)
        pruned = prune(bundle, PruneConfig(ratio=ratio), dataset=None, progress=False)
        m = pruned.lineage[-1].metrics
        row.update(macs_reduction=round(macs / m["macs_after"], 2), params_reduction=round(params / m["params_after"], 2))
        path = save_model(pruned, tmp / f"{arch}.safetensors")
        reloaded = load_model(path)
        a, b = pruned.model.state_dict(), reloaded.model.state_dict()
        row["reload_exact"] = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        result = export_model(reloaded, "onnx", tmp / f"{arch}.onnx", verify=VerifyConfig(samples=8))
        row.update(onnx_max_abs=float(f"{result.parity.max_abs:.2e}"), status="ok")
    except Exception as exc:  # a sweep reports every failure and goes on
        row.update(status="fails", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        traceback.print_exc(file=sys.stderr)
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def run_isolated(arch: str, args: argparse.Namespace) -> dict:
    """``sweep_one`` in a child process, killed past ``--max-rss-gib`` of memory or ``--timeout`` seconds."""
    cmd = [sys.executable, "-m", "scripts.prune_zoo", "--one", arch, "--ratio", str(args.ratio), "--size", str(args.size)]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    reason = None
    while child.poll() is None:
        time.sleep(0.5)
        rss = _rss_gib(child.pid)
        if rss > args.max_rss_gib or time.perf_counter() - start > args.timeout:
            child.kill()
            reason = (f"exceeded {args.max_rss_gib} GiB of memory (torch-pruning's graph tracing)"
                      if rss > args.max_rss_gib else f"exceeded {args.timeout} s")
    out = child.communicate()[0]
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if rows and reason is None:
        return rows[-1]
    return {"arch": arch, "input": SIZES.get(arch, args.size), "status": "fails",
            "reason": reason or f"process exited with {child.returncode}", "seconds": round(time.perf_counter() - start, 1)}


def _rss_gib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0  # the child has just exited
    return next((int(ln.split()[1]) / 2**20 for ln in status.splitlines() if ln.startswith("VmRSS:")), 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("runs/prune-zoo"))
    parser.add_argument("--only", default="", help="comma-separated subset of the zoo")
    parser.add_argument("--max-rss-gib", type=float, default=8.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one model, one JSON line
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(sweep_one(args.one, args.size, args.ratio, Path(tmp))), flush=True)
        return
    rows = []
    for arch in [a for a in args.only.split(",") if a] or ZOO:
        rows.append(run_isolated(arch, args))
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "zoo.json").write_text(json.dumps(rows, indent=2))
    lines = ["| model | input | MACs reduction | params reduction | reload bit-exact | ONNX parity max abs | "
             "result |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['input']} | {r.get('macs_reduction', '-')}x | "
                     f"{r.get('params_reduction', '-')}x | {r.get('reload_exact', '-')} | {r.get('onnx_max_abs', '-')} | "
                     f"{r['status']}{': ' + r['reason'] if 'reason' in r else ''} |")
    (args.out / "zoo.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
