"""Exports that are what they claim: verified before they are put in place, every file they write
checked against --force, unique names for on-the-way exports, parity on the model's own data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_contract import invoke, ok

from deepslim.models import save_model


@pytest.fixture()
def model_file(trained_cnn, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return save_model(trained_cnn, tmp_path / "m.safetensors")


def _fail_parity(monkeypatch, seen: list):
    """check_parity that records whether the final artifact existed during the check, then fails."""
    import export.api
    from export.errors import ParityError

    def failing(source, artifact, **kwargs):
        seen.append((Path(artifact), Path("m.onnx").exists() and Path("m.onnx").read_bytes() == b"previous"))
        raise ParityError("parity FAILED (simulated)")
    monkeypatch.setattr(export.api, "check_parity", failing)


def test_failed_check_keeps_the_previous_file_and_checks_before_renaming(model_file, monkeypatch):
    Path("m.onnx").write_bytes(b"previous")
    seen: list = []
    _fail_parity(monkeypatch, seen)
    result = invoke(["export", str(model_file), "--target", "onnx", "-o", "m.onnx", "--force"])
    assert result.exit_code == 2 and "simulated" in result.stderr
    assert Path("m.onnx").read_bytes() == b"previous"  # --force never loses a good file to a failed check
    (checked, previous_in_place), = seen
    assert checked.name == "m.onnx" and checked.resolve() != Path("m.onnx").resolve()  # a temporary copy
    assert previous_in_place  # the new file was not in place while it was being checked
    assert not [p for p in os.listdir(".") if ".tmp-" in p]


def test_passing_check_puts_the_verified_file_in_place(model_file):
    Path("m.onnx").write_bytes(b"previous")
    out = ok(["export", model_file, "--target", "onnx", "-o", "m.onnx", "--force"]).stdout
    assert "parity ok" in out
    assert "digits test (the model's own dataset)" in out  # lineage says digits: real inputs by default
    assert Path("m.onnx").read_bytes() != b"previous"


def test_openvino_export_refuses_to_replace_an_existing_bin(model_file):
    Path("model.bin").write_bytes(b"someone else's weights")
    result = invoke(["export", str(model_file), "--target", "openvino", "-o", "model.xml"])
    assert result.exit_code == 2 and "model.bin" in result.stderr and "--force" in result.stderr
    assert Path("model.bin").read_bytes() == b"someone else's weights" and not Path("model.xml").exists()


def test_tensorrt_export_checks_its_onnx_and_sidecar_first(model_file):
    for name in ("m.onnx", "m.engine.json"):
        Path(name).write_bytes(b"keep")
        result = invoke(["export", str(model_file), "--target", "tensorrt", "-o", "m.engine"])
        assert result.exit_code == 2 and name in result.stderr and "--force" in result.stderr, result.stderr
        assert Path(name).read_bytes() == b"keep"
        Path(name).unlink()


def test_bench_exports_of_same_named_sources_do_not_collide(trained_cnn, tmp_path):
    from benchmarks import Backend
    from benchmarks.runners import RunnerOptions, open_runner
    from deepslim.models import load_model
    from pipeline.bench import plan_targets
    other = load_model(arch="small_cnn", num_classes=10, input_size=8, arch_kwargs={"width": 16}, channels=1)
    paths = []
    for run, bundle in (("exp1", trained_cnn), ("exp2", other)):
        path = tmp_path / "runs" / run / "02-prune" / "model.safetensors"
        path.parent.mkdir(parents=True)
        paths.append(save_model(bundle, path))
    targets, _ = plan_targets(paths, [Backend.ONNXRUNTIME], tmp_path / "artifacts", dataset="digits")
    assert len({t.path for t in targets}) == 2
    x = torch.randn(4, 1, 8, 8)
    for target, path in zip(targets, paths):
        with open_runner(target.path, Backend.ONNXRUNTIME, RunnerOptions()) as runner:
            got = runner.run(x.numpy())
        with torch.no_grad():
            want = load_model(path).model.eval()(x).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)  # each row measures its own model


def test_atomic_writes_fsync_the_file_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    from deepslim import fileio
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}"),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(f"replace {b}"), real_replace(a, b))[1])
    out = tmp_path / "a.txt"
    with fileio.atomic_path(out) as tmp:
        tmp.write_text("x")
    assert events[0].startswith("fsync") and ".a.txt.tmp-" in events[0]
    assert events[1] == f"replace {out}" and events[2] == f"fsync {tmp_path}"
    events.clear()
    with fileio.atomic_files(tmp_path / "m.xml", tmp_path / "m.bin") as (xml, binary):
        xml.write_text("x")
        binary.write_text("y")
    kinds = [e.split()[0] for e in events]
    assert kinds == ["fsync", "fsync", "replace", "replace", "fsync"] and events[-1] == f"fsync {tmp_path}"


@pytest.mark.slow  # ~23 s; parity on the model's own data is the default in every export test
def test_pruned_random_init_model_passes_parity_on_its_own_data(tmp_path, monkeypatch):
    """mobilenet_v3_small, random init, BatchNorm recalibrated on digits by prune: on N(0,1) noise its torch
    fp32 logits are ill-conditioned and the old element-wise check failed; on its own data it agrees."""
    monkeypatch.chdir(tmp_path)
    ok(["compress", "prune", "--arch", "mobilenet_v3_small", "-d", "digits", "--input-size", "32", "--ratio", "0.25", "--no-check",
        "-q", "-o", "x.safetensors"])
    out = ok(["export", "x.safetensors", "--target", "onnx", "-o", "x.onnx"]).stdout
    assert "parity ok" in out and "digits test (the model's own dataset)" in out


def test_an_ir_benched_at_another_size_counts_macs_from_the_bundle_it_came_from(trained_cnn, tmp_path):
    from benchmarks import Backend, LatencyConfig, bench
    from deepslim.profile import count_macs_params
    from export import export_model
    from pipeline.bench import plan_targets
    from pipeline.run import StageOutcome, _bench_sources
    bundle_path = save_model(trained_cnn, tmp_path / "model.safetensors")
    ir = export_model(trained_cnn, "openvino", tmp_path / "model.xml", verify=None).artifact
    fields = {f: None for f in StageOutcome.__dataclass_fields__}
    outcomes = [StageOutcome(**{**fields, "kind": "prune", "outputs": [bundle_path]}),
                StageOutcome(**{**fields, "kind": "quantize", "outputs": [ir]})]
    sources = _bench_sources(outcomes)
    assert sources == {ir: bundle_path}
    targets, _ = plan_targets([ir], [Backend.OPENVINO], tmp_path / "a", input_size=16, dataset=None, sources=sources)
    result = bench(targets, LatencyConfig(batches=(1,), rounds=1, iterations=2, warmup=1), dataset=None)
    want = count_macs_params(trained_cnn.model, trained_cnn.input_spec.with_size(16))[0]
    assert result.entries[0].macs == want != count_macs_params(trained_cnn.model, trained_cnn.input_spec)[0]
