"""Structured pruning: real channel removal, targets, importances, protection, recovery, sensitivity."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from compress.prune import PruneConfig, PruneError, plan, prune
from compress.recover import recalibrate_batchnorm
from compress.sensitivity import allocate, analyze, write_sensitivity
from deepslim.data import open_dataset
from deepslim.errors import ConfigError
from deepslim.models import load_model, save_model
from deepslim.profile import count_macs_params


def _cnn(width=16):
    torch.manual_seed(0)
    return load_model(arch="small_cnn", num_classes=10, input_size=8, channels=1, arch_kwargs={"width": width},
                      mean=(0.3,), std=(0.4,))


@pytest.mark.parametrize("kwargs,fragment", [({"ratio": 0}, "--ratio"), ({"ratio": 1}, "--ratio"),
                                             ({"ratio": 1.5}, "--ratio"), ({"speedup": 0.5}, "--speedup"),
                                             ({"ratio": 0.3, "speedup": 2}, "exactly one"), ({}, "exactly one"),
                                             ({"ratio": 0.3, "max_layer_ratio": 1}, "--max-layer-ratio"),
                                             ({"ratio": 0.3, "iterative_steps": 0}, "--iterative-steps"),
                                             ({"ratio": 0.3, "sparsity_train_epochs": 2}, "importance bn")])
def test_bad_prune_options(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        PruneConfig(**kwargs)


def test_pruning_removes_channels_and_keeps_the_head(tmp_path):
    bundle = _cnn(32)
    macs, params = count_macs_params(bundle.model, bundle.input_spec)
    pruned = prune(bundle, PruneConfig(ratio=0.5), dataset=None, progress=False)
    convs = [m for m in pruned.model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)  # --round-to 8
    assert convs[0].out_channels == 16 and bundle.model.features[0].out_channels == 32  # input untouched
    head = pruned.model.classifier[2]
    assert head.out_features == 10 and head.in_features == 64
    record = pruned.lineage[-1]
    assert record.stage == "prune" and record.metrics["mac_reduction"] > 3 and record.metrics["macs_before"] == macs
    assert record.metrics["params_after"] < params / 3 and record.config["importance"] == "l2"
    assert record.metrics["ignored"] == {"classifier.2": "classifier head (its outputs are the classes)"}
    path = save_model(pruned, tmp_path / "p.safetensors")
    reloaded = load_model(path)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(reloaded.model.eval()(x), pruned.model.eval()(x))


def test_speedup_is_reached_within_five_percent():
    pruned = prune(_cnn(32), PruneConfig(speedup=2.5, round_to=None), dataset=None, progress=False)
    assert pruned.lineage[-1].metrics["mac_reduction"] == pytest.approx(2.5, rel=0.05)


def test_unreachable_speedup_is_a_clear_error():
    nearest = r"nearest reachable: [0-9.]+x \(--(ratio|speedup) [0-9.]+\)"
    with pytest.raises(PruneError, match="reaches a 50x MAC reduction.*" + nearest):
        prune(_cnn(), PruneConfig(speedup=50, max_layer_ratio=0.3), dataset=None, progress=False)


@pytest.mark.parametrize("importance", ["l1", "l2", "lamp", "random", "bn", "taylor"])
def test_every_importance_prunes(importance):
    pruned = prune(_cnn(), PruneConfig(ratio=0.5, importance=importance), dataset="digits", progress=False)
    assert pruned.lineage[-1].metrics["mac_reduction"] > 2
    assert "test" in pruned.lineage[-1].metrics


def test_ignore_and_max_layer_ratio():
    bundle = _cnn(32)
    pruned = prune(bundle, PruneConfig(ratio=0.8, max_layer_ratio=0.5, ignore=("features.0",), round_to=None),
                   dataset=None, progress=False)
    assert pruned.model.features[0].out_channels == 32
    assert [m.out_channels for m in pruned.model.modules() if isinstance(m, nn.Conv2d)] == [32, 16, 32, 32, 64]
    glob = prune(bundle, PruneConfig(ratio=0.5, global_pruning=True, ignore=("features.0",)), dataset=None,
                 progress=False)
    assert glob.model.features[0].out_channels == 32 and glob.lineage[-1].metrics["mac_reduction"] > 1.5
    with pytest.raises(ConfigError, match="'features.99'.*did you mean"):
        prune(bundle, PruneConfig(ratio=0.3, ignore=("features.99",)), dataset=None)


def test_model_without_prunable_layers_is_refused(tmp_path):
    (tmp_path / "lin.py").write_text("import torch.nn as nn\ndef build(num_classes):\n"
                                     "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n")
    bundle = load_model(arch=f"{tmp_path / 'lin.py'}:build", num_classes=10, input_size=8, channels=1)
    with pytest.raises(PruneError, match="no prunable layer"):
        plan(bundle, PruneConfig(ratio=0.5))


def test_iterative_steps_finetune_and_recover_accuracy(trained_cnn):
    cfg = PruneConfig(ratio=0.5, iterative_steps=2, finetune_epochs=2)
    pruned = prune(trained_cnn, cfg, dataset="digits", progress=False)
    m = pruned.lineage[-1].metrics
    assert [s["step"] for s in m["steps"]] == [1, 2] and all("finetune_val_top1" in s for s in m["steps"])
    assert all(s["bn_batches"] > 0 for s in m["steps"])
    assert m["test"]["top1"] >= m["test_before"]["top1"] - 0.05


def test_batchnorm_recalibration_updates_statistics():
    bundle = _cnn()
    bn = bundle.model.features[1]
    before = bn.running_mean.clone()
    data = open_dataset("digits").split("train", bundle.input_spec)
    assert recalibrate_batchnorm(bundle.model, data, batches=3) == 3
    assert not torch.equal(before, bn.running_mean) and bn.momentum == 0.1


def test_sensitivity_table_plot_and_allocation(trained_cnn, tmp_path):
    base, rows = analyze(trained_cnn, "digits", PruneConfig(ratio=0.5), ratios=(0.5, 0.75), limit=120)
    assert 0.8 < base <= 1.0 and len(rows) >= 4
    assert all(set(r.drops) == {0.5, 0.75} for r in rows)
    weights = allocate(rows)
    assert sum(weights.values()) / len(weights) == pytest.approx(1.0)
    paths = write_sensitivity(base, rows, tmp_path / "sens")
    assert all(p.stat().st_size > 0 for p in paths.values()) and "| layer | channels |" in paths["md"].read_text()


def test_pruned_resnet_reloads_bit_exactly_in_a_fresh_process_without_pickle(tmp_path):
    torch.manual_seed(0)
    bundle = load_model(arch="resnet18", num_classes=10, input_size=32)
    pruned = prune(bundle, PruneConfig(speedup=2.0), dataset=None, progress=False)
    path = save_model(pruned, tmp_path / "p.safetensors")
    torch.save(pruned.model.state_dict(), tmp_path / "expected.pth")
    script = textwrap.dedent(f"""
        import pickle, torch
        expected = torch.load({str(tmp_path / 'expected.pth')!r}, weights_only=True)
        def refuse(*a, **k):
            raise RuntimeError("pickle was used")
        pickle.load = pickle.loads = refuse
        torch.load = refuse
        from deepslim.models import load_model
        got = load_model({str(path)!r}).model.state_dict()
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_timm_style_attention_loses_whole_heads_and_reloads(tmp_path):
    from pathlib import Path

    from export import VerifyConfig, export_model
    arch = f"{Path(__file__).resolve().parents[1] / 'data' / 'vit_style.py'}:build"
    torch.manual_seed(0)
    bundle = load_model(arch=arch, num_classes=10, input_size=16, channels=1, arch_kwargs={"in_channels": 1})
    assert plan(bundle, PruneConfig(ratio=0.5)).attention_modules == 2
    pruned = prune(bundle, PruneConfig(ratio=0.5, round_to=None), dataset=None, progress=False)
    attn = pruned.model.blocks[0].attn
    assert attn.num_heads == 4 and attn.head_dim == 8 and attn.qkv.out_features == 3 * 4 * 8  # whole heads gone
    path = save_model(pruned, tmp_path / "vit.safetensors")
    reloaded = load_model(path, trust_code=True)  # the bundle names vit_style.py: allowed explicitly
    x = torch.randn(2, 1, 16, 16)
    assert reloaded.model.blocks[1].attn.num_heads == 4
    assert torch.equal(reloaded.model.eval()(x), pruned.model.eval()(x))
    parity = export_model(reloaded, "onnx", tmp_path / "vit.onnx", verify=VerifyConfig()).parity
    assert parity.passed and parity.max_abs < 1e-4
