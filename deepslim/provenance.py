"""Which dataset a number is about: the one the user named, else the one the model's lineage records.

Every command that measures or trains takes ``--dataset``; without it, the dataset recorded in
the model's lineage (by its last stage that records one) is used, and a model that records none
is an error rather than a silent fallback to the built-in digits. A ``--dataset`` that differs from
the recorded one is allowed and said. A model file's word never makes deepslim run code: a
recorded ``file.py:fn`` dataset must be named by the user, and a recorded directory is used only
when it is still there with the model's classes.

A reference may carry options after ``?`` (``data.csv?label=y&task=regression``, see
:func:`deepslim.data.with_options`): they are part of the dataset and are recorded, compared and
reopened with it (sorted by key, so one dataset has one name).

Torch-free, so the CLI can resolve the dataset before importing the heavy stages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepslim.errors import ConfigError, DatasetError
from deepslim.spec import StageRecord
from deepslim.trust import is_code_spec, spec_file

BUILTIN = ("digits", "digits-c", "mnist", "breast-cancer", "wine", "diabetes")
DATASET_HELP = ("digits, digits-c, mnist, breast-cancer, wine, diabetes, a .csv/.parquet table (with --label-column), "
                "an ImageFolder or CIFAR-10 directory, or path/file.py:fn")
_SEVERITY = re.compile(r"^digits-c \(severity (\d)\)$")
TABLE_SUFFIXES = (".csv", ".parquet")


def split_reference(spec: str) -> tuple[str, str]:
    """``data.csv?task=regression&label=y`` -> (``data.csv``, ``?label=y&task=regression``): the options sorted
    by key (what :func:`deepslim.data.with_options` writes); they are checked where the dataset opens."""
    base, sep, query = spec.partition("?")
    parts = sorted(filter(None, query.split("&")), key=lambda part: part.partition("=")[0])
    return base, ("?" + "&".join(parts)) if sep and parts else ""


def is_table(path: Path) -> bool:
    """A .csv/.parquet file, or a folder of train/val/test tables (read from names only)."""
    if path.suffix.lower() in TABLE_SUFFIXES:
        return True
    return path.is_dir() and any((path / f"train{s}").is_file() for s in TABLE_SUFFIXES)


@dataclass(frozen=True)
class DataChoice:
    """The dataset a command uses, why, and what the model records."""

    spec: str                   # what deepslim.data.open_dataset takes
    severity: int = 3
    why: str = "--dataset"
    recorded: str | None = None  # the dataset recorded in the model's lineage, if any

    @property
    def differs(self) -> bool:
        return self.recorded is not None and self.why == "--dataset" and \
            canonical_dataset(self.recorded) != canonical_dataset(self.label())

    def note(self) -> str | None:
        """One line for the output when the user's --dataset is not the model's own."""
        if self.differs:
            return f"note: --dataset {self.spec} differs from the dataset the model was made on ({self.recorded})."
        return None

    @property
    def severity_option(self) -> int | None:
        """The severity as a --severity option would give it: only digits-c has one."""
        return self.severity if self.spec == "digits-c" else None

    def label(self) -> str:
        return self.spec if self.spec != "digits-c" else f"digits-c (severity {self.severity})"


def canonical_dataset(spec: str) -> str:
    """The dataset as it is recorded: built-in names as they are, a directory, table or code file by absolute
    path; its ``?`` options kept (sorted)."""
    base, query = split_reference(spec)
    if base in BUILTIN or _SEVERITY.match(base):
        return base + query
    if is_code_spec(base):
        file = spec_file(base)
        return f"{Path(file).resolve()}{base[len(file):]}{query}"
    return str(Path(base).resolve()) + query


def recorded_name(spec: str, severity: int = 3) -> str:
    """The ``dataset`` a stage records for ``spec``: what reopens it from any directory."""
    return f"digits-c (severity {severity})" if spec == "digits-c" else canonical_dataset(spec)


def recorded_dataset(lineage: Sequence[StageRecord]) -> tuple[str, int] | None:
    """The dataset (and digits-c severity) of the last lineage stage that records one."""
    for record in reversed(lineage):
        config = record.config if isinstance(record.config, dict) else {}
        name = config.get("dataset")
        if isinstance(name, str) and name:
            match = _SEVERITY.match(name)
            if match:
                return "digits-c", int(match.group(1))
            severity = config.get("severity")
            return name, severity if isinstance(severity, int) and 1 <= severity <= 5 else 3
    return None


def usable_recorded(name: str, classes: Sequence[str] | None) -> str | None:
    """Why a recorded dataset cannot be used from a model file's word (None: it can)."""
    base, _ = split_reference(name)
    if base in BUILTIN:
        return None
    if is_code_spec(base):
        return (f"the model's dataset {name} is Python code, which a model file cannot make deepslim run; "
                f"pass --dataset {name} to use it")
    if not Path(base).is_absolute():
        return (f"the model records its dataset as the relative path {name} (written before deepslim recorded "
                "absolute paths), which may name another folder from here")
    if is_table(Path(base)):  # its columns are checked where it opens (the model's task against the data's)
        return None if Path(base).exists() else f"the model's dataset {base} is not here"
    if not Path(base).is_dir():
        return f"the model's dataset {name} is not here"
    if not folder_of(Path(base), classes):
        return f"the model's dataset {name} no longer has the model's classes"
    return None


