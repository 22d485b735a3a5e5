"""scikit-learn's bundled tables, offline: ``breast-cancer`` (binary), ``wine`` (3 classes), ``diabetes``
(regression). Each is split 70/15/15 with seed ``SPLIT_SEED`` (stratified for the classifications)."""

from __future__ import annotations

import functools
from typing import Any

from deepslim.data import SPLIT_SEED, with_options
from deepslim.datasets.tabular import TableSource
from deepslim.errors import ConfigError, DatasetError

# name -> (sklearn loader, what the target is, extra loader kwargs)
TABLES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "breast-cancer": ("load_breast_cancer", "binary classification: malignant or benign", {}),
    "wine": ("load_wine", "3 wine cultivars", {}),
    "diabetes": ("load_diabetes", "regression: disease progression after one year", {"scaled": False}),
}


@functools.cache
def _frame(name: str) -> tuple[Any, tuple[str, ...] | None]:
    """(the table with its ``target`` column, the class names; None for a regression)."""
    import sklearn.datasets
    loader, _, kwargs = TABLES[name]
    bunch = getattr(sklearn.datasets, loader)(as_frame=True, **kwargs)
    names = getattr(bunch, "target_names", None)
    return bunch.frame, (tuple(str(n) for n in names) if names is not None else None)


def open_sklearn(name: str, options: dict[str, str] | None = None) -> TableSource:
    """The built-in table ``name`` (one of :data:`TABLES`); ``options`` may pick ``features`` (comma-separated
    column names) and override the ``task``; the label is always the table's ``target``."""
    if name not in TABLES:
        raise DatasetError(f"Unknown scikit-learn table '{name}'; the built-in tables are {', '.join(TABLES)}.")
    options = dict(options or {})
    if options.get("label", "target") != "target":
        raise ConfigError(f"Dataset {name}'s label is its 'target' column; leave out label={options['label']}.")
    options.pop("label", None)
    frame, classes = _frame(name)
    task = options.get("task") or ("classification" if classes is not None else "regression")
    how = f"stratified, seed {SPLIT_SEED}" if task == "classification" else f"shuffled, seed {SPLIT_SEED}"
    policy = (f"scikit-learn's {len(frame):,} {name} samples ({TABLES[name][1]}) split 70/15/15 into "
              f"train/val/test ({how})")
    features = [c.strip() for c in options["features"].split(",")] if options.get("features") else None
    return TableSource.from_frames({"all": frame}, name=with_options(name, **options), where=name, label=["target"],
                                   features=features, task=task,
                                   class_names=classes if task == "classification" else None, policy=policy)
