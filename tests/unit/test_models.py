"""Model loading: torchvision zoo by name, the built-in CNN, user files, state_dicts, pickles."""

from __future__ import annotations

import textwrap

import pytest
import torch

from deepslim.errors import (ConfigError, ModelError, StateDictMismatchError, UnknownArchitectureError, UnsafePickleError,
                             UntrustedCodeError)
from deepslim.models import SmallCNN, find_head, load_model, replace_head, torchvision_names


@pytest.mark.parametrize("arch,size", [("resnet18", 32), ("mobilenet_v3_small", 32), ("efficientnet_b0", 32),
                                       ("vit_b_16", 32), ("swin_t", 32), ("inception_v3", 75),
                                       ("googlenet", 32), ("squeezenet1_1", 32)])
def test_torchvision_architectures_build_with_classes_and_size(arch, size):
    bundle = load_model(arch=arch, num_classes=7, input_size=size)
    bundle.model.train()  # inception/googlenet must not return aux outputs
    out = bundle.model(torch.randn(2, 3, size, size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)
    assert bundle.input_spec.shape == (3, size, size)


def test_zoo_is_listed():
    names = torchvision_names()
    assert {"resnet18", "vit_b_16", "convnext_tiny", "regnet_y_400mf", "densenet121"} <= set(names)
    assert len(names) >= 70


@pytest.mark.parametrize("size", [8, 16, 32])
def test_builtin_cnn_accepts_small_inputs(size):
    model = SmallCNN(num_classes=10, in_channels=1).eval()
    assert model(torch.randn(4, 1, size, size)).shape == (4, 10)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    plain = SmallCNN(batch_norm=False, dropout=0.0)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())


def test_user_architecture_file(tmp_path):
    file = tmp_path / "net.py"
    file.write_text(textwrap.dedent("""
        import torch.nn as nn
        def build(num_classes, hidden=16):
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    """))
    bundle = load_model(arch=f"{file}:build", num_classes=4, input_size=8, arch_kwargs={"hidden": 5})
    assert bundle.model[1].out_features == 5 and bundle.model(torch.randn(1, 3, 8, 8)).shape == (1, 4)
    assert bundle.arch.file_sha256 and bundle.arch.name.endswith("net.py:build")


def test_state_dict_weights_load_and_mismatch_is_named(tmp_path):
    source = load_model(arch="small_cnn", num_classes=10, input_size=8)
    torch.save(source.model.state_dict(), tmp_path / "w.pth")
    loaded = load_model(arch="small_cnn", num_classes=10, input_size=8, weights=tmp_path / "w.pth")
    assert all(torch.equal(a, b) for a, b in zip(source.model.state_dict().values(),
                                                 loaded.model.state_dict().values()))
    with pytest.raises(StateDictMismatchError, match=r"'features.0.weight' has shape \(32, 1, 3, 3\) in the file "
                                                     r"but \(8, 1, 3, 3\) in the model"):
        load_model(arch="small_cnn", num_classes=10, input_size=8, weights=tmp_path / "w.pth",
                   arch_kwargs={"width": 8})


