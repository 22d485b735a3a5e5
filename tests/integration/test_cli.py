"""The CLI end to end: train -> eval -> info, pickled modules, resume after a kill, the demo, fast --help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

import cli
from cli_contract import kill_when, ok

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()



def test_train_eval_info_round_trip(tmp_path):
    out = tmp_path / "base.safetensors"
    ok(["train", "--arch", "small_cnn", "--dataset", "digits", "--input-size", "8", "--epochs", "3",
         "--quiet", "-o", out])
    assert out.exists() and not list(tmp_path.glob("*.ckpt")) and not list(tmp_path.glob(".*tmp-*"))
    metrics = json.loads(ok(["eval", out, "--dataset", "digits", "--json"]).stdout)["metrics"]
    assert metrics["top1"] >= 0.9 and metrics["samples"] == 360
    assert {"top5", "roc_auc_macro", "ap_macro"} <= set(metrics)
    table = ok(["eval", out, "--dataset", "digits-c", "--severity", "2"]).stdout
    assert "top1" in table and "roc_auc_macro" in table
    header = json.loads(ok(["info", out, "--json"]).stdout)
    assert header["lineage"][0]["stage"] == "train" and header["input"]["shape"] == [1, 8, 8]
    # fine-tune the bundle further: lineage grows, input untouched
    before = out.read_bytes()
    tuned = tmp_path / "tuned.safetensors"
    ok(["train", out, "--dataset", "digits", "--epochs", "1", "--freeze-backbone", "--quiet", "-o", tuned])
    assert out.read_bytes() == before
    assert [r["stage"] for r in json.loads(ok(["info", tuned, "--json"]).stdout)["lineage"]] == ["train", "train"]


def test_eval_arch_with_state_dict_and_pickled_module(tmp_path):
    from deepslim.models import SmallCNN
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10, in_channels=1, width=8)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    torch.save(model, tmp_path / "whole.pt")
    by_weights = json.loads(ok(["eval", "--arch", "small_cnn", "--arch-kwargs", '{"width": 8}', "--weights",
                                 tmp_path / "w.pth", "--input-size", "8", "--json"]).stdout)["metrics"]
    by_pickle = json.loads(ok(["eval", tmp_path / "whole.pt", "--trust-pickle", "--input-size", "8",
                                "--json"]).stdout)["metrics"]
    assert by_weights == by_pickle


def test_debug_shows_the_traceback(tmp_path):
    result = runner.invoke(cli.app, ["--debug", "eval", str(tmp_path / "missing.safetensors")])
    assert result.exit_code != 0 and type(result.exception).__name__ == "InputFileError"


def test_help_is_fast_and_imports_no_backend():
    code = ("import sys; from typer.testing import CliRunner; import cli; "
            "r = CliRunner().invoke(cli.app, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'torchvision', 'onnx', 'onnxruntime', 'openvino', 'tensorrt', "
            "'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_python_cli_py_and_console_script_work():
    out = subprocess.run([sys.executable, "cli.py", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("deepslim ")
    script = Path(sys.executable).with_name("deepslim")
    out = subprocess.run([str(script), "archs"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "resnet18" in out.stdout and "small_cnn" in out.stdout


def test_killed_training_resumes_from_checkpoint(tmp_path):
    out = tmp_path / "m.safetensors"
    ckpt = tmp_path / "m.safetensors.ckpt"
    args = [sys.executable, str(ROOT / "cli.py"), "train", "--arch", "small_cnn", "--input-size", "16",
            "--epochs", "6", "--quiet", "-o", str(out)]
    kill_when(args, ckpt.exists)
    assert not out.exists() and not list(tmp_path.glob(".*tmp-*"))
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr
    from deepslim.models import load_model
    bundle = load_model(out)
    history = bundle.lineage[-1].metrics["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert bundle.lineage[-1].metrics["test"]["top1"] >= 0.95
    assert not ckpt.exists()


def test_demo_trains_prunes_quantizes_benchmarks_and_resumes(tmp_path):
    demo = tmp_path / "demo"
    args = ["demo", "--out-dir", demo, "--epochs", "2", "--finetune-epochs", "1", "--bench-seconds", "0.3", "--quiet"]
    result = ok(args)
    assert "final artifact" in result.stdout and "faster than the original on torch eager" in result.stdout
    for stage, name in (("01-train", "model.safetensors"), ("02-prune", "model.safetensors"),
                        ("03-quantize", "model_int8.xml"), ("03-quantize", "model_int8.bin"), ("bench", "report.html")):
        assert (demo / stage / name).is_file(), (stage, name)
    manifest = json.loads((demo / "manifest.json").read_text())
    assert manifest["stages"]["2"]["config"]["recover"] == "kd"
    pruned, final = (manifest["stages"][k]["metrics"]["test"]["top1"] for k in ("2", "3"))
    assert final >= 0.5 and abs(final - pruned) <= 0.05, (pruned, final)  # 2 epochs: far from done, far above chance
    report = json.loads((demo / "bench" / "report.json").read_text())
    assert [e["backend"] for e in report["entries"]] == ["torch", "onnxruntime", "openvino"] * 2 + ["openvino"]
    assert all(e["input_shape"][1:] == [224, 224] for e in report["entries"])
    assert report["entries"][-1]["precision"] == "int8" and report["entries"][3]["macs"] < 0.6 * report["entries"][0]["macs"]
    again = ok(args)  # a second run reuses every stage and the report
    assert again.stdout.count("kept") == 4


def test_resnet18_on_digits_reaches_97_percent(tmp_path):
    """The foundation's acceptance run (about 25 s of training on 2 cores)."""
    out = tmp_path / "base.safetensors"
    ok(["train", "--arch", "resnet18", "--dataset", "digits", "--input-size", "32", "--quiet", "-o", out])
    metrics = json.loads(ok(["eval", out, "--dataset", "digits", "--json"]).stdout)["metrics"]
    assert metrics["top1"] >= 0.97


def test_same_seed_on_the_command_line_gives_the_same_model(tmp_path):
    from deepslim.bundle import read_tensors
    for name in ("a", "b"):
        ok(["train", "--arch", "small_cnn", "--input-size", "8", "--epochs", "1", "--seed", "7", "--quiet",
             "-o", tmp_path / f"{name}.safetensors"])
    a, b = (read_tensors(tmp_path / f"{n}.safetensors") for n in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
