"""Structured pruning and sensitivity for every model kind (issue #13): tabular, regression, multilabel,
two inputs with a dict output, a 28x56 image and a Conv1d signal model, through the Python API."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from any_kinds import KINDS
from compress.prune import PruneConfig, PruneError, prune
from compress.prune_inputs import count, example_of, task_head
from compress.recover import kd_loss
from compress.sensitivity import analyze, write_sensitivity
from deepslim.data import open_dataset
from deepslim.models import load_model, save_model
from deepslim.modelio import all_outputs, call, example_inputs, task_output
from deepslim.trust import allow_code


def _load(path):
    with allow_code(trust_code=True):
        return load_model(path)


def _head(bundle, record):
    name = next(iter(record.metrics["ignored"]))
    return name, dict(bundle.model.named_modules())[name]


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_prunes_fine_tunes_on_its_primary_metric_and_reloads_bit_exact(kind, any_kind, tmp_path):
    bundle = _load(any_kind(kind))
    with allow_code(trust_code=True):
        pruned = prune(bundle, PruneConfig(ratio=0.5, round_to=None, finetune_epochs=1),
                       dataset=KINDS[kind].dataset, progress=False)
    record, task = pruned.lineage[-1], bundle.task
    m = record.metrics
    assert m["macs_after"] < m["macs_before"] / 1.5 and m["params_after"] < m["params_before"] / 1.5
    assert m["primary"] == task.primary and task.primary in m["test"] and task.primary in m["test_before"]
    assert m["drop"] == pytest.approx(task.drop(m["test_before"], m["test"]), abs=1e-3)
    assert m["drop_unit"] == "points"
    key = "finetune_val_top1" if task.primary == "top1" else f"finetune_val_{task.primary}"
    assert key in m["steps"][0] and m["steps"][0]["finetune_best_epoch"] in (0, 1)
    name, head = _head(pruned, record)
    out = getattr(head, "out_features", getattr(head, "out_channels", None))
    assert out == task.width == getattr(_head(bundle, record)[1], "out_features", None)
    path = save_model(pruned, tmp_path / f"{kind}.safetensors")
    reloaded = _load(path)
    got, want = reloaded.model.state_dict(), pruned.model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    x = example_inputs(pruned.signature, 3)
    a, b = call(reloaded.model.eval(), x), call(pruned.model.eval(), x)
    assert torch.equal(task_output(a, pruned.signature), task_output(b, pruned.signature))
    assert task_output(a, pruned.signature).reshape(3, -1).shape == (3, task.width)


def test_both_branches_of_the_two_input_model_lose_channels_and_the_dict_output_stays(any_kind):
    bundle = _load(any_kind("two_input"))
    pruned = prune(bundle, PruneConfig(ratio=0.5, round_to=None), dataset=None, progress=False)
    model = pruned.model
    assert model.conv[0].out_channels == 4 and model.meta[0].out_features == 4  # both branches, 8 -> 4
    assert model.head.in_features == 8 and model.head.out_features == 10
    out = all_outputs(call(model.eval(), example_inputs(pruned.signature, 2)), pruned.signature)
    assert set(out) == {"logits", "embedding"} and out["logits"].shape == (2, 10) and out["embedding"].shape == (2, 8)


def test_macs_are_counted_with_every_input(any_kind):
    bundle = _load(any_kind("two_input"))
    source = open_dataset(KINDS["two_input"].dataset)
    example = example_of(bundle.signature, source.split("train", bundle.signature, task=bundle.task))
    assert len(example) == 2 and example[0].shape == (1, 1, 8, 8) and example[1].shape == (1, 4)
    first = source.split("train", bundle.signature, task=bundle.task)[0][0]
    assert all(torch.equal(e[0], f) for e, f in zip(example, first))  # a real sample, not zeros
    model = bundle.model
    macs, params = count(model, example)
    parts = [count(model.conv, example[:1])[0], count(model.meta, example[1:])[0],
             count(model.head, (torch.zeros(1, model.head.in_features),))[0]]
    assert params == sum(p.numel() for p in model.parameters())
    assert macs == sum(parts) and min(parts) > 0  # the image branch, the feature branch and the head


def test_the_task_head_is_found_by_tracing_the_task_output():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(6, 3)
            self.out = nn.Linear(3, 3)
            self.aux = nn.Linear(3, 3)   # as wide as the head and defined after it: find_head would pick it

        def forward(self, x):
            h = self.body(x)
            return {"aux": self.aux(h), "y": self.out(h)}

    from deepslim.signature import Signature, TensorSpec
    sig = Signature((TensorSpec("x", ("batch", 6), kind="features"),), ("aux", "y"), "y", "dict")
    assert task_head(Net(), (torch.randn(1, 6),), sig, 3) == "out"


def test_a_layer_feeding_only_another_output_follows_the_cut_and_keeps_its_width():
    from deepslim.models import ModelBundle
    from deepslim.signature import Signature, TensorSpec
    from deepslim.spec import ArchSource, ArchSpec
    from deepslim.tasks import Task

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk, self.head, self.aux = nn.Linear(4, 16), nn.Linear(16, 3), nn.Linear(16, 2)

        def forward(self, x):
            h = torch.relu(self.trunk(x))
            return {"logits": self.head(h), "aux": self.aux(h)}

    torch.manual_seed(0)
    sig = Signature((TensorSpec("x", ("batch", 4), kind="features"),), ("logits", "aux"), "logits", "dict")
    bundle = ModelBundle(Net(), ArchSpec(ArchSource.BUILTIN, "net"), sig, Task.classification(["a", "b", "c"]))
    pruned = prune(bundle, PruneConfig(ratio=0.5, round_to=None), dataset=None, progress=False)
    model = pruned.model
    assert model.trunk.out_features == 8 and model.aux.in_features == 8 and model.head.in_features == 8
    out = model(torch.randn(2, 4))  # runs: the aux branch was traced with the task output
    assert out["logits"].shape == (2, 3) and out["aux"].shape == (2, 2)
    assert "returns the output 'aux'" in pruned.lineage[-1].metrics["ignored"]["aux"]


def test_speedup_two_on_the_mlp(any_kind):
    bundle = _load(any_kind("tabular"))
    pruned = prune(bundle, PruneConfig(speedup=2.0, round_to=None), dataset=None, progress=False)
    assert pruned.lineage[-1].metrics["mac_reduction"] == pytest.approx(2.0, rel=0.05)
    assert pruned.model.head.out_features == 3


def test_bn_importance_without_batchnorm_and_nothing_to_cut_are_clear_errors(any_kind):
    mlp = _load(any_kind("tabular"))
    with pytest.raises(PruneError, match="no BatchNorm layer"):
        prune(mlp, PruneConfig(ratio=0.5, importance="bn"), dataset=None, progress=False)
    two = _load(any_kind("two_input"))  # 8-channel layers cannot keep a multiple of --round-to 8 below 8
    with pytest.raises(PruneError, match="can be cut.*--round-to 1"):
        prune(two, PruneConfig(ratio=0.5), dataset=None, progress=False)


def test_kd_recovery_for_a_regression_mixes_the_teacher_and_the_targets(any_kind):
    bundle = _load(any_kind("regression"))
    loss = kd_loss(bundle.model, bundle.task, bundle.signature, temperature=4.0, alpha=0.5)
    x, y = torch.randn(8, 10), torch.randn(8) * 50 + 150
    from deepslim.losses import task_criterion
    hard = task_criterion(bundle.task)(bundle.model(x), y)
    assert loss(bundle.model, x, y).item() == pytest.approx(0.5 * hard.item(), rel=1e-5)  # teacher == student
    pruned = prune(bundle, PruneConfig(ratio=0.5, round_to=None, finetune_epochs=1, recover="kd"),
                   dataset="diabetes", progress=False)
    assert "finetune_val_r2" in pruned.lineage[-1].metrics["steps"][0]


def test_sensitivity_on_the_mlp_scores_groups_by_the_primary_metric_with_its_direction(any_kind, tmp_path):
    bundle = _load(any_kind("regression"))
    base, rows = analyze(bundle, "diabetes", PruneConfig(ratio=0.5, round_to=None), ratios=(0.5, 0.75))
    assert base.metric == "r2" and base.describe().startswith("val R² on all")
    assert sorted(r.layer for r in rows) == ["body.0", "body.3"] and all(set(r.drops) == {0.5, 0.75} for r in rows)
    md = write_sensitivity(base, rows, tmp_path / "r2")["md"].read_text()
    assert md.startswith(f"Unpruned model: val R² on all {base.total} val samples: {base:.4f}. Drop in points")
    mae = replace(bundle, task=bundle.task.with_primary("mae"))  # lower is better: a rise is a drop
    base, rows = analyze(mae, "diabetes", PruneConfig(ratio=0.5, round_to=None), ratios=(0.75,))
    assert base.metric == "mae" and base.unit == "% of the baseline" and base > 1
    assert all(r.drops[0.75] > 0 for r in rows)  # pruning 75% of a layer makes MAE worse: a positive drop
    paths = write_sensitivity(base, rows, tmp_path / "mae")
    import json
    record = json.loads(paths["json"].read_text())
    assert record["metric"] == "mae" and record["base_mae"] == float(base) and "a rise" in paths["md"].read_text()


def test_an_mlp_with_batchnorm1d_prunes_by_bn_scales():
    from deepslim.training import model_for_dataset
    torch.manual_seed(0)
    bundle = model_for_dataset("mlp", "wine", arch_kwargs={"hidden": [32, 16], "batch_norm": True})
    pruned = prune(bundle, PruneConfig(ratio=0.5, importance="bn", round_to=None), dataset=None, progress=False)
    norms = [m for m in pruned.model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [n.num_features for n in norms] == [16, 8] and pruned.model.head.out_features == 3


def test_taylor_importance_in_steps_reads_the_regression_loss(any_kind):
    bundle = _load(any_kind("regression"))
    pruned = prune(bundle, PruneConfig(ratio=0.5, importance="taylor", iterative_steps=2, round_to=None),
                   dataset="diabetes", progress=False)
    steps = pruned.lineage[-1].metrics["steps"]
    assert len(steps) == 2 and steps[0]["macs"] > steps[1]["macs"] == pruned.lineage[-1].metrics["macs_after"]
    assert pruned.model.head.out_features == 1
