"""Does distillation beat plain training? The README's table, reproduced through the CLI.

    .venv/bin/python -m benchmarks.distill_digits [--epochs 3] [--seeds 0,1,2] [--out runs/bench-distill]

A teacher (small_cnn, width 32, 16x16) is trained once. Then, for every seed, the same
student (small_cnn, width 8: under 7% of the teacher's MACs) starts from the same seeded
initialisation and trains for the same epochs twice: plain (`deepslim train`, cross-entropy)
and distilled (`deepslim compress distill`). Test top-1 of both goes into one table with the
mean, the spread (sample standard deviation) and the per-seed difference.

It drives the CLI in subprocesses, as a user would, so it stays on the benchmarks floor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from benchmarks.drive import deepslim


def top1(path: Path) -> float:
    from deepslim.bundle import read_header
    return float(read_header(path).lineage[-1].metrics["test"]["top1"])


def macs(path: Path) -> int:
    from deepslim.models import load_model
    from deepslim.profile import count_macs_params
    bundle = load_model(path)
    return count_macs_params(bundle.model, bundle.input_spec)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-distill"))
    parser.add_argument("--teacher-width", type=int, default=32)
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--student-width", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    teacher = out / "teacher.safetensors"
    student_kwargs = json.dumps({"width": args.student_width})
    if not teacher.exists():
        deepslim("train", "--arch", "small_cnn", "--arch-kwargs", json.dumps({"width": args.teacher_width}),
            "--input-size", "16", "--epochs", str(args.teacher_epochs), "--seed", "0", "-o", str(teacher))
    rows = []
    for seed in seeds:
        plain, kd = out / f"plain-{seed}.safetensors", out / f"kd-{seed}.safetensors"
        common = ["--arch-kwargs", student_kwargs, "--epochs", str(args.epochs), "--seed", str(seed), "--force"]
        deepslim("train", "--arch", "small_cnn", "--input-size", "16", *common, "-o", str(plain))
        deepslim("compress", "distill", "--teacher", str(teacher), "--student", "small_cnn", "--temperature",
            str(args.temperature), "--alpha", str(args.alpha), *common, "-o", str(kd))
        rows.append({"seed": seed, "plain": top1(plain), "distill": top1(kd)})
        print(f"seed {seed}: plain {rows[-1]['plain']:.4f}  distill {rows[-1]['distill']:.4f}", flush=True)
    result = summarize(rows, teacher_top1=top1(teacher), teacher_macs=macs(teacher),
                       student_macs=macs(out / f"plain-{seeds[0]}.safetensors"), args=vars(args),
                       seconds=time.perf_counter() - start)
    (out / "distill.json").write_text(json.dumps(result, indent=2, default=str))
    table = markdown(result)
    (out / "distill.md").write_text(table + "\n")
    print(table)


def summarize(rows: list[dict], **extra) -> dict:
    def stats(key: str) -> dict:
        values = [r[key] for r in rows]
        return {"mean": statistics.mean(values), "spread": statistics.stdev(values) if len(values) > 1 else 0.0}
    wins = sum(r["distill"] > r["plain"] for r in rows)
    return {"rows": rows, "plain": stats("plain"), "distill": stats("distill"), "wins": wins, **extra}


def markdown(result: dict) -> str:
    a = result["args"]
    ratio = result["student_macs"] / result["teacher_macs"]
    lines = [f"teacher small_cnn width {a['teacher_width']}: test top-1 {result['teacher_top1']:.4f}, "
             f"{result['teacher_macs'] / 1e6:.2f}M MACs; student small_cnn width {a['student_width']}: "
             f"{result['student_macs'] / 1e6:.2f}M MACs ({100 * ratio:.1f}% of the teacher); {a['epochs']} epochs, "
             f"T={a['temperature']}, alpha={a['alpha']}",
             "", "| seed | plain top-1 | distill top-1 | difference |", "|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['seed']} | {r['plain']:.4f} | {r['distill']:.4f} | {100 * (r['distill'] - r['plain']):+.2f} pt |")
    p, d = result["plain"], result["distill"]
    lines.append(f"| mean ± spread | {p['mean']:.4f} ± {p['spread']:.4f} | {d['mean']:.4f} ± {d['spread']:.4f} | "
                 f"{100 * (d['mean'] - p['mean']):+.2f} pt ({result['wins']}/{len(result['rows'])} seeds) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
