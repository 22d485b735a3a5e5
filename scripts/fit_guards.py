"""Before/after numbers of the train loop's guards (issue #12), on the built-in digits data.

1. mobilenet_v3_small (BatchNorm momentum 0.01) at 32 px, 3 epochs: val top-1 per epoch with
   the old loop (no BatchNorm recalibration) and with the guard.
2. Distilling into an already-trained student and fine-tuning a trained bundle: val/test top-1
   at the start, with the old from-scratch learning rate (0.05 with a warm-up epoch) and with the
   fine-tuning default.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/fit_guards.py
"""

from __future__ import annotations

import copy
import time

from compress.distill import DistillConfig, distill
from deepslim.batchnorm import BatchNormGuard
from deepslim.config import TrainConfig
from deepslim.data import open_dataset
from deepslim.training import fit, model_for_dataset, train


def batchnorm_collapse(epochs: int = 3) -> None:
    src = open_dataset("digits")
    for label in ("old loop", "with the guard"):
        bundle = model_for_dataset("mobilenet_v3_small", "digits", input_size=32, seed=0)
        spec = bundle.input_spec
        start = time.perf_counter()
        guard = BatchNormGuard.before_validation
        if label == "old loop":
            BatchNormGuard.before_validation = lambda self, row, epoch: None
        try:
            result = fit(bundle.model, src.split("train", spec, augment="light"), src.split("val", spec),
                         TrainConfig(epochs=epochs, seed=0, device="cpu"), progress=False,
                         bn_data=src.split("train", spec, augment="none"))
        finally:
            BatchNormGuard.before_validation = guard
        vals = ", ".join(f"{row['val_top1']:.4f}" for row in result.history)
        losses = ", ".join(f"{row['train_loss']:.2f}" for row in result.history)
        print(f"mobilenet_v3_small 32px {label:>15}: train loss {losses}; val top-1 {vals} "
              f"({time.perf_counter() - start:.0f} s)")


def _line(label: str, record) -> str:
    m = record.metrics
    vals = ", ".join(f"{row['val_top1']:.4f}" for row in m["history"])
    return (f"{label:>34}: lr {record.config.get('lr', record.config.get('train', {}).get('lr')):.3g}; "
            f"val start {m['start_val_top1']:.4f}, epochs {vals}; kept start {m['kept_start']}; "
            f"test {m['test']['top1']:.4f}")


def trained_start(epochs: int = 3) -> None:
    base = train(model_for_dataset("small_cnn", "digits", input_size=16, arch_kwargs={"width": 16}, seed=0),
                 "digits", TrainConfig(epochs=10, seed=0), progress=False)
    print(f"{'base small_cnn 16px, 10 epochs':>34}: test {base.lineage[-1].metrics['test']['top1']:.4f}")
    old = TrainConfig(epochs=epochs, seed=0, lr=0.05, warmup_epochs=1)  # what the default was before
    for label, cfg in (("train again, old lr", old), ("train again, fine-tune default", TrainConfig(epochs=epochs))):
        print(_line(label, train(copy.deepcopy(base), "digits", cfg, progress=False).lineage[-1]))
    for label, cfg in (("distill into it, old lr", old), ("distill into it, fine-tune default",
                                                           TrainConfig(epochs=epochs, seed=0))):
        out = distill(copy.deepcopy(base), copy.deepcopy(base), "digits", DistillConfig(train=cfg), progress=False)
        print(_line(label, out.lineage[-1]))


if __name__ == "__main__":
    batchnorm_collapse()
    trained_start()
