"""Train, prune, save, reload and export timm models through the CLI a user runs, one row per model.

    nice -n 19 python -m scripts.timm_zoo [--ratio 0.5] [--out runs/timm-zoo] [--only resnet18,vit_tiny_patch16_224]

For each model (random init, digits at a small input size, 1 epoch) it runs, as subprocesses, exactly

    deepslim train --arch timm:NAME -d digits --input-size SIZE [--arch-kwargs JSON] --epochs 1 -q \
        -o OUT/NAME.base.safetensors
    deepslim compress prune OUT/NAME.base.safetensors --ratio R --no-check -q -o OUT/NAME.safetensors
    deepslim export OUT/NAME.safetensors --target onnx -o OUT/NAME.onnx

(export verifies parity on 64 digits test images, the model's own dataset) and reads MACs and params before and
after from the pruned bundle's lineage (``deepslim info --json``). Then, in a child process, the reload check:
the trained bundle is pruned again in memory with the pruned bundle's recorded configuration (``compress.prune``,
the function the CLI calls), saved, and loaded back; "reload exact" means the reloaded model's outputs on 64 digits
test images equal the in-memory pruned model's bit for bit, and "same as CLI" that the CLI's bundle gives those
outputs too (pruning is deterministic). Each model has one time limit (``--timeout``, the commands together) and
a memory watchdog (``--max-rss-gib``). Writes OUT/timm_zoo.json and OUT/timm_zoo.md (the table) and prints it;
a rerun with --only replaces those rows and keeps the others. Each command's output is kept in
OUT/NAME.{train,prune,export,reload}.log.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from scripts.prune_zoo import CLI, ROOT, error_line, parse_parity, run_cli



def _swin_fixed(depths: tuple[int, ...]) -> str:
    """--ignore for Swin: the residual width (patch embedding, patch merging) and the attention (its relative
    position table is indexed by head, which torch-pruning does not know), so only the MLP widths are cut."""
    attention = [f"layers.{i}.blocks.{j}.attn" for i, depth in enumerate(depths) for j in range(depth)]
    return ",".join(["patch_embed", *(f"layers.{i}.downsample" for i in range(len(depths))), *attention])


# (row name: a timm name, or NAME:variant; family; input size; extra --arch-kwargs; extra prune options). Sizes
# are the smallest the model takes (32 for most); models with an image size (ViT, DeiT, Swin, LeViT...) are built
# for it by --input-size (deepslim sets img_size; timm's Swin shrinks its windows to the 8x8 tokens of 32 px).
ZOO: list[tuple[str, str, int, dict, list[str]]] = [
    ("resnet18", "ResNet", 32, {}, []),
    ("resnet50d", "ResNet-D", 32, {}, []),
    ("resnetv2_50", "ResNet V2 (pre-act)", 32, {}, []),
    ("convnext_atto", "ConvNeXt", 32, {}, []),
    ("convnextv2_atto", "ConvNeXt V2", 32, {}, []),
    ("efficientnet_b0", "EfficientNet", 32, {}, []),
    ("tf_efficientnetv2_b0", "EfficientNet V2", 32, {}, []),
    ("mobilenetv3_small_100", "MobileNetV3", 32, {}, []),
    ("mobilenetv4_conv_small", "MobileNetV4", 32, {}, []),
    ("regnetx_002", "RegNetX", 32, {}, []),
    ("regnety_002", "RegNetY (SE)", 32, {}, []),
    ("ghostnet_100", "GhostNet", 32, {}, []),
    ("mixnet_s", "MixNet", 32, {}, []),
    ("densenet121", "DenseNet", 32, {}, []),
    ("rexnet_100", "ReXNet", 32, {}, []),
    ("lcnet_050", "LCNet", 32, {}, []),
    ("repvgg_a0", "RepVGG (ByobNet)", 32, {}, []),
    ("dla34", "DLA", 32, {}, []),
    ("cspresnet50", "CSPNet", 32, {}, []),
    ("hgnet_tiny", "HGNet", 32, {}, []),
    ("vit_tiny_patch16_224", "ViT", 32, {}, []),
    ("deit_tiny_patch16_224", "DeiT", 32, {}, []),
    ("swin_tiny_patch4_window7_224", "Swin", 32, {}, []),
    ("swin_tiny_patch4_window7_224:mlp-only", "Swin", 32, {}, ["--ignore", _swin_fixed((2, 2, 6, 2))]),
    ("levit_128s", "LeViT", 32, {}, []),
    ("mobilevit_xxs", "MobileViT", 32, {}, []),
    ("efficientvit_b0", "EfficientViT (MIT)", 32, {}, []),
    ("poolformer_s12", "PoolFormer (MetaFormer)", 32, {}, []),
    ("pvt_v2_b0", "PVT v2", 32, {}, []),
    ("edgenext_xx_small", "EdgeNeXt", 32, {}, []),
    ("mixer_s16_224", "MLP-Mixer", 32, {}, []),
]
FAMILY = {name: family for name, family, *_ in ZOO}


def sweep_one(row_name: str, size: int, kwargs: dict, options: list[str], args: argparse.Namespace) -> dict:
    """train -> prune -> export through the CLI, then the reload check; one row. ``row_name``: a timm name, or
    NAME:variant for the same model pruned with other ``options``."""
    row: dict = {"model": row_name, "family": FAMILY.get(row_name, "-"), "input": size, "arch_kwargs": kwargs,
                 "prune_options": options, "seconds": {}}
    start = time.monotonic()
    deadline = start + args.timeout
    name = row_name.replace(":", "+")  # file names
    base, bundle, onnx = (args.out / f"{name}{s}" for s in (".base.safetensors", ".safetensors", ".onnx"))
    for stale in (base, bundle, onnx):
        stale.unlink(missing_ok=True)
    train = ["train", "--arch", f"timm:{row_name.split(':')[0]}", "-d", "digits", "--input-size", str(size),
             "--epochs", "1", "-q", *(["--arch-kwargs", json.dumps(kwargs)] if kwargs else []), "-o", str(base)]
    prune = ["compress", "prune", str(base), "--ratio", str(args.ratio), *options, "--no-check", "-q",
             "-o", str(bundle)]
    export = ["export", str(bundle), "--target", "onnx", "-o", str(onnx)]
    for stage, command in (("train", train), ("prune", prune), ("export", export)):
        t0 = time.monotonic()
        rc, output, killed = run_cli(command, args.out / f"{name}.{stage}.log", deadline, args.max_rss_gib)
        row["seconds"][stage] = round(time.monotonic() - t0, 1)
        if stage == "prune" and rc == 0:
            row.update(prune_metrics(bundle))
            row["reload"] = reload_isolated(name, base, bundle, deadline, args)
        if stage == "export":
            row["parity"] = parse_parity(output)
        if rc != 0:
            return _failed(row, stage, killed or error_line(output), start, args)
    row.update(status="ok", total_seconds=round(time.monotonic() - start, 1))
    return row


def _failed(row: dict, stage: str, cause: str, start: float, args: argparse.Namespace) -> dict:
    if cause == "timeout":
        cause = f"timeout: over {args.timeout:g} s"
    row.update(status="fails", stage=stage, cause=cause, total_seconds=round(time.monotonic() - start, 1))
    return row


def prune_metrics(bundle: Path) -> dict:
    """MACs, params and test top-1 before and after, from the bundle's lineage (``deepslim info --json``)."""
    info = subprocess.run(CLI + ["info", str(bundle), "--json"], capture_output=True, text=True, cwd=ROOT, check=True)
    lineage = json.loads(info.stdout)["lineage"]
    m = next(r for r in reversed(lineage) if r["stage"] == "prune")["metrics"]
    return {"macs_before": m["macs_before"], "macs_after": m["macs_after"], "params_before": m["params_before"],
            "params_after": m["params_after"], "top1_trained": m["test_before"]["top1"],
            "top1_pruned": m["test"]["top1"], "head_ratio": m.get("head_ratio")}


