"""The dataset a number is about: --dataset, else the model's recorded one, else an error (never digits by default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepslim.errors import ConfigError, DatasetError
from deepslim.provenance import (DataChoice, canonical_dataset, common_dataset, data_record, recorded_dataset,
                                 resolve_dataset)
from deepslim.spec import StageRecord


def _lineage(*datasets: str | None) -> list[StageRecord]:
    return [StageRecord("train" if i == 0 else "prune", {"dataset": d} if d else {}, 1.0, {})
            for i, d in enumerate(datasets)]


def _folder(root: Path, classes=("cat", "dog")) -> Path:
    for c in classes:
        (root / "train" / c).mkdir(parents=True)
    return root


def test_the_last_recorded_dataset_is_the_default_and_no_record_is_an_error():
    assert resolve_dataset(None, _lineage("digits", None)).spec == "digits"
    choice = resolve_dataset(None, _lineage("digits", "digits-c (severity 4)"))
    assert (choice.spec, choice.severity, choice.why) == ("digits-c", 4, "the model's own dataset")
    with pytest.raises(ConfigError, match="records no dataset; pass --dataset"):
        resolve_dataset(None, [], what="base.safetensors")


def test_a_given_dataset_that_differs_is_allowed_and_said():
    choice = resolve_dataset("digits-c", _lineage("digits"), severity=2)
    assert (choice.spec, choice.severity) == ("digits-c", 2)
    assert choice.differs and "differs from the dataset the model was made on (digits)" in choice.note()
    assert resolve_dataset("digits", _lineage("digits")).note() is None


def test_a_recorded_directory_is_used_only_when_it_is_here_with_the_models_classes(tmp_path):
    root = _folder(tmp_path / "pets")
    lineage = _lineage(str(root))
    assert resolve_dataset(None, lineage, classes=["cat", "dog"]).spec == str(root)
    with pytest.raises(DatasetError, match="no longer has the model's classes"):
        resolve_dataset(None, lineage, classes=["ant", "bee"])
    with pytest.raises(DatasetError, match="is not here; pass --dataset"):
        resolve_dataset(None, _lineage(str(tmp_path / "gone")), classes=["cat", "dog"])


def test_recorded_python_code_is_never_run_from_a_model_files_word(tmp_path):
    code = f"{tmp_path / 'data.py'}:make"
    with pytest.raises(DatasetError, match="Python code.*pass --dataset"):
        resolve_dataset(None, _lineage(code))
    assert resolve_dataset(code, _lineage(code)).spec == code  # the user naming it is fine


def test_severity_belongs_to_digits_c():
    with pytest.raises(ConfigError, match="--severity applies to"):
        resolve_dataset("digits", severity=2)
    with pytest.raises(ConfigError, match="--severity applies to digits-c only"):
        resolve_dataset(None, _lineage("digits"), severity=2)


def test_several_models_share_one_dataset_or_the_user_must_choose(tmp_path):
    root = _folder(tmp_path / "pets")
    same = [("a", _lineage("digits"), None), ("b", _lineage("digits", "digits"), None)]
    assert common_dataset(None, same).spec == "digits"
    mixed = [("a", _lineage("digits"), None), ("b", _lineage(str(root)), ["cat", "dog"])]
    with pytest.raises(ConfigError, match="different datasets.*a: digits; b: .*pets.*pass --dataset"):
        common_dataset(None, mixed)
    given = common_dataset("digits", mixed)
    assert given.spec == "digits" and str(root) in given.recorded


def test_canonical_paths_are_absolute_and_recorded_with_the_policies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert canonical_dataset("digits") == "digits"
    assert canonical_dataset("pets") == str(tmp_path / "pets")
    assert canonical_dataset("data.py:make") == f"{tmp_path / 'data.py'}:make"

    class Info:
        split_policy, preprocess = "val/ split 50/50 into val and test", "resized, no crop"
    record = data_record(DataChoice("pets"), Info(), "light")
    assert record == {"dataset": str(tmp_path / "pets"),
                      "data": {"split": Info.split_policy, "preprocess": Info.preprocess, "augment": "light"}}
    assert recorded_dataset([StageRecord("train", record, 1.0, {})]) == (str(tmp_path / "pets"), 3)


def test_digits_c_keeps_the_models_severity_and_is_not_said_to_differ():
    lineage = _lineage("digits-c (severity 5)")
    same = resolve_dataset("digits-c", lineage)
    assert same.severity == 5 and same.note() is None
    other = resolve_dataset("digits-c", lineage, severity=2)
    assert other.severity == 2 and "differs" in other.note()


def test_a_model_with_default_class_names_finds_its_folder(tmp_path):
    root = _folder(tmp_path / "pets")
    assert resolve_dataset(None, _lineage(str(root)), classes=["0", "1"]).spec == str(root)
    with pytest.raises(DatasetError, match="no longer has the model's classes"):
        resolve_dataset(None, _lineage(str(root)), classes=["0", "1", "2"])


def test_a_relative_recorded_path_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "pets")
    with pytest.raises(DatasetError, match="relative path pets"):
        resolve_dataset(None, _lineage("pets"), classes=["cat", "dog"])


def test_parity_says_when_the_given_digits_c_severity_is_not_the_models():
    from export.parity import choose_inputs
    lineage = _lineage("digits-c (severity 5)")
    assert "made on digits-c (severity 5)" in choose_inputs("digits-c", lineage, severity=2).why
    assert "made on" not in choose_inputs("digits-c", lineage, severity=5).why
