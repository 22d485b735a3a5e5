"""Does the demo hold its accuracy budget for every seed? (issue #12)

Runs the demo's recipe (``pipeline.demo.demo_recipe``, without the 224x224 bench: accuracy and
MACs only) once per seed in a temporary directory and prints, per seed, the test top-1 of the
trained original, the pruned model and the int8 artifact, the drop against the budget and the
MAC reduction. Exits 1 when a seed misses the budget. ``--run-dir DIR`` keeps each seed's run in
``DIR/seed<N>`` so a rerun with another recipe reuses every unchanged stage (the trained model).

    OMP_NUM_THREADS=2 .venv/bin/python -m scripts.demo_seeds            # seeds 0 1 2, the demo's settings
    .venv/bin/python -m scripts.demo_seeds --seeds 0 --epochs 2 --finetune-epochs 1
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from pipeline.demo import BUDGET_POINTS, accuracy_summary, demo_recipe
from pipeline.run import run_recipe


def one_seed(seed: int, epochs: int, finetune_epochs: int, run_dir: Path | None = None) -> dict:
    recipe = demo_recipe(epochs=epochs, finetune_epochs=finetune_epochs, bench_seconds=None, seed=seed)
    start = time.perf_counter()
    kept = contextlib.nullcontext(str(run_dir / f"seed{seed}")) if run_dir else None
    with kept or tempfile.TemporaryDirectory(prefix=f"deepslim-demo-seed{seed}-") as where:
        summary = accuracy_summary(run_recipe(recipe, where, progress=False))
    return {**summary, "seed": seed, "seconds": time.perf_counter() - start}


def line(s: dict) -> str:
    verdict = "within" if s["within_budget"] else "OVER"
    return (f"seed {s['seed']}: original {s['original_top1']:.4f}, pruned {s['pruned_top1']:.4f}, "
            f"int8 {s['final_top1']:.4f}; drop {s['top1_loss_points']:+.2f} pt ({verdict} the "
            f"{BUDGET_POINTS:g}-point budget); {s['mac_reduction']:.2f}x fewer MACs; {s['seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--run-dir", type=Path, default=None, help="keep each seed's run in DIR/seed<N>")
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        rows.append(one_seed(seed, args.epochs, args.finetune_epochs, args.run_dir))
        print(line(rows[-1]), flush=True)
    worst = max(r["top1_loss_points"] for r in rows)
    print(f"worst drop {worst:+.2f} pt over seeds {', '.join(map(str, args.seeds))} "
          f"(budget {BUDGET_POINTS:g}); MACs {min(r['mac_reduction'] for r in rows):.2f}x to "
          f"{max(r['mac_reduction'] for r in rows):.2f}x")
    return 0 if all(r["within_budget"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
