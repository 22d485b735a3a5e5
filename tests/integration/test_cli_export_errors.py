"""The error contract of ``deepslim export`` and ``deepslim bench``.

A bad input gives exit code 2 and exactly one line ``error: ...`` on stderr, no traceback,
and fails *before* leaving anything behind: no artifact, no hidden ``.NAME.tmp-*`` file or
directory, no ``.bin``/``.json`` side file, no report directory; every input is byte-for-byte
(and mtime and mode) unchanged. The contract's checks live in cli_contract.py.
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import cli
import cli_contract
from cli_contract import DATA_PY, Cases, assert_bad_input, invoke, snapshot

# Keeps a bench short should a check be missing and the benchmark really run; options given
# later on the command line override these (click keeps the last value of an option).
FAST = ["--rounds", "1", "--duration", "0.01", "--warmup", "0", "--limit", "16"]

TENSORRT_INSTALLED = importlib.util.find_spec("tensorrt") is not None
needs_no_tensorrt = pytest.mark.skipif(TENSORRT_INSTALLED, reason="asserts the message for a missing tensorrt")


# --- artifacts, made once per session and copied into each test's directory -------------------

@dataclass(frozen=True)
class Artifacts:
    bundle: bytes   # small_cnn bundle: 10 classes, 1 channel, 8x8
    onnx: bytes     # its ONNX export (with deepslim metadata)
    xml: bytes      # its OpenVINO IR ...
    bin: bytes      # ... and the IR's weights


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    import export
    from deepslim.models import load_model, save_model
    root = tmp_path_factory.mktemp("export_artifacts")
    torch.manual_seed(0)
    bundle = load_model(arch="small_cnn", num_classes=10, input_size=8)
    save_model(bundle, root / "m.safetensors")
    export.to_onnx(bundle, root / "m.onnx")
    export.to_openvino(root / "m.onnx", root / "m.xml")
    return Artifacts(*(p.read_bytes() for p in (root / "m.safetensors", root / "m.onnx", root / "m.xml",
                                                root / "m.bin")))


class Workspace(cli_contract.Workspace):
    """Creates a case's input files in the (current) test directory; ``art`` is the Artifacts."""

    art: Artifacts

    def bundle(self, name: str = "m.safetensors") -> str:
        return self.write(name, self.art.bundle)

    def onnx(self, name: str = "m.onnx") -> str:
        return self.write(name, self.art.onnx)

    def ir(self, name: str = "m.xml", *, with_bin: bool = True) -> str:
        self.write(name, self.art.xml)
        if with_bin:
            self.write(str(Path(name).with_suffix(".bin")), self.art.bin)
        return name

    def onnx_with_metadata(self, name: str, value: str | None) -> str:
        """The fixture's ONNX with its deepslim metadata removed (None) or replaced."""
        import onnx
        proto = onnx.load_from_string(self.art.onnx)
        del proto.metadata_props[:]
        if value is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = "deepslim", value
        return self.write(name, proto.SerializeToString())


# --- the cases: each makes its inputs and returns (args, fragments the message must contain) ---
# (a fragment may be a tuple: any one of its strings; DATA_PY, from cli_contract, is a dataset
# function file with 3 classes of 8x8 grey images, where the artifacts predict 10 classes)

CASES = Cases()
case = CASES.case


# export: the request

@case("export-unknown-target")
def _(ws: Workspace):
    return ["export", ws.bundle(), "--target", "tflite", "-o", "m.tflite"], ["--target", "'tflite'"]


@case("export-missing-target")
def _(ws: Workspace):
    return ["export", ws.bundle(), "-o", "x.onnx"], ["--target", "-o OUTPUT"]


@case("export-missing-output")
def _(ws: Workspace):
    return ["export", ws.bundle(), "--target", "onnx"], ["--target", "-o OUTPUT"]


@case("export-output-suffix-mismatch")
def _(ws: Workspace):
    return ["export", ws.bundle(), "--target", "onnx", "-o", "out.xml"], ["*.onnx", "out.xml"]


@case("export-onnx-int8")
def _(ws: Workspace):
    return (["export", ws.bundle(), "--target", "onnx", "--precision", "int8", "-o", "x.onnx"],
            ["--precision int8", "deepslim compress quantize"])


@case("export-openvino-int8")
def _(ws: Workspace):
    return (["export", ws.bundle(), "--target", "openvino", "--precision", "int8", "-o", "x.xml"],
            ["--precision int8", "openvino"])


