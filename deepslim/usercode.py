"""Importing the user's own Python files (architectures, datasets, metrics) with one-sentence errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from deepslim.errors import DeepSlimError, first_line
from deepslim.trust import check_importable


def user_attribute(file: Path, name: str, *, error: type[DeepSlimError]) -> Any:
    """Execute ``file`` as a fresh module and return its attribute ``name`` (None when it has none).

    Any failure while importing the user's code is raised as ``error`` with one sentence. Only a
    ``.py`` file outside the standard library and site-packages is ever imported.
    """
    file = check_importable(Path(file), error=error)
    module_name = f"deepslim_user_{abs(hash(str(Path(file).resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # user code: any import failure becomes one sentence
        raise error(f"Cannot import {file}: {type(exc).__name__}: {first_line(exc)}.") from exc
    return getattr(module, name, None)
