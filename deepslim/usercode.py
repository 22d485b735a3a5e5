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

    The file's own directory is appended to ``sys.path`` (and left there, so imports done later inside
    its functions work too): ``import net`` finds ``net.py`` beside it, as under ``python file.py``,
    but being last it never shadows the standard library or installed packages. A neighbour is the
    user's own code, run under the same permission as the file that imports it.
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
    add_import_dir(file.parent)
    try:
        exec(compile(source, str(file), "exec"), module.__dict__)  # noqa: S102 - the user's own, allowed code
    except Exception as exc:  # user code: any import failure becomes one sentence
        raise error(_failure(file, exc)) from exc
    attr = getattr(module, name, None)
    origin = getattr(attr, "__module__", module_name)
    if defined_here and attr is not None and origin != module_name:
        raise error(f"{name} is not defined in {file} (it is imported from {origin}); name a function defined in "
                    "that file.")
    return attr


def add_import_dir(directory: Path) -> None:
    """Make modules in ``directory`` importable, after everything already on ``sys.path``."""
    entry = str(directory)
    if all(Path(p or ".").resolve() != directory for p in sys.path):
        sys.path.append(entry)


def _failure(file: Path, exc: Exception) -> str:
    """One sentence for an exception raised while executing ``file``, naming the module that failed."""
    cause = f"{type(exc).__name__}: {first_line(exc)}"
    neighbour = _neighbour_in_traceback(file, exc)
    if neighbour is not None:
        return f"Cannot import {file}: the module it imports from {neighbour} failed ({cause})."
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return (f"Cannot import {file}: it imports module '{exc.name}', which is neither beside it in {file.parent} "
                f"nor installed ({cause}).")
    if isinstance(exc, ImportError) and exc.name:
        return f"Cannot import {file}: its import from module '{exc.name}' failed ({cause})."
    return f"Cannot import {file}: {cause}."


def _neighbour_in_traceback(file: Path, exc: BaseException) -> Path | None:
    """The first file in ``exc``'s traceback, after ``file``'s own frame, that lies in ``file``'s directory
    (or below it): the user's module whose import failed."""
    tb, seen_file = exc.__traceback__, False
    while tb is not None:
        frame_file = Path(tb.tb_frame.f_code.co_filename)
        if frame_file == file:
            seen_file = True
        elif seen_file and frame_file.is_absolute() and frame_file.is_relative_to(file.parent):
            return frame_file
        tb = tb.tb_next
    return None