@case("export-input-size-zero")
def _(ws: Workspace):
    return ["export", ws.bundle(), "--target", "onnx", "--input-size", "0", "-o", "x.onnx"], ["--input-size", "got 0"]


@case("export-parity-samples-zero")
def _(ws: Workspace):
    return (["export", ws.bundle(), "--target", "onnx", "--parity-samples", "0", "-o", "x.onnx"],
            ["--parity-samples", "got 0"])


@case("export-unknown-exporter")
def _(ws: Workspace):
    return (["export", ws.bundle(), "--target", "onnx", "--exporter", "bogus", "-o", "x.onnx"],
            ["--exporter", "'bogus'"])


@case("export-ov-via-bogus")
def _(ws: Workspace):
    return (["export", ws.bundle(), "--target", "openvino", "--ov-via", "bogus", "--no-verify", "-o", "x.xml"],
            ["--ov-via", "bogus"])


# export: the output

@case("export-output-exists-without-force")
def _(ws: Workspace):
    ws.write("x.onnx", b"an earlier export")
    return ["export", ws.bundle(), "--target", "onnx", "-o", "x.onnx"], ["x.onnx", "--force"]


@case("export-output-is-the-input")
def _(ws: Workspace):
    return (["export", ws.onnx(), "--target", "openvino", "-o", "m.onnx", "--force"],
            ["m.onnx", "same file as an input"])


@case("export-output-is-a-directory")
def _(ws: Workspace):
    (ws.root / "d.onnx").mkdir()
    return ["export", ws.bundle(), "--target", "onnx", "-o", "d.onnx", "--force"], ["d.onnx", "directory"]


# export: the source

@case("export-missing-bundle")
def _(ws: Workspace):
    return (["export", "missing.safetensors", "--target", "onnx", "-o", "x.onnx"],
            ["missing.safetensors", "does not exist"])


@case("export-missing-onnx")
def _(ws: Workspace):
    return (["export", "missing.onnx", "--target", "openvino", "-o", "x.xml"],
            ["missing.onnx", ("does not exist", "No such file")])


@case("export-xml-without-bin")
def _(ws: Workspace):
    # an IR is not an export source at all (the missing .bin does not matter): say what is needed
    return (["export", ws.ir(with_bin=False), "--target", "openvino", "-o", "y.xml"],
            ["m.xml", "exported artifact", "bundle"])


@case("export-onnx-from-onnx")
def _(ws: Workspace):
    return ["export", ws.onnx(), "--target", "onnx", "-o", "x.onnx"], ["m.onnx", "starts from a bundle"]


@case("export-openvino-from-random-bytes-onnx")
def _(ws: Workspace):
    ws.write("r.onnx", random.Random(4096).randbytes(4096))
    return ["export", "r.onnx", "--target", "openvino", "-o", "x.xml"], ["r.onnx", "not a valid ONNX file"]


@case("export-openvino-from-onnx-without-metadata")
def _(ws: Workspace):
    name = ws.onnx_with_metadata("plain.onnx", None)
    return (["export", name, "--target", "openvino", "-o", "x.xml"],
            ["plain.onnx", "no deepslim metadata", "--target onnx"])


@case("export-openvino-from-onnx-with-corrupt-metadata")
def _(ws: Workspace):
    name = ws.onnx_with_metadata("bad.onnx", "{not json")
    return ["export", name, "--target", "openvino", "-o", "x.xml"], ["bad.onnx", "corrupt deepslim metadata"]


@case("export-openvino-from-onnx-with-input-size")
def _(ws: Workspace):
    return (["export", ws.onnx(), "--target", "openvino", "--input-size", "16", "--no-verify", "-o", "x.xml"],
            ["--input-size", "m.onnx"])


# export: parity fails after the artifact was written; it must be removed again

@case("export-onnx-parity-dataset-unknown")
def _(ws: Workspace):
    return (["export", ws.bundle(), "--target", "onnx", "--dataset", "nope_dir", "-o", "x.onnx"],
            ["'nope_dir'", "Unknown dataset"])


@case("export-openvino-parity-dataset-unknown")
def _(ws: Workspace):
    return (["export", ws.bundle(), "--target", "openvino", "--dataset", "nope_dir", "-o", "x.xml"],
            ["'nope_dir'", "Unknown dataset"])


# export: TensorRT (not installed here)

