"""BERT int8 latency and accuracy: deepslim's paths against the ecosystem's own, in one interleaved run.

    .venv/bin/python -m scripts.transformer_int8 [--part latency|accuracy|all] [--rounds 9] [--duration 15]
        [--out runs/transformer-int8] [--results benchmarks/results] [--reuse] [--quick]

Latency: a BERT-base-sized encoder (12 layers, 768 hidden, 12 heads, FFN 3072, vocab 30522; random weights)
built by deepslim from a config (``hf:bert``), at sequence 128, batch 1, 2 threads: fp32 on torch, ONNX
Runtime and OpenVINO (export.to_onnx, export.to_openvino), int8 ONNX Runtime dynamic and int8 OpenVINO (NNCF
PTQ) by compress.quantize, the 50% heads + FFN pruned model fp32 and int8 (compress.prune), and on the same
model optimum's ONNX export + ORTQuantizer (AutoQuantizationConfig.avx512_vnni, dynamic) and optimum-intel's
OpenVINO export + OVQuantizer (full int8, the same calibration texts). Every artifact is timed by the
benchmark runners, rounds interleaved (order rotated each round) so drift hits all alike; only ratios
measured in this run are compared.

Accuracy: a small BERT (4 layers, 256 hidden) fine-tuned by deepslim on the synthetic text task of
tests/data/text_models.py (3000 texts), then test top-1 of fp32, deepslim int8 and optimum int8 on both
runtimes, scored by the benchmark's accuracy harness.

Writes transformer_int8.md and .json into --out, and with --results (the default for a full run) beside
the other results. Goals are printed as PASS/FAIL lines, never asserted, each ratio with its range round by
round. --reuse times again the latency artifacts an earlier run left in --out (a second run on a busy
machine) and reuses the fine-tuned accuracy model; --quick: tiny models (the smoke test).
The latency batch is random token ids with every position attended (mask of ones) at exactly --seq-len.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: import the repository's packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.transformer_int8_paths import (ROOT, Size, Variant, deepslim_variants, graph_facts, new_bert,
                                               offline_env, optimum_variants, pruned_variants, text_fixtures)

LATENCY = {"full": Size(12, 768, 12, 3072, 30522), "quick": Size(2, 64, 4, 128, 1000)}
# size, texts, epochs, learning rate (AdamW)
ACCURACY = {"full": (Size(4, 256, 4, 1024), 3000, 6, 5e-4), "quick": (Size(2, 32, 4, 64), 600, 4, 2e-3)}
LATENCY_TEXTS = 400  # calibration and the quantize stage's own val/test check (short texts: seconds)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- latency -----------------------------------------------------------------------------------------

def sequence_inputs(signature, batch: int, length: int, vocab: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """One batch at ``length`` tokens, every position attended: random ids, mask of ones, segment 0."""
    rng = np.random.default_rng(seed)
    out = []
    for spec in signature.inputs:
        if spec.name == "input_ids":
            out.append(rng.integers(5, vocab, size=(batch, length), dtype=np.int64))
        elif spec.kind.value == "mask":
            out.append(np.ones((batch, length), np.int64))
        else:
            out.append(np.zeros((batch, length), np.int64))
    return tuple(out)


def time_runners(runners, x, args) -> list:
    """Per runner: benchmarks.latency.measure's statistics (warm-up, interleaved rounds, order rotated each round)
    on the one batch ``x``, every runner prepared for (sequence, batch) as ``deepslim bench --seq-len`` does."""
    from benchmarks.latency import LatencyConfig, measure
    done = iter(range(1, len(runners) * args.rounds + 1))

    def tick(_msg: str) -> None:
        if (n := next(done)) % len(runners) == 0:
            say(f"round {n // len(runners)}/{args.rounds} done (load average {os.getloadavg()[0]:.2f})")
    cfg = LatencyConfig(batches=(args.batch,), sequences=(args.seq_len,), rounds=args.rounds, duration=args.duration,
                        warmup=args.warmup)
    return [next(iter(s.values())) for s in measure(runners, cfg, tick, inputs=lambda _runner, _point: x)]


def latency_part(args, out: Path) -> dict[str, Any]:
    size = LATENCY["quick" if args.quick else "full"]
    built = out / "latency_artifacts.json"
    if args.reuse and built.is_file():
        say(f"reusing the artifacts listed in {built} (--reuse): timing only")
        saved = json.loads(built.read_text())
        variants = [Variant(**{**v, "path": Path(v["path"]) if v["path"] else None}) for v in saved["variants"]]
        params = saved["params"]
    else:
        variants, params = build_latency_artifacts(size, out, args)
        from deepslim.fileio import atomic_path
        with atomic_path(built) as tmp:
            tmp.write_text(json.dumps({"params": params, "variants": [
                {**asdict(v), "path": str(v.path) if v.path else None} for v in variants]}, indent=1))
    from benchmarks.runners import read_meta
    signature = read_meta(next(v.path for v in variants if v.key == "deepslim/ort")).signature
    x = sequence_inputs(signature, args.batch, args.seq_len, size.vocab)
    return {"model": asdict(size), "params": params, "rows": measure(variants, x, args)}


def build_latency_artifacts(size: Size, out: Path, args) -> tuple[list[Variant], int]:
    """The BERT-base-sized model and every artifact timed: deepslim's, pruned, optimum's."""
    from deepslim.data import calibration_inputs
    from deepslim.models import save_model
    texts, tok_dir = text_fixtures(out, LATENCY_TEXTS, seed=0)
    say(f"latency model: BERT {size.layers} layers, {size.hidden} hidden, {size.heads} heads, FFN "
        f"{size.intermediate}, vocab {size.vocab} (random weights)")
    bundle = new_bert(size, tok_dir, max_length=args.seq_len)
    model_dir = save_model(bundle, out / "bert", force=True)
    calibration = calibration_inputs(str(texts), bundle.signature, None, seed=0)
    variants = deepslim_variants(bundle, "deepslim", out, texts, len(calibration[0]), say)
    try:
        variants += pruned_variants(bundle, out, texts, len(calibration[0]), say)
    except Exception as exc:  # another stage's failure is a row of the table, not the end of the benchmark
        say(f"pruned: failed: {type(exc).__name__}: {exc}")
        variants.append(Variant("pruned/torch", "deepslim", "torch", "fp32", None, "deepslim/torch", "compress.prune",
                                f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
    variants += optimum_variants(model_dir, _meta_of(bundle), out, calibration, say)
    annotate(variants)
    return variants, sum(p.numel() for p in bundle.model.parameters())


def annotate(variants: list[Variant]) -> None:
    for v in variants:
        if v.status == "ok" and v.precision == "int8":
            v.how += f"; {graph_facts(v.path)}"


def _meta_of(bundle):
    from deepslim.artifact import ArtifactMeta
    return ArtifactMeta(bundle.signature, bundle.task, [], {})


def measure(variants: list[Variant], x, args) -> list[dict[str, Any]]:
    from benchmarks.runners import RunnerOptions, open_runner
    options = RunnerOptions(threads=args.threads)
    ready = [v for v in variants if v.status == "ok"]
    runners = [open_runner(v.path, v.runtime, options) for v in ready]
    say(f"timing {len(runners)} artifacts: {args.rounds} interleaved rounds, {args.duration:g} s each in all, "
        f"batch {args.batch}, sequence {args.seq_len}, {args.threads} threads")
    load_before = os.getloadavg()
    stats = dict(zip((v.key for v in ready), time_runners(runners, x, args)))
    details = {v.key: r.details for v, r in zip(ready, runners)}
    rows = []
    for v in variants:
        row = {**asdict(v), "path": str(v.path) if v.path else None}
        s = stats.get(v.key)
        if s is not None:
            row.update(p50_ms=s.p50_ms, p90_ms=s.p90_ms, spread_ms=list(s.spread_ms), iterations=s.iterations,
                       round_p50_ms=list(s.round_p50_ms), runner=details[v.key])
            base = stats.get(v.base) if v.base else None
            if base is not None:
                row["ratio"] = s.p50_ms / base.p50_ms
                row["within_noise"] = bool(s.spread_ms[0] <= base.spread_ms[1] and base.spread_ms[0] <= s.spread_ms[1])
        rows.append(row)
    rows[0]["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
    return rows


# --- accuracy ----------------------------------------------------------------------------------------

def accuracy_part(args, out: Path) -> dict[str, Any]:
    """Fine-tune a small BERT, quantize it both ways on both runtimes, and score every artifact's test top-1."""
    from deepslim.data import calibration_inputs
    size, count, epochs, lr = ACCURACY["quick" if args.quick else "full"]
    work = out / "accuracy"
    work.mkdir(parents=True, exist_ok=True)
    texts, tok_dir = text_fixtures(work, count, seed=1)
    bundle, model_dir = fine_tuned(size, texts, tok_dir, work, epochs, lr, args.seq_len)
    calibration = calibration_inputs(str(texts), bundle.signature, None, seed=0)
    variants = deepslim_variants(bundle, "deepslim", work, texts, len(calibration[0]), say)
    variants += optimum_variants(model_dir, _meta_of(bundle), work, calibration, say)
    pruned, prune_how = pruned_with_kd(bundle, texts, epochs, lr)
    rows = deepslim_variants(pruned, "pruned", work, texts, len(calibration[0]), say)
    rows[0].how = prune_how
    for row, base in zip(rows, ("deepslim/torch", "deepslim/ort", "deepslim/ov")):
        row.base = base
    variants += rows
    annotate(variants)
    return {"model": asdict(size), "texts": count, "epochs": epochs, "lr": lr, "rows": score_all(variants, texts, args)}