def test_ddp_prefix_and_nested_checkpoints_are_unwrapped(tmp_path):
    source = load_model(arch="small_cnn", num_classes=10, input_size=8)
    state = {f"module.{k}": v for k, v in source.model.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pth")
    load_model(arch="small_cnn", num_classes=10, input_size=8, weights=tmp_path / "ckpt.pth")


def test_pickled_module_needs_trust(tmp_path):
    model = SmallCNN(num_classes=3)
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(UnsafePickleError, match="--trust-pickle"):
        load_model(tmp_path / "whole.pt")
    bundle = load_model(tmp_path / "whole.pt", trust_pickle=True, input_size=8, channels=1)
    assert bundle.num_classes == 3 and bundle.input_spec.shape == (1, 8, 8)


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(UnknownArchitectureError, match="did you mean resnet18"):
        load_model(arch="resnett18", num_classes=10)


def test_torchvision_needs_three_channels():
    with pytest.raises(ConfigError, match="3 input channels"):
        load_model(arch="resnet18", num_classes=10, channels=1)


def test_bad_build_kwargs_are_a_model_error():
    with pytest.raises(ModelError, match="Cannot build vit_b_16"):
        load_model(arch="vit_b_16", num_classes=10, input_size=30)


@pytest.mark.parametrize("arch,head", [("resnet18", "fc"), ("mobilenet_v3_small", "classifier.3"),
                                       ("vit_b_16", "heads.head"), ("small_cnn", "classifier.2")])
def test_head_is_found_and_replaced(arch, head):
    bundle = load_model(arch=arch, num_classes=10, input_size=32)
    assert find_head(bundle.model, 10)[0] == head
    replace_head(bundle.model, 3)
    assert bundle.model.get_submodule(head).out_features == 3


def test_pretrained_weights_are_requested_and_head_replaced(monkeypatch):
    """torchvision's weights enum is passed through (the download itself is not exercised in tests)."""
    import torchvision
    seen = {}
    real = torchvision.models.get_model

    def fake_get_model(name, weights=None, **kwargs):
        seen["weights"] = weights
        return real(name, weights=None, **kwargs)  # same architecture, 1000 classes, no download

    monkeypatch.setattr(torchvision.models, "get_model", fake_get_model)
    bundle = load_model(arch="resnet18", num_classes=10, input_size=32, pretrained="IMAGENET1K_V1")
    assert seen["weights"] == "IMAGENET1K_V1"
    assert bundle.model.fc.out_features == 10 and bundle.arch.kwargs["num_classes"] == 10
    assert bundle.input_spec.mean == (0.485, 0.456, 0.406)
    with pytest.raises(ConfigError, match="--pretrained works only with torchvision"):
        load_model(arch="small_cnn", num_classes=10, pretrained="DEFAULT")


def test_bundle_with_user_architecture_moves_with_its_file(tmp_path):
    import shutil

    from deepslim.models import save_model
    src = tmp_path / "src"
    src.mkdir()
    (src / "net.py").write_text("import torch.nn as nn\ndef build(num_classes):\n"
                                "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, num_classes))\n")
    bundle = load_model(arch=f"{src / 'net.py'}:build", num_classes=3, input_size=4)
    save_model(bundle, src / "m.safetensors")
    moved = tmp_path / "moved"
    shutil.copytree(src, moved)
    shutil.rmtree(src)
    with pytest.raises(UntrustedCodeError, match="--trust-code"):  # a bundle's file runs only when allowed
        load_model(moved / "m.safetensors")
    loaded = load_model(moved / "m.safetensors", trust_code=True)
    assert torch.equal(loaded.model[1].weight, bundle.model[1].weight)
    assert loaded.arch.name == f"{(moved / 'net.py').resolve()}:build"  # the copy beside it is what ran
    (moved / "net.py").write_text((moved / "net.py").read_text() + "\n# edited\n")
    with pytest.raises(ModelError, match="sha256 .* was saved with an architecture file of sha256"):
        load_model(moved / "m.safetensors", trust_code=True)


def test_weights_with_nan_or_inf_are_named(tmp_path):
    source = load_model(arch="small_cnn", num_classes=10, input_size=8, arch_kwargs={"width": 8})
    state = source.model.state_dict()
    state["features.0.weight"][0, 0, 0, 0] = float("nan")
    state["classifier.2.bias"][3] = float("inf")
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(ModelError, match=r"w.pth has weights that are not finite \(NaN or Inf\) in 2 tensors: "
                                         r"features.0.weight, classifier.2.bias"):
        load_model(arch="small_cnn", num_classes=10, input_size=8, arch_kwargs={"width": 8}, weights=tmp_path / "w.pth")


_NET_PY = """
import pathlib
pathlib.Path(__file__).with_name("ran").write_text("the file was executed")
def build(num_classes):
    pass
async def make_small(num_classes):
    pass
class Net:
    def inner(self):
        pass
def _helper():
    pass
"""


@pytest.mark.parametrize("suffix", ["", ":"])
def test_arch_file_without_function_lists_its_callables_without_running_it(tmp_path, suffix):
    file = tmp_path / "net.py"
    file.write_text(_NET_PY)
    with pytest.raises(ConfigError, match=rf"--arch {file}{suffix} names a Python file but no function; use "
                                          rf"{file}:build \(callables in net.py: build, make_small, Net\)"):
        load_model(arch=f"{file}{suffix}", num_classes=3)
    assert not (tmp_path / "ran").exists()


def test_arch_file_without_callables_or_unparsable_says_so(tmp_path):
    (tmp_path / "empty.py").write_text("X = 1\n")
    with pytest.raises(ConfigError, match=r"no function; empty.py defines no top-level function or class"):
        load_model(arch=str(tmp_path / "empty.py"), num_classes=3)
    (tmp_path / "bad.py").write_text("def build(:\n")
    with pytest.raises(ConfigError, match=r"no function; bad.py cannot be parsed \(line 1"):
        load_model(arch=str(tmp_path / "bad.py"), num_classes=3)


def test_missing_function_in_arch_file_lists_its_callables(tmp_path):
    file = tmp_path / "net.py"
    file.write_text("import torch.nn as nn\ndef build(num_classes):\n    return nn.Linear(4, num_classes)\n")
    with pytest.raises(ModelError, match=r"has no function 'buld' \(callables in net.py: build\)"):
        load_model(arch=f"{file}:buld", num_classes=3)


@pytest.mark.parametrize("text,parsed,file", [
    ("net.py:build", ("net.py", "build"), "net.py"), ("a/b/net.py:make", ("a/b/net.py", "make"), "a/b/net.py"),
    ("C:/x/net.py:fn", ("C:/x/net.py", "fn"), "C:/x/net.py"), ("net.py", None, "net.py"), ("net.py:", None, "net.py"),
    ("resnet18", None, None), ("data:fn", None, None), ("digits", None, None)])
def test_parse_code_spec(text, parsed, file):
    from pathlib import Path

    from deepslim.codespec import code_file, parse_code_spec
    assert parse_code_spec(text) == (None if parsed is None else (Path(parsed[0]), parsed[1]))
    assert code_file(text) == (None if file is None else Path(file))


def test_models_module_is_split_and_keeps_its_names():
    import deepslim.models as models
    from pathlib import Path
    names = ["BUILTIN", "ModelBundle", "SmallCNN", "build_model", "check_saveable", "find_head", "known_architectures",
             "load_model", "load_weights", "replace_head", "resolve_arch", "save_model", "torchvision_names",
             "IMAGENET_MEAN", "IMAGENET_STD"]
    assert all(hasattr(models, n) for n in names)
    for module in ("models", "architectures"):
        assert len((Path(models.__file__).parent / f"{module}.py").read_text().splitlines()) <= 400, module
