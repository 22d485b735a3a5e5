"""`deepslim run`: recipes checked before any work, resumable runs, a SIGKILL mid-stage, the example recipes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_contract import assert_bad_input, kill_when, ok

ROOT = Path(__file__).resolve().parents[2]

FAST = """\
name: fast
dataset: digits
seed: 0
model: {arch: small_cnn, input_size: 8, arch_kwargs: {width: 8}}
stages:
  - {stage: train, epochs: TRAIN_EPOCHS}
  - {stage: prune, ratio: 0.5, round_to: 1, finetune_epochs: 1}
  - {stage: quantize, method: ptq, target: onnxruntime, calibration_samples: 64}
bench: {backends: [torch, onnxruntime], batches: [1], duration: 0.2, rounds: 2}
"""


def _fast(epochs: int = 2) -> str:
    return FAST.replace("TRAIN_EPOCHS", str(epochs))


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_example_recipes_are_valid(recipe):
    assert "valid" in ok(["run", recipe, "--check"]).stdout


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_run_then_rerun_keeps_everything_and_a_changed_stage_reruns_with_the_ones_after(tmp_path):
    recipe = tmp_path / "fast.yaml"
    recipe.write_text(_fast())
    run_dir = tmp_path / "run"
    first = ok(["run", recipe, "--run-dir", run_dir, "--quiet"])
    assert "report:" in first.stdout
    manifest = _manifest(run_dir)
    assert sorted(manifest["stages"]) == ["0", "1", "2", "3"]
    assert [manifest["stages"][k]["kind"] for k in "0123"] == ["model", "train", "prune", "quantize"]
    assert (run_dir / "03-quantize" / "model_int8.onnx").is_file() and (run_dir / "bench" / "report.html").is_file()
    report = json.loads((run_dir / "bench" / "report.json").read_text())
    assert {e["backend"] for e in report["entries"]} == {"torch", "onnxruntime"}
    assert any(e["precision"] == "int8" for e in report["entries"])
    firsts = {}
    for e in report["entries"]:  # every artifact against the original on its own backend, too
        same = e["latency"]["1"]["speedup_same_backend"]
        first = firsts.setdefault(e["backend"], e)
        expected = first["latency"]["1"]["p50_ms"] / e["latency"]["1"]["p50_ms"]
        assert same == pytest.approx(expected) and (e is not first or same == 1.0)
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    second = ok(["run", recipe, "--run-dir", run_dir, "--quiet"])
    assert second.stdout.count("kept") == 4
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == stamps
    recipe.write_text(_fast().replace("finetune_epochs: 1", "finetune_epochs: 2"))
    third = ok(["run", recipe, "--run-dir", run_dir, "--quiet"])
    rows = [line.split("│") for line in third.stdout.splitlines() if line.startswith("│ ")]
    status = {r[1].strip(): r[2].strip() for r in rows if re.fullmatch(r"\d+ \w+", r[1].strip())}
    assert status == {"0 model": "kept", "1 train": "kept", "2 prune": "ran", "3 quantize": "ran"}
    assert _manifest(run_dir)["stages"]["2"]["config"]["finetune_epochs"] == 2


@pytest.mark.slow  # ~66 s; kill-and-resume of train and distill stay in the default run
def test_sigkill_in_the_middle_of_a_stage_then_rerun_finishes_with_the_same_metrics(tmp_path):
    recipe = tmp_path / "fast.yaml"
    recipe.write_text(_fast(epochs=8))
    killed = tmp_path / "killed"
    args = [sys.executable, str(ROOT / "cli.py"), "run", str(recipe), "--run-dir", str(killed), "--quiet"]

    def training_has_started() -> bool:
        return (killed / "01-train").is_dir() and (killed / "manifest.json").exists() \
            and "1" not in _manifest(killed)["stages"]

    kill_when(args, training_has_started, settle=1.0)  # 1 s: well inside the 8 training epochs
    assert "1" not in _manifest(killed)["stages"] and not (killed / "01-train" / "model.safetensors").exists()
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not [p for p in killed.rglob("*") if ".tmp-" in p.name or p.name.endswith(".ckpt")]
    straight = tmp_path / "straight"
    ok(["run", recipe, "--run-dir", straight, "--quiet"])
    a, b = _manifest(killed)["stages"], _manifest(straight)["stages"]
    for stage in ("1", "2", "3"):
        assert a[stage]["metrics"]["test"] == b[stage]["metrics"]["test"], stage


BAD = {
    "unknown-stage": ("stages:\n  - {stage: sharpen}\n", ["stages.0", "sharpen", "'train'"]),
    "wrong-type": ("stages:\n  - {stage: train, epochs: many}\n", ["stages.0.epochs", "integer"]),
    "unknown-field": ("stages:\n  - {stage: train, epoch: 3}\n", ["stages.0.epoch", "Extra inputs"]),
    "bad-enum": ("stages:\n  - {stage: prune, ratio: 0.5, importance: magic}\n",
                 ["stages.0.importance", "'l1'", "'taylor'"]),
    "prune-after-quantize": ("stages:\n  - {stage: quantize}\n  - {stage: prune, ratio: 0.5}\n",
                             ["stages.1 (prune)", "before quantize"]),
    "missing-model": ("MODEL", ["model.path", "gone.safetensors", "does not exist"]),
    "kd-without-finetune": ("stages:\n  - {stage: prune, ratio: 0.5, recover: kd}\n", ["stages.0", "finetune_epochs"]),
    "missing-teacher": ("stages:\n  - {stage: distill, teacher: nope.safetensors}\n",
                        ["stages.0.teacher", "nope.safetensors"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_recipe_errors_name_the_field_before_any_work(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    body, fragments = BAD[case]
    if body == "MODEL":
        text = "name: bad\nmodel: {path: gone.safetensors}\n"
    else:
        text = "name: bad\nmodel: {arch: small_cnn, input_size: 8}\n" + body
    Path("bad.yaml").write_text(text)
    assert_bad_input(["run", "bad.yaml", "--run-dir", "run"], fragments, tmp_path)


def test_demo_replaces_only_an_old_demo_layout(tmp_path):
    from pipeline.demo import _clear_old_layout
    old, other = tmp_path / "old", tmp_path / "other"
    for d, name in ((old, "base.safetensors"), (other, "notes.txt")):
        d.mkdir()
        (d / name).write_text("x")
    _clear_old_layout(old)
    _clear_old_layout(other)
    assert not old.exists() and (other / "notes.txt").exists()