def pruned_with_kd(bundle, texts: Path, epochs: int, lr: float):
    """The fine-tuned model with 50% of its heads and FFN width removed, recovered by distilling from itself
    (compress.prune --recover kd, as many epochs as it was fine-tuned): the prune stage of the per-stage drop."""
    from compress.prune import PruneConfig, prune
    say(f"pruned: compress.prune --head-ratio 0.5 --ratio 0.5 --recover kd --finetune-epochs {epochs}")
    cfg = PruneConfig(ratio=0.5, head_ratio=0.5, recover="kd", finetune_epochs=epochs, finetune_lr=lr,
                      finetune_optimizer="adamw")
    pruned = prune(bundle, cfg, dataset=str(texts), progress=True)
    reduction = pruned.lineage[-1].metrics["mac_reduction"]
    return pruned, (f"compress.prune --head-ratio 0.5 --ratio 0.5 --recover kd --finetune-epochs {epochs}: "
                    f"{reduction:.2f}x fewer MACs")


def fine_tuned(size: Size, texts: Path, tok_dir: Path, work: Path, epochs: int, lr: float, max_length: int):
    """The small BERT fine-tuned on the texts (reused from ``work/bert`` when an earlier run left it)."""
    from deepslim import TrainConfig, train
    from deepslim.models import load_model, save_model
    model_dir = work / f"bert-{size.layers}x{size.hidden}-{texts.stem}-e{epochs}-lr{lr:.0e}"  # no dot: a dir
    if (model_dir / "deepslim.json").is_file():
        say(f"accuracy model: reusing {model_dir}")
        return load_model(model_dir), model_dir
    say(f"accuracy model: BERT {size.layers} layers, {size.hidden} hidden, fine-tuned {epochs} epochs on "
        f"{texts.name}")
    bundle = new_bert(size, tok_dir, max_length=max_length)
    config = TrainConfig(epochs=epochs, optimizer="adamw", lr=lr, batch_size=32, seed=0)
    bundle = train(bundle, str(texts), config, progress=True)
    metrics = bundle.lineage[-1].metrics
    say(f"fine-tuned: {', '.join(f'{k} {v:.4f}' for k, v in metrics.items() if isinstance(v, float))}")
    return bundle, save_model(bundle, model_dir, force=True)