def folder_of(root: Path, classes: Sequence[str] | None) -> bool:
    """``root`` is an image-folder or CIFAR-10 dataset of exactly ``classes`` (read from folder names only)."""
    from deepslim.datasets.folders import is_cifar10_dir
    if classes is None or not root.is_dir():
        return False
    if is_cifar10_dir(root):
        return len(classes) == 10
    top = root / "train" if (root / "train").is_dir() else root
    folders = sorted(p.name for p in top.iterdir() if p.is_dir())
    default = list(classes) == [str(i) for i in range(len(classes))]  # a model that never learned the names
    return folders == sorted(classes) or (default and len(folders) == len(classes))


def resolve_dataset(given: str | None, lineage: Sequence[StageRecord] = (), *, severity: int | None = None,
                    classes: Sequence[str] | None = None, what: str = "The model") -> DataChoice:
    """The dataset to use: ``given`` (--dataset), else the model's recorded one; an error when there is neither."""
    recorded = recorded_dataset(lineage)
    if given is not None:
        if severity is not None and given != "digits-c":
            raise ConfigError(f"--severity applies to --dataset digits-c only, not '{given}'.")
        if severity is None:  # digits-c without --severity: the model's own severity, else 3
            severity = recorded[1] if recorded and recorded[0] == "digits-c" else 3
        return DataChoice(given, severity, "--dataset", _label(recorded) if recorded else None)
    if recorded is None:
        raise ConfigError(f"{what} records no dataset; pass --dataset ({DATASET_HELP}).")
    name, recorded_severity = recorded
    why = usable_recorded(name, classes)
    if why is not None:
        tail = "" if "--dataset" in why else "; pass --dataset"
        raise DatasetError(f"{why[0].upper()}{why[1:]}{tail}.")
    if severity is not None and name != "digits-c":
        raise ConfigError(f"--severity applies to digits-c only, and the model's dataset is {name}.")
    return DataChoice(name, recorded_severity if severity is None else severity, "the model's own dataset",
                      _label(recorded))


def require_dataset(given: str | None, *, severity: int | None = None, what: str) -> DataChoice:
    """A dataset for something that records none (a new --arch, a pickled module): the user must name it."""
    if given is None:
        raise ConfigError(f"{what} needs --dataset ({DATASET_HELP}); nothing records which data it is for.")
    return resolve_dataset(given, severity=severity)


def common_dataset(given: str | None, lineages: Sequence[tuple[str, Sequence[StageRecord], Sequence[str]]], *,
                   severity: int | None = None) -> DataChoice:
    """One dataset for several models (bench): --dataset, else the one all of them record."""
    if given is not None:
        recorded = {_label(r) for _, lineage, _ in lineages if (r := recorded_dataset(lineage))}
        choice = resolve_dataset(given, severity=severity)
        differing = sorted(r for r in recorded if canonical_dataset(r) != canonical_dataset(choice.label()))
        return DataChoice(choice.spec, choice.severity, "--dataset", ", ".join(differing) or None)
    choices = {name: resolve_dataset(None, lineage, classes=classes, what=name) for name, lineage, classes in lineages}
    labels = {canonical_dataset(c.label()) for c in choices.values()}
    if len(labels) > 1:
        listed = "; ".join(f"{name}: {c.label()}" for name, c in choices.items())
        raise ConfigError(f"The models were made on different datasets ({listed}); pass --dataset.")
    return next(iter(choices.values()))


def _label(recorded: tuple[str, int]) -> str:
    name, severity = recorded
    return f"digits-c (severity {severity})" if name == "digits-c" else name


def data_record(choice: DataChoice, info: Any = None, augment: Any = None) -> dict[str, Any]:
    """What a stage records about its data: the dataset to reopen it, its split and preprocessing policies."""
    return {"dataset": canonical_dataset(choice.label()), "data": _policies(info, augment)}


def data_policies(source: Any, spec: Any = None, augment: Any = None) -> dict[str, Any]:
    """A stage record's ``data``: how the source split and prepared the images (for this input spec)
    and the training augmentation, when there was one."""
    describe = getattr(source, "describe_preprocess", None)
    preprocess = describe(spec) if callable(describe) and spec is not None else None
    return _policies(source.info, augment, preprocess)


def _policies(info: Any, augment: Any, preprocess: str | None = None) -> dict[str, Any]:
    policies = {"split": getattr(info, "split_policy", ""), "preprocess": preprocess or getattr(info, "preprocess", "")}
    if augment is not None:
        policies["augment"] = getattr(augment, "value", augment)
    return {k: v for k, v in policies.items() if v}
