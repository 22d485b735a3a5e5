"""Tables (CSV / Parquet files and folders), the scikit-learn tables, mnist and the mlp architecture."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from deepslim.data import split_options
from deepslim.datasets.tabular import is_table_path, open_table
from deepslim.errors import ConfigError, DatasetError
from deepslim.mlp import MLP
from deepslim.signature import InputKind, Signature
from deepslim.tasks import TaskKind


def _wine() -> pd.DataFrame:
    from sklearn.datasets import load_wine
    return load_wine(as_frame=True).frame


def _diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes
    return load_diabetes(as_frame=True, scaled=False).frame


@pytest.fixture
def wine_csv(tmp_path):
    path = tmp_path / "wine.csv"
    _wine().to_csv(path, index=False)
    return path


def _split_ids(source) -> dict[str, set[int]]:
    return {s: set(source.table.splits[s].tolist()) for s in ("train", "val", "test")}


# --- splits ------------------------------------------------------------------------------------

def test_csv_split_is_70_15_15_disjoint_and_stratified(wine_csv):
    source = open_table(str(wine_csv), {"label": "target"})
    ids = _split_ids(source)
    assert [len(ids[s]) for s in ("train", "val", "test")] == [124, 27, 27]
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert ids["train"] | ids["val"] | ids["test"] == set(range(178))
    y = source.table.targets
    overall = np.bincount(y) / len(y)
    for split in ("train", "val", "test"):
        share = np.bincount(y[source.table.splits[split]], minlength=3) / len(ids[split])
        assert np.abs(share - overall).max() < 0.04, (split, share, overall)
    assert "70/15/15" in source.info.split_policy and "stratified" in source.info.split_policy
    again = open_table(str(wine_csv), {"label": "target"})
    assert _split_ids(again) == ids  # seeded: the same rows every time


def test_split_column_is_used_as_is(tmp_path):
    frame = _wine()
    frame["split"] = np.where(frame.index < 100, "train", np.where(frame.index < 140, "val", "test"))
    path = tmp_path / "wine_split.csv"
    frame.to_csv(path, index=False)
    source = open_table(str(path), {"label": "target"})
    ids = _split_ids(source)
    assert ids == {"train": set(range(100)), "val": set(range(100, 140)), "test": set(range(140, 178))}
    assert "split" not in source.table.feature_names and len(source.table.feature_names) == 13
    assert "split column" in source.info.split_policy


def test_bad_split_values_are_refused(tmp_path):
    frame = _wine()
    frame["split"] = "train"
    frame.loc[:5, "split"] = "validation"
    path = tmp_path / "bad_split.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match="validation"):
        open_table(str(path), {"label": "target"})


def test_folder_of_train_val_test_parquet_files_is_used_as_is(tmp_path):
    frame = _wine()
    for name, part in (("train", frame.iloc[:120]), ("val", frame.iloc[120:150]), ("test", frame.iloc[150:])):
        part.to_parquet(tmp_path / f"{name}.parquet", index=False)
    assert is_table_path(tmp_path)
    source = open_table(str(tmp_path), {"label": "target"})
    assert [len(source.table.splits[s]) for s in ("train", "val", "test")] == [120, 30, 28]
    test_rows = source.table.features[source.table.splits["test"]]
    np.testing.assert_allclose(test_rows, frame.iloc[150:].drop(columns="target").to_numpy(np.float32))
    assert "as they are" in source.info.split_policy


def test_folder_missing_a_split_file_is_refused(tmp_path):
    _wine().to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DatasetError, match="val/test"):
        open_table(str(tmp_path), {"label": "target"})


# --- features and standardisation ---------------------------------------------------------------

def test_standardisation_is_learnt_on_the_train_split_only(wine_csv):
    source = open_table(str(wine_csv), {"label": "target"})
    (spec,) = source.info.inputs
    assert spec.kind is InputKind.FEATURES and spec.shape == ("batch", 13) and spec.dtype == "float32"
    train = _wine().drop(columns="target").to_numpy()[source.table.splits["train"]]
    np.testing.assert_allclose(spec.mean, train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(spec.std, train.std(axis=0), rtol=1e-5)
    everything = _wine().drop(columns="target").to_numpy()
    assert not np.allclose(spec.mean, everything.mean(axis=0), rtol=1e-4)
    assert source.info.channels == 0 and source.info.mean == () and source.info.std == ()


def test_constant_feature_std_is_clamped(tmp_path):
    frame = _wine()
    frame["constant"] = 3.0
    path = tmp_path / "const.csv"
    frame.to_csv(path, index=False)
    spec = open_table(str(path), {"label": "target"}).info.inputs[0]
    assert spec.std[-1] == pytest.approx(1e-6)


def test_feature_columns_pick_and_order(wine_csv):
    source = open_table(f"{wine_csv}?label=target&features=proline,alcohol", {})
    assert source.table.feature_names == ("proline", "alcohol")
    np.testing.assert_allclose(source.table.features[:, 0], _wine()["proline"].to_numpy(np.float32))
    assert source.info.name == f"{wine_csv.resolve()}?features=proline,alcohol&label=target"
    with pytest.raises(DatasetError, match="'colour'"):
        open_table(str(wine_csv), {"label": "target", "features": "alcohol,colour"})


def test_non_numeric_column_is_refused_by_name(tmp_path):
    frame = _wine()
    frame["region"] = np.where(frame.index % 2 == 0, "north", "south")
    path = tmp_path / "text.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"Column 'region' .* not numeric .*features="):
        open_table(str(path), {"label": "target"})
    ok = open_table(str(path), {"label": "target", "features": "alcohol,ash"})  # the way out the message names
    assert ok.table.feature_names == ("alcohol", "ash")


def test_missing_label_column_lists_the_columns(wine_csv):
    with pytest.raises(DatasetError, match=r"no label column 'quality'.*alcohol, malic_acid"):
        open_table(str(wine_csv), {"label": "quality"})
    with pytest.raises(DatasetError, match=r"needs a label column.*proline, target"):
        open_table(str(wine_csv), {})


def test_nan_in_a_feature_or_the_label_is_refused_with_its_count(tmp_path):
    frame = _wine()
    frame.loc[[3, 8, 9], "ash"] = np.nan
    path = tmp_path / "nan.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"'ash' \(3 rows\)"):
        open_table(str(path), {"label": "target"})
    frame = _diabetes()
    frame.loc[0, "target"] = np.nan
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"'target' \(1 row\)"):
        open_table(str(path), {"label": "target"})


# --- labels and tasks ---------------------------------------------------------------------------

def test_string_labels_become_sorted_class_names(tmp_path):
    frame = _wine()
    frame["target"] = frame["target"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    path = tmp_path / "named.csv"
    frame.to_csv(path, index=False)
    source = open_table(str(path), {"label": "target"})
    assert source.info.task.kind is TaskKind.CLASSIFICATION
    assert source.info.classes == ("barbera", "barolo", "grignolino") == source.info.task.names
    names = np.array(source.info.classes)[source.table.targets]
    assert (names == frame["target"].to_numpy()).all()
    assert source.table.targets.dtype == np.int64


def test_float_label_is_a_regression_shuffled_70_15_15(tmp_path):
    path = tmp_path / "diabetes.csv"
    _diabetes().to_csv(path, index=False)
    source = open_table(str(path), {"label": "target"})
    task = source.info.task
    assert task.kind is TaskKind.REGRESSION and task.names == ("target",) and source.info.classes == ("target",)
    assert source.table.targets.dtype == np.float32
    np.testing.assert_allclose(source.table.targets, _diabetes()["target"].to_numpy(), rtol=1e-6)
    ids = _split_ids(source)
    assert [len(ids[s]) for s in ("train", "val", "test")] == [309, 67, 66]
    assert ids["train"] | ids["val"] | ids["test"] == set(range(442)) and not ids["val"] & ids["test"]
    assert "shuffled" in source.info.split_policy


def test_task_option_overrides_or_refuses(tmp_path, wine_csv):
    source = open_table(str(wine_csv), {"label": "target", "task": "regression"})
    assert source.info.task.kind is TaskKind.REGRESSION and source.table.targets.dtype == np.float32
    path = tmp_path / "diabetes.csv"
    _diabetes().to_csv(path, index=False)
    with pytest.raises(DatasetError, match="classification needs one integer class"):
        open_table(str(path), {"label": "target", "task": "classification"})
    with pytest.raises(ConfigError, match="task="):
        open_table(str(wine_csv), {"label": "target", "task": "ranking"})


def test_several_label_columns_make_a_multilabel_task(tmp_path):
    frame = _wine()
    target = frame.pop("target")
    frame["is_0"], frame["is_1"] = (target == 0).astype(int), (target == 1).astype(int)
    frame["is_2"] = (frame["alcohol"] > 13).astype(int)
    path = tmp_path / "multi.csv"
    frame.to_csv(path, index=False)
    source = open_table(str(path), {"label": "is_0,is_1,is_2"})
    assert source.info.task.kind is TaskKind.MULTILABEL and source.info.classes == ("is_0", "is_1", "is_2")
    assert source.table.targets.shape == (178, 3) and len(source.table.feature_names) == 13


def test_options_and_paths():
    with pytest.raises(ConfigError, match="Unknown table option"):
        open_table("b.csv", {"lable": "y"})
    assert is_table_path("x.csv?label=y") and is_table_path("x.PARQUET") and not is_table_path("x.png")
    with pytest.raises(DatasetError, match="does not exist"):
        open_table("no_such_table.csv", {"label": "y"})


def test_name_reopens_from_another_directory(wine_csv, tmp_path, monkeypatch):
    source = open_table(str(wine_csv), {"label": "target"})
    monkeypatch.chdir(tmp_path)
    relative = open_table("wine.csv?label=target", {})
    assert relative.info.name == source.info.name == f"{wine_csv.resolve()}?label=target"
    monkeypatch.chdir("/")
    path, options = split_options(relative.info.name)
    assert _split_ids(open_table(path, options)) == _split_ids(source)


# --- built-in tables ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, kind, classes, rows, features", [
    ("breast-cancer", TaskKind.CLASSIFICATION, ("malignant", "benign"), 569, 30),
    ("wine", TaskKind.CLASSIFICATION, ("class_0", "class_1", "class_2"), 178, 13),
    ("diabetes", TaskKind.REGRESSION, ("target",), 442, 10),
])
def test_sklearn_tables(name, kind, classes, rows, features):
    from deepslim.datasets.sklearn_tables import open_sklearn
    source = open_sklearn(name)
    assert source.info.name == name and source.info.task.kind is kind and source.info.classes == classes
    assert sum(len(source.table.splits[s]) for s in ("train", "val", "test")) == rows
    assert source.info.inputs[0].shape == ("batch", features)
    assert f"{rows:,} {name}" in source.info.split_policy


def test_unknown_sklearn_table():
    from deepslim.datasets.sklearn_tables import open_sklearn
    with pytest.raises(DatasetError, match="breast-cancer, wine, diabetes"):
        open_sklearn("iris")


# --- mnist --------------------------------------------------------------------------------------

def test_mnist_splits_shapes_and_range():
    from deepslim.datasets import mnist
    source = mnist.MnistSource()
    idx = mnist._split_indices()
    assert [len(idx[s]) for s in ("train", "val", "test")] == [3500, 750, 750]
    assert not set(idx["train"]) & set(idx["test"]) and not set(idx["val"]) & set(idx["test"])
    labels = mnist._load()[1].numpy()
    assert (np.bincount(labels[idx["test"]]) == 75).all()
    images = source.images()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert source.info.native_size == (28, 28) and source.info.channels == 1
    assert source.info.mean[0] == pytest.approx(float(images.mean()), abs=1e-4)
    assert source.info.std[0] == pytest.approx(float(images.std()), abs=1e-4)


# --- mlp ----------------------------------------------------------------------------------------

def test_mlp_shapes_and_head():
    model = MLP(3, 13, hidden=[32, 16], dropout=0.0, batch_norm=True).eval()
    assert model(torch.randn(5, 13)).shape == (5, 3)
    assert model.head.in_features == 16 and model.head.out_features == 3
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()) == 2
    assert MLP(1, 10, hidden=[])(torch.randn(2, 10)).shape == (2, 1)


@pytest.mark.parametrize("kwargs, words", [
    ({"num_classes": 0, "in_features": 4}, "num_classes"),
    ({"num_classes": 2, "in_features": 4, "hidden": [8, 0]}, "hidden width"),
    ({"num_classes": 2, "in_features": 4, "hidden": 8}, "list of layer widths"),
    ({"num_classes": 2, "in_features": 4, "dropout": 1.0}, "dropout"),
])
def test_mlp_refuses_bad_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        MLP(**kwargs)


# --- prepared splits (what a model eats) --------------------------------------------------------

def _batch(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def test_prepared_split_is_standardised_by_the_models_signature(wine_csv):
    source = open_table(str(wine_csv), {"label": "target"})
    signature = Signature(source.info.inputs)
    x, y = _batch(source.split("train", signature))
    assert x.shape == (124, 13) and x.dtype == torch.float32 and y.dtype == torch.int64
    np.testing.assert_allclose(x.mean(0).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.std(0, unbiased=False).numpy(), 1.0, atol=1e-4)
    val_x, _ = _batch(source.split("val", signature))
    assert val_x.mean(0).abs().max() > 0.05  # val is standardised with train's statistics, not its own
    raw = torch.from_numpy(source.table.features[source.table.splits["val"]])
    spec = source.info.inputs[0]
    torch.testing.assert_close(val_x, (raw - torch.tensor(spec.mean)) / torch.tensor(spec.std))
    with pytest.raises(ConfigError, match="feature vectors"):
        from deepslim.spec import InputSpec
        source.split("train", InputSpec((1, 8, 8), (0.5,), (0.5,)))


def test_prepared_regression_targets_stay_float(tmp_path):
    path = tmp_path / "diabetes.csv"
    frame = _diabetes()
    frame["target"] = frame["target"] / 7.0  # fractional, so a cast to integers would show
    frame.to_csv(path, index=False)
    source = open_table(str(path), {"label": "target"})
    _, y = _batch(source.split("test", Signature(source.info.inputs)))
    assert y.dtype == torch.float32 and y.shape == (66,)
    np.testing.assert_allclose(y.numpy(), source.table.targets[source.table.splits["test"]])
    assert not np.allclose(y.numpy(), np.round(y.numpy()))  # not cast to integers anywhere


def test_mlp_learns_wine_from_the_csv(wine_csv):
    source = open_table(str(wine_csv), {"label": "target"})
    signature = Signature(source.info.inputs)
    x, y = _batch(source.split("train", signature))
    torch.manual_seed(0)
    model = MLP(source.info.task.width, 13, hidden=[32], dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    test_x, test_y = _batch(source.split("test", signature))
    with torch.no_grad():
        top1 = (model.eval()(test_x).argmax(1) == test_y).float().mean().item()
    assert top1 >= 0.9


def test_mnist_split_prepares_images_for_the_model():
    from deepslim.datasets.mnist import MEAN, STD, MnistSource
    from deepslim.spec import InputSpec
    source = MnistSource()
    test = source.split("test", InputSpec((1, 16, 16), MEAN, STD))
    assert len(test) == 750
    image, label = test[0]
    assert image.shape == (1, 16, 16) and 0 <= label < 10
    signature = Signature.from_input_spec(InputSpec((3, 28, 28), MEAN * 3, STD * 3))
    image, _ = source.split("val", signature)[0]
    assert image.shape == (3, 28, 28)


def test_sklearn_table_options():
    from deepslim.datasets.sklearn_tables import open_sklearn
    source = open_sklearn("diabetes", {"features": "bmi,bp"})
    assert source.table.feature_names == ("bmi", "bp") and source.info.name == "diabetes?features=bmi,bp"
    assert open_sklearn("wine", {"label": "target"}).info.name == "wine"
    with pytest.raises(ConfigError, match="'target' column"):
        open_sklearn("wine", {"label": "alcohol"})


def test_too_few_rows_to_split_names_the_way_out(tmp_path):
    path = tmp_path / "tiny.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": ["x", "y", "x"]}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="too few rows.*split column"):
        open_table(str(path), {"label": "y"})


def test_integer_label_with_many_values_suggests_regression(tmp_path):
    path = tmp_path / "counts.csv"
    frame = _diabetes()
    frame["target"] = frame["target"].astype(int)  # 214 distinct integers: read as classes
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match="task=regression"):
        open_table(str(path), {"label": "target"})
    source = open_table(str(path), {"label": "target", "task": "regression"})
    assert source.info.task.kind is TaskKind.REGRESSION and source.table.targets.dtype == np.float32
