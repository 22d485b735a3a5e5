"""`deepslim run` reruns a stage when what decides its result changes, and only then.

The run key covers user code by content (a `model.arch: net.py:build` file, a `dataset: data.py:make`
file), a dataset directory by the names, sizes and mtimes of its files, and the environment facts
that decide a stage's outcome (which backends are installed, a GPU for TensorRT).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from cli_contract import DATA_PY, ok

# 1x8x8: a file architecture takes the data's channels (1 for digits)
NET_PY = """\
import torch.nn as nn


def build(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(8 * 8, 16), nn.ReLU(), nn.Linear(16, num_classes))
"""


def _recipe(tmp_path: Path, dataset: str, model: str, stages: str = "[{stage: train, epochs: 1}]") -> Path:
    recipe = tmp_path / "keys.yaml"
    recipe.write_text(f"name: keys\ndataset: {dataset}\nmodel: {model}\nstages: {stages}\nbench: null\n")
    return recipe


def _run(recipe: Path, run_dir: Path) -> dict[str, str]:
    """Runs the recipe; returns each stage's status from the run table, e.g. {"0 model": "kept"}."""
    out = ok(["run", recipe, "--run-dir", run_dir, "--quiet"]).stdout
    rows = [line.split("│") for line in out.splitlines() if line.startswith("│ ")]
    return {r[1].strip(): r[2].strip() for r in rows if re.fullmatch(r"\d+ \w+", r[1].strip())}


KEPT = {"0 model": "kept", "1 train": "kept"}
RAN = {"0 model": "ran", "1 train": "ran"}


def test_editing_the_architecture_file_reruns_from_the_model(tmp_path):
    net = tmp_path / "net.py"
    net.write_text(NET_PY)
    recipe = _recipe(tmp_path, "digits", f"{{arch: '{net}:build', input_size: 8}}")
    run_dir = tmp_path / "run"
    assert _run(recipe, run_dir) == RAN
    assert _run(recipe, run_dir) == KEPT
    net.write_text(NET_PY.replace("nn.ReLU()", "nn.Tanh()"))  # same function name, another activation
    assert _run(recipe, run_dir) == RAN
    assert _run(recipe, run_dir) == KEPT


def test_editing_the_dataset_file_reruns(tmp_path):
    data = tmp_path / "data.py"
    data.write_text(DATA_PY)
    recipe = _recipe(tmp_path, f"'{data}:make'", "{arch: small_cnn, input_size: 8, arch_kwargs: {width: 8}}")
    run_dir = tmp_path / "run"
    assert _run(recipe, run_dir) == RAN
    assert _run(recipe, run_dir) == KEPT
    data.write_text(DATA_PY.replace('"train": 0', '"train": 5'))  # other training images
    assert _run(recipe, run_dir) == RAN
    assert _run(recipe, run_dir) == KEPT


def _image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")


def test_touching_or_adding_a_file_in_a_dataset_directory_reruns(tmp_path):
    images = tmp_path / "images"
    _image_folder(images)
    recipe = _recipe(tmp_path, f"'{images}'", "{arch: small_cnn, input_size: 8, arch_kwargs: {width: 8}}")
    run_dir = tmp_path / "run"
    assert _run(recipe, run_dir) == RAN
    assert _run(recipe, run_dir) == KEPT
    touched = images / "cat" / "3.png"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same bytes, newer mtime
    assert _run(recipe, run_dir) == RAN
    assert _run(recipe, run_dir) == KEPT
    (images / "dog" / "10.png").write_bytes((images / "dog" / "0.png").read_bytes())
    assert _run(recipe, run_dir) == RAN
    assert _run(recipe, run_dir) == KEPT


def test_an_export_stage_reruns_when_tensorrt_becomes_available(tmp_path, monkeypatch):
    import deepslim.fingerprint as fingerprint
    recipe = _recipe(tmp_path, "digits", "{arch: small_cnn, input_size: 8, arch_kwargs: {width: 8}}",
                     "[{stage: export, targets: [onnx, tensorrt]}]")
    run_dir = tmp_path / "run"
    assert _run(recipe, run_dir) == {"0 model": "ran", "1 export": "ran"}
    assert _run(recipe, run_dir) == {"0 model": "kept", "1 export": "kept"}
    real = fingerprint.environment_facts

    def with_tensorrt(backends=()):
        facts = real(backends)
        return {**facts, "tensorrt": "10.9.0", "cuda_gpu": "NVIDIA H200"} if "tensorrt" in set(backends) else facts

    monkeypatch.setattr(fingerprint, "environment_facts", with_tensorrt)
    assert _run(recipe, run_dir) == {"0 model": "kept", "1 export": "ran"}
    facts = json.loads((run_dir / "manifest.json").read_text())["stages"]["1"]["inputs"]["environment"]
    assert facts["tensorrt"] == "10.9.0" and facts["cuda_gpu"] == "NVIDIA H200"
    assert _run(recipe, run_dir) == {"0 model": "kept", "1 export": "kept"}
