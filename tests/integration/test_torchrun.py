"""`compress distill` under torchrun on CPU (gloo): two processes on one node, two "nodes" on 127.0.0.1 (two
launches with ``--nnodes 2`` and a c10d rendezvous) giving the same metrics as the one-node run, and the same
again when one node's worker is SIGKILLed mid-epoch and torchrun's elastic agents restart the group."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_contract import assert_bad_input, ok
from deepslim.models import load_model, save_model

ROOT = Path(__file__).resolve().parents[2]
DISTILL = ["compress", "distill", "--student", "small_cnn", "--arch-kwargs", '{"width": 8}', "--epochs", "4",
           "--batch-size", "32", "--device", "cpu", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, trained_cnn) -> Path:
    return save_model(trained_cnn, tmp_path_factory.mktemp("torchrun") / "teacher.safetensors")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(args: list[str], port: int, *extra: str) -> list[str]:
    """One "node": torchrun with one process, joining a two-node c10d rendezvous on 127.0.0.1:port."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "deepslim-test", *extra,
            str(ROOT / "cli.py"), *args]


def _two_nodes(teacher: Path, out: Path, *extra: str, kill_after_checkpoint: bool = False,
               command: list[str] | None = None) -> list[str]:
    """Run both nodes (the distillation, or ``command``) to the end; with ``kill_after_checkpoint``, SIGKILL
    node 1's worker once rank 0 has written its first epoch checkpoint. The nodes' logs."""
    args = command if command is not None else [*DISTILL, "--teacher", str(teacher), "-o", str(out)]
    port = _free_port()
    logs = [out.with_name(f"{out.name}.node{i}.log") for i in range(2)]  # files: a full pipe would block torchrun
    nodes = []
    for log in logs:
        with log.open("w") as fh:
            nodes.append(subprocess.Popen(_node(args, port, *extra), stdout=fh, stderr=subprocess.STDOUT,
                                          text=True, cwd=out.parent, env=ENV))
    try:
        if kill_after_checkpoint:
            _kill_worker_after(out.with_name(out.name + ".ckpt"), nodes[1])
        for node, log in zip(nodes, logs):
            node.wait(timeout=600)
            assert node.returncode == 0, log.read_text()[-3000:]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    return [log.read_text() for log in logs]


def _kill_worker_after(checkpoint: Path, agent: subprocess.Popen) -> None:
    """SIGKILL the worker process(es) of torchrun ``agent`` (its children) as soon as ``checkpoint`` exists."""
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert time.monotonic() < deadline and agent.poll() is None, "no epoch checkpoint was written"
        time.sleep(0.02)
    workers = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split()
    assert workers, "torchrun's worker had already ended"
    for pid in workers:
        os.kill(int(pid), signal.SIGKILL)


def _metrics(path: Path) -> tuple[dict, list]:
    record = load_model(path).lineage[-1]
    return record.metrics["test"], [row["val_top1"] for row in record.metrics["history"]]


@pytest.fixture(scope="module")
def one_node(teacher) -> Path:
    out = teacher.parent / "one-node" / "ddp.safetensors"
    out.parent.mkdir()
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            str(ROOT / "cli.py"), *DISTILL, "--teacher", str(teacher), "-o", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=out.parent, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("student after") == 1, done.stdout  # rank 1 prints nothing
    return out


def test_two_processes_on_one_node_write_one_valid_bundle(one_node):
    record = load_model(one_node).lineage[-1]
    assert record.stage == "distill" and len(record.metrics["history"]) == 4
    assert record.metrics["test"]["top1"] >= 0.75, record.metrics["test"]
    assert sorted(p.name for p in one_node.parent.iterdir()) == ["ddp.safetensors"]  # the checkpoint is gone
    # every rank validated and tested the same model as the one rank 0 saved (BatchNorm statistics
    # included): ROC-AUC moves with any logit, so it would show a rank whose model differs
    evaluated = json.loads(ok(["eval", one_node, "--json"]).stdout)["metrics"]
    for key in ("top1", "top5", "roc_auc_macro", "ap_macro"):
        assert evaluated[key] == pytest.approx(record.metrics["test"][key], abs=1e-9), key


