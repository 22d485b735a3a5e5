"""Text tables: a CSV, JSONL or Parquet file (or a train/val/test folder of them) with a text column (two for
sentence pairs) and a label column, tokenized with the model's own tokenizer.

``texts.csv?text=sentence&label=y`` (``text=premise,hypothesis`` for pairs). Without ``text=``, a table whose
only non-label column holds strings, or one with a column named ``text`` or ``sentence``, is a text table.
The label column defaults to ``label``. Splits as for numeric tables (:mod:`deepslim.datasets.tabular`). Each split is tokenized once, truncated to the
model's ``max_length`` and padded to the split's longest text; :func:`trim` cuts a batch to its own longest,
so training and evaluation run on dynamic lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from deepslim.config import Augment
from deepslim.data import DatasetInfo, Split, split_options, with_options
from deepslim.datasets.tabular import (SPLIT_COLUMN, _read, _read_folder, _splits, _targets, _label_columns,
                                       _task_kind)
from deepslim.errors import ConfigError, DatasetError
from deepslim.signature import BATCH, InputKind, Signature, TensorSpec
from deepslim.spec import InputSpec
from deepslim.tasks import Task, check_target

OPTIONS = ("label", "text", "task")
_NAMED = ("text", "sentence")


def is_text_table(path: Path | str, options: dict[str, str]) -> bool:
    """A table read as text: ``text=`` given, or (without ``features=``) a ``text``/``sentence`` column."""
    if "text" in options:
        return True
    if "features" in options:
        return False
    try:
        frames = _frames(Path(str(path).partition("?")[0]).expanduser().resolve())
    except DatasetError:
        return False
    columns = [str(c) for c in next(iter(frames.values())).columns]
    return any(c in _NAMED for c in columns)


def _frames(root: Path) -> dict[str, Any]:
    return _read_folder(root) if root.is_dir() else {"all": _read(root)}


def open_text(path: str, options: dict[str, str]) -> TextSource:
    path, query = split_options(str(path))
    options = {**query, **options}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"Option(s) {', '.join(unknown)} do not apply to a text table; its options are "
                          f"{', '.join(OPTIONS)}.")
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise DatasetError(f"The table {root} does not exist.")
    frames = _frames(root)
    return TextSource(frames, name=with_options(str(root), **options), where=str(root),
                      label=_columns(options.get("label")), text=_columns(options.get("text")),
                      task=options.get("task"))


def _columns(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


class TextSource:
    """A text table with a fixed split; ``info.inputs`` proposes token ids and an attention mask."""

    def __init__(self, frames: dict[str, Any], *, name: str, where: str, label: Sequence[str] | None,
                 text: Sequence[str] | None, task: str | None) -> None:
        import pandas as pd
        given = {s: len(f) for s, f in frames.items()} if "all" not in frames else None
        frame = pd.concat(list(frames.values()), ignore_index=True) if given else frames["all"]
        frame = frame.rename(columns=str)
        label = label or (["label"] if "label" in frame.columns else None)
        labels = _label_columns(label, list(frame.columns), where)
        self.columns = _text_columns(frame, text, labels, where)
        targets, task_obj = _targets(frame, labels, _task_kind(task), None, where)
        self.splits, policy = _splits(frame, given, targets, task_obj, where, len(frame))
        self.texts = [frame[c].astype(str).tolist() for c in self.columns]
        self.targets, self.task = targets, task_obj
        inputs = (TensorSpec("input_ids", (BATCH, "sequence"), "int64", InputKind.TOKENS),
                  TensorSpec("attention_mask", (BATCH, "sequence"), "int64", InputKind.MASK))
        shown = " and ".join(f"'{c}'" for c in self.columns)
        self.info = DatasetInfo(name, task_obj.names, 0, (), (), None, split_policy=policy,
                                preprocess=f"text column{'s' if len(self.columns) > 1 else ''} {shown} tokenized "
                                           "with the model's tokenizer (truncated to its max length)",
                                task=task_obj, inputs=inputs)

    def texts_of(self, name: Split) -> list[tuple[str, ...]]:
        idx = self.splits[name]
        return [tuple(col[i] for col in self.texts) for i in idx]

    def split(self, name: Split, spec: Signature | InputSpec, *, augment: Augment | str | bool = Augment.NONE,
              task: Task | None = None) -> Dataset:
        """Split ``name`` tokenized for the model ``spec`` describes (never augmented)."""
        if not isinstance(spec, Signature) or spec.text is None:
            raise ConfigError(f"Dataset {self.info.name} holds text; this model takes "
                              f"{spec.describe() if isinstance(spec, Signature) else 'one image'} and has no "
                              "tokenizer (give a Hugging Face text model, or --tokenizer DIR).")
        idx = self.splits[name]
        encoded = tokenize(spec, [tuple(col[i] for col in self.texts) for i in idx])
        task = task or self.task
        targets = np.stack([check_target(task, self.targets[i]) for i in idx]) if len(idx) else np.zeros(0)
        return TokenRows(encoded, torch.from_numpy(targets))


def _text_columns(frame: Any, text: Sequence[str] | None, labels: list[str], where: str) -> list[str]:
    import pandas as pd
    columns = [c for c in frame.columns if c not in labels and c != SPLIT_COLUMN]
    if text:
        missing = [c for c in text if c not in frame.columns]
        if missing:
            raise DatasetError(f"Table {where} has no text column '{missing[0]}'; its columns are "
                               f"{', '.join(frame.columns)}.")
        chosen = list(text)
    else:
        named = [c for c in columns if c in _NAMED]
        strings = [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])]
        chosen = named[:1] or (strings if len(strings) == 1 else [])
        if not chosen:
            raise DatasetError(f"Table {where} has no column named text or sentence; pass text= (--text-column) "
                               f"with one or two of its columns: {', '.join(columns)}.")
    if len(chosen) > 2:
        raise ConfigError(f"--text-column takes one column, or two for sentence pairs; got {len(chosen)}.")
    clash = [c for c in chosen if c in labels]
    if clash:
        raise DatasetError(f"Column '{clash[0]}' of table {where} is both the label and a text column.")
    return chosen


def tokenize(signature: Signature, texts: list[tuple[str, ...]]) -> dict[str, torch.Tensor]:
    """The model's inputs for ``texts`` (one or two strings each): truncated to its ``max_length`` and padded to
    the longest; an input the tokenizer does not give (``token_type_ids``) is zeros."""
    tokenizer = signature.text.tokenizer()
    first = [t[0] for t in texts]
    second = [t[1] for t in texts] if texts and len(texts[0]) > 1 else None
    out = tokenizer(first, second, truncation=True, max_length=signature.text.max_length, padding="longest",
                    return_tensors="np")
    n, length = len(texts), out["input_ids"].shape[1] if texts else 0
    result = {}
    for spec in signature.inputs:
        value = out.get(spec.name)
        result[spec.name] = torch.from_numpy(np.asarray(value, dtype=np.int64)) if value is not None \
            else torch.zeros((n, length), dtype=torch.int64)
    return result


class TokenRows(Dataset):
    """Tokenized rows: ``((input, ...), target)`` in the signature's input order."""

    def __init__(self, encoded: dict[str, torch.Tensor], targets: torch.Tensor) -> None:
        self.names = tuple(encoded)
        self.tensors = tuple(encoded[n] for n in self.names)
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        xs = tuple(t[index] for t in self.tensors)
        return (xs[0] if len(xs) == 1 else xs), self.targets[index]

    def collate(self, items: list[Any]) -> Any:
        """Stacked items cut to the batch's longest text (dynamic padding per batch)."""
        from torch.utils.data import default_collate
        x, y = default_collate(items)
        if "attention_mask" not in self.names or not isinstance(x, (tuple, list)):
            return x, y
        return _cut(tuple(x), self.names.index("attention_mask")), y


def trim(x: Any, signature: Signature) -> Any:
    """A batch cut to its own longest sequence (columns where every attention mask is 0 dropped)."""
    if signature.text is None or not isinstance(x, (tuple, list)) or "attention_mask" not in signature.input_names:
        return x
    return _cut(tuple(x), signature.input_names.index("attention_mask"))


def _cut(x: tuple[torch.Tensor, ...], mask_index: int) -> tuple[torch.Tensor, ...]:
    mask = x[mask_index]
    if mask.dim() != 2 or mask.shape[1] == 0:
        return x
    keep = int(mask.any(dim=0).nonzero().max()) + 1 if mask.any() else 1
    return tuple(t[:, :keep] if t.dim() == 2 and t.shape[1] == mask.shape[1] else t for t in x)
