"""Dataset policies: augmentation (none/light/standard), the folders' eval resize and split, class checks,
user files importing their neighbours, and the MNIST ImageFolder fixture."""

from __future__ import annotations

import pickle
import sys
import textwrap

import numpy as np
import pytest
import torch
from mnist_folder import mnist_arrays, write_mnist_folder
from PIL import Image

from deepslim.data import DatasetInfo, check_classes, open_dataset
from deepslim.errors import ConfigError, DatasetError, ModelError
from deepslim.spec import InputSpec
from deepslim.usercode import user_attribute

PLAIN = {n: InputSpec.create(c, s, (0.0,), (1.0,)) for n, c, s in
         (("g28", 1, 28), ("g32", 1, 32), ("rgb16", 3, 16), ("rgb32", 3, 32))}
SEEDS = range(24)


def _ramp(size: int) -> np.ndarray:
    """A left-dark, right-bright RGB image: any mirror image is bright on the left."""
    row = np.linspace(20, 235, size).astype(np.uint8)
    return np.repeat(np.tile(row, (size, 1))[..., None], 3, axis=2)


def _ramp_folder(root, size: int):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(_ramp(size)).save(root / split / cls / f"{i}.png")
    return open_dataset(str(root))


def _mirrored(image: torch.Tensor) -> bool:
    half = image.shape[-1] // 2
    return float(image[..., :half].mean()) > float(image[..., -half:].mean())


def _mirrors(ds, index=0) -> list[bool]:
    out = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        out.append(_mirrored(ds[index][0]))
    return out


# --- 1. augmentation policies ----------------------------------------------------------------

def test_folder_light_never_flips_standard_does_and_none_is_the_eval_image(tmp_path):
    src = _ramp_folder(tmp_path, 16)
    spec = PLAIN["rgb16"]
    assert not any(_mirrors(src.split("train", spec, augment="light")))
    assert any(_mirrors(src.split("train", spec, augment="standard")))
    light = src.split("train", spec, augment="light")
    torch.manual_seed(0)
    assert not torch.equal(light[0][0], src.split("train", spec)[0][0])  # light does change the image
    none = src.split("train", spec, augment="none")[0][0]
    expected = torch.from_numpy(_ramp(16)).permute(2, 0, 1).float() / 255  # 16-px images at 16 px: untouched
    assert torch.allclose(none, expected, atol=1e-6)
    assert torch.equal(src.split("val", spec, augment="standard")[0][0], src.split("val", spec)[0][0])


def test_bool_and_bad_policies():
    src = open_dataset("digits")
    torch.manual_seed(3)
    a = src.split("train", PLAIN["g32"], augment=True)[4][0]
    torch.manual_seed(3)
    assert torch.equal(a, src.split("train", PLAIN["g32"], augment="light")[4][0])
    assert torch.equal(src.split("train", PLAIN["g32"], augment=False)[4][0], src.split("train", PLAIN["g32"])[4][0])
    with pytest.raises(ConfigError, match="none, light or standard"):
        src.split("train", PLAIN["g32"], augment="heavy")


def test_digits_standard_is_light_and_never_augments_val():
    src = open_dataset("digits")
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        std = src.split("train", PLAIN["g32"], augment="standard")[7][0]
        torch.manual_seed(seed)
        assert torch.equal(std, src.split("train", PLAIN["g32"], augment="light")[7][0])
    assert torch.equal(src.split("val", PLAIN["g32"], augment="standard")[0][0], src.split("val", PLAIN["g32"])[0][0])


def test_cifar_light_never_flips_standard_does(tmp_path):
    ramp = np.ascontiguousarray(_ramp(32).transpose(2, 0, 1)).reshape(1, -1)
    for name, n in [(f"data_batch_{i}", 20) for i in range(1, 6)] + [("test_batch", 10)]:
        with open(tmp_path / name, "wb") as fh:
            pickle.dump({b"data": np.repeat(ramp, n, axis=0), b"labels": [i % 10 for i in range(n)]}, fh)
    src = open_dataset(str(tmp_path))
    spec = PLAIN["rgb32"]
    assert not any(_mirrors(src.split("train", spec, augment="light")))
    assert any(_mirrors(src.split("train", spec, augment="standard")))
    assert not any(_mirrors(src.split("val", spec, augment="standard")))


def test_file_dataset_augments_its_train_split_only(tmp_path):
    (tmp_path / "ramps.py").write_text(textwrap.dedent("""
        import torch
        def make(split):
            ramp = torch.linspace(0.1, 0.9, 16).repeat(1, 16, 1)
            return [(ramp, i % 2) for i in range(8)]
    """))
    src = open_dataset(f"{tmp_path / 'ramps.py'}:make")
    spec = InputSpec.create(1, 16, (0.0,), (1.0,))
    assert not any(_mirrors(src.split("train", spec, augment="light")))
    assert any(_mirrors(src.split("train", spec, augment="standard")))
    val = src.split("val", spec, augment="light")  # the old code augmented every split it was asked to
    assert all(torch.equal(val[0][0], src.split("val", spec)[0][0]) for _ in range(3))