@case("export-tensorrt-from-bundle-without-tensorrt", needs_no_tensorrt)
def _(ws: Workspace):
    return ["export", ws.bundle(), "--target", "tensorrt", "-o", "m.engine"], ["'tensorrt'", "GPU"]


@case("export-tensorrt-from-onnx-without-tensorrt", needs_no_tensorrt)
def _(ws: Workspace):
    return ["export", ws.onnx(), "--target", "tensorrt", "-o", "x.engine"], ["'tensorrt'", "GPU"]


@case("export-tensorrt-int8-from-fp32-onnx")
def _(ws: Workspace):
    # check_request runs the Q/DQ check before require_tensorrt(): the answer does not depend on tensorrt
    return (["export", ws.onnx(), "--target", "tensorrt", "--precision", "int8", "-o", "x.engine"],
            ["m.onnx", "not a TensorRT-ready int8 model", "QuantizeLinear/DequantizeLinear"])


@case("export-tensorrt-int8-from-bundle")
def _(ws: Workspace):
    return (["export", ws.bundle(), "--target", "tensorrt", "--precision", "int8", "-o", "x.engine"],
            ["--precision int8", "Q/DQ ONNX", "not a bundle"])


@case("export-tensorrt-batch-zero")
def _(ws: Workspace):
    return (["export", ws.onnx(), "--target", "tensorrt", "--batch", "0", "-o", "x.engine"],
            ["--batch", "positive integers"])


@case("export-tensorrt-workspace-zero")
def _(ws: Workspace):
    return (["export", ws.onnx(), "--target", "tensorrt", "--workspace", "0", "-o", "x.engine"],
            ["--workspace", "got 0"])


@case("export-print-trtexec-from-bundle")
def _(ws: Workspace):
    return (["export", ws.bundle(), "--target", "tensorrt", "--print-trtexec", "-o", "x.engine"],
            ["--print-trtexec", "ONNX MODEL"])


# bench: options

@case("bench-batch-zero")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--batch", "0"], ["--batch", "'0'"]


@case("bench-batch-not-a-number")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--batch", "1,x"], ["--batch", "'1,x'"]


@case("bench-unknown-backend")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--backend", "tflite"], ["--backend", "'tflite'"]


@case("bench-rounds-zero")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--rounds", "0"], ["--rounds", "got 0"]


@case("bench-duration-zero")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--duration", "0"], ["--duration", "got 0"]


@case("bench-iterations-zero")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--iterations", "0"], ["--iterations", "got 0"]


@case("bench-warmup-negative")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--warmup", "-1"], ["--warmup", "got -1"]


@case("bench-threads-zero")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--threads", "0"], ["--threads", "got 0"]


@case("bench-limit-zero")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--backend", "onnxruntime", "--limit", "0"], ["at least 1 sample", "got 0"]


@case("bench-device-bogus")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--backend", "onnxruntime", "--device", "bogus"], ["bogus", "onnxruntime"]


@case("bench-split-bogus")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--backend", "onnxruntime", "--split", "bogus"], ["--split", "bogus"]


@case("bench-input-size-for-onnx")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--input-size", "32"], ["--input-size", "bundles and OpenVINO IRs only", "m.onnx"]


@case("bench-metric-file-missing")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--metric", "nope.py:fn"], ["--metric", "nope.py"]


@case("bench-report-already-exists")
def _(ws: Workspace):
    ws.write("rep/report.json", '{"schema_version": 1}')
    return ["bench", ws.onnx(), *FAST, "--report", "rep"], ["rep", "already holds a report", "--force"]


@case("bench-report-is-a-file")
def _(ws: Workspace):
    ws.write("rep", "not a directory")
    return (["bench", ws.onnx(), *FAST, "--backend", "onnxruntime", "--no-accuracy", "--report", "rep"],
            ["rep", "directory"])


# bench: artifacts

@case("bench-missing-file")
def _(ws: Workspace):
    return ["bench", "missing.onnx", *FAST], ["missing.onnx", "does not exist"]


@case("bench-xml-without-bin")
def _(ws: Workspace):
    return ["bench", ws.ir(with_bin=False), *FAST, "--backend", "openvino"], ["m.xml", "m.bin"]


@case("bench-xml-not-xml")
def _(ws: Workspace):
    ws.write("bad.xml", "<not xml")
    ws.write("bad.bin", b"")
    return ["bench", "bad.xml", *FAST, "--backend", "openvino"], ["bad.xml", "not an OpenVINO IR"]


