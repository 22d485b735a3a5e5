"""``path/file.py:name`` specs (architectures, datasets): parsing them, and reading a file's callables without
running it."""

from __future__ import annotations

import ast
from pathlib import Path


def parse_code_spec(text: str) -> tuple[Path, str] | None:
    """``(Path("path/file.py"), "name")`` for ``path/file.py:name``; None for anything else (a registry name,
    a directory, a bare ``file.py`` or ``file.py:`` without a name)."""
    head, sep, name = str(text).rpartition(":")
    if sep and head.endswith(".py") and name:
        return Path(head), name
    return None


def code_file(text: str) -> Path | None:
    """The Python file ``text`` refers to (``path/file.py`` or ``path/file.py:name``, with or without a name),
    or None when it names no ``.py`` file."""
    text = str(text)
    head, sep, _ = text.rpartition(":")
    if sep and head.endswith(".py"):
        return Path(head)
    return Path(text) if text.endswith(".py") else None


def file_callables(file: Path) -> list[str]:
    """The public top-level ``def`` and ``class`` names of ``file``, in file order, read with :mod:`ast` (the
    file is never run). Raises SyntaxError (or OSError) when it cannot be read as Python."""
    tree = ast.parse(Path(file).read_bytes(), filename=str(file))
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return [node.name for node in tree.body if isinstance(node, kinds) and not node.name.startswith("_")]


def describe_callables(file: Path) -> str:
    """A short phrase naming ``file``'s callables for an error message (``callables in net.py: build, Net``)."""
    try:
        names = file_callables(file)
    except SyntaxError as exc:
        return f"{Path(file).name} cannot be parsed (line {exc.lineno}: {exc.msg})"
    except OSError as exc:
        return f"{Path(file).name} cannot be read ({exc.strerror or exc})"
    if not names:
        return f"{Path(file).name} defines no top-level function or class"
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return f"callables in {Path(file).name}: {shown}"
