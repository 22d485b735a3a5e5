"""The CLI for every model kind (#13): tables with --label-column, regression, --task, --primary-metric,
non-square file architectures, `info` of a two-input model, a tabular recipe, and the errors that refuse a
model or a dataset in one sentence (exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_contract import assert_bad_input, assert_clean_failure, invoke, ok, snapshot

ANY_MODELS = Path(__file__).resolve().parents[1] / "data" / "any_models.py"
MLP = ["--arch", "mlp", "--optimizer", "adamw", "--quiet"]

# A user's file: a model with two inputs, a model whose output width ignores num_classes, datasets whose
# targets fit no task, and a small non-square image dataset (1 x 28 x 56, two classes).
USER_PY = '''\
import torch
from torch import nn


class Two(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.a, self.b = nn.Linear(13, num_classes), nn.Linear(13, num_classes)

    def forward(self, left, right):
        return self.a(left) + self.b(right)


def two(num_classes=3):
    return Two(num_classes)


def fixed(num_classes=3):
    return nn.Linear(13, 7)


def grids(split):
    return [(torch.rand(13), torch.zeros(2, 2)) for _ in range(20)]


def words(split):
    return [(torch.rand(13), "a") for _ in range(20)]


def wide(split):
    g = torch.Generator().manual_seed({"train": 0, "val": 1, "test": 2}[split])
    labels = torch.arange(24) % 2
    images = torch.rand(24, 1, 28, 56, generator=g) * 0.2
    for i, label in enumerate(labels):
        images[i, :, :, 28 * int(label):28 * int(label) + 28] += 0.8
    return list(zip(images, labels))
'''


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    """wine.csv (scikit-learn's wine, label column ``target``) and a copy with a text column."""
    from sklearn.datasets import load_wine
    root = tmp_path_factory.mktemp("tables")
    frame = load_wine(as_frame=True).frame
    frame.to_csv(root / "wine.csv", index=False)
    frame.assign(colour=["red", "white"] * (len(frame) // 2)).to_csv(root / "wine_text.csv", index=False)
    (root / "user.py").write_text(USER_PY)
    return root


@pytest.fixture()
def here(tables: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current directory holding the tables and the user file."""
    for name in ("wine.csv", "wine_text.csv", "user.py"):
        (tmp_path / name).write_bytes((tables / name).read_bytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _header(path: Path | str, *extra: str) -> dict:
    return json.loads(ok(["info", path, "--json", *extra]).stdout)


# --- tables, tasks and metrics ----------------------------------------------------------------

def test_train_a_csv_with_label_column_records_it_and_reopens(here: Path):
    result = ok(["train", *MLP, "--dataset", "wine.csv", "--label-column", "target", "--epochs", "30", "--lr", "0.01",
                 "-o", "wine.safetensors"])
    header = _header("wine.safetensors")
    record = header["lineage"][-1]
    assert record["config"]["dataset"] == f"{here / 'wine.csv'}?label=target"  # recorded with its option
    assert record["metrics"]["test"]["top1"] >= 0.85
    assert header["signature"]["inputs"][0]["kind"] == "features" and header["task"]["kind"] == "classification"
    assert "top1" in result.stdout
    again = json.loads(ok(["eval", "wine.safetensors", "--json"]).stdout)  # no -d: the recorded reference reopens
    assert again["dataset"].endswith("wine.csv?label=target") and again["task"] == "classification"
    assert again["metrics"]["top1"] == pytest.approx(record["metrics"]["test"]["top1"])
    assert {"f1_macro", "loss"} <= set(again["metrics"])


def test_diabetes_is_a_regression_with_r2_and_mae(here: Path):
    result = ok(["train", *MLP, "--dataset", "diabetes", "--epochs", "60", "--lr", "3e-3", "-o", "reg.safetensors"])
    header = _header("reg.safetensors")
    test = header["lineage"][-1]["metrics"]["test"]
    assert header["task"]["kind"] == "regression" and header["task"]["primary"] == "r2"
    assert test["r2"] >= 0.3 and test["mae"] > 0 and "rmse" in test and "top1" not in test
    assert "R² (primary)" in result.stdout and "MAE" in result.stdout and "top1" not in result.stdout
    evaluated = json.loads(ok(["eval", "reg.safetensors", "--json"]).stdout)
    assert evaluated["primary"] == "r2" and evaluated["metrics"]["mae"] == pytest.approx(test["mae"])


def test_task_regression_on_integer_targets(here: Path):
    ok(["train", *MLP, "-d", "wine.csv", "--label-column", "target", "--task", "regression", "--epochs", "3",
        "-o", "r.safetensors"])
    header = _header("r.safetensors")
    assert header["task"]["kind"] == "regression" and header["task"]["names"] == ["target"]
    assert header["lineage"][-1]["config"]["dataset"].endswith("wine.csv?label=target&task=regression")
    assert {"r2", "mae"} <= set(header["lineage"][-1]["metrics"]["test"])


def test_primary_metric_and_loss_are_recorded(here: Path):
    result = ok(["train", *MLP, "-d", "diabetes", "--primary-metric", "mae", "--loss", "huber", "--epochs", "2",
                 "-o", "mae.safetensors"])
    header = _header("mae.safetensors")
    assert header["task"]["primary"] == "mae" and header["task"]["loss"] == "huber"
    assert "val_mae" in header["lineage"][-1]["metrics"]
    assert "MAE (primary)" in result.stdout
    shown = ok(["info", "mae.safetensors"]).stdout
    assert "primary   mae (MAE, lower is better); loss huber" in shown


def test_prune_guards_with_another_primary_metric(here: Path, any_kind):
    result = ok(["compress", "prune", any_kind("tabular"), "-d", "wine", "--ratio", "0.5", "--primary-metric",
                 "f1_macro", "--no-check", "-q", "-o", "p.safetensors"])
    assert _header("p.safetensors")["task"]["primary"] == "f1_macro"
    assert "test macro F1" in result.stdout and " pt" in result.stdout


# --- image preprocessing of a file architecture -----------------------------------------------

def test_input_size_hxw_and_what_was_assumed_for_a_file_architecture(here: Path):
    base = ["train", "--arch", f"{ANY_MODELS}:wide_model", "--arch-kwargs", '{"width": 4}', "-d", "user.py:wide",
            "--epochs", "1", "--batch-size", "8"]
    assumed = ok([*base, "-o", "a.safetensors"])
    assert "assumed: input size 28x56 from the data (no --input-size)" in assumed.stderr
    assert "assumed: 1 channel from the data (no --channels)" in assumed.stderr
    ok([*base, "--input-size", "28x56", "--channels", "1", "--mean", "0.5", "--std", "0.25", "-o", "b.safetensors",
        "--quiet"])
    image = _header("b.safetensors", "--trust-code")["signature"]["inputs"][0]
    assert image["shape"] == ["batch", 1, 28, 56] and image["mean"] == [0.5] and image["std"] == [0.25]
    assert _header("a.safetensors", "--trust-code")["signature"]["notes"]  # recorded as well as printed


def test_info_shows_the_signature_and_task_of_a_two_input_bundle_and_its_export(any_kind, tmp_path: Path):
    for path in (any_kind("two_input"), tmp_path / "two.onnx"):
        if path.suffix == ".onnx":
            ok(["export", any_kind("two_input"), "--trust-code", "-t", "onnx", "--no-verify", "-o", path])
        shown = ok(["info", path, "--trust-code"]).stdout
        assert "image: image batchx1x8x8 float32 GRAY" in shown
        assert "meta: features batchx4 float32" in shown
        assert "outputs   logits (task output), embedding (dict)" in shown
        assert "task      classification, 10 classes" in shown and "primary   top1 (top-1, higher is better)" in shown


# --- a recipe for a tabular MLP ---------------------------------------------------------------

RECIPE = """\
name: wine-mlp
dataset: wine.csv
label_column: target
model: {arch: mlp, arch_kwargs: {hidden: [32, 16]}}
stages:
  - {stage: train, epochs: 30, lr: 0.01, optimizer: adamw}
  - {stage: prune, ratio: 0.5, finetune_epochs: 3, finetune_lr: 0.01, round_to: 1}
  - {stage: export, targets: [onnx]}
  - {stage: quantize, method: ptq, target: onnxruntime}
bench: null
"""


def test_a_tabular_recipe_validates(here: Path):
    (here / "wine.yaml").write_text(RECIPE)
    assert "valid (4 stages)" in ok(["run", "wine.yaml", "--check"]).stdout
    (here / "bad.yaml").write_text(RECIPE.replace("label_column: target\n", "label_column: nope\n"))
    assert_bad_input(["run", "bad.yaml", "--check"], ["no label column 'nope'", "target"], here)


@pytest.mark.slow
def test_a_tabular_recipe_runs_train_prune_quantize_export(here: Path):
    (here / "wine.yaml").write_text(RECIPE)
    result = ok(["run", "wine.yaml", "--run-dir", "rd", "--quiet"])
    manifest = json.loads((here / "rd" / "manifest.json").read_text())
    stages = manifest["stages"]
    assert [stages[str(i)]["kind"] for i in range(5)] == ["model", "train", "prune", "export", "quantize"]
    assert stages["1"]["metrics"]["test"]["top1"] >= 0.85
    assert stages["4"]["metrics"]["test"]["top1"] >= 0.8 and stages["4"]["metrics"]["primary"] == "top1"
    assert (here / "rd" / "03-export" / "model.onnx").is_file() and "test top-1" in result.stdout
    meta = json.loads(ok(["info", here / "rd" / "03-export" / "model.onnx", "--json"]).stdout)
    assert meta["signature"]["inputs"][0]["kind"] == "features" and meta["task"]["kind"] == "classification"
    again = ok(["run", "wine.yaml", "--run-dir", "rd", "--quiet"])
    assert again.stdout.count("kept") == 5


# --- errors: one sentence, exit 2, nothing written ---------------------------------------------

TRAIN = ["train", "--arch", "mlp", "-o", "x.safetensors"]
ERRORS = {
    "csv-without-label-column": ([*TRAIN, "-d", "wine.csv"], ["needs a label column", "--label-column", "target"]),
    "missing-label-column": ([*TRAIN, "-d", "wine.csv", "--label-column", "nope"], ["no label column 'nope'"]),
    "missing-feature-column": ([*TRAIN, "-d", "wine.csv", "--label-column", "target", "--feature-columns",
                                "alcohol,nope"], ["no feature column 'nope'"]),
    "non-numeric-column": ([*TRAIN, "-d", "wine_text.csv", "--label-column", "target"],
                           ["'colour'", "not numeric", "--feature-columns"]),
    "task-that-the-targets-do-not-fit": ([*TRAIN, "-d", "wine.csv", "--label-column", "alcohol", "--task",
                                          "classification"], ["--task classification", "regression targets"]),
    "targets-of-no-task-shape": ([*TRAIN, "-d", "user.py:grids"], ["shape (2, 2)", "a number or a vector"]),
    "targets-of-no-task-dtype": ([*TRAIN, "-d", "user.py:words"], ["fit no task"]),
    "input-count-does-not-match-forward": (["train", "--arch", "user.py:two", "-d", "wine.csv", "--label-column",
                                            "target", "-o", "x.safetensors"], ["2 inputs (left, right)", "gives 1"]),
    "outputs-unreadable-for-the-task": (["train", "--arch", "user.py:fixed", "-d", "wine.csv", "--label-column",
                                         "target", "-o", "x.safetensors"], ["No output", "fits a classification",
                                                                            "3 values"]),
    "loss-on-classification": ([*TRAIN, "-d", "wine", "--loss", "huber"], ["--loss huber applies to regression"]),
    "primary-metric-of-another-task": ([*TRAIN, "-d", "wine", "--primary-metric", "mae"],
                                       ["mae is not a classification metric", "top1"]),
    "primary-metric-unknown": ([*TRAIN, "-d", "wine", "--primary-metric", "acc"], ["acc is not a metric", "mae"]),
    "mean-for-features": ([*TRAIN, "-d", "wine", "--mean", "0.5"], ["--mean", "one image input"]),
    "mean-of-wrong-length": (["train", "--arch", "small_cnn", "-d", "digits", "--mean", "0.5,0.5,0.5", "-o",
                              "x.safetensors"], ["--mean has 3 values", "1 channel"]),
    "bad-input-size": (["train", "--arch", "small_cnn", "-d", "digits", "--input-size", "28x", "-o",
                        "x.safetensors"], ["--input-size", "HxW", "'28x'"]),
    "label-column-for-an-image-dataset": ([*TRAIN, "-d", "digits", "--label-column", "y"],
                                          ["--label-column", "digits is a built-in image"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_one_sentence_and_write_nothing(here: Path, case: str):
    args, fragments = ERRORS[case]
    assert_bad_input(args, fragments, here, output="x.safetensors")


def test_task_output_that_does_not_fit_lists_what_it_read(here: Path):
    assert_bad_input(["train", "--arch", f"{ANY_MODELS}:two_input_model", "-d", f"{ANY_MODELS}:two_input_data",
                      "--task-output", "embedding", "-o", "x.safetensors"],
                     ["Output 'embedding'", "does not fit a classification"], here, output="x.safetensors")


def test_table_options_need_a_dataset(here: Path):
    before = snapshot(here)  # no -d added: the case is the missing --dataset
    result = invoke(["train", "--arch", "mlp", "--label-column", "target", "-o", "x.safetensors"])
    assert_clean_failure(result, ["--label-column", "pass --dataset"], before=before, root=here)
