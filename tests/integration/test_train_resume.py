"""`deepslim train --resume` continues only from a checkpoint made from the same starting weights."""

from __future__ import annotations

import torch

from cli_contract import invoke, ok

SMALL = ["--arch", "small_cnn", "--arch-kwargs", '{"width": 8}', "--input-size", "8", "-d", "digits"]


def _start(seed: int):
    """A new small_cnn for digits; two seeds give the same architecture with other weights."""
    from deepslim.training import model_for_dataset
    return model_for_dataset("small_cnn", "digits", input_size=8, arch_kwargs={"width": 8}, seed=seed)


def _checkpoint(bundle, ckpt) -> None:
    """Train one epoch from ``bundle`` with the CLI's default options, leaving its checkpoint at ``ckpt``."""
    from deepslim.config import TrainConfig
    from deepslim.training import train
    train(bundle, "digits", TrainConfig(epochs=1), checkpoint=ckpt, progress=False)
    assert ckpt.is_file()


def _refused(result, ckpt) -> None:
    assert result.exit_code == 2, result.output + repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    assert str(ckpt) in lines[0] and "starting weights" in lines[0], lines[0]


def test_resume_from_a_checkpoint_of_another_bundle_is_refused(tmp_path):
    from deepslim.models import save_model
    a, b = save_model(_start(1), tmp_path / "a.safetensors"), save_model(_start(2), tmp_path / "b.safetensors")
    out = tmp_path / "out.safetensors"
    ckpt = tmp_path / "out.safetensors.ckpt"
    from deepslim.models import load_model
    _checkpoint(load_model(b), ckpt)
    _refused(invoke(["train", str(a), "-d", "digits", "--epochs", "1", "--resume", "--quiet", "-o", str(out)]), ckpt)
    assert not out.exists() and ckpt.is_file()
    resumed = ok(["train", b, "-d", "digits", "--epochs", "1", "--resume", "--quiet", "-o", out])
    assert "resuming from" in resumed.stderr and out.is_file()


def test_resume_with_other_weights_for_the_same_arch_is_refused(tmp_path):
    for seed in (1, 2):
        torch.save(_start(seed).model.state_dict(), tmp_path / f"w{seed}.pth")
    out = tmp_path / "out.safetensors"
    ckpt = tmp_path / "out.safetensors.ckpt"
    from deepslim.training import model_for_dataset
    _checkpoint(model_for_dataset("small_cnn", "digits", input_size=8, arch_kwargs={"width": 8},
                                  weights=tmp_path / "w2.pth", seed=0), ckpt)
    args = ["train", *SMALL, "--epochs", "1", "--resume", "--quiet", "-o", str(out)]
    _refused(invoke([*args, "--weights", str(tmp_path / "w1.pth")]), ckpt)
    resumed = ok([*args, "--weights", tmp_path / "w2.pth"])
    assert "resuming from" in resumed.stderr and out.is_file()
