"""The CLI's options for every model kind (#13): dataset references with table options, image preprocessing,
the primary metric, recipes with the same fields, and tables that name the task's metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from commands.common import (dataset_ref, metric_keys, metric_label, parse_floats, parse_input_size, primary_label,
                             with_primary)
from commands.compress_tables import change
from deepslim.errors import ConfigError
from deepslim.provenance import canonical_dataset, resolve_dataset, split_reference
from deepslim.spec import StageRecord
from deepslim.tasks import Task, TaskKind
from pipeline.recipe import parse_recipe, recipe_dataset, resolve_dataset_spec
from pipeline.search_report import moved

REGRESSION = Task(TaskKind.REGRESSION, ("target",))
MAE = REGRESSION.with_primary("mae")
CLASSES = Task.classification(["a", "b", "c"])


# --- dataset references -----------------------------------------------------------------------

def test_table_options_are_written_into_the_dataset_reference():
    assert dataset_ref("data.csv", "y", None, TaskKind.REGRESSION) == "data.csv?label=y&task=regression"
    assert dataset_ref("data.csv", "y,z", "a,b") == "data.csv?features=a,b&label=y,z"
    assert dataset_ref("data.csv?task=regression", "y") == "data.csv?label=y&task=regression"
    assert dataset_ref("digits") == "digits" and dataset_ref(None) is None
    with pytest.raises(ConfigError, match="--label-column, --task describe the --dataset; pass --dataset too"):
        dataset_ref(None, "y", None, "regression")
    with pytest.raises(ConfigError, match="digits is a built-in image classification dataset"):
        dataset_ref("digits", "y")


def test_recorded_references_keep_their_options_and_reopen(tmp_path: Path):
    table = tmp_path / "wine.csv"
    table.write_text("a,target\n1,0\n")
    assert canonical_dataset("wine") == "wine" and canonical_dataset("mnist") == "mnist"  # built-ins, not paths
    assert canonical_dataset("wine?task=regression") == "wine?task=regression"
    assert canonical_dataset(f"{table}?task=regression&label=target") == f"{table}?label=target&task=regression"
    assert split_reference("d.csv?task=x&label=y") == ("d.csv", "?label=y&task=x")
    lineage = [StageRecord("train", {"dataset": f"{table}?label=target"}, 1.0, {})]
    assert resolve_dataset(None, lineage, classes=["0", "1"]).spec == f"{table}?label=target"
    for name in ("wine", "diabetes?task=regression"):
        assert resolve_dataset(None, [StageRecord("train", {"dataset": name}, 1.0, {})]).spec == name
    table.unlink()
    with pytest.raises(Exception, match="is not here"):
        resolve_dataset(None, lineage, classes=["0", "1"])


# --- preprocessing and metrics options --------------------------------------------------------

def test_input_size_mean_and_std_parse_or_say_why():
    assert parse_input_size("28x56") == (28, 56) and parse_input_size("32") == (32, 32)
    assert parse_input_size(None) is None
    with pytest.raises(ConfigError, match="got 0"):
        parse_input_size("0")
    with pytest.raises(ConfigError, match="HxW"):
        parse_input_size("28x")
    assert parse_floats("0.485,0.456,0.406", "--mean") == (0.485, 0.456, 0.406)
    with pytest.raises(ConfigError, match="--mean must be comma-separated numbers"):
        parse_floats("0.5;0.5", "--mean")
    with pytest.raises(ConfigError, match="--std values must be positive"):
        parse_floats("0.2,0", "--std")


def test_primary_metric_overrides_a_bundle_task_by_name(cnn_bundle):
    judged = with_primary(cnn_bundle, "f1_macro")
    assert judged.task.primary == "f1_macro" and cnn_bundle.task.primary == "top1"
    with pytest.raises(ConfigError, match="nope is not a metric deepslim measures"):
        with_primary(cnn_bundle, "nope")
    with pytest.raises(ConfigError, match="mae is not a classification metric"):
        with_primary(cnn_bundle, "mae")


def test_tables_lead_with_the_primary_metric_by_its_label():
    assert metric_keys(None) == metric_keys(Task.classification(["0", "1"]))[:5]  # the image case as before
    assert metric_keys(Task.classification(["0", "1"]))[0] == "top1" and metric_label("top1", CLASSES) == "top1"
    assert metric_keys(MAE)[:3] == ["mae", "rmse", "r2"]
    assert metric_label("mae", MAE) == "MAE (primary)" and metric_label("r2", MAE) == "R²"
    assert primary_label(REGRESSION) == "R²" and primary_label(None) == "top-1"


def test_changes_are_direction_aware_in_the_metrics_unit():
    assert change(CLASSES, {"top1": 0.9}, {"top1": 0.9}) == "+0.00 pt"
    assert change(CLASSES, {"top1": 0.9}, {"top1": 0.88}) == "-2.00 pt"
    assert change(REGRESSION, {"r2": 0.40}, {"r2": 0.45}) == "+5.00 pt"
    assert change(MAE, {"mae": 50.0}, {"mae": 51.0}) == "2.00 % worse"  # a higher MAE is a loss
    assert moved(MAE, {"mae": 50.0}, {"mae": 49.0}) == "2.00 % better"


# --- help -------------------------------------------------------------------------------------

HELP = {
    ("train",): ["--label-column", "--feature-columns", "--task", "--task-output", "--primary-metric", "--loss",
                 "--mean", "--std", "--input-size", "--channels"],
    ("eval",): ["--label-column", "--feature-columns", "--task", "--task-output", "--mean", "--std", "--input-size"],
    ("export",): ["--label-column", "--task", "--mean", "--std", "--channels", "--input-size", "--task-output"],
    ("bench",): ["--label-column", "--feature-columns", "--task"],
    ("compress", "prune"): ["--label-column", "--task", "--primary-metric", "--mean", "--input-size"],
    ("compress", "distill"): ["--label-column", "--task", "--primary-metric", "--mean", "--task-output"],
    ("compress", "quantize"): ["--label-column", "--task", "--primary-metric"],
    ("auto",): ["--label-column", "--task", "--primary-metric"],
}


@pytest.mark.parametrize("command", list(HELP), ids=" ".join)
def test_help_documents_the_options(command):
    result = CliRunner().invoke(cli.app, [*command, "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in HELP[command]:
        assert f"{option} " in result.output, f"{option} missing from {' '.join(command)} --help"


# --- recipes ----------------------------------------------------------------------------------

def test_recipes_take_table_options_and_builtin_names(tmp_path: Path):
    (tmp_path / "wine.csv").write_text("a,target\n1,0\n")
    recipe = parse_recipe({"name": "t", "dataset": "wine.csv", "label_column": "target", "task": "regression",
                           "feature_columns": ["a"], "primary_metric": "mae", "model": {"arch": "mlp"}},
                          source=tmp_path / "r.yaml")
    assert recipe_dataset(recipe, tmp_path) == f"{tmp_path / 'wine.csv'}?features=a&label=target&task=regression"
    assert resolve_dataset_spec("wine", tmp_path) == "wine"
    assert resolve_dataset_spec("data.csv?label=y", tmp_path) == f"{(tmp_path / 'data.csv').resolve()}?label=y"
    wide = parse_recipe({"name": "w", "dataset": "digits", "model": {"arch": "small_cnn", "input_size": "28x56",
                                                                      "mean": [0.5], "std": [0.25]}})
    assert wide.model.size == (28, 56) and parse_recipe({"name": "s", "dataset": "digits", "model": {
        "arch": "small_cnn", "input_size": 32}}).model.size == 32


@pytest.mark.parametrize("data, message", [
    ({"label_column": "y"}, "label_column describe the dataset; give dataset too"),
    ({"dataset": "digits", "primary_metric": "acc"}, "primary_metric 'acc' is not one of"),
    ({"dataset": "digits", "model": {"arch": "x", "input_size": "28x"}}, "model.input_size"),
    ({"dataset": "digits", "model": {"path": "m.safetensors", "channels": 1}}, "channels apply to arch"),
    ({"dataset": "digits", "stages": [{"stage": "train", "loss": "l1"}]}, "stages.0.loss"),
])
def test_recipe_fields_are_checked_before_any_work(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_recipe({"name": "r", "model": {"arch": "mlp"}, **data})
