"""Prune the torchvision classification zoo through the CLI a user runs, one row per model.

    python -m scripts.prune_zoo [--ratio 0.3] [--size 64] [--out runs/prune-zoo] [--only resnet18,mnasnet1_0]

For each architecture (random weights, small input) it runs, as subprocesses, exactly

    deepslim compress prune --arch X --input-size SIZE --ratio R --no-check -q -o OUT/X.safetensors
    deepslim export OUT/X.safetensors --target onnx -o OUT/X.onnx

with export's default parity (the model's own dataset from its lineage: digits) and reads the printed
``parity ok|FAILED: ...`` line, the MACs reduction (``deepslim info --json`` lineage metrics) and the first
line of any ``error: ...``. Each model has one time limit (``--timeout``, both commands together) and a
memory watchdog (``--max-rss-gib``). For the before/after comparison each exported model is also checked
the old way through the Python API (in a child process): 16 seeded N(0, 1) inputs, torch vs onnxruntime,
the old element-wise rule ``|diff| <= 1e-4 + 1e-4*|ref|`` (and torch fp32 vs fp64 on those inputs, which shows
whether noise is a fair judge); it runs after the two commands, under a time limit of its own, and is not
in "seconds". Prints a Markdown table and writes it to OUT/zoo.md with OUT/zoo.json; each command's
output is kept in OUT/X.prune.log and OUT/X.export.log.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ZOO = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_small",
       "mobilenet_v3_large", "efficientnet_b0", "efficientnet_v2_s", "regnet_x_400mf", "regnet_y_400mf",
       "densenet121", "convnext_tiny", "vit_b_16", "swin_t", "swin_v2_t", "shufflenet_v2_x1_0", "mnasnet1_0",
       "squeezenet1_1", "googlenet", "inception_v3", "vgg11_bn", "alexnet", "maxvit_t"]
SIZES = {"inception_v3": 96, "alexnet": 96, "maxvit_t": 224}
ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, str(ROOT / "cli.py")]
PARITY = re.compile(r"parity (?P<verdict>ok|FAILED): .*?, (?P<samples>\d+) (?P<inputs>.+?) inputs: "
                    r"max \|diff\| (?P<max_abs>\S+), max rel (?P<max_rel>\S+) \(of the row's largest output\), "
                    r"top-1 agreement (?P<top1>[0-9.]+)(?P<rest>.*)")


def run_cli(args: list[str], log: Path, deadline: float, max_rss_gib: float) -> tuple[int | None, str, str | None]:
    """One CLI command, output to ``log``; killed past ``deadline`` or ``max_rss_gib``: (rc, output, why killed)."""
    env = {**os.environ, "COLUMNS": "10000"}  # one error or parity line per line, however long
    with log.open("w") as out:
        child = subprocess.Popen(CLI + args, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
        killed = None
        while child.poll() is None:
            time.sleep(0.5)
            rss = _rss_gib(child.pid)
            if rss > max_rss_gib or time.monotonic() > deadline:
                child.kill()
                child.wait()
                killed = f"exceeded {max_rss_gib:g} GiB of memory" if rss > max_rss_gib else "timeout"
    return (None if killed else child.returncode), log.read_text(), killed


def _rss_gib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0  # the child has just exited
    return next((int(ln.split()[1]) / 2**20 for ln in status.splitlines() if ln.startswith("VmRSS:")), 0.0)


def error_line(output: str) -> str:
    """The first line of the CLI's ``error: ...`` message, else the output's last line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    found = next((ln for ln in lines if ln.startswith("error: ")), None)
    return found[len("error: "):] if found else (lines[-1] if lines else "no output")


def parse_parity(output: str) -> dict | None:
    match = next((m for m in map(PARITY.search, output.splitlines()) if m), None)
    if match is None:
        return None
    return {"verdict": match["verdict"], "samples": int(match["samples"]), "inputs": match["inputs"],
            "max_abs": float(match["max_abs"]), "max_rel": float(match["max_rel"].rstrip(",;")),
            "top1": float(match["top1"]), "ill_conditioned": "ill-conditioned" in match["rest"]}


def prune_metrics(bundle: Path) -> dict:
    """MACs and params reduction from the bundle's last prune record (``deepslim info --json``)."""
    info = subprocess.run(CLI + ["info", str(bundle), "--json"], capture_output=True, text=True, cwd=ROOT, check=True)
    record = next(r for r in reversed(json.loads(info.stdout)["lineage"]) if r["stage"] == "prune")
    m = record["metrics"]
    return {"macs_reduction": round(m["macs_before"] / m["macs_after"], 2),
            "params_reduction": round(m["params_before"] / m["params_after"], 2), "prune_seconds": record["seconds"]}


def sweep_one(arch: str, size: int, args: argparse.Namespace) -> dict:
    """prune -> export through the CLI, then the old random-input check; one row."""
    row: dict = {"arch": arch, "input": size}
    start = time.monotonic()
    deadline = start + args.timeout
    bundle, onnx = args.out / f"{arch}.safetensors", args.out / f"{arch}.onnx"
    for stale in (bundle, onnx, args.out / f"{arch}.noverify.onnx"):
        stale.unlink(missing_ok=True)
    prune = ["compress", "prune", "--arch", arch, "-d", "digits", "--input-size", str(size), "--ratio", str(args.ratio),
             "--no-check", "-q", "-o", str(bundle)]
    rc, output, killed = run_cli(prune, args.out / f"{arch}.prune.log", deadline, args.max_rss_gib)
    if rc != 0:
        return _failed(row, "prune", killed or error_line(output), start, args)
    row.update(prune_metrics(bundle))
    export = ["export", str(bundle), "--target", "onnx", "-o", str(onnx)]
    rc, output, killed = run_cli(export, args.out / f"{arch}.export.log", deadline, args.max_rss_gib)
    row.update(parity=parse_parity(output), seconds=round(time.monotonic() - start, 1))  # the two CLI commands
    row["old_check"] = old_check_isolated(bundle, onnx, time.monotonic() + args.timeout, args)
    if rc != 0:
        return _failed(row, "export", killed or error_line(output), start, args)
    row["status"] = "ok"
    return row


