"""Every command measures on the model's own dataset unless told otherwise, and says which (issue #12)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cli_contract import invoke, ok

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mnist_folder import write_mnist_folder  # noqa: E402

SMALL = ["--arch", "small_cnn", "--arch-kwargs", '{"width": 8}', "--input-size", "8", "--quiet"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """small_cnn trained 2 epochs on digits, and one on a 20-per-class MNIST ImageFolder (28 px PNGs)."""
    root = tmp_path_factory.mktemp("dataset_default")
    mnist = write_mnist_folder(root / "mnist", per_class=20)
    on_digits, on_mnist = root / "digits.safetensors", root / "mnist.safetensors"
    ok(["train", *SMALL, "-d", "digits", "--epochs", "2", "-o", on_digits])
    ok(["train", *SMALL, "-d", mnist, "--epochs", "2", "-o", on_mnist])
    return {"digits": on_digits, "mnist": on_mnist, "mnist_dir": mnist, "root": root}


def _top1(args: list) -> float:
    return json.loads(ok([*args, "--json"]).stdout)["metrics"]["top1"]


def test_eval_without_dataset_uses_the_recorded_one(models):
    assert _top1(["eval", models["mnist"]]) == _top1(["eval", models["mnist"], "-d", models["mnist_dir"]])
    result = ok(["eval", models["mnist"]])
    assert "the model's own dataset" in result.output and str(models["mnist_dir"]) in result.output.replace("\n", "")
    # the digits model is not measured on MNIST, nor the MNIST one on digits, unless asked
    assert _top1(["eval", models["digits"]]) == _top1(["eval", models["digits"], "-d", "digits"])


def test_a_dataset_other_than_the_recorded_one_is_allowed_and_said(models):
    result = ok(["eval", models["mnist"], "-d", "digits"])
    assert "differs from the dataset the model was made on" in result.output.replace("\n", " ")
    as_json = json.loads(ok(["eval", models["mnist"], "-d", "digits", "--json"]).stdout)
    assert as_json["recorded_dataset"] == str(models["mnist_dir"].resolve()) and as_json["dataset"] == "digits"


def test_the_recorded_dataset_is_absolute_so_another_directory_finds_it(models, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    lineage = json.loads(ok(["info", models["mnist"], "--json"]).stdout)["lineage"]
    assert lineage[-1]["config"]["dataset"] == str(models["mnist_dir"].resolve())
    assert _top1(["eval", models["mnist"]]) > 0.1


def test_no_recorded_dataset_and_no_dataset_option_is_an_error(models, tmp_path):
    from deepslim.models import load_model, save_model
    bare = save_model(load_model(arch="small_cnn", num_classes=10, input_size=8, arch_kwargs={"width": 8}),
                      tmp_path / "bare.safetensors")
    for args in (["eval", bare], ["compress", "prune", bare, "--ratio", "0.3", "-o", tmp_path / "p.safetensors"],
                 ["bench", bare, "-b", "torch", "-r", tmp_path / "rep"]):
        result = invoke([str(a) for a in args])
        assert result.exit_code == 2 and "records no dataset; pass --dataset" in result.output, result.output
    assert not (tmp_path / "p.safetensors").exists() and not (tmp_path / "rep").exists()
    result = invoke(["train", *SMALL, "-o", str(tmp_path / "new.safetensors")])
    assert result.exit_code == 2 and "needs --dataset" in result.output


def test_bench_of_models_made_on_different_datasets_asks_which(models, tmp_path):
    result = invoke([str(a) for a in ["bench", models["digits"], models["mnist"], "-b", "torch",
                                      "-r", tmp_path / "rep"]])
    assert result.exit_code == 2 and "different datasets" in result.output and "--no-accuracy" in result.output


def test_a_moved_dataset_is_named_in_the_error(models, tmp_path):
    import shutil
    moved = shutil.copytree(models["mnist_dir"], tmp_path / "mnist")
    model = tmp_path / "m.safetensors"
    ok(["train", *SMALL, "-d", moved, "--epochs", "1", "-o", model])
    shutil.rmtree(moved)
    result = invoke(["eval", str(model)])
    assert result.exit_code == 2 and "is not here; pass --dataset" in result.output


def test_class_names_are_checked_against_the_dataset(models, tmp_path):
    pets = tmp_path / "pets"
    from PIL import Image
    for c in ("cat", "dog"):
        (pets / c).mkdir(parents=True)
        for i in range(10):
            Image.new("L", (8, 8), color=20 * i).save(pets / c / f"{i}.png")
    two = tmp_path / "two.safetensors"
    ok(["train", *SMALL, "-d", pets, "--epochs", "1", "-o", two])
    result = invoke(["eval", str(two), "-d", "digits"])
    assert result.exit_code == 2 and "2" in result.output and "10" in result.output


def test_a_recipe_without_dataset_takes_its_models_and_check_says_when_there_is_none(models, tmp_path):
    new = tmp_path / "new.yaml"
    new.write_text("name: new\nmodel: {arch: small_cnn, input_size: 8}\nstages: []\nbench: null\n")
    result = invoke(["run", str(new), "--check"])
    assert result.exit_code == 2 and "needs a `dataset:`" in result.output
    own = tmp_path / "own.yaml"
    own.write_text(f"name: own\nmodel: {{path: {models['mnist']}}}\nstages: []\nbench: null\n")
    assert "valid" in ok(["run", own, "--check"]).stdout
    from pipeline.recipe import load_recipe, recipe_dataset
    assert recipe_dataset(load_recipe(own), tmp_path) == str(models["mnist_dir"].resolve())
