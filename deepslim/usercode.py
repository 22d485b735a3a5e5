"""Importing the user's own Python files (architectures, datasets, metrics) with one-sentence errors."""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path
from typing import Any

from deepslim.errors import DeepSlimError, first_line
from deepslim.trust import check_importable


def user_attribute(file: Path, name: str, *, error: type[DeepSlimError], sha256: str | None = None,
                   defined_here: bool = False) -> Any:
    """Execute ``file`` as a fresh module and return its attribute ``name`` (None when it has none).

    The file's bytes are read once, checked against ``sha256`` when given, and those very bytes
    are compiled and run (never a cached ``__pycache__`` file, which could hold other code). With
    ``defined_here`` the attribute must be defined in the file, not imported into it. Only a
    ``.py`` file outside the standard library and site-packages is ever run. Any failure while
    running the user's code is raised as ``error`` with one sentence.
    """
    file = check_importable(Path(file), error=error)
    source = file.read_bytes()
    if sha256 is not None and (actual := hashlib.sha256(source).hexdigest()) != sha256:
        raise error(f"{file} has sha256 {actual}, but the model was saved with an architecture file of sha256 "
                    f"{sha256}; restore that file (or re-save the model from this one).")
    module_name = f"deepslim_user_{hashlib.sha256(str(file).encode()).hexdigest()[:16]}"
    module = types.ModuleType(module_name)
    module.__file__ = str(file)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        exec(compile(source, str(file), "exec"), module.__dict__)  # noqa: S102 - the user's own, allowed code
    except Exception as exc:  # user code: any import failure becomes one sentence
        raise error(f"Cannot import {file}: {type(exc).__name__}: {first_line(exc)}.") from exc
    attr = getattr(module, name, None)
    origin = getattr(attr, "__module__", module_name)
    if defined_here and attr is not None and origin != module_name:
        raise error(f"{name} is not defined in {file} (it is imported from {origin}); name a function defined in "
                    "that file.")
    return attr
