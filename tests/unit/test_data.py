"""Datasets: fixed digits split, seeded digits-c, ImageFolder, CIFAR-10 python format, user files."""

from __future__ import annotations

import pickle
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from deepslim.data import adapt_channels, open_dataset, subset
from deepslim.errors import ConfigError, DatasetError
from deepslim.spec import InputSpec

GRAY8 = InputSpec.create(1, 8, (0.0,), (1.0,))
RGB32 = InputSpec.create(3, 32, (0.5,), (0.5,))


def _labels(ds):
    return np.array([int(ds[i][1]) for i in range(len(ds))])


def test_digits_split_is_fixed_stratified_and_disjoint():
    src = open_dataset("digits")
    sizes = {s: len(src.split(s, GRAY8)) for s in ("train", "val", "test")}
    assert sizes == {"train": 1078, "val": 359, "test": 360}
    test = _labels(src.split("test", GRAY8))
    assert np.bincount(test).min() >= 35  # every class present, balanced
    from deepslim.datasets.digits import _split_indices
    idx = _split_indices()
    assert not set(idx["train"]) & set(idx["test"]) and not set(idx["val"]) & set(idx["test"])
    x, _ = src.split("test", GRAY8)[0]
    assert x.shape == (1, 8, 8) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # mean 0, std 1 spec


def test_digits_resized_and_channels_adapted():
    x, _ = open_dataset("digits").split("train", RGB32)[5]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[1])


def test_augmentation_changes_training_images_only():
    src = open_dataset("digits")
    torch.manual_seed(0)
    aug = src.split("train", GRAY8, augment=True)
    plain = src.split("train", GRAY8)
    assert not torch.equal(aug[0][0], plain[0][0])
    assert torch.equal(plain[0][0], src.split("train", GRAY8)[0][0])


def test_digits_c_is_seeded_and_harder_with_severity():
    clean = open_dataset("digits").split("test", RGB32)
    mild, hard = (open_dataset("digits-c", severity=s).split("test", RGB32) for s in (1, 5))
    again = open_dataset("digits-c", severity=5).split("test", RGB32)
    assert torch.equal(hard[7][0], again[7][0])
    diff = [float((c[0] - k[0]).abs().mean()) for c, k in zip((clean[i] for i in range(60)), (mild[i] for i in range(60)))]
    diff5 = [float((c[0] - k[0]).abs().mean()) for c, k in zip((clean[i] for i in range(60)), (hard[i] for i in range(60)))]
    assert np.mean(diff) > 0.02 and np.mean(diff5) > 1.5 * np.mean(diff)
    with pytest.raises(ConfigError, match="severity"):
        open_dataset("digits-c", severity=6)


def test_image_folder_single_tree_is_split(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(20):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    src = open_dataset(str(tmp_path))
    assert src.info.classes == ("cat", "dog")
    sizes = [len(src.split(s, RGB32)) for s in ("train", "val", "test")]
    assert sum(sizes) == 40 and min(sizes) >= 6
    x, y = src.split("train", RGB32, augment=True)[0]
    assert x.shape == (3, 32, 32) and y in (0, 1)


def test_image_folder_with_split_folders(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b", "c"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("L", (9, 9), 128).save(tmp_path / split / cls / f"{i}.png")
    src = open_dataset(str(tmp_path))
    assert src.info.num_classes == 3
    assert len(src.split("train", GRAY8)) == 6
    val, test = src.split("val", GRAY8), src.split("test", GRAY8)  # val/ split 50/50, one image per class each
    assert len(val) == len(test) == 3 and not set(val.indices) & set(test.indices)
    assert sorted(_labels(test)) == [0, 1, 2] and "val/ split 50/50" in src.info.split_policy
    assert src.split("test", GRAY8)[0][0].shape == (1, 8, 8)


def _cifar_batch(path, n, seed, names=False):
    rng = np.random.default_rng(seed)
    payload = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
    payload[b"labels"] = [int(v) for v in np.arange(n) % 10]
    with open(path, "wb") as fh:
        pickle.dump(payload, fh, protocol=2)


def test_cifar10_python_directory(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        _cifar_batch(root / f"data_batch_{i}", 40, i)
    _cifar_batch(root / "test_batch", 30, 9)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh, protocol=2)
    src = open_dataset(str(tmp_path))
    assert src.info.classes[0] == "c0"
    assert len(src.split("test", RGB32)) == 30
    assert len(src.split("train", RGB32)) + len(src.split("val", RGB32)) == 200
    x, _ = src.split("train", RGB32, augment=True)[3]
    assert x.shape == (3, 32, 32)


def test_cifar10_refuses_hostile_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    src = open_dataset(str(tmp_path))
    with pytest.raises(DatasetError, match="refusing to load builtins.print"):
        src.split("test", RGB32)


def test_dataset_from_user_file(tmp_path):
    (tmp_path / "data.py").write_text(textwrap.dedent("""
        import torch
        class Blobs(torch.utils.data.Dataset):
            classes = ["low", "high"]
            def __init__(self, n):
                self.n = n
            def __len__(self):
                return self.n
            def __getitem__(self, i):
                return torch.full((1, 4, 4), float(i % 2)), i % 2
        def make(split):
            return Blobs(20 if split == "train" else 6)
    """))
    src = open_dataset(f"{tmp_path / 'data.py'}:make")
    assert src.info.classes == ("low", "high") and src.info.channels == 1
    x, y = src.split("val", GRAY8)[1]
    assert x.shape == (1, 8, 8) and y == 1 and len(src.split("test", GRAY8)) == 6


def test_unknown_dataset_and_empty_dir(tmp_path):
    with pytest.raises(DatasetError, match="neither a built-in name"):
        open_dataset("nope")
    with pytest.raises(DatasetError, match="Cannot read dataset directory"):
        open_dataset(str(tmp_path))


def test_subset_by_count_is_seeded():
    ds = open_dataset("digits").split("test", GRAY8)
    a, b = subset(ds, 50, seed=1), subset(ds, 50, seed=1)
    assert len(a) == 50 and a.indices == b.indices and subset(ds, 10_000) is ds


def test_adapt_channels():
    rgb = torch.rand(3, 4, 4)
    assert adapt_channels(rgb, 1).shape == (1, 4, 4)
    assert adapt_channels(torch.rand(1, 4, 4), 3).shape == (3, 4, 4)
    with pytest.raises(DatasetError):
        adapt_channels(torch.rand(2, 4, 4), 3)


def test_split_folders_share_the_train_class_numbering_and_never_select_on_test(tmp_path):
    colors = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}
    for split, names in (("train", colors), ("test", ["red"])):
        for name in names:
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(10 if split == "train" else 2):
                Image.new("RGB", (8, 8), colors[name]).save(tmp_path / split / name / f"{i}.png")
    src = open_dataset(str(tmp_path))
    assert src.info.classes == ("blue", "green", "red")
    assert {int(y) for _, y in src.split("test", RGB32)} == {2}  # "red" keeps the train folder's label
    train, val = src.split("train", RGB32), src.split("val", RGB32)
    assert len(train) + len(val) == 30 and len(val) >= 3  # val carved from train, not the test folder
    (tmp_path / "test" / "purple").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "purple" / "x.png")
    with pytest.raises(DatasetError, match="classes the train folder lacks: purple"):
        open_dataset(str(tmp_path))
