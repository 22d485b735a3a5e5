"""Files deepslim writes: permissions follow the user's umask; the Python API never overwrites silently."""

from __future__ import annotations

import os
import stat

import pytest

from deepslim.errors import OutputError
from deepslim.fileio import atomic_files, atomic_path
from deepslim.models import save_model


def _fast_onnx():
    from export import OnnxConfig
    return OnnxConfig(exporter="legacy", simplify=False)  # the TorchScript exporter: a fraction of a second


@pytest.fixture()
def umask():
    """Set a umask for one test; the previous one comes back afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_bundle_mode_follows_umask(tmp_path, cnn_bundle, umask, mask, mode):
    umask(mask)
    assert _mode(save_model(cnn_bundle, tmp_path / "m.safetensors")) == mode


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_onnx_export_mode_follows_umask(tmp_path, cnn_bundle, umask, mask, mode):
    from export import export_model
    umask(mask)
    result = export_model(cnn_bundle, "onnx", tmp_path / "m.onnx", verify=None, onnx_config=_fast_onnx())
    assert _mode(result.artifact) == mode


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_reports_and_multi_file_artifacts_follow_umask(tmp_path, umask, mask, mode):
    umask(mask)
    with atomic_path(tmp_path / "report.md") as tmp:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600))  # as mkstemp-style writers create them
    with atomic_files(tmp_path / "m.xml", tmp_path / "m.bin") as (xml, bin_):
        xml.write_text("<net/>")
        os.close(os.open(bin_, os.O_WRONLY | os.O_CREAT, 0o600))
    assert [_mode(tmp_path / n) for n in ("report.md", "m.xml", "m.bin")] == [mode] * 3


def test_save_model_refuses_an_existing_file_without_force(tmp_path, cnn_bundle):
    path = save_model(cnn_bundle, tmp_path / "m.safetensors")
    before = path.read_bytes()
    cnn_bundle.model.classifier[-1].bias.data += 1
    with pytest.raises(OutputError, match=r"already exists; pass force=True"):
        save_model(cnn_bundle, path)
    assert path.read_bytes() == before
    save_model(cnn_bundle, path, force=True)
    assert path.read_bytes() != before


@pytest.mark.parametrize("target,existing", [("onnx", "m.onnx"), ("onnx", "m.onnx.data"),
                                             ("openvino", "m.xml"), ("openvino", "m.bin")])
def test_export_model_refuses_any_existing_output_without_force(tmp_path, cnn_bundle, target, existing):
    from export import export_model
    (tmp_path / existing).write_text("keep me")
    with pytest.raises(OutputError, match=rf"{existing} already exists; pass force=True"):
        export_model(cnn_bundle, target, tmp_path / f"m{'.onnx' if target == 'onnx' else '.xml'}", verify=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]
    assert (tmp_path / existing).read_text() == "keep me"


def test_export_model_overwrites_with_force(tmp_path, cnn_bundle):
    from export import export_model
    (tmp_path / "m.onnx").write_text("old")
    result = export_model(cnn_bundle, "onnx", tmp_path / "m.onnx", verify=None, force=True, onnx_config=_fast_onnx())
    assert result.artifact.stat().st_size > 1000
