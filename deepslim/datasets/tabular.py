"""Tables: a CSV or Parquet file (or a folder of train/val/test files) with one row per sample.

``data.csv?label=y&features=a,b,c&task=regression``: ``label`` names the target column (several,
comma-separated, for a multilabel or multi-target regression), ``features`` the numeric columns to
feed (default: every column but the label and ``split``), ``task`` overrides the task inferred from
the label (integers, booleans and text -> classification, floats -> regression).

Splits: a ``split`` column (train/val/test) is used as it is; a folder holding ``train``, ``val`` and
``test`` files is used as it is; otherwise the rows are split 70/15/15 with seed ``SPLIT_SEED``,
stratified by class for classification. Features reach the model raw; the model's signature
standardises them with the mean and std learnt from the train split (recorded in ``info.inputs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from deepslim.config import Augment
from deepslim.data import SPLIT_SEED, SPLITS, DatasetInfo, Split, split_options, stratified_split, with_options
from deepslim.errors import ConfigError, DatasetError, first_line
from deepslim.samples import prepare
from deepslim.signature import BATCH, InputKind, Signature, TensorSpec
from deepslim.spec import InputSpec
from deepslim.tasks import Task, TaskKind, task_for_targets

SUFFIXES = (".csv", ".parquet", ".jsonl")
OPTIONS = ("label", "features", "task")
SPLIT_COLUMN = "split"
FRACTIONS = (0.7, 0.15, 0.15)
MIN_STD = 1e-6
_INFER_ROWS = 10_000  # targets sampled to infer the task


# --- specs and paths ----------------------------------------------------------------------------

def is_table_path(path: Path | str) -> bool:
    """A ``.csv`` / ``.parquet`` path (existing or not), or a folder holding a ``train.csv``/``train.parquet``."""
    path = Path(str(path).partition("?")[0])
    if path.suffix.lower() in SUFFIXES:
        return True
    return path.is_dir() and any((path / f"train{s}").is_file() for s in SUFFIXES)


def open_table(path: str, options: dict[str, str]) -> TableSource:
    """The table at ``path`` (a query suffix there adds to ``options``); see the module docstring."""
    path, query = split_options(str(path))
    options = {**query, **options}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"Unknown table option(s) {', '.join(unknown)}; the options are {', '.join(OPTIONS)}.")
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise DatasetError(f"The table {root} does not exist.")
    name = with_options(str(root), **options)
    frames = _read_folder(root) if root.is_dir() else {"all": _read(root)}
    return TableSource.from_frames(frames, name=name, where=str(root), label=_columns(options.get("label")),
                                   features=_columns(options.get("features")), task=options.get("task"))


def _columns(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _read(path: Path) -> Any:
    import pandas as pd
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DatasetError(f"{path} is not a table; give a .csv, .jsonl or .parquet file.")
    try:
        if suffix == ".jsonl":
            frame = pd.read_json(path, lines=True)
        else:
            frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except ImportError as exc:
        raise DatasetError(f"Reading {path.name} needs pyarrow; install it with pip install pyarrow.") from exc
    except Exception as exc:  # pandas raises many types for a bad file; each becomes one sentence
        raise DatasetError(f"Cannot read the table {path}: {type(exc).__name__}: {first_line(exc)}.") from exc
    if frame.empty:
        raise DatasetError(f"The table {path} has no rows.")
    return frame


def _read_folder(root: Path) -> dict[str, Any]:
    files = {s: next((root / f"{s}{x}" for x in SUFFIXES if (root / f"{s}{x}").is_file()), None) for s in SPLITS}
    missing = [s for s, f in files.items() if f is None]
    if missing:
        raise DatasetError(f"The table folder {root} has no {'/'.join(missing)} file; give train, val and test "
                           "files (.csv or .parquet), or one file that deepslim splits 70/15/15.")
    frames = {s: _read(f) for s, f in files.items()}
    columns = list(frames["train"].columns)
    for split, frame in frames.items():
        lacking = [c for c in columns if c not in frame.columns]
        if lacking:
            raise DatasetError(f"Column '{lacking[0]}' of {files['train'].name} is missing from "
                               f"{files[split].name}; give every split file the same columns.")
    return {s: f[columns] for s, f in frames.items()}


# --- the source --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Table:
    """A table read, checked and split: raw features, targets, the row indices of each split."""

    features: np.ndarray  # float32 (N, F), not standardised
    targets: np.ndarray  # int64 class indices (N,), float32 (N,) / (N, K), or int64 0/1 (N, K)
    splits: dict[str, np.ndarray]
    feature_names: tuple[str, ...]
    task: Task
    split_policy: str


class TableRows(Dataset):
    """Rows as ``(features float32 tensor, numpy target)``, before any standardisation."""

    def __init__(self, features: np.ndarray, targets: np.ndarray) -> None:
        self.features, self.targets = torch.from_numpy(features), targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        return self.features[index], self.targets[index]


class TableSource:
    """A table with a fixed train/val/test split; ``info.inputs`` proposes one standardised ``features`` input."""

    def __init__(self, table: Table, name: str) -> None:
        self.table = table
        train = table.features[table.splits["train"]].astype(np.float64)
        mean = tuple(float(m) for m in train.mean(axis=0))
        std = tuple(max(float(s), MIN_STD) for s in train.std(axis=0))
        spec = TensorSpec("x", (BATCH, len(table.feature_names)), "float32", InputKind.FEATURES, mean, std)
        self.info = DatasetInfo(name, table.task.names, 0, (), (), None, split_policy=table.split_policy,
                                preprocess=_preprocess(table.feature_names), task=table.task, inputs=(spec,))

    @classmethod
    def from_frames(cls, frames: dict[str, Any], *, name: str, where: str, label: Sequence[str] | None,
                    features: Sequence[str] | None = None, task: str | None = None,
                    class_names: Sequence[str] | None = None, policy: str | None = None) -> TableSource:
        """``frames``: ``{"all": frame}`` (split by its ``split`` column or 70/15/15) or one per split.
        ``class_names``: the names of integer labels 0..K-1 (else sorted unique label values)."""
        return cls(build_table(frames, where=where, label=label, features=features, task=task,
                               class_names=class_names, policy=policy), name)

    def raw(self, name: Split) -> TableRows:
        idx = self.table.splits[name]
        return TableRows(self.table.features[idx], self.table.targets[idx])

    def split(self, name: Split, spec: Signature | InputSpec, *, augment: Augment | str | bool = Augment.NONE,
              task: Task | None = None) -> Dataset:
        """Split ``name`` prepared for the model's ``spec`` (features standardised with its statistics); tables
        are never augmented."""
        if not isinstance(spec, Signature):
            raise ConfigError(f"Dataset {self.info.name} gives feature vectors; this model takes one image.")
        return prepare(self.raw(name), spec, task or self.info.task, where=f"dataset {self.info.name}")


def _preprocess(names: Sequence[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (f"{len(names)} numeric feature columns ({shown}), standardised with the train split's mean and std; "
            "no augmentation")


# --- building a table --------------------------------------------------------------------------

def build_table(frames: dict[str, Any], *, where: str, label: Sequence[str] | None,
                features: Sequence[str] | None, task: str | None, class_names: Sequence[str] | None = None,
                policy: str | None = None) -> Table:
    import pandas as pd
    kind = _task_kind(task)
    given = {s: len(f) for s, f in frames.items()} if "all" not in frames else None
    frame = pd.concat(list(frames.values()), ignore_index=True) if given else frames["all"]
    frame = frame.rename(columns=str)
    columns = list(frame.columns)
    labels = _label_columns(label, columns, where)
    feats = _feature_columns(frame, features, labels, where)
    _check_finite(frame, feats + labels, where)
    targets, task_obj = _targets(frame, labels, kind, class_names, where)
    splits, sentence = _splits(frame, given, targets, task_obj, where, len(frame))
    x = frame[feats].to_numpy(dtype=np.float32)
    return Table(x, targets, splits, tuple(feats), task_obj, policy or sentence)


def _task_kind(task: str | None) -> TaskKind | None:
    if not task:
        return None
    try:
        return TaskKind(task)
    except ValueError:
        raise ConfigError(f"task= (--task) must be classification, multilabel or regression, got '{task}'.") from None


def _label_columns(label: Sequence[str] | None, columns: list[str], where: str) -> list[str]:
    if not label:
        raise DatasetError(f"Table {where} needs a label column: pass label= (--label-column) with one of its "
                           f"columns: {', '.join(columns)}.")
    missing = [c for c in label if c not in columns]
    if missing:
        raise DatasetError(f"Table {where} has no label column '{missing[0]}'; its columns are {', '.join(columns)}.")
    return list(label)


def _feature_columns(frame: Any, features: Sequence[str] | None, labels: list[str], where: str) -> list[str]:
    import pandas as pd
    if features:
        missing = [c for c in features if c not in frame.columns]
        if missing:
            raise DatasetError(f"Table {where} has no feature column '{missing[0]}'; its columns are "
                               f"{', '.join(frame.columns)}.")
        clash = [c for c in features if c in labels]
        if clash:
            raise DatasetError(f"Column '{clash[0]}' of table {where} is both the label and a feature; leave it out "
                               "of features=.")
        chosen = list(features)
    else:
        chosen = [c for c in frame.columns if c not in labels and c != SPLIT_COLUMN]
    if not chosen:
        raise DatasetError(f"Table {where} has no feature column besides the label; add numeric columns.")
    text = [c for c in chosen if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise DatasetError(f"Column '{text[0]}' of table {where} is not numeric ({frame[text[0]].dtype}); pass "
                           "features= (--feature-columns) with the numeric columns to use.")
    return chosen


def _check_finite(frame: Any, columns: list[str], where: str) -> None:
    import pandas as pd
    bad = []
    for column in columns:
        values = frame[column]
        count = int(values.isna().sum())
        if pd.api.types.is_float_dtype(values):
            count += int(np.isinf(values.to_numpy()).sum())
        if count:
            bad.append(f"'{column}' ({count} row{'s' if count > 1 else ''})")
    if bad:
        raise DatasetError(f"Table {where} has missing or infinite values in column {', '.join(bad)}; fill or drop "
                           "those rows.")


def _targets(frame: Any, labels: list[str], kind: TaskKind | None, class_names: Sequence[str] | None,
             where: str) -> tuple[np.ndarray, Task]:
    """The target array and the task: one column -> class indices (names: sorted unique values) or float32
    values; several columns -> 0/1 label vectors (multilabel) or float32 vectors (multi-target regression)."""
    import pandas as pd
    if len(labels) > 1:
        text = [c for c in labels if not pd.api.types.is_numeric_dtype(frame[c])]
        if text:
            raise DatasetError(f"Label column '{text[0]}' of table {where} is not numeric; several label columns "
                               "must hold 0/1 labels or numbers.")
        integral = all(pd.api.types.is_integer_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])
                       for c in labels)
        values = frame[labels].to_numpy(dtype=np.int64 if integral and kind is not TaskKind.REGRESSION
                                        else np.float32)
        return values, task_for_targets(list(values[:_INFER_ROWS]), kind=kind, names=labels)
    column = frame[labels[0]]
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    if kind is TaskKind.REGRESSION or (kind is None and pd.api.types.is_float_dtype(column)):
        if not numeric:
            raise DatasetError(f"Label column '{labels[0]}' of table {where} holds {column.dtype} values; a "
                               "regression needs numbers.")
        values = column.to_numpy(dtype=np.float32)
        return values, task_for_targets(list(values[:_INFER_ROWS]), kind=kind, names=labels)
    if pd.api.types.is_float_dtype(column):  # task=classification or multilabel on floats: the task says why not
        task_for_targets(list(column.to_numpy()[:_INFER_ROWS]), kind=kind, names=labels)
    indices, names = _class_indices(column, class_names, labels[0], where)
    return indices, task_for_targets(list(indices[:_INFER_ROWS]), kind=kind, names=names)


def _class_indices(column: Any, class_names: Sequence[str] | None, label: str,
                   where: str) -> tuple[np.ndarray, list[str]]:
    """Class indices of a label column: given ``class_names`` name the integers 0..K-1; else the classes are
    the sorted unique values (numbers sorted as numbers), named as strings."""
    import pandas as pd
    if class_names is not None:
        values = column.to_numpy(dtype=np.int64)
        if values.min() < 0 or values.max() >= len(class_names):
            raise DatasetError(f"Label column '{label}' of table {where} has values outside 0..{len(class_names) - 1}.")
        return values, [str(c) for c in class_names]
    raw = column.to_numpy()
    if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
        raw = column.astype(str).to_numpy()
    classes = np.unique(raw)
    return np.searchsorted(classes, raw).astype(np.int64), [str(c) for c in classes]


def _splits(frame: Any, given: dict[str, int] | None, targets: np.ndarray, task: Task, where: str,
            rows: int) -> tuple[dict[str, np.ndarray], str]:
    """The row indices of train/val/test and where they come from, in one sentence."""
    if given is not None:
        bounds = np.cumsum([0, *(given[s] for s in SPLITS)])
        counts = ", ".join(f"{given[s]} {s}" for s in SPLITS)
        return ({s: np.arange(bounds[i], bounds[i + 1]) for i, s in enumerate(SPLITS)},
                f"the train, val and test files of {where} as they are ({counts} rows)")
    if SPLIT_COLUMN in frame.columns:
        return _column_splits(frame[SPLIT_COLUMN], where)
    if task.kind is TaskKind.CLASSIFICATION:
        try:
            idx = stratified_split(targets, FRACTIONS, name=where)
        except DatasetError as exc:
            many = (f", or task=regression (--task) if the label is a quantity to predict, not one of "
                    f"{task.width} classes") if task.width > 20 else ""
            raise DatasetError(f"Table {where} has too few rows ({rows}) for a stratified 70/15/15 split; give each "
                               f"class at least 7 rows, or a split column{many}.") from exc
        how = f"stratified by class, seed {SPLIT_SEED}"
    else:
        order = np.random.default_rng(SPLIT_SEED).permutation(rows)
        cut = [int(round(rows * FRACTIONS[0])), int(round(rows * (FRACTIONS[0] + FRACTIONS[1])))]
        idx = {s: np.sort(part) for s, part in zip(SPLITS, np.split(order, cut))}
        how = f"shuffled, seed {SPLIT_SEED}"
    for s in SPLITS:
        if len(idx[s]) == 0:
            raise DatasetError(f"Table {where} has too few rows ({rows}) for a 70/15/15 split; give more rows or a "
                               "split column.")
    return idx, f"the {rows} rows of {where} split 70/15/15 into train/val/test ({how})"


def _column_splits(column: Any, where: str) -> tuple[dict[str, np.ndarray], str]:
    values = column.astype(str).to_numpy()
    wrong = sorted(set(values) - set(SPLITS))
    if wrong:
        raise DatasetError(f"The split column of table {where} has the values {', '.join(wrong[:5])}; use only "
                           "train, val and test.")
    idx = {s: np.flatnonzero(values == s) for s in SPLITS}
    empty = [s for s in SPLITS if len(idx[s]) == 0]
    if empty:
        raise DatasetError(f"The split column of table {where} has no '{empty[0]}' rows; give train, val and test "
                           "rows.")
    counts = ", ".join(f"{len(idx[s])} {s}" for s in SPLITS)
    return idx, f"the rows of {where} by its split column, as they are ({counts})"