# --- 2. eval resize policy -------------------------------------------------------------------

def test_small_images_are_resized_without_losing_their_borders(tmp_path):
    write_mnist_folder(tmp_path, layout="flat", per_class=10)
    src = open_dataset(str(tmp_path))
    path, _ = src.folders["all"].samples[src.plan["test"][1][0]]
    pixels = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255)[None]
    assert torch.allclose(src.split("test", PLAIN["g28"])[0][0], pixels, atol=1e-6)  # no crop, no resize
    from torchvision.transforms import v2
    resized = v2.Resize((32, 32), antialias=True)(torch.from_numpy(np.array(Image.open(path)))[None])
    assert torch.allclose(src.split("test", PLAIN["g32"])[0][0], resized.float() / 255, atol=1e-6)
    assert src.eval_resize(PLAIN["g32"]) is None and "no crop" in src.describe_preprocess(PLAIN["g32"])
    assert src.info.native_size == (28, 28) and "images at 28x28" in src.info.preprocess


def test_larger_images_are_still_resized_and_centre_cropped(tmp_path):
    write_mnist_folder(tmp_path, layout="flat", size=64, per_class=10)
    src = open_dataset(str(tmp_path))
    path, _ = src.folders["all"].samples[src.plan["val"][1][0]]
    from torchvision.transforms import v2
    image = torch.from_numpy(np.array(Image.open(path)))[None]
    expected = v2.CenterCrop(32)(v2.Resize(37, antialias=True)(image)).float() / 255
    assert torch.allclose(src.split("val", PLAIN["g32"])[0][0], expected, atol=1e-6)
    assert src.eval_resize(PLAIN["g32"]) == 37  # round(32 / 0.875)
    assert src.describe_preprocess(PLAIN["g32"]) == ("images at 64x64: shorter side resized to 37 then "
                                                     "centre-cropped to 32x32")


# --- 3. split policy -------------------------------------------------------------------------

def test_train_val_folder_splits_val_into_disjoint_val_and_test(tmp_path):
    write_mnist_folder(tmp_path, per_class=20)  # 16 train, 4 val per class
    src = open_dataset(str(tmp_path))
    val, test = src.split("val", PLAIN["g28"]), src.split("test", PLAIN["g28"])
    assert src.plan["val"][0] == src.plan["test"][0] == "val"
    assert not set(val.indices) & set(test.indices)
    assert sorted(val.indices + test.indices) == list(range(len(src.folders["val"])))
    labels = np.array(src.folders["val"].targets)
    assert (np.bincount(labels[test.indices]) == 2).all()  # stratified
    assert open_dataset(str(tmp_path)).plan == src.plan  # seeded
    assert len(src.split("train", PLAIN["g28"])) == 160
    assert src.info.split_policy == "val/ split 50/50 (stratified, seed 0) into val and test; train/ as is"


