"""Foundation acceptance numbers: training time and test top-1 on digits (README table).

    python -m scripts.train_digits

Trains the built-in CNN (16x16) and resnet18 (32x32) with deepslim's defaults on this
machine's CPU threads and prints wall time and test metrics; the goals are >= 0.95 in
under 30 s for small_cnn and >= 0.97 in under 3 minutes for resnet18.
"""

from __future__ import annotations

import platform
import time

import torch

from deepslim.config import TrainConfig
from deepslim.evaluation import evaluate
from deepslim.training import model_for_dataset, train

RUNS = (("small_cnn", 16, 10, 30.0, 0.95), ("resnet18", 32, 10, 180.0, 0.97))


def main() -> None:
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    print(f"{'model':<10} {'input':>5} {'epochs':>6} {'train s':>8} {'goal s':>7} {'top-1':>6} {'goal':>5} "
          f"{'digits-c top-1':>14}")
    for arch, size, epochs, goal_s, goal_acc in RUNS:
        torch.manual_seed(0)
        bundle = model_for_dataset(arch, "digits", input_size=size)
        start = time.perf_counter()
        trained = train(bundle, "digits", TrainConfig(epochs=epochs), progress=False)
        seconds = time.perf_counter() - start
        top1 = trained.lineage[-1].metrics["test"]["top1"]
        corrupted = evaluate(trained, "digits-c", severity=3).metrics["top1"]
        print(f"{arch:<10} {size:>5} {epochs:>6} {seconds:>8.1f} {goal_s:>7.0f} {top1:>6.4f} {goal_acc:>5.2f} "
              f"{corrupted:>14.4f}")


if __name__ == "__main__":
    main()
