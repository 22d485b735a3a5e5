"""The bundle format: bit-exact round trips, pruned structures, no pickle involved."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch_pruning as tp

from deepslim import bundle as fmt
from deepslim.errors import InputFileError, ModelError
from deepslim.models import find_head, load_model, save_model
from deepslim.spec import StageRecord


def _assert_same(a: torch.nn.Module, b: torch.nn.Module, shape) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def _prune(bundle, ratio=0.5):
    example = torch.randn(1, *bundle.input_spec.shape)
    head = find_head(bundle.model, bundle.num_classes)[1]
    pruner = tp.pruner.MetaPruner(bundle.model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=[head])
    pruner.step()
    return bundle


@pytest.mark.parametrize("arch,size", [("small_cnn", 8), ("resnet18", 32), ("mobilenet_v3_small", 32),
                                       ("mnasnet0_5", 32)])  # MNASNet checks state_dict version metadata
def test_round_trip_is_bit_exact(tmp_path, arch, size):
    bundle = load_model(arch=arch, num_classes=10, input_size=size)
    record = StageRecord("train", {"epochs": 1}, 1.5, {"top1": 0.9})
    bundle = bundle.with_record(record)
    path = save_model(bundle, tmp_path / "m.safetensors")
    loaded = load_model(path)
    _assert_same(bundle.model, loaded.model, bundle.input_spec.shape)
    assert loaded.input_spec == bundle.input_spec
    assert loaded.classes == bundle.classes
    assert loaded.arch == bundle.arch
    assert loaded.lineage == [record]


@pytest.mark.parametrize("arch,size", [("small_cnn", 8), ("resnet18", 32)])
def test_pruned_model_rebuilds_exactly(tmp_path, arch, size):
    bundle = _prune(load_model(arch=arch, num_classes=10, input_size=size))
    path = save_model(bundle, tmp_path / "pruned.safetensors")
    header = fmt.read_header(path)
    assert header.structure["modules"], "channel changes must be recorded"
    assert header.structure["tensors"]
    loaded = load_model(path)
    _assert_same(bundle.model, loaded.model, bundle.input_spec.shape)
    fresh = load_model(arch=arch, num_classes=10, input_size=size)
    assert sum(p.numel() for p in loaded.model.parameters()) < 0.5 * sum(p.numel() for p in fresh.model.parameters())


def test_pruned_vision_transformer_rebuilds(tmp_path):
    bundle = load_model(arch="vit_b_16", num_classes=10, input_size=32)
    example = torch.randn(1, *bundle.input_spec.shape)
    layers = bundle.model.encoder.layers
    pruner = tp.pruner.MetaPruner(bundle.model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=0.25, ignored_layers=[bundle.model.heads],
                                  num_heads={m.self_attention: m.self_attention.num_heads for m in layers})
    pruner.step()
    path = save_model(bundle, tmp_path / "vit.safetensors")
    assert fmt.read_header(path).structure["modules"]["encoder.layers.encoder_layer_0.mlp.0"] == {"out_features": 2304}
    _assert_same(bundle.model, load_model(path).model, bundle.input_spec.shape)


def test_bundle_loads_with_pickle_disabled(tmp_path):
    """Loading a bundle in a fresh process where every pickle entry point raises."""
    path = save_model(_prune(load_model(arch="resnet18", num_classes=10, input_size=32)), tmp_path / "m.safetensors")
    script = textwrap.dedent(f"""
        import pickle, torch
        def refuse(*a, **k):
            raise RuntimeError("pickle was used")
        class Refuse(pickle.Unpickler):
            def __init__(self, *a, **k):
                raise RuntimeError("pickle was used")
        pickle.load = pickle.loads = refuse
        pickle.Unpickler = Refuse
        torch.load = refuse
        from deepslim.models import load_model
        b = load_model({str(path)!r})
        print(sum(p.numel() for p in b.model.parameters()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) > 0


def test_header_is_versioned_json(tmp_path, cnn_bundle):
    path = save_model(cnn_bundle, tmp_path / "m.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), "pt") as fh:
        header = json.loads(fh.metadata()[fmt.METADATA_KEY])
    assert header["format"] == "deepslim.bundle" and header["format_version"] == fmt.FORMAT_VERSION
    assert header["input"]["shape"] == [1, 8, 8] and header["input"]["channel_order"] == "GRAY"
    assert header["arch"] == {"source": "builtin", "name": "small_cnn", "file_sha256": None,
                              "kwargs": {"num_classes": 10, "in_channels": 1, "width": 8}}


def test_newer_format_version_is_refused(tmp_path, cnn_bundle):
    path = save_model(cnn_bundle, tmp_path / "m.safetensors")
    header = fmt.read_header(path).to_json()
    header["format_version"] = fmt.FORMAT_VERSION + 1
    from safetensors.torch import save_file
    save_file(fmt.read_tensors(path), str(tmp_path / "new.safetensors"),
              metadata={fmt.METADATA_KEY: json.dumps(header)})
    with pytest.raises(InputFileError, match="upgrade deepslim"):
        load_model(tmp_path / "new.safetensors")


def test_truncated_bundle_is_a_clear_error(tmp_path, cnn_bundle):
    path = save_model(cnn_bundle, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="corrupt or truncated"):
        load_model(path)


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path, cnn_bundle, monkeypatch):
    target = tmp_path / "m.safetensors"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fmt, "save_file", boom)
    with pytest.raises(OSError):
        save_model(cnn_bundle, target)
    assert list(tmp_path.iterdir()) == []


