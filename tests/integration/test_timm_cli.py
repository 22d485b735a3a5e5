"""`--arch timm:NAME` end to end through the CLI: train, prune, reload, export with parity; and its refusals."""

from __future__ import annotations

import json

import pytest

from cli_contract import assert_bad_input, ok


def _chain(tmp_path, name: str, size: int, *train: str) -> tuple:
    """train (1 epoch on digits) -> prune 0.5 -> export ONNX with parity; the trained and the pruned bundle."""
    from deepslim.models import load_model
    base, pruned, onnx = tmp_path / "m.safetensors", tmp_path / "p.safetensors", tmp_path / "p.onnx"
    ok(["train", "--arch", f"timm:{name}", "-d", "digits", "--input-size", size, "--epochs", "1", *train, "-q",
        "-o", base])
    ok(["compress", "prune", base, "--ratio", "0.5", "--no-check", "-q", "-o", pruned])
    assert "parity ok" in ok(["export", pruned, "--target", "onnx", "-o", onnx]).stdout
    return load_model(base), load_model(pruned)


def _widths(model) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if hasattr(m, "out_channels")}


def _check_pruned(base, pruned) -> None:
    """The reloaded bundle has the pruned shapes: timm's own classes, every stage narrower, the head kept."""
    assert pruned.arch.source.value == "timm" and type(pruned.model) is type(base.model)
    before, after = _widths(base.model), _widths(pruned.model)
    assert after["conv1"] < before["conv1"] and after["layer4.1.conv2"] < before["layer4.1.conv2"]
    assert pruned.model.fc.out_features == 10 and pruned.model.fc.in_features == after["layer4.1.conv2"]
    params = [sum(p.numel() for p in b.model.parameters()) for b in (base, pruned)]
    assert params[1] < 0.5 * params[0]


def test_timm_resnet18_at_8px_trains_prunes_reloads_and_exports(tmp_path):
    """The cheap default run of the chain (digits' own 8x8 images, 5 steps of 256; the 32 px run is the slow test
    below). About 27 s with imports warm on 2 cores at load 4, so about 15 s on idle ones."""
    base, pruned = _chain(tmp_path, "resnet18", 8, "--batch-size", "256")
    _check_pruned(base, pruned)
    assert pruned.signature.inputs[0].shape[-2:] == (8, 8)


@pytest.mark.slow  # ~30 s on 2 cores at load 4 (with the ViT test: 57 s)
def test_timm_resnet18_at_32px_trains_prunes_reloads_and_exports(tmp_path):
    base, pruned = _chain(tmp_path, "resnet18", 32)
    _check_pruned(base, pruned)
    record = json.loads(ok(["info", tmp_path / "p.safetensors", "--json"]).stdout)["lineage"][-1]
    assert record["stage"] == "prune" and record["metrics"]["mac_reduction"] > 3


@pytest.mark.slow  # ~25 s on 2 cores at load 4
def test_timm_vit_at_32px_trains_and_exports(tmp_path):
    """vit_tiny_patch16_224 built for 32x32 (img_size from --input-size: 2x2 patches and a class token)."""
    from deepslim.models import load_model
    base, onnx = tmp_path / "vit.safetensors", tmp_path / "vit.onnx"
    ok(["train", "--arch", "timm:vit_tiny_patch16_224", "-d", "digits", "--input-size", "32", "--epochs", "1",
        "--optimizer", "adamw", "-q", "-o", base])
    bundle = load_model(base)
    assert bundle.arch.kwargs["img_size"] == 32 and tuple(bundle.model.patch_embed.grid_size) == (2, 2)
    assert "parity ok" in ok(["export", base, "--target", "onnx", "-o", onnx]).stdout


def test_unknown_timm_name_suggests_close_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = assert_bad_input(["train", "--arch", "timm:resnet181", "-o", "m.safetensors"],
                               ["Unknown timm architecture 'resnet181'", "did you mean", "timm:resnet18"],
                               tmp_path, output="m.safetensors")
    assert message.count(".") <= 3  # one sentence (the dots are the names')


def test_pretrained_with_a_timm_arch_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_bad_input(["train", "--arch", "timm:resnet18", "--pretrained", "DEFAULT", "-o", "m.safetensors"],
                     ["--pretrained", "torchvision", "--weights"], tmp_path, output="m.safetensors")


def test_img_size_follows_input_size_only_for_models_that_take_it():
    from deepslim.architectures import resolve_arch
    vit, size, chans = resolve_arch("timm:vit_tiny_patch16_224", num_classes=10, input_size=32)
    assert vit.kwargs == {"num_classes": 10, "in_chans": 3, "img_size": 32} and (size, chans) == (32, 3)
    resnet, size, _ = resolve_arch("timm:resnet18", num_classes=10, input_size=32)
    assert "img_size" not in resnet.kwargs and size == 32
    default, size, _ = resolve_arch("timm:vit_tiny_patch16_224", num_classes=10)
    assert "img_size" not in default.kwargs and size == 224