def reload_isolated(name: str, base: Path, bundle: Path, deadline: float, args: argparse.Namespace) -> dict:
    """``reload_check`` in a child process under the model's deadline and memory watchdog."""
    log = args.out / f"{name}.reload.log"
    env_cmd = [sys.executable, "-m", "scripts.timm_zoo", "--reload-check", str(base), str(bundle)]
    with log.open("w") as out:
        child = subprocess.Popen(env_cmd, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            return {"error": "timeout"}
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": error_line(log.read_text())}


def reload_check(base_path: str, cli_path: str, samples: int = 64) -> dict:
    """Prune ``base_path`` in memory as the CLI did, save, reload: are the outputs bit-identical?"""
    import dataclasses
    import tempfile

    import torch

    from compress.prune import PruneConfig, prune
    from deepslim.modelio import call, task_output
    from deepslim.models import load_model, save_model
    from export.parity import parity_inputs

    cli = load_model(cli_path)
    record = next(r for r in reversed(cli.lineage) if r.stage == "prune")
    fields = {f.name for f in dataclasses.fields(PruneConfig)}
    config = {k: (tuple(v) if k == "ignore" else v) for k, v in record.config.items() if k in fields}
    memory = prune(load_model(base_path), PruneConfig(**config), dataset=record.config["dataset"], progress=False)
    x, _ = parity_inputs(cli.signature, "digits", samples)
    x = torch.from_numpy(x)

    def outputs(model: torch.nn.Module) -> torch.Tensor:
        with torch.inference_mode():
            return task_output(call(model.eval(), x), cli.signature)

    with tempfile.TemporaryDirectory() as scratch:
        reloaded = load_model(save_model(memory, Path(scratch) / "m.safetensors"))
    ref = outputs(memory.model)
    shapes = {k: list(v.shape) for k, v in memory.model.state_dict().items()}
    return {"reload_exact": bool(torch.equal(ref, outputs(reloaded.model))),
            "reload_max_abs": float((ref - outputs(reloaded.model)).abs().max()),
            "same_as_cli": bool(torch.equal(ref, outputs(cli.model))),
            "shapes_as_cli": shapes == {k: list(v.shape) for k, v in cli.model.state_dict().items()}}


def table(rows: list[dict]) -> str:
    lines = ["| model | family | input | MACs before | MACs after | params before | params after | top-1 trained / "
             "pruned | prune | reload exact | same as CLI | ONNX parity (max \\|diff\\|) | seconds (train+prune+"
             "export) | failure cause |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pruned = "macs_after" in r
        sizes = (f"{_m(r['macs_before'])} | {_m(r['macs_after'])} ({r['macs_before'] / r['macs_after']:.2f}x) | "
                 f"{_m(r['params_before'])} | {_m(r['params_after'])} | "
                 f"{r['top1_trained']:.3f} / {r['top1_pruned']:.3f}" if pruned else "- | - | - | - | -")
        reload = r.get("reload") or {}
        exact = _yes(reload.get("reload_exact")) if "reload_exact" in reload else reload.get("error", "-")
        same = _yes(reload.get("same_as_cli")) if "same_as_cli" in reload else "-"
        p = r.get("parity")
        parity = f"{'ok' if p['verdict'] == 'ok' else 'FAILED'} ({p['max_abs']:.1e})" if p else "-"
        seconds = "+".join(f"{s:g}" for s in r["seconds"].values())
        cause = f"{r['stage']}: {_short(r['cause'])}" if r["status"] != "ok" else ""
        lines.append(f"| {r['model']} | {r['family']} | {r['input']} | {sizes} | {'ok' if pruned else 'fails'} | "
                     f"{exact} | {same} | {parity} | {seconds} | {cause} |")
    return "\n".join(lines) + "\n"


def _m(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _yes(flag: bool | None) -> str:
    return "yes" if flag else "NO"


def _short(cause: str, limit: int = 200) -> str:
    cause = cause.replace("|", "\\|")
    return cause if len(cause) <= limit else cause[:limit - 1] + "…"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("runs/timm-zoo"))
    parser.add_argument("--only", default="", help="comma-separated subset of the zoo (or any timm names)")
    parser.add_argument("--max-rss-gib", type=float, default=8.0)
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per model, all commands together")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each command (OMP_NUM_THREADS): on a "
                        "shared machine one thread is several times faster than two fighting for cores")
    parser.add_argument("--reload-check", nargs=2, help=argparse.SUPPRESS)  # the child process: one JSON line
    args = parser.parse_args()
    if args.reload_check:
        print(json.dumps(reload_check(*args.reload_check)), flush=True)
        return
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the commands' environment (run_cli passes os.environ)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    known = {name: (size, kwargs, options) for name, _, size, kwargs, options in ZOO}
    names = [n for n in args.only.split(",") if n] or list(known)
    results = args.out / "timm_zoo.json"
    done = {r["model"]: r for r in json.loads(results.read_text())} if results.exists() else {}  # rerun: replaced
    start = time.monotonic()
    for name in names:
        size, kwargs, options = known.get(name, (32, {}, []))
        done[name] = sweep_one(name, size, kwargs, options, args)
        print(json.dumps(done[name]), flush=True)
        rows = sorted(done.values(), key=lambda r: list(known).index(r["model"]) if r["model"] in known else len(known))
        results.write_text(json.dumps(rows, indent=2))
        (args.out / "timm_zoo.md").write_text(table(rows))
    print(table(rows) + f"\ntotal {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
