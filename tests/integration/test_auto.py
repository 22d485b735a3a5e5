"""`deepslim auto`: the search returns the fastest candidate within the budget; two workers share one SQLite study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cli_contract import assert_bad_input, ok
from deepslim.models import save_model

ROOT = Path(__file__).resolve().parents[2]


def test_auto_picks_the_fastest_candidate_within_the_budget(tmp_path, trained_cnn):
    model = save_model(trained_cnn, tmp_path / "base.safetensors")
    out = tmp_path / "auto"
    result = ok(["auto", model, "--max-accuracy-drop", "2", "--trials", "3", "--finetune-epochs", "2",
                 "--time-budget", "300", "--quiet", "-o", out])
    assert "chosen:" in result.stdout
    data = json.loads((out / "search.json").read_text())
    trials = data["trials"]
    assert trials[0]["params"] == {"speedup": 2.0, "importance": "l2", "recover": "kd", "method": "ptq"}  # the fixed recipe
    done = [t for t in trials if t["state"] == "COMPLETE"]
    feasible = [t for t in done if t["val_drop_points"] <= 2.0]
    chosen = data["chosen"]
    assert chosen["val_drop_points"] <= 2.0
    assert chosen["latency_ms"] == min(t["latency_ms"] for t in feasible)
    assert {t["number"] for t in data["pareto"]} <= {t["number"] for t in done} and data["pareto"]
    assert (out / "pareto.png").is_file() and Path(chosen["copied_to"]).is_file()


def test_two_workers_share_one_sqlite_study(tmp_path, trained_cnn):
    model = save_model(trained_cnn, tmp_path / "base.safetensors")
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    procs = [subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "auto", str(model), "--trials", "2",
                               "--finetune-epochs", "1", "--time-budget", "300", "--storage", storage, "--study", "shared",
                               "--max-accuracy-drop", "5", "--quiet", "-o", str(tmp_path / f"worker{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    import optuna
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 4
    assert sum(t.params == {"speedup": 2.0, "importance": "l2", "recover": "kd", "method": "ptq"}
               for t in study.trials[:1]) == 1  # enqueued once, by whichever worker created the study
    last = max((json.loads((tmp_path / f"worker{i}" / "search.json").read_text()) for i in range(2)),
               key=lambda d: len(d["trials"]))
    assert len(last["trials"]) == 4


def test_auto_bad_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert_bad_input(["auto", "m.onnx", "-o", "out"], ["MODEL must be a bundle"], tmp_path)
    assert_bad_input(["auto", "gone.safetensors", "-o", "out"], ["gone.safetensors does not exist"], tmp_path)
