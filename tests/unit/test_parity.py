"""Parity judges the export, not the inputs: real inputs by default, a per-row tolerance, ties excused,
ill-conditioned sources named, int8 never judged on noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import export.parity as parity
from deepslim.artifact import ArtifactMeta
from deepslim.models import ModelBundle
from deepslim.spec import ArchSource, ArchSpec, InputSpec, StageRecord
from export.errors import ParityError

SPEC = InputSpec.create(1, 8, (0.5,), (0.25,))


class Cancelling(nn.Module):
    """Logits from a catastrophic cancellation: fp32 and fp64 of the same model disagree."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = x.flatten(1).sum(1, keepdim=True) * 1e7
        return torch.cat([(big + x.flatten(1)[:, :3]) - big, x.flatten(1)[:, 3:13]], dim=1)


class FakeRunner:
    """Stands for an artifact's runner: computes ``fn`` on its inputs."""

    label = "fake"

    def __init__(self, fn, lineage=()):
        self.fn, self.meta = fn, ArtifactMeta(SPEC, [str(i) for i in range(13)], list(lineage), {})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run(self, x):
        return self.fn(x)


def _bundle(model: nn.Module, lineage=()) -> ModelBundle:
    return ModelBundle(model.eval(), ArchSpec(ArchSource.BUILTIN, "test"), SPEC, [str(i) for i in range(13)],
                       list(lineage))


def _check(monkeypatch, bundle, fn, **kwargs):
    monkeypatch.setattr(parity, "open_runner", lambda *a, **k: FakeRunner(fn, bundle.lineage))
    monkeypatch.setattr(parity, "artifact_kind", lambda p: parity.ArtifactKind.ONNX)
    return parity.check_parity(bundle, "m.onnx", samples=32, **kwargs)


def test_tolerance_scales_with_each_rows_magnitude():
    ref = np.array([[1000.0, -2000.0, 5.0], [0.1, 0.2, 0.3]])
    got = ref + np.array([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])  # 2.5e-4 of row 0's largest output
    assert parity.compare(ref, got, "fp32", "m", "ort", "x", "torch").passed
    bad = ref + np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2e-3]])  # 7e-3 of row 1's largest: a real difference
    report = parity.compare(ref, bad, "fp32", "m", "ort", "x", "torch")
    assert not report.passed and report.max_rel == pytest.approx(2e-3 / 0.3)


def test_top1_flips_between_tied_classes_are_excused_but_real_flips_are_not():
    ref = np.tile([[5.0, 5.0 - 1e-6, 0.0]], (10, 1))
    tied = ref.copy()
    tied[:, 1] += 2e-6  # class 1 now wins by a margin far inside the tolerance
    report = parity.compare(ref, tied, "fp32", "m", "ort", "x", "torch")
    assert report.top1_agreement == 0.0 and report.passed
    flipped = ref.copy()
    flipped[:, 2] = 6.0
    assert not parity.compare(ref, flipped, "fp16", "m", "ort", "x", "torch").passed


def test_an_ill_conditioned_source_is_named_instead_of_the_export(monkeypatch):
    bundle = _bundle(Cancelling())
    exact = lambda x: Cancelling().double()(torch.from_numpy(x).double()).numpy()  # an export that is exact
    with pytest.raises(ParityError, match="the source model itself is ill-conditioned") as err:
        _check(monkeypatch, bundle, exact)
    assert "torch fp32 vs fp64 differ by" in str(err.value)
    plain = _bundle(nn.Sequential(nn.Flatten(), nn.Linear(64, 13)))
    linear = lambda x: plain.model(torch.from_numpy(x)).detach().numpy() + 1.0  # a wrong export: it is blamed
    with pytest.raises(ParityError) as err:
        _check(monkeypatch, plain, linear)
    assert "ill-conditioned" not in str(err.value)


def test_inputs_come_from_the_dataset_recorded_in_the_lineage(monkeypatch):
    seen = []
    lineage = [StageRecord("train", {"dataset": "digits"}, 1.0), StageRecord("prune", {"dataset": "digits-c (severity 2)"}, 1.0)]
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 13))
    bundle = _bundle(model, lineage)
    fn = lambda x: (seen.append(x), model(torch.from_numpy(x)).detach().numpy())[1]
    report = _check(monkeypatch, bundle, fn)
    assert report.inputs == "digits-c test (the model's own dataset)"
    digits_c = parity.parity_inputs(SPEC, parity.ParityInputs("digits-c", 2), 32)[0]
    np.testing.assert_array_equal(seen[0], digits_c[:16])  # severity 2, as recorded
    assert _check(monkeypatch, bundle, fn, dataset="digits").inputs.startswith("digits test (--dataset; the model "
                                                                              "was made on digits-c (severity 2))")
    assert _check(monkeypatch, _bundle(model), fn).inputs.startswith("seeded random")


def test_a_model_file_never_makes_parity_run_code_or_walk_a_directory(tmp_path):
    from deepslim.trust import allow_code
    data = tmp_path / "data.py"
    data.write_text("raise SystemExit('ran')\n")
    lineage = [StageRecord("train", {"dataset": f"{data}:make"}, 1.0)]
    with allow_code(trust_code=True):  # not even with --trust-code: the file has no recorded hash
        chosen = parity.choose_inputs(None, lineage, classes=["a", "b"])
    assert not chosen.real and "is Python code" in chosen.why
    for name in ("a", "b"):
        (tmp_path / "imgs" / "train" / name).mkdir(parents=True)
    walk = [StageRecord("train", {"dataset": str(tmp_path / "imgs")}, 1.0)]
    assert parity.choose_inputs(None, walk, classes=["a", "b"]).real
    assert not parity.choose_inputs(None, walk, classes=["a", "c"]).real  # not the model's classes
    assert not parity.choose_inputs(None, [StageRecord("train", {"dataset": "/"}, 1.0)], classes=["a", "b"]).real


def test_int8_is_never_judged_on_random_inputs(monkeypatch):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 13))
    with pytest.raises(ParityError, match="needs real inputs"):
        _check(monkeypatch, _bundle(model), lambda x: model(torch.from_numpy(x)).detach().numpy(), precision="int8")
