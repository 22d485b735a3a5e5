"""Prune every model kind of issue #13 and print what it cost: the test split's primary metric before and after
(ratio 0.5 or --speedup, a short fine-tune), the MAC and parameter reductions, and the head's width.

    .venv/bin/python scripts/prune_kinds.py [--finetune-epochs 3] [--speedup 2] [--recover kd]

The models are the test suite's tiny kinds (``tests/any_kinds.py``: tabular MLP on wine, regression MLP on
diabetes, multilabel MLP, two-input dict-output model, 1x28x56 image, Conv1d signal), trained here first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--speedup", type=float, default=None)
    parser.add_argument("--recover", default="finetune", choices=["finetune", "kd"])
    args = parser.parse_args()
    from any_kinds import KINDS, train_kind
    from compress.prune import PruneConfig, prune
    from deepslim.models import load_model
    from deepslim.trust import allow_code
    target = {"speedup": args.speedup} if args.speedup else {"ratio": 0.5}
    cfg = PruneConfig(**target, round_to=None, finetune_epochs=args.finetune_epochs, recover=args.recover)
    print("| kind | primary | test before | test after | drop | MACs | params | head | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, allow_code(trust_code=True):
        for name, kind in KINDS.items():
            bundle = load_model(train_kind(name, Path(tmp)))
            start = time.perf_counter()
            pruned = prune(bundle, cfg, dataset=kind.dataset, progress=False)
            m = pruned.lineage[-1].metrics
            p = m["primary"]
            head = next(iter(m["ignored"]))
            layer = dict(pruned.model.named_modules())[head]
            width = getattr(layer, "out_features", getattr(layer, "out_channels", None))
            print(f"| {name} | {p} | {m['test_before'][p]:.4f} | {m['test'][p]:.4f} | {m['drop']:+.2f} "
                  f"{'pt' if m['drop_unit'] == 'points' else '%'} | {m['mac_reduction']:.2f}x | "
                  f"{m['params_before'] / m['params_after']:.2f}x | {head} ({width}) | "
                  f"{time.perf_counter() - start:.1f} |", flush=True)


if __name__ == "__main__":
    main()