def test_two_nodes_give_the_metrics_of_one_node_with_two_processes(teacher, one_node, tmp_path):
    out = tmp_path / "two-nodes.safetensors"
    _two_nodes(teacher, out)
    assert _metrics(out) == _metrics(one_node)


def test_a_worker_killed_mid_epoch_is_restarted_and_the_run_ends_as_if_uninterrupted(teacher, one_node, tmp_path):
    out = tmp_path / "elastic.safetensors"
    _node0, node1 = _two_nodes(teacher, out, "--max-restarts", "1", kill_after_checkpoint=True)
    assert "exitcode: -9" in node1  # torchrun saw its worker die...
    notes = load_model(out).lineage[-1].metrics["notes"]
    resumed = [n for n in notes if n.startswith("torchrun restarted the workers after a failure; resumed from")]
    assert len(resumed) == 1 and not resumed[0].endswith("after epoch 4"), notes  # ...mid-run, and both resumed
    assert _metrics(out) == _metrics(one_node)
    assert sorted(p.name for p in out.parent.iterdir() if not p.name.endswith(".log")) == ["elastic.safetensors"]


def _written(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".log"))


def test_train_and_prune_recover_kd_across_two_nodes(teacher, tmp_path):
    """The other commands on the shared train loop: every rank trains its shard, rank 0 alone writes, and the
    model it wrote is the one all ranks validated and tested (eval gives the recorded test metrics)."""
    trained = tmp_path / "trained.safetensors"
    _two_nodes(teacher, trained, command=["train", "--arch", "small_cnn", "--arch-kwargs", '{"width": 8}',
                                          "--dataset", "digits", "--input-size", "8", "--epochs", "3",
                                          "--device", "cpu", "--quiet", "-o", str(trained)])
    pruned = tmp_path / "pruned.safetensors"
    _two_nodes(teacher, pruned, command=["compress", "prune", str(teacher), "--ratio", "0.5", "--round-to", "1",
                                         "--finetune-epochs", "2", "--recover", "kd", "--no-check", "--quiet",
                                         "-o", str(pruned)])
    assert _written(tmp_path) == ["pruned.safetensors", "trained.safetensors"]
    for path, stage in ((trained, "train"), (pruned, "prune")):
        record = load_model(path).lineage[-1]
        assert record.stage == stage
        test = record.metrics["test"]
        assert test["top1"] >= 0.7, (stage, test)
        evaluated = json.loads(ok(["eval", path, "--json"]).stdout)["metrics"]
        assert evaluated["roc_auc_macro"] == pytest.approx(test["roc_auc_macro"], abs=1e-9), stage
    assert load_model(pruned).lineage[-1].config["recover"] == "kd"
    assert "data-parallel over 2 processes (gloo): batch 64 per process, 128 per step in all" in \
        load_model(trained).lineage[-1].metrics["notes"]


def test_qat_across_two_nodes_writes_one_checked_int8_model(teacher, tmp_path):
    out = tmp_path / "qat.onnx"
    _two_nodes(teacher, out, command=["compress", "quantize", str(teacher), "--method", "qat", "--qat-epochs", "2",
                                      "--target", "onnxruntime", "--no-latency", "--calibration-samples", "200",
                                      "--quiet", "-o", str(out)])
    assert _written(tmp_path) == ["qat.onnx"]
    record = json.loads(ok(["info", out, "--json"]).stdout)["lineage"][-1]
    assert record["stage"] == "quantize" and record["config"]["method"] == "qat"
    assert len(record["metrics"]["qat_history"]) == 2
    assert record["metrics"]["quantized"]["test"]["top1"] >= 0.7, record["metrics"]["quantized"]["test"]


def test_a_master_port_another_program_holds_is_one_sentence(teacher, tmp_path, monkeypatch):
    """Started by a scheduler with the process-group environment set (no torchrun): rank 0 serves the store on
    MASTER_PORT, which a listening socket here already holds."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": str(port)}.items():
            monkeypatch.setenv(key, value)
        assert_bad_input([*DISTILL, "--teacher", str(teacher), "-o", str(tmp_path / "s.safetensors")],
                         [f"Port 127.0.0.1:{port} is already in use by another program", "MASTER_PORT"], tmp_path,
                         output="s.safetensors")