def _failed(row: dict, stage: str, cause: str, start: float, args: argparse.Namespace) -> dict:
    if cause == "timeout":
        cause = f"timeout: over {args.timeout:g} s"
    row.update(status="fails", stage=stage, cause=cause)
    row.setdefault("seconds", round(time.monotonic() - start, 1))
    return row


def old_check_isolated(bundle: Path, onnx: Path, deadline: float, args: argparse.Namespace) -> dict | None:
    """``old_check`` in a child process. A model whose CLI parity failed has no ``X.onnx`` (export verifies
    under a temporary name), so it is exported again without verification to check it the old way."""
    if not onnx.exists():
        onnx = onnx.with_suffix(".noverify.onnx")
        export = ["export", str(bundle), "--target", "onnx", "--no-verify", "-o", str(onnx)]
        rc, _, _ = run_cli(export, onnx.with_suffix(".log"), deadline, args.max_rss_gib)
        if rc != 0:
            return None
    cmd = [sys.executable, "-m", "scripts.prune_zoo", "--old-check", str(bundle), str(onnx)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              timeout=max(deadline - time.monotonic(), 1.0))
    except subprocess.TimeoutExpired:
        return None
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def old_check(bundle_path: str, onnx_path: str, samples: int = 16) -> dict:
    """The parity check deepslim ran before issue #11: seeded N(0, 1) inputs, element-wise tolerance."""
    import copy

    import numpy as np
    import torch

    from benchmarks.runners import Backend, RunnerOptions, open_runner
    from deepslim.models import load_model
    from export.parity import ParityInputs, parity_inputs

    bundle = load_model(bundle_path)
    x, _ = parity_inputs(bundle.input_spec, ParityInputs(None), samples)
    model = bundle.model.eval()
    model64 = copy.deepcopy(model).double()
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).double().numpy()
        exact = model64(torch.from_numpy(x).double()).numpy()
    with open_runner(onnx_path, Backend.ONNXRUNTIME, RunnerOptions()) as runner:
        got = runner.run(x).astype(np.float64)
    diff = np.abs(ref - got)
    return {"samples": samples, "max_abs": float(diff.max()), "max_ref": float(np.abs(ref).max()),
            "passed": bool(np.all(diff <= 1e-4 + 1e-4 * np.abs(ref))),
            "top1": float(np.mean(ref.argmax(1) == got.argmax(1))),
            "torch_fp64_max_abs": float(np.abs(ref - exact).max()),
            "torch_fp64_top1": float(np.mean(ref.argmax(1) == exact.argmax(1)))}


def table(rows: list[dict]) -> str:
    lines = ["| model | input | MACs reduction | CLI parity: inputs | max \\|diff\\| | max rel | top-1 agreement | "
             "CLI parity | old check (16 random inputs): max \\|diff\\| | old check | torch fp32 vs fp64 on those "
             "inputs: max \\|diff\\| | CLI seconds | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, o = r.get("parity"), r.get("old_check")
        ill = " (source ill-conditioned)" if p and p["ill_conditioned"] else ""
        cli = (f"{p['inputs']} ({p['samples']}) | {p['max_abs']:.2e} | {p['max_rel']:.2e} | {p['top1']:.4f} | "
               f"{p['verdict']}{ill}" if p else "- | - | - | - | -")
        old = (f"{o['max_abs']:.2e} | {'pass' if o['passed'] else 'fail'} | {o['torch_fp64_max_abs']:.2e}"
               if o else "- | - | -")
        macs = f"{r['macs_reduction']}x" if "macs_reduction" in r else "-"
        status = "ok" if r["status"] == "ok" else f"fails ({r['stage']}): {_short(r['cause'])}"
        lines.append(f"| {r['arch']} | {r['input']} | {macs} | {cli} | {old} | {r['seconds']} | {status} |")
    return "\n".join(lines) + "\n"


def _short(cause: str, limit: int = 220) -> str:
    cause = cause.replace("|", "\\|")
    return cause if len(cause) <= limit else cause[:limit - 1] + "…"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("runs/prune-zoo"))
    parser.add_argument("--only", default="", help="comma-separated subset of the zoo")
    parser.add_argument("--max-rss-gib", type=float, default=8.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per model, both commands together")
    parser.add_argument("--old-check", nargs=2, help=argparse.SUPPRESS)  # the child process: one JSON line
    args = parser.parse_args()
    if args.old_check:
        print(json.dumps(old_check(*args.old_check)), flush=True)
        return
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, start = [], time.monotonic()
    for arch in [a for a in args.only.split(",") if a] or ZOO:
        rows.append(sweep_one(arch, SIZES.get(arch, args.size), args))
        print(json.dumps(rows[-1]), flush=True)
        (args.out / "zoo.json").write_text(json.dumps(rows, indent=2))
    text = table(rows)
    (args.out / "zoo.md").write_text(text)
    print(text + f"\ntotal {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