def score_all(variants: list[Variant], texts: Path, args) -> list[dict[str, Any]]:
    from benchmarks.accuracy import predict, score
    from benchmarks.runners import RunnerOptions, open_runner
    rows, reference = [], None
    for v in variants:
        row = {**asdict(v), "path": str(v.path) if v.path else None}
        if v.status == "ok":
            runner = open_runner(v.path, v.runtime, RunnerOptions(threads=args.threads))
            outputs, targets = predict(runner, str(texts), split="test")
            metrics = score(outputs, targets, task=runner.meta.task, reference=reference)
            reference = outputs if reference is None else reference
            row.update(top1=metrics["top1"], agreement=metrics.get("agreement"), samples=int(len(targets)))
            say(f"accuracy {v.key}: test top-1 {metrics['top1']:.4f}")
        rows.append(row)
    return rows


# --- report ------------------------------------------------------------------------------------------

INT8_GOAL, PRUNE_GOAL, VS_OPTIMUM_GOAL = 0.5, 0.6, 1.0


def label(row: dict[str, Any]) -> str:
    pruned = " 50% pruned" if row["key"].startswith("pruned/") else ""
    kind = {"onnxruntime": " dynamic", "openvino": " static"}.get(row["runtime"], "") if row["precision"] == "int8" \
        else ""
    return f"{row['pipeline']}{pruned} {row['precision']}{kind}"


