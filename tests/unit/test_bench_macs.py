"""MACs in a bench report are those of the shape actually run, never the exported shape's count."""

from __future__ import annotations

import pytest
import torch

from benchmarks import Backend, BenchTarget, LatencyConfig, RunnerOptions, bench
from deepslim.profile import count_macs_params

QUICK = LatencyConfig(batches=(1,), rounds=1, iterations=1, warmup=0)


@pytest.fixture(scope="module")
def ir16(tmp_path_factory):
    """small_cnn exported to an OpenVINO IR at 16x16, and its bundle."""
    from deepslim.models import load_model
    from export import to_openvino
    torch.manual_seed(0)
    bundle = load_model(arch="small_cnn", num_classes=10, input_size=16, arch_kwargs={"width": 8})
    return to_openvino(bundle, tmp_path_factory.mktemp("ir") / "m.xml"), bundle


def _entry(target: BenchTarget):
    report = bench([target], QUICK, dataset=None, options=RunnerOptions(threads=1))
    return report.entries[0]


def test_ir_run_at_its_export_size_reports_the_recorded_count(ir16):
    path, bundle = ir16
    entry = _entry(BenchTarget(path, Backend.OPENVINO))
    assert entry.input_shape == [1, 16, 16]
    assert entry.macs == count_macs_params(bundle.model, bundle.input_spec)[0]


def test_ir_run_at_another_size_counts_that_size_from_its_source(ir16):
    path, bundle = ir16
    at32 = count_macs_params(bundle.model, bundle.input_spec.with_size(32))[0]
    assert at32 != count_macs_params(bundle.model, bundle.input_spec)[0]
    entry = _entry(BenchTarget(path, Backend.OPENVINO, input_size=32, source=bundle))
    assert entry.input_shape == [1, 32, 32] and entry.macs == at32
    assert entry.params == count_macs_params(bundle.model, bundle.input_spec)[1]


def test_ir_run_at_another_size_without_its_source_reports_no_count(ir16):
    path, bundle = ir16
    entry = _entry(BenchTarget(path, Backend.OPENVINO, input_size=32))
    assert entry.input_shape == [1, 32, 32] and entry.macs is None
    assert any("MACs unknown at 32x32 (it records them at 16x16 only)" in n for n in entry.notes)
    assert entry.params == count_macs_params(bundle.model, bundle.input_spec)[1]
