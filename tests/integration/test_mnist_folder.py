"""Issue #12's bar on real data nobody here made: MNIST as PNG folders, with no --dataset after train.

Slow (resnet18 trained 5 epochs on 4,000 images, pruned 2x with KD, int8 OpenVINO, benched):
run with ``pytest -m slow tests/integration/test_mnist_folder.py`` or ``python -m benchmarks.mnist_e2e``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_mnist_folder_base_is_97_and_the_final_int8_is_within_a_point(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.mnist_e2e", "--work", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASS" in done.stdout and "report names the dataset: {'report.md': True, 'report.html': True}" in done.stdout
    lineage = json.loads(subprocess.run([sys.executable, str(ROOT / "cli.py"), "info", str(tmp_path / "pruned.safetensors"),
                                         "--json"], capture_output=True, text=True, check=True).stdout)["lineage"]
    assert [r["stage"] for r in lineage] == ["train", "prune"]
    assert all(r["config"]["dataset"] == str((tmp_path / "mnist").resolve()) for r in lineage)
    assert "val/ split 50/50" in lineage[0]["config"]["data"]["split"]