def test_train_only_folder_is_split_three_ways(tmp_path):
    write_mnist_folder(tmp_path, layout="train-only", per_class=50)  # 40 per class in train/
    src = open_dataset(str(tmp_path))
    parts = {s: set(src.plan[s][1]) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [320, 40, 40]
    assert not parts["train"] & parts["val"] and not parts["val"] & parts["test"] and not parts["train"] & parts["test"]
    assert "80/10/10" in src.info.split_policy


def test_full_split_folders_are_used_as_they_are(tmp_path):
    write_mnist_folder(tmp_path, per_class=20)
    write_mnist_folder(tmp_path / "x", per_class=20)
    (tmp_path / "x" / "val").rename(tmp_path / "test")
    src = open_dataset(str(tmp_path))
    assert all(src.plan[s] == (s, None) for s in ("train", "val", "test"))
    assert src.info.split_policy == "train/, val/ and test/ as they are"
    (tmp_path / "val").rename(tmp_path / "old_val")
    assert open_dataset(str(tmp_path)).info.split_policy.startswith("10% of train/")


# --- 4. every source says its policies -------------------------------------------------------

def test_every_source_describes_its_split_and_preprocessing(tmp_path):
    (tmp_path / "d.py").write_text("import torch\ndef make(split):\n    return [(torch.rand(1, 6, 6), i % 2) "
                                   "for i in range(4)]\n")
    with open(tmp_path / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, fh)
    write_mnist_folder(tmp_path / "mnist", layout="flat", per_class=10)
    sources = [open_dataset("digits"), open_dataset("digits-c", severity=2), open_dataset(f"{tmp_path / 'd.py'}:make"),
               open_dataset(str(tmp_path)), open_dataset(str(tmp_path / "mnist"))]
    for src in sources:
        assert src.info.split_policy and src.info.preprocess, src.info.name
    assert "60/20/20" in sources[0].info.split_policy and "32x32" in sources[1].info.preprocess
    assert "test_batch is test" in sources[3].info.split_policy and "70/15/15" in sources[4].info.split_policy
    assert DatasetInfo("x", ("a",), 1, (0.0,), (1.0,)).split_policy == ""


# --- 5. class check --------------------------------------------------------------------------

def test_check_classes():
    info = DatasetInfo("faces", ("alice", "bob", "carol", "dan", "eve"), 3, (0.0,), (1.0,))
    check_classes(["alice", "bob", "carol", "dan", "eve"], info, "faces")
    check_classes(["0", "1", "2", "3", "4"], info, "faces")  # a model without real names: count only
    check_classes(5, info, "faces")
    with pytest.raises(DatasetError, match="The model has 10 classes but dataset faces has 5"):
        check_classes([str(i) for i in range(10)], info, "faces")
    with pytest.raises(DatasetError, match=r"\(#0 'a' vs 'alice', #1 'b' vs 'bob', #2 'c' vs 'carol' and 2 more\)"):
        check_classes(list("abcde"), info, "faces")
    with pytest.raises(DatasetError, match="#3 'eve' vs 'dan'"):
        check_classes(["alice", "bob", "carol", "eve", "dan"], info, "faces")


# --- 6. user files import their neighbours ---------------------------------------------------

NEIGHBOURS = ("digits_net_helpers", "late_helpers", "arch_net_blocks", "broken_blocks_xyz")


@pytest.fixture()
def clean_imports(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in NEIGHBOURS:
        sys.modules.pop(name, None)


def test_a_dataset_file_imports_the_module_beside_it(tmp_path, clean_imports):
    (tmp_path / "digits_net_helpers.py").write_text("SIZE = 5\n")
    (tmp_path / "late_helpers.py").write_text("LABELS = [0, 1]\n")
    (tmp_path / "json.py").write_text("raise SystemExit('shadowed the standard library')\n")
    (tmp_path / "data.py").write_text(textwrap.dedent("""
        import json  # the standard library's, not json.py beside this file
        import torch
        import digits_net_helpers
        def make(split):
            import late_helpers  # imported later, inside a function
            size = digits_net_helpers.SIZE
            return [(torch.rand(1, size, size), late_helpers.LABELS[i % 2]) for i in range(6)]
    """))
    src = open_dataset(f"{tmp_path / 'data.py'}:make")
    assert src.info.native_size == (5, 5) and len(src.split("val", PLAIN["g28"])) == 6
    assert sys.path[-1] == str(tmp_path) and sys.path.count(str(tmp_path)) == 1
    open_dataset(f"{tmp_path / 'data.py'}:make")
    assert sys.path.count(str(tmp_path)) == 1


def test_an_architecture_file_imports_the_module_beside_it(tmp_path, clean_imports):
    from deepslim.models import load_model
    (tmp_path / "arch_net_blocks.py").write_text("import torch\ndef head(n):\n    return torch.nn.Linear(64, n)\n")
    (tmp_path / "arch.py").write_text(textwrap.dedent("""
        import torch
        from arch_net_blocks import head
        def build(num_classes=10):
            return torch.nn.Sequential(torch.nn.Flatten(), head(num_classes))
    """))
    bundle = load_model(arch=f"{tmp_path / 'arch.py'}:build", num_classes=3, input_size=8, channels=1)
    assert bundle.model(torch.rand(2, 1, 8, 8)).shape == (2, 3)


def test_a_neighbour_that_fails_is_named_in_one_sentence(tmp_path, clean_imports):
    (tmp_path / "a.py").write_text("import no_such_neighbour_xyz\n")
    with pytest.raises(DatasetError, match="it imports module 'no_such_neighbour_xyz', which is neither beside it"):
        user_attribute(tmp_path / "a.py", "make", error=DatasetError)
    (tmp_path / "broken_blocks_xyz.py").write_text("x = 1 / 0\n")
    (tmp_path / "b.py").write_text("import broken_blocks_xyz\n")
    with pytest.raises(ModelError, match=r"the module it imports from .*broken_blocks_xyz\.py failed "
                                         r"\(ZeroDivisionError: division by zero\)"):
        user_attribute(tmp_path / "b.py", "build", error=ModelError)


# --- 7. the MNIST folder fixture -------------------------------------------------------------

def test_mnist_folder_fixture_writes_the_real_digits(tmp_path):
    root = write_mnist_folder(tmp_path / "m")
    counts = {s: sorted(len(list((root / s / str(d)).iterdir())) for d in range(10)) for s in ("train", "val")}
    assert counts == {"train": [400] * 10, "val": [100] * 10}
    images, labels = mnist_arrays()
    assert images.shape == (5000, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    first = sorted((root / "val" / "7").iterdir())[0]
    assert np.array_equal(np.asarray(Image.open(first)), images[int(first.stem)]) and labels[int(first.stem)] == 7
    flat = write_mnist_folder(tmp_path / "f", layout="flat", per_class=3, size=16)
    assert sorted(p.name for p in flat.iterdir()) == [str(d) for d in range(10)]
    assert Image.open(next((flat / "0").iterdir())).size == (16, 16)
