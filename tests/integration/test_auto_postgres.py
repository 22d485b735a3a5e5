"""`deepslim auto` workers sharing one study on a real PostgreSQL server (started by the test in a temporary
directory): the study's finished trials are exactly those the workers report, each once, with its artifact and
hash; a SIGKILLed worker's trial ends FAIL after the grace period and is run again by another worker; the
report rebuilds from the study alone; a wrong URL, password or search space is one sentence."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_contract import assert_clean_failure, invoke, snapshot
from deepslim.fileio import sha256_file
from deepslim.models import save_model

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import pg  # noqa: E402

pytestmark = pytest.mark.skipif(pg.binaries() is None, reason=pg.MISSING)
FINISHED = ("COMPLETE", "PRUNED")


@pytest.fixture(scope="module")
def server():
    with pg.server() as running:
        yield running


@pytest.fixture(scope="module")
def model(tmp_path_factory, trained_cnn) -> Path:
    return save_model(trained_cnn, tmp_path_factory.mktemp("auto_pg") / "base.safetensors")


def _worker(model: Path, url: str, study: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), "auto", str(model), "--storage", url, "--study", study,
            "--target", "onnxruntime", "--finetune-epochs", "1", "--max-accuracy-drop", "5", "--time-budget", "400",
            "--heartbeat", "1", "--grace-period", "3", "--quiet", "-o", str(out), *extra]


@functools.lru_cache(maxsize=None)
def _storage(url: str):
    """One storage (one connection pool) per URL for the test's own reads."""
    import optuna
    from pipeline.storage import sqlalchemy_url
    return optuna.storages.RDBStorage(sqlalchemy_url(url))


def _study(url: str, name: str):
    import optuna
    return optuna.load_study(study_name=name, storage=_storage(url))


def _finished(study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED]


def _check_artifacts(trials, study: str) -> None:
    for t in trials:
        if t.state.name == "COMPLETE":
            artifact = Path(t.user_attrs["artifact"])
            assert artifact.is_file() and sha256_file(artifact) == t.user_attrs["artifact_sha256"], t.number
            owner = t.user_attrs.get("same_as", t.number)  # a repeated candidate reuses the first one's artifact
            assert f"/trials/{study}/{owner:04d}/" in str(artifact)  # named by study and trial number


def test_three_workers_share_a_study_a_killed_ones_trial_is_retried_and_the_report_rebuilds(server, model,
                                                                                              tmp_path):
    """Three workers, a budget of 3 finished trials; worker 0 is SIGKILLed once its first trial runs. Its trial
    ends FAIL (no heartbeat for the grace period) and a survivor runs the same parameters again."""
    url = server.url()
    procs = [subprocess.Popen(_worker(model, url, "three", tmp_path / f"w{i}", "--total-trials", "3"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
             for i in range(3)]
    victim_id = f"{socket.gethostname()}:{procs[0].pid}"
    deadline = time.time() + 300
    while not any(t.state.name == "RUNNING" and t.user_attrs.get("worker") == victim_id
                  for t in _safe_trials(url, "three")):
        assert time.time() < deadline and procs[0].poll() is None, "worker 0 never started a trial"
        time.sleep(0.2)
    time.sleep(1.0)  # mid-trial
    os.killpg(procs[0].pid, signal.SIGKILL)
    procs[0].wait()
    for p in procs[1:]:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    study = _study(url, "three")
    trials = {t.number: t for t in study.trials}
    victim = next(t for t in trials.values() if t.user_attrs.get("worker") == victim_id)
    assert victim.state.name == "FAIL"  # never counted as finished
    retried = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retried) == 1 and retried[0].params == victim.params and retried[0].state.name in FINISHED
    finished = _finished(study)
    reported = [n for i in (1, 2) for n in json.loads((tmp_path / f"w{i}" / "search.json").read_text())
                ["worker"]["finished"]]
    assert not (tmp_path / "w0" / "search.json").exists()
    assert len(finished) == len(reported) >= 3  # a worker that started a trial before the 3rd ended adds one
    assert sorted(reported) == sorted(t.number for t in finished)  # each trial counted once, by the worker that ran it
    assert len(set(reported)) == len(reported)
    _check_artifacts(finished, "three")
    chosen = study.user_attrs["deepslim_result"]["chosen"]
    assert sha256_file(chosen["copied_to"]) == chosen["sha256"]
    # the report from the study alone, twice: identical, and naming what the workers chose
    reports = []
    for i in range(2):
        out = tmp_path / f"report{i}"
        result = invoke(["auto", "--report-only", "--storage", url, "--study", "three", "-o", str(out)])
        assert result.exit_code == 0, result.output
        reports.append({name: (out / name).read_bytes() for name in ("search.json", "search.md")})
    assert reports[0] == reports[1]
    data = json.loads(reports[0]["search.json"])
    assert data["chosen"]["number"] == chosen["number"] and len(data["trials"]) == len(study.trials)
    assert "worker" not in data and pg.PASSWORD not in reports[0]["search.json"].decode()
    assert f"| {victim.number} | fail |" in reports[0]["search.md"].decode()


def _safe_trials(url: str, name: str) -> list:
    try:
        return _study(url, name).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


@pytest.mark.parametrize("case", ["unreachable", "password", "space"])
def test_storage_mistakes_are_one_sentence(server, model, tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    url, study = server.url(), f"mistake-{case}"
    fragments = {"unreachable": ["Cannot reach the database", "***", "is the server running"],
                 "password": ["refused deepslim", "password is wrong"],
                 "space": ["was created for another search", "--study"]}[case]
    if case == "unreachable":
        url = server.url(port=pg.free_port())
    elif case == "password":
        url = server.url(password="wrong")
    else:
        import optuna
        other = optuna.create_study(directions=["minimize"] * 3, storage=_storage(url), study_name=study)
        other.set_user_attr("deepslim_search", {"target": "tensorrt"})
    before = snapshot(tmp_path)
    result = invoke(["auto", str(model), "--storage", url, "--study", study, "--quiet", "-o", "out"])
    message = assert_clean_failure(result, fragments, before=before, root=tmp_path, output="out")
    assert pg.PASSWORD not in message and "wrong" not in url.split("@")[-1]


def test_report_only_without_a_storage_or_for_a_missing_study(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    result = invoke(["auto", "--report-only", "--study", "x", "-o", "out"])
    assert_clean_failure(result, ["--report-only", "--storage"], before=before, root=tmp_path, output="out")
    result = invoke(["auto", "--report-only", "--storage", server.url(), "--study", "never-made", "-o", "out"])
    assert_clean_failure(result, ["no study 'never-made'"], before=before, root=tmp_path, output="out")


def test_the_database_going_away_mid_search_is_one_sentence(model, tmp_path):
    """A server of its own, stopped while the worker's first trial runs: the worker ends with one sentence."""
    with pg.server() as own:
        url = own.url()
        proc = subprocess.Popen(_worker(model, url, "gone", tmp_path / "w"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while not any(t.state.name == "RUNNING" and "worker" in t.user_attrs for t in _safe_trials(url, "gone")):
            assert time.time() < deadline and proc.poll() is None, "the worker never started a trial"
            time.sleep(0.2)
        _storage(url).engine.dispose()
        pg.stop(own)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines[-1].startswith("error: ") and "postgresql://deepslim:***@" in lines[-1]
