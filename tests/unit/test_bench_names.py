"""On-the-way export names of `deepslim bench` never start with "-" (a shell would read them as options)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.bench import _unique_stems


def test_a_model_in_the_working_directory_at_the_root_gives_a_name_without_a_leading_dash(monkeypatch):
    monkeypatch.chdir("/")  # a container's usual working directory: the folder name of ./m.safetensors is ""
    here, below = Path("m.safetensors"), Path("sub/m.safetensors")
    stems = _unique_stems([here, below])
    assert stems == {here: "m", below: "sub-m"}  # "-m" before


@pytest.mark.parametrize("names", [["-m.safetensors", "a/m.safetensors"],
                                   ["-m.safetensors", "m.safetensors", "a/m.safetensors", "b/a/m.safetensors"]])
def test_names_stay_unique_and_dashless_when_a_file_name_starts_with_a_dash(names, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = [Path(n) for n in names]
    stems = _unique_stems(paths)
    assert len(set(stems.values())) == len(paths)
    assert not any(s.startswith("-") for s in stems.values()), stems
