"""`deepslim auto`: the chosen model is timed with the unpruned one in one run and scored as it ships; two workers
share one SQLite study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_contract import assert_bad_input, ok
from deepslim.models import save_model

ROOT = Path(__file__).resolve().parents[2]


FIXED = {"speedup": 2.0, "importance": "l2", "recover": "kd", "method": "ptq"}
UNQUANTIZED = {"speedup": 1.0, "importance": "l2", "recover": "finetune", "method": "none"}


def _study_with(storage: str, name: str, *params: dict) -> None:
    """A study whose first trials are ``params`` (the search enqueues only the fixed recipe itself)."""
    import optuna
    study = optuna.create_study(directions=["minimize"] * 3, storage=storage, study_name=name)
    for p in params:
        study.enqueue_trial(p)


def _metrics(artifact, split: str) -> dict:
    """The artifact scored by the benchmarks harness, independently of the search."""
    from benchmarks.accuracy import predict, score
    from benchmarks.runners import RunnerOptions, open_runner
    backend = {".xml": "openvino", ".onnx": "onnxruntime", ".safetensors": "torch"}[Path(artifact).suffix]
    return score(*predict(open_runner(artifact, backend, RunnerOptions()), "digits", split=split))


def test_auto_times_the_chosen_with_the_baseline_in_one_run_and_scores_what_ships(tmp_path, trained_cnn):
    model = save_model(trained_cnn, tmp_path / "base.safetensors")
    out, storage = tmp_path / "auto", f"sqlite:///{tmp_path / 'search.db'}"
    _study_with(storage, "s", FIXED, UNQUANTIZED)
    result = ok(["auto", model, "--max-accuracy-drop", "2", "--trials", "2", "--finetune-epochs", "1",
                 "--time-budget", "300", "--storage", storage, "--study", "s", "--quiet", "-o", out])
    data = json.loads((out / "search.json").read_text())
    trials, chosen, baseline = data["trials"], data["chosen"], data["baseline"]
    assert [t["params"] for t in trials] == [FIXED, UNQUANTIZED]
    base_val = _metrics(model, "val")["top1"]
    fp32 = trials[1]  # not quantized: the accuracy is the exported artifact's, and its parity was checked
    assert fp32["state"] == "COMPLETE" and fp32["parity"]["passed"] and "digits" in fp32["parity"]["inputs"]
    assert fp32["val_top1"] == pytest.approx(_metrics(fp32["artifact"], "val")["top1"])
    assert fp32["val_drop_points"] == pytest.approx(100 * (base_val - fp32["val_top1"]), abs=1e-3)
    # the baseline and every re-timed candidate come from one interleaved bench run
    timing = json.loads(Path(data["timing"]["report"]).read_text())
    entries = {e["artifact"]: e["latency"]["1"] for e in timing["entries"]}
    retimed = [t for t in trials if t["latency_ms"] is not None]
    assert chosen["number"] in {t["number"] for t in retimed} and len(entries) == len(retimed) + 1
    assert timing["entries"][0]["artifact"] == baseline["timed"]
    assert baseline["latency_ms"] == entries[baseline["timed"]]["p50_ms"]
    for t in [chosen, *retimed]:
        assert t["timing_run"] == baseline["timing_run"] == timing["created"] == data["timing"]["created"]
        assert t["val_drop_points"] <= 2.0 and t["latency_ms"] == entries[t["timed"]]["p50_ms"]
        assert t["speedup"] == pytest.approx(baseline["latency_ms"] / t["latency_ms"])
    assert chosen["latency_ms"] == min(t["latency_ms"] for t in retimed)
    # the chosen model, as copied to best.*, scored on the test split against the unpruned model
    best = Path(chosen["copied_to"])
    assert best.is_file() and (out / "pareto.png").is_file()
    assert chosen["test"]["top1"] == pytest.approx(_metrics(best, "test")["top1"])
    assert baseline["test"]["top1"] == pytest.approx(_metrics(model, "test")["top1"])
    assert 0 <= chosen["test"]["agreement"] <= 1
    assert f"test top-1 {baseline['test']['top1']:.4f} -> {chosen['test']['top1']:.4f}" in result.stdout
    word = "faster" if chosen["speedup"] >= 1 else "slower"
    assert f"× {word} than the unpruned model ({baseline['latency_ms']:.3f} ms) timed in the same run" in result.stdout


@pytest.mark.slow  # ~60 s of two worker processes; #15 moves shared studies to PostgreSQL and journal files
def test_two_workers_share_one_sqlite_study(tmp_path, trained_cnn):
    model = save_model(trained_cnn, tmp_path / "base.safetensors")
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    procs = [subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "auto", str(model), "--trials", "1",
                               "--finetune-epochs", "1", "--time-budget", "300", "--storage", storage, "--study", "shared",
                               "--max-accuracy-drop", "5", "--quiet", "-o", str(tmp_path / f"worker{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    import optuna
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 2  # one trial each, in one study
    assert sum(t.params == {"speedup": 2.0, "importance": "l2", "recover": "kd", "method": "ptq"}
               for t in study.trials[:1]) == 1  # enqueued once, by whichever worker created the study
    last = max((json.loads((tmp_path / f"worker{i}" / "search.json").read_text()) for i in range(2)),
               key=lambda d: len(d["trials"]))
    assert len(last["trials"]) == 2


def test_auto_bad_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert_bad_input(["auto", "m.onnx", "-o", "out"], ["MODEL must be a bundle"], tmp_path)
    assert_bad_input(["auto", "gone.safetensors", "-o", "out"], ["gone.safetensors does not exist"], tmp_path)