def table(results: dict[str, Any]) -> str:
    latency = {r["key"]: r for r in results.get("latency", {}).get("rows", [])}
    accuracy = {r["key"]: r for r in results.get("accuracy", {}).get("rows", [])}
    keys = list(latency) or list(accuracy)
    lines = ["| variant | runtime | precision | p50 ms | p90 ms | ratio vs fp32 (same runtime) | test top-1 (small BERT) "
             "| how |", "|---|---|---|---|---|---|---|---|"]
    for key in keys + [k for k in accuracy if k not in latency and latency]:
        row = latency.get(key) or accuracy[key]
        acc = accuracy.get(key, {}).get("top1")
        if "p50_ms" in row:
            base = latency.get(row["base"] or "")
            ratio = (f"{row['ratio']:.3f}{' ~' if row.get('within_noise') else ''} (vs {label(base)})"
                     if "ratio" in row and base else "1 (baseline)" if row["precision"] == "fp32" else "")
            times = f"{row['p50_ms']:.2f} | {row['p90_ms']:.2f} | {ratio}"
        else:
            times = f"{row['status'] if row['status'] != 'ok' else 'not timed'} | | "
        lines.append(f"| {label(row)} | {row['runtime']} | {row['precision']} | {times} | "
                     f"{'' if acc is None else f'{acc:.4f}'} | {row['how']} |")
    return "\n".join(lines)


def goals(results: dict[str, Any]) -> list[str]:
    latency = {r["key"]: r for r in results.get("latency", {}).get("rows", [])}
    accuracy = {r["key"]: r for r in results.get("accuracy", {}).get("rows", [])}
    vnni = results["environment"]["cpu"]["vnni"]
    out = []

    def ratio_goal(key: str, limit: float, what: str) -> None:
        row = latency.get(key)
        if row is None or "ratio" not in row:
            status = row["status"] if row is not None else "not run"
            out.append(f"PENDING {what}: {status}")
            return
        verdict = "PASS" if row["ratio"] <= limit else "FAIL"
        noise = " (inside the noise)" if row.get("within_noise") else ""
        rounds = per_round(row, latency.get(row["base"]))
        out.append(f"{verdict} {what}: {row['ratio']:.3f}x{rounds} (goal <= {limit}x){noise}")

    cpu = "this CPU has VNNI" if vnni else "this CPU has no VNNI: the goal assumes VNNI"
    for prefix in ("deepslim", "pruned", "optimum"):
        for rt, name in (("ort", "ONNX Runtime"), ("ov", "OpenVINO")):
            ratio_goal(f"{prefix}/{rt}-int8", INT8_GOAL, f"{prefix} int8 vs its fp32 on {name} ({cpu})")
    for rt, name in (("torch", "torch"), ("ort", "ONNX Runtime"), ("ov", "OpenVINO")):
        ratio_goal(f"pruned/{rt}", PRUNE_GOAL, f"50% pruned fp32 vs unpruned fp32 on {name}")
    for rt, name in (("ort", "ONNX Runtime"), ("ov", "OpenVINO")):
        out.append(vs_optimum(latency.get(f"deepslim/{rt}-int8"), latency.get(f"optimum/{rt}-int8"),
                              accuracy.get(f"deepslim/{rt}-int8"), accuracy.get(f"optimum/{rt}-int8"), name))
    return out


def vs_optimum(ours, theirs, our_acc, their_acc, name: str) -> str:
    what = f"deepslim int8 p50 vs optimum's on {name}"
    if not ours or not theirs or "p50_ms" not in ours or "p50_ms" not in theirs:
        return f"PENDING {what}: {(theirs or {}).get('status', 'not measured')}"
    ratio = ours["p50_ms"] / theirs["p50_ms"]
    fast, rounds = ratio <= VS_OPTIMUM_GOAL, per_round(ours, theirs)
    if our_acc and their_acc and "top1" in our_acc and "top1" in their_acc:
        good = our_acc["top1"] >= their_acc["top1"]
        acc = f"top-1 {our_acc['top1']:.4f} vs {their_acc['top1']:.4f}"
        return f"{'PASS' if fast and good else 'FAIL'} {what}: {ratio:.3f}x{rounds} (goal <= 1.0x), {acc} (goal >=)"
    return (f"{'PASS' if fast else 'FAIL'} {what}: {ratio:.3f}x{rounds} (goal <= 1.0x); accuracy not measured in "
            "this run")


def per_round(row: dict[str, Any], base: dict[str, Any] | None) -> str:
    """The ratio round by round (the two timed in the same interleaved round): its min..max, or nothing."""
    if not base or not row.get("round_p50_ms") or not base.get("round_p50_ms"):
        return ""
    ratios = [a / b for a, b in zip(row["round_p50_ms"], base["round_p50_ms"])]
    return f", per round {min(ratios):.2f}..{max(ratios):.2f}"