def test_foreign_module_cannot_be_saved(tmp_path, cnn_bundle):
    cnn_bundle.model.extra = torch.nn.Linear(2, 2)
    with pytest.raises(ModelError, match="not part of the architecture"):
        save_model(cnn_bundle, tmp_path / "m.safetensors")


def _overwrite_tensor_bytes(path, name: str, pattern: bytes) -> None:
    """Overwrite one tensor's bytes in place, as disk corruption or a bad copy would."""
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    start, end = json.loads(data[8:8 + size])[name]["data_offsets"]
    offset = 8 + size
    data[offset + start:offset + end] = (pattern * (end - start))[: end - start]
    path.write_bytes(bytes(data))


def test_bundle_with_non_finite_weights_names_the_tensors(tmp_path, cnn_bundle):
    path = save_model(cnn_bundle, tmp_path / "m.safetensors")
    _overwrite_tensor_bytes(path, "features.0.weight", b"\xff")  # 0xffffffff is a NaN
    _overwrite_tensor_bytes(path, "features.1.running_var", b"\x00\x00\x80\x7f")  # +Inf
    with pytest.raises(ModelError, match=r"m.safetensors has weights that are not finite \(NaN or Inf\) in 2 "
                                         r"tensors: features.0.weight, features.1.running_var; the file is "
                                         r"corrupt or training diverged"):
        load_model(path)


def test_non_finite_message_lists_first_few_and_a_count(tmp_path, cnn_bundle):
    state = cnn_bundle.model.state_dict()
    for tensor in state.values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    path = save_model(cnn_bundle, tmp_path / "m.safetensors")
    floats = sum(t.is_floating_point() for t in state.values())
    with pytest.raises(ModelError, match=rf"in {floats} tensors: features.0.weight, features.1.weight, "
                                         rf"features.1.bias and {floats - 3} more;"):
        load_model(path)


def test_bundle_naming_a_file_that_is_not_python_is_refused(tmp_path, cnn_bundle):
    path = save_model(cnn_bundle, tmp_path / "m.safetensors")
    header = fmt.read_header(path).to_json()
    header["arch"] = {"source": "file", "name": f"{tmp_path / 'evil.txt'}:build", "kwargs": {}, "file_sha256": None}
    from safetensors.torch import save_file
    save_file(fmt.read_tensors(path), str(tmp_path / "evil.safetensors"),
              metadata={fmt.METADATA_KEY: json.dumps(header)})
    with pytest.raises(ModelError, match="which is not path/file.py:function"):
        load_model(tmp_path / "evil.safetensors", trust_code=True)
