"""Safe output writing: temporary name, then rename; never overwrite inputs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from deepslim.errors import InputFileError, OutputError


def check_output(path: str | os.PathLike, *, force: bool = False,
                 inputs: Sequence[str | os.PathLike | None] = (), suffix: str | None = None,
                 directory: bool = False) -> Path:
    """Validate an output path before any work starts and return it as a Path. ``directory``: a path without a
    suffix is also taken (a Hugging Face model directory); an existing one is replaced only with ``force`` and
    only if deepslim wrote it (it holds ``deepslim.json``)."""
    out = Path(path)
    for src in inputs:
        if src is not None and Path(src).exists() and out.exists() and out.resolve() == Path(src).resolve():
            raise OutputError(f"Output {out} is the same file as an input; choose another output path.")
    if directory and out.suffix == "":
        return _check_dir_output(out, force=force)
    if suffix is not None and out.suffix.lower() != suffix:
        raise OutputError(f"Output {out} must end in {suffix}.")
    if out.exists() and not force:
        raise OutputError(f"Output {out} already exists; pass --force to overwrite it or choose another path.")
    if out.exists() and out.is_dir():
        raise OutputError(f"Output {out} is a directory; give a file path.")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"Cannot write {out}: {parent} is not a directory.")
    return out


def _check_dir_output(out: Path, *, force: bool) -> Path:
    if out.exists() and not out.is_dir():
        raise OutputError(f"Output {out} exists and is not a directory; choose another path.")
    if out.exists() and not force:
        raise OutputError(f"Output {out} already exists; pass --force to overwrite it or choose another path.")
    if out.exists() and not (out / "deepslim.json").is_file():
        raise OutputError(f"Output {out} is a directory deepslim did not write (no deepslim.json); it is never "
                          "replaced, so choose another path.")
    return out


def check_new_outputs(paths: Sequence[str | os.PathLike], *, force: bool = False) -> None:
    """The Python API's overwrite rule (the CLI's ``--force``): refuse any of ``paths`` that exists unless
    ``force``; a directory is never replaced."""
    for path in map(Path, paths):
        if path.is_dir():
            raise OutputError(f"Output {path} is a directory; give a file path.")
        if path.exists() and not force:
            raise OutputError(f"Output {path} already exists; pass force=True to overwrite it or choose another path.")


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (/proc), else set and restored at once."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike) -> None:
    """Give a finished temporary output the mode a plain ``open()`` would have: ``0o666 & ~umask`` for a file
    (``0o777 & ~umask`` for a directory), whatever mode its writer created it with (mkstemp-style 0600)."""
    full = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, full & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched. The file put in place gets
    ``0o666 & ~umask``, as if the user had created it (:func:`publish_mode`).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        publish_mode(tmp)
        fsync_path(tmp)
        os.replace(tmp, out)
        fsync_path(out.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_files(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Like :func:`atomic_path` for artifacts made of several files (IR .xml + .bin, engine + sidecar).

    Yields temporary paths with the final file names inside a hidden directory next to the
    first output; on success every file is moved into place (the first path last) with the
    umask's mode (:func:`publish_mode`), on failure nothing is left behind.
    """
    outs = [Path(p) for p in paths]
    outs[0].parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{outs[0].name}.tmp-", dir=outs[0].parent))
    try:
        tmps = [tmp_dir / p.name for p in outs]
        yield tmps
        written = [(tmp, out) for tmp, out in zip(tmps, outs) if tmp.exists()]
        for tmp, _ in written:
            publish_mode(tmp)
            fsync_path(tmp)
        for tmp, out in reversed(written):
            os.replace(tmp, out)
        for parent in {out.parent for _, out in written}:
            fsync_path(parent)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a directory's entries') data to disk, so a rename after it survives a power loss."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``path`` as a Path if it is an existing regular file, else raise."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"The {what} {p} does not exist.")
    if not p.is_file():
        raise InputFileError(f"The {what} {p} is not a regular file.")
    return p


SIDECAR = "deepslim.json"  # in a Hugging Face directory deepslim wrote: the header (signature, task, lineage)
MODEL_DIR_FILES = (SIDECAR, "config.json")  # a deepslim-written directory, a Hugging Face one


def require_model(path: str | os.PathLike, what: str = "model") -> Path:
    """Return ``path`` as a Path if it is an existing model file or a model directory (one deepslim wrote, with
    ``deepslim.json``, or a Hugging Face one, with ``config.json``), else raise."""
    p = Path(path)
    if p.is_dir():
        if not any((p / name).is_file() for name in MODEL_DIR_FILES):
            raise InputFileError(f"The {what} {p} is a directory without a model in it (no deepslim.json or "
                                 "config.json).")
        return p
    return require_file(p, what)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