def environment(args) -> dict[str, Any]:
    import importlib.metadata

    from benchmarks.env import environment as base
    env = base(args.threads)
    for name in ("transformers", "optimum", "optimum-onnx", "optimum-intel", "nncf"):
        try:
            env["versions"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    env["affinity"] = sorted(os.sched_getaffinity(0))
    env["load_average_start"] = list(os.getloadavg())
    return env


def render(results: dict[str, Any]) -> str:
    env, cfg = results["environment"], results["config"]
    lat = results.get("latency", {})
    head = [f"# BERT int8: deepslim vs optimum / optimum-intel ({results['created']})", "",
            f"CPU: {env['cpu']['model']}, flags {' '.join(env['cpu']['flags'])}, VNNI {env['cpu']['vnni']}; "
            f"{cfg['threads']} threads (intra-op, cores {env['affinity']}); batch {cfg['batch']}, sequence "
            f"{cfg['seq_len']}; {cfg['rounds']} interleaved rounds, {cfg['duration']:g} s per artifact.",
            f"Load average (1, 5, 15 min) at start: {', '.join(f'{v:.2f}' for v in env['load_average_start'])}"]
    if lat:
        m = lat["model"]
        loads = lat["rows"][0].get("load_average", {})
        head.append(f"Latency model: BERT {m['layers']} layers, {m['hidden']} hidden, {m['heads']} heads, FFN "
                    f"{m['intermediate']}, vocab {m['vocab']}, {lat['params'] / 1e6:.1f} M parameters, random weights. "
                    f"Load average during timing: {loads.get('before', [0])[0]:.2f} -> {loads.get('after', [0])[0]:.2f}")
    if results.get("accuracy"):
        a = results["accuracy"]
        head.append(f"Accuracy model: BERT {a['model']['layers']} layers, {a['model']['hidden']} hidden, fine-tuned "
                    f"{a['epochs']} epochs on {a['texts']} synthetic texts; test split top-1.")
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    stages = stage_table(results)
    return "\n".join([*head, "", table(results), "", *([stages, ""] if stages else []), "```", *results["goals"],
                      "```", "", f"Versions: {versions}"])


def stage_table(results: dict[str, Any]) -> str:
    """The small BERT's test top-1 after each stage, and its drop in points against the fine-tuned fp32 model."""
    rows = [r for r in results.get("accuracy", {}).get("rows", []) if r.get("top1") is not None]
    base = next((r["top1"] for r in rows if r["key"] == "deepslim/torch"), None)
    if base is None:
        return ""
    lines = ["| stage (small BERT, test split) | runtime | test top-1 | drop vs fine-tuned fp32 (points) |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {label(r)} | {r['runtime']} | {r['top1']:.4f} | {100 * (base - r['top1']):+.1f} |")
    return "\n".join(lines)


def write(results: dict[str, Any], text: str, directory: Path) -> None:
    from deepslim.fileio import atomic_path
    directory.mkdir(parents=True, exist_ok=True)
    for name, body in (("transformer_int8.json", json.dumps(results, indent=1, default=str)),
                       ("transformer_int8.md", text + "\n")):
        with atomic_path(directory / name) as tmp:
            tmp.write_text(body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("latency", "accuracy", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="tiny models and short timing (the smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 9, quick 2)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per artifact over all rounds "
                        "(default 15, quick 0.4)")
    parser.add_argument("--warmup", type=int, default=None, help="runs per artifact before timing (default 5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "transformer-int8")
    parser.add_argument("--reuse", action="store_true", help="latency: time the artifacts an earlier run built in "
                        "--out again (a second timing run) instead of building them")
    parser.add_argument("--results", type=Path, default=None, help="also write the results here (default: "
                        "benchmarks/results for a full run, none with --quick)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 9)
    args.duration = args.duration or (0.4 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    if args.results is None and not args.quick:
        args.results = ROOT / "benchmarks" / "results"
    offline_env()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                               "environment": environment(args),
                               "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    say(f"load average {os.getloadavg()[0]:.2f}; CPU {results['environment']['cpu']['model']}, VNNI "
        f"{results['environment']['cpu']['vnni']}")
    if args.part in ("accuracy", "all"):
        results["accuracy"] = accuracy_part(args, args.out)
    if args.part in ("latency", "all"):
        results["latency"] = latency_part(args, args.out)
    results["goals"] = goals(results)
    text = render(results)
    print(text, flush=True)
    for directory in {args.out, *([args.results] if args.results else [])}:
        write(results, text, directory)


if __name__ == "__main__":
    main()