@case("bench-onnxruntime-random-bytes-onnx")
def _(ws: Workspace):
    ws.write("r.onnx", random.Random(4096).randbytes(4096))
    return ["bench", "r.onnx", *FAST, "--backend", "onnxruntime"], ["r.onnx", "onnxruntime cannot load"]


@case("bench-onnx-without-metadata")
def _(ws: Workspace):
    name = ws.onnx_with_metadata("plain.onnx", None)
    return ["bench", name, *FAST, "--backend", "onnxruntime"], ["plain.onnx", "no deepslim metadata"]


@case("bench-engine-without-sidecar")
def _(ws: Workspace):
    ws.write("x.engine", random.Random(256).randbytes(256))
    return ["bench", "x.engine", *FAST, "--backend", "tensorrt"], ["x.engine", "x.engine.json"]


@case("bench-no-backend-runs-the-artifact")
def _(ws: Workspace):
    return ["bench", ws.onnx(), *FAST, "--backend", "torch"], ["torch", "m.onnx"]


@case("bench-unknown-artifact-suffix")
def _(ws: Workspace):
    return ["bench", ws.write("m.tflite", b"?"), *FAST], ["m.tflite", "not a known artifact"]


@case("bench-class-count-mismatch-onnx")
def _(ws: Workspace):
    ws.write("data.py", DATA_PY)
    return (["bench", ws.onnx(), *FAST, "--backend", "onnxruntime", "--dataset", "data.py:make"],
            ["m.onnx", "10 classes", "has 3"])


@case("bench-tensorrt-for-bundle-without-tensorrt", needs_no_tensorrt)
def _(ws: Workspace):
    return ["bench", ws.bundle(), *FAST, "--backend", "tensorrt"], ["'tensorrt'", "GPU"]


@case("bench-class-count-mismatch-bundle")
def _(ws: Workspace):
    ws.write("data.py", DATA_PY)
    return ["bench", ws.bundle(), *FAST, "--dataset", "data.py:make"], ["m.safetensors", "10 classes", "has 3"]


@case("bench-second-artifact-missing")
def _(ws: Workspace):
    return ["bench", ws.bundle(), "missing.onnx", *FAST, "--no-accuracy"], ["missing.onnx", "does not exist"]


# --- the tests --------------------------------------------------------------------------------

def test_there_are_enough_cases() -> None:
    commands = {case_id.split("-")[0] for case_id in CASES}
    assert commands == {"export", "bench"}
    assert sum(1 for k in CASES if k.startswith("export")) >= 15
    assert sum(1 for k in CASES if k.startswith("bench")) >= 15


@pytest.mark.parametrize("case_id", CASES.params())
def test_bad_input_is_one_error_line_and_exit_2(case_id: str, workspace: Workspace) -> None:
    args, fragments = CASES[case_id](workspace)
    assert_bad_input(args, fragments, workspace.root)


def test_export_no_verify_warns_that_parity_was_not_checked(workspace: Workspace) -> None:
    from deepslim.artifact import read_onnx_meta
    model = workspace.bundle()
    before = snapshot(workspace.root)
    result = invoke(["export", model, "--target", "onnx", "--no-verify", "-o", "x.onnx"])
    shown = f"exit code {result.exit_code}; stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.exit_code == 0 and result.exception is None, shown
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert any("parity NOT checked" in line for line in warnings), shown
    assert "parity ok" not in result.stdout, shown
    assert "wrote x.onnx" in result.stdout, shown
    after = snapshot(workspace.root)
    assert sorted(set(after) - set(before)) == ["x.onnx"], sorted(set(after) - set(before))
    assert all(after[k] == v for k, v in before.items()), "the input bundle was changed"
    meta = read_onnx_meta(workspace.root / "x.onnx")
    assert meta is not None and len(meta.classes) == 10 and meta.input_spec.size == (8, 8)


def test_bench_unreadable_xml_real_process_stderr_is_one_line(workspace: Workspace) -> None:
    """The same contract seen from a real process, where native libraries write to fd 2 too."""
    workspace.write("bad.xml", "<not xml")
    workspace.write("bad.bin", b"")
    before = snapshot(workspace.root)
    proc = subprocess.run([sys.executable, str(Path(cli.__file__)), "bench", "bad.xml", *FAST, "--backend",
                           "openvino"], cwd=workspace.root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert snapshot(workspace.root) == before
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.xml" in lines[0], proc.stderr
