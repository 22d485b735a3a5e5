"""Which Python code a model file may run: the user's word, scoped to one command or call.

A bundle can name a Python architecture file (``file.py:build_fn``). Loading it would execute
that file, so it is allowed only when the user said so: they named the file themselves
(``--arch file.py:fn``, a recipe's ``arch:`` field, ``--student file.py:fn``) or passed
``--trust-code``. :func:`allow_code` states that for the duration of a ``with`` block (a
context variable, so nothing leaks past the command that said it); :func:`authorise` is the one
gate every bundle-named file goes through. Only ``.py`` files outside the standard library and
site-packages are ever imported by path (:func:`check_importable`).
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import site
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from deepslim.errors import DeepSlimError, ModelError, UntrustedCodeError
from deepslim.fileio import sha256_file


@dataclass(frozen=True)
class CodePolicy:
    """What the user allowed: any bundle-named function (``trust_code``) or only the ``functions`` they named.

    Each entry is a resolved file and a function name; ``None`` (Python API only, a bare path)
    allows any function defined in that file.
    """

    trust_code: bool = False
    functions: frozenset[tuple[Path, str | None]] = frozenset()

    @property
    def files(self) -> frozenset[Path]:
        return frozenset(path for path, _ in self.functions)

    def named(self, file: Path, fn: str) -> bool:
        resolved = file.resolve()
        return (resolved, fn) in self.functions or (resolved, None) in self.functions


_POLICY: contextvars.ContextVar[CodePolicy] = contextvars.ContextVar("deepslim_code_policy", default=CodePolicy())


def current_policy() -> CodePolicy:
    return _POLICY.get()


@contextlib.contextmanager
def allow_code(*, trust_code: bool = False, files: Iterable[str | Path] = ()) -> Iterator[CodePolicy]:
    """Within the block, also allow ``files`` (``path.py:fn``, or ``path.py`` for any function in it) and,
    with ``trust_code``, any function a model file names (its sha256 must still match)."""
    outer = _POLICY.get()
    named = {_entry(str(f)) for f in files if f is not None and is_code_spec(str(f))}
    policy = CodePolicy(outer.trust_code or trust_code, outer.functions | frozenset(named))
    token = _POLICY.set(policy)
    try:
        yield policy
    finally:
        _POLICY.reset(token)


def _entry(text: str) -> tuple[Path, str | None]:
    head, sep, fn = text.rpartition(":")
    if sep and head.endswith(".py"):
        return Path(head).resolve(), fn
    return Path(text).resolve(), None


def is_code_spec(text: str) -> bool:
    """``path/file.py`` or ``path/file.py:name``: a reference to the user's Python file."""
    return spec_file(text).endswith(".py")


def spec_file(text: str) -> str:
    head, sep, _ = text.rpartition(":")
    return head if sep and head.endswith(".py") else text


_INSTALL_PARTS = {"site-packages", "dist-packages"}
_PYTHON_DIR = re.compile(r"python\d+(\.\d+)?t?")


def _protected_dirs() -> list[Path]:
    """The standard library and every site-packages directory this Python knows: never imported from by path."""
    paths = sysconfig.get_paths()
    dirs = [paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    dirs += list(getattr(site, "getsitepackages", lambda: [])()) + [site.getusersitepackages()]
    return [Path(d).resolve() for d in dirs if d]


def _in_an_installation(path: Path) -> bool:
    """Part of any Python installation, this one or another: a site-/dist-packages folder or a lib/pythonX.Y."""
    parts = path.parts
    if _INSTALL_PARTS & set(parts):
        return True
    return any(a in ("lib", "lib64") and _PYTHON_DIR.fullmatch(b) for a, b in zip(parts, parts[1:]))


def check_importable(file: Path, *, error: type[DeepSlimError] = UntrustedCodeError) -> Path:
    """``file`` resolved, if deepslim may run it: a ``.py`` file outside the standard library and installed
    packages (of this Python or any other on the machine)."""
    resolved = Path(file).resolve()
    if resolved.suffix != ".py":
        raise error(f"{file} is not a .py file; deepslim imports only Python source files by path.")
    roots = [root for root in _protected_dirs() if resolved.is_relative_to(root)]
    if roots or _in_an_installation(resolved):
        where = roots[0] if roots else resolved.parent
        raise error(f"{file} belongs to a Python installation ({where}); deepslim never imports the standard "
                    "library or installed packages by path.")
    return resolved


def authorise(file: Path, fn: str, recorded_sha256: str | None, *, source: Path) -> Path:
    """Allow running ``fn`` from ``file``, which the model file ``source`` names, or raise.

    The file must be importable (:func:`check_importable`), its sha256 must equal the recorded
    one, and the user must have named it or passed ``--trust-code``; a bundle without a recorded
    hash needs ``--trust-code``.
    """
    resolved = check_importable(file)
    policy = current_policy()
    if recorded_sha256 is None:
        if not policy.trust_code:
            raise UntrustedCodeError(
                f"{source} asks to run {fn}() from {file} and records no sha256 of that file, so only "
                "--trust-code allows it (loading it executes the file).")
        return resolved
    actual = sha256_file(resolved)
    if actual != recorded_sha256:
        raise ModelError(f"{file} has sha256 {actual}, but {source} was saved with an architecture file of "
                         f"sha256 {recorded_sha256}; restore that file (or re-save the model from this one).")
    if not (policy.trust_code or policy.named(resolved, fn)):
        raise UntrustedCodeError(
            f"{source} asks to run {fn}() from {file}, and loading it would execute that file; name it yourself "
            f"(--arch {file}:{fn} where the command takes --arch, model.arch in a recipe) or pass --trust-code "
            "if you trust the model file.")
    return resolved
