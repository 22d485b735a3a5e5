"""The shared train loop: accuracy on real data, reproducibility, resume, frozen backbones, options."""

from __future__ import annotations

import copy

import pytest
import torch

from deepslim.config import Init, TrainConfig
from deepslim.data import open_dataset
from deepslim.errors import ConfigError
from deepslim.training import fit, initialize, model_for_dataset, train


def test_builtin_cnn_reaches_95_percent_on_digits(trained_cnn):
    record = trained_cnn.lineage[-1]
    assert record.stage == "train"
    assert record.metrics["test"]["top1"] >= 0.95
    assert record.metrics["test"]["roc_auc_macro"] >= 0.99
    assert record.config["epochs"] == 3 and record.config["dataset"] == "digits"
    assert len(record.metrics["history"]) == 3 and record.versions["torch"] == torch.__version__
    # from scratch: the default learning rate and warm-up, and an epoch beat the random start
    assert record.config["lr"] == 0.05 and record.config["warmup_epochs"] == 1
    assert record.metrics["kept_start"] is False and record.metrics["start_val_top1"] < 0.3


def _small(seed=0):
    torch.manual_seed(seed)
    return model_for_dataset("small_cnn", "digits", input_size=8, arch_kwargs={"width": 8})


def test_same_seed_gives_identical_weights():
    cfg = TrainConfig(epochs=1, seed=3)
    a = train(_small(), "digits", cfg, progress=False).model.state_dict()
    b = train(_small(), "digits", cfg, progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path):
    src = open_dataset("digits")
    cfg = TrainConfig(epochs=3, seed=1, device="cpu")  # bit-for-bit needs deterministic kernels: CUDA's are not
    spec = _small().input_spec
    train_ds, val_ds = src.split("train", spec, augment=True), src.split("val", spec)

    torch.manual_seed(1)
    reference = _small().model
    fit(reference, train_ds, val_ds, cfg, progress=False)

    torch.manual_seed(1)
    model = _small().model
    calls = {"n": 0}
    steps = len(train_ds) // cfg.batch_size

    def dies_in_epoch_two(m, x, y):
        calls["n"] += 1
        if calls["n"] == steps + 5:
            raise _Interrupt
        return torch.nn.functional.cross_entropy(m(x), y)

    ckpt = tmp_path / "run.ckpt"
    torch.manual_seed(1)
    with pytest.raises(_Interrupt):
        fit(model, train_ds, val_ds, cfg, loss_fn=dies_in_epoch_two, checkpoint=ckpt, progress=False)
    assert ckpt.exists()
    resumed = _small().model
    result = fit(resumed, train_ds, val_ds, cfg, checkpoint=ckpt, resume=True, progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    ref, got = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_resume_refuses_other_settings(tmp_path):
    src = open_dataset("digits")
    bundle = _small()
    ds = src.split("val", bundle.input_spec)
    fit(bundle.model, ds, ds, TrainConfig(epochs=1), checkpoint=tmp_path / "c.ckpt", progress=False)
    with pytest.raises(ConfigError, match="other settings \\(epochs"):
        fit(bundle.model, ds, ds, TrainConfig(epochs=2), checkpoint=tmp_path / "c.ckpt", resume=True, progress=False)
    with pytest.raises(ConfigError, match="no checkpoint"):
        fit(bundle.model, ds, ds, TrainConfig(epochs=1), checkpoint=tmp_path / "none.ckpt", resume=True)


def test_freeze_backbone_trains_only_the_head():
    bundle = _small()
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    trained = train(bundle, "digits", TrainConfig(epochs=1, freeze_backbone=True), progress=False)
    after = trained.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.2.weight", "classifier.2.bias"}


@pytest.mark.parametrize("init", [Init.KAIMING, Init.XAVIER, Init.NORMAL])
def test_init_schemes_reinitialise_weights(init):
    model = _small().model
    before = model.features[0].weight.clone()
    initialize(model, init)
    assert not torch.equal(before, model.features[0].weight)
    if init is Init.NORMAL:
        assert float(model.features[0].weight.std()) == pytest.approx(0.01, rel=0.3)


def test_label_smoothing_and_schedules_run():
    for schedule in ("onecycle", "constant"):
        out = train(_small(), "digits", TrainConfig(epochs=2, schedule=schedule, label_smoothing=0.1,
                                                    optimizer="adamw", augment=False), progress=False)
        assert out.lineage[-1].metrics["test"]["top1"] > 0.5


@pytest.mark.parametrize("kwargs,fragment", [({"epochs": 0}, "--epochs"), ({"lr": -0.1}, "--lr"),
                                             ({"batch_size": 0}, "--batch-size"),
                                             ({"label_smoothing": 1.0}, "--label-smoothing"),
                                             ({"warmup_epochs": 5, "epochs": 5}, "--warmup-epochs"),
                                             ({"momentum": 1.0}, "--momentum")])
def test_bad_config_values(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        TrainConfig(**kwargs)


def test_resume_refuses_another_model_or_dataset(tmp_path):
    bundle = _small()
    ckpt = tmp_path / "c.ckpt"
    train(bundle, "digits", TrainConfig(epochs=1), checkpoint=ckpt, progress=False)
    other = model_for_dataset("small_cnn", "digits", input_size=8, arch_kwargs={"width": 16})
    with pytest.raises(ConfigError, match="other settings \\(arch"):
        train(other, "digits", TrainConfig(epochs=1), checkpoint=ckpt, resume=True, progress=False)
    with pytest.raises(ConfigError, match="other settings \\(dataset"):
        train(_small(), "digits-c", TrainConfig(epochs=1), checkpoint=ckpt, resume=True, progress=False)


def test_model_for_dataset_seed_fixes_the_initial_weights():
    a = model_for_dataset("small_cnn", "digits", input_size=8, seed=5).model.state_dict()
    torch.rand(100)  # disturb the global generator in between
    b = model_for_dataset("small_cnn", "digits", input_size=8, seed=5).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_a_trained_bundle_fine_tunes_at_a_tenth_of_the_learning_rate(trained_cnn):
    said = []
    out = train(copy.deepcopy(trained_cnn), "digits", TrainConfig(epochs=1), progress=False, log=said.append)
    record = out.lineage[-1]
    assert record.config["lr"] == pytest.approx(0.005) and record.config["warmup_epochs"] == 0
    assert said == record.metrics["notes"]
    assert said[0].startswith("the model starts trained (its lineage has a train stage; val top-1 0.9")
    assert "fine-tuning learning rate 0.005 (a tenth of the from-scratch 0.05), no warm-up" in said[0]
    start = trained_cnn.lineage[-1].metrics
    assert record.metrics["start_val_top1"] == pytest.approx(start["val_top1"])
    assert record.metrics["val_top1"] >= start["val_top1"]
    assert record.metrics["test"]["top1"] >= start["test"]["top1"] - 0.01


def test_training_that_only_hurts_keeps_the_starting_weights_and_says_so(trained_cnn):
    said = []
    start = copy.deepcopy(trained_cnn)
    cfg = TrainConfig(epochs=1, optimizer="adamw", lr=0.1)  # far too high for fine-tuning, as the user asked
    out = train(copy.deepcopy(trained_cnn), "digits", cfg, progress=False, log=said.append)
    m = out.lineage[-1].metrics
    assert out.lineage[-1].config["lr"] == 0.1 and "fine-tuning at --lr 0.1 as given" in said[0]
    assert m["kept_start"] is True and m["best_epoch"] == 0 and m["history"][0]["val_top1"] < m["val_top1"]
    assert said[-1].startswith(f"no epoch beat the starting model on val ({m['start_val_top1']:.4f}; best epoch 1 "
                               "reached 0.") and said[-1].endswith("kept the starting weights")
    assert said[-1] in m["notes"]
    assert m["test"]["top1"] == pytest.approx(start.lineage[-1].metrics["test"]["top1"])
    ref = start.model.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in out.model.state_dict().items())
