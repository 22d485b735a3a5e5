"""The CLI's error contract, shared by the integration tests of every command.

A bad input gives exit code 2 and exactly one line ``error: ...`` on stderr, no traceback,
and fails *before* leaving anything behind: no output, no hidden ``.NAME.tmp-*`` file or
directory, no ``.ckpt`` or ``.bin``/``.json`` side file, no report directory; every input is
byte-for-byte (and mtime and mode) unchanged.

Plain helpers: the test modules import them; the ``workspace`` fixture lives in conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import cli

# A dataset function file with 3 classes of 8x8 grey images (the test models predict 10 classes).
DATA_PY = '''\
import torch
from torch.utils.data import TensorDataset


class ThreeClasses(TensorDataset):
    classes = ["a", "b", "c"]


def make(split):
    g = torch.Generator().manual_seed({"train": 0, "val": 1, "test": 2}[split])
    return ThreeClasses(torch.rand(12, 1, 8, 8, generator=g), torch.arange(12) % 3)
'''


# --- inputs -----------------------------------------------------------------------------------

class Workspace:
    """Creates a case's input files in the (current) test directory.

    ``art`` holds the test module's session artifacts; each module subclasses this to add
    writers for its own kinds of input.
    """

    def __init__(self, root: Path, art: Any) -> None:
        self.root, self.art = root, art

    def write(self, name: str, data: bytes | str) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_text if isinstance(data, str) else path.write_bytes)(data)
        return name


# --- the contract -----------------------------------------------------------------------------

Snapshot = dict[str, tuple]


def snapshot(root: Path) -> Snapshot:
    """Every file *and directory* under ``root``: a file's bytes, mtime and mode; a directory's mode.

    Directories are listed too (their keys end in ``/``), so an empty report directory or an
    emptied hidden ``.NAME.tmp-*`` directory counts as written. Bytecode caches of user .py
    files aside.
    """
    entries: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in dirnames:
            path = Path(dirpath, name)
            entries[str(path.relative_to(root)) + "/"] = ("dir", path.stat().st_mode)
        for name in filenames:
            path = Path(dirpath, name)
            stat = path.stat()
            entries[str(path.relative_to(root))] = (path.read_bytes(), stat.st_mtime_ns, stat.st_mode)
    return entries


Fragment = str | tuple[str, ...]  # a tuple: any one of these

# Artifacts and their side files: named separately when a failure leaves one behind.
SIDE_FILE_SUFFIXES = (".onnx", ".xml", ".bin", ".engine", ".json", ".data")


def assert_clean_failure(result: Result, fragments: list[Fragment], *, before: Snapshot, root: Path,
                         output: str | None = None) -> str:
    """Exit code 2, one ``error:`` line naming ``fragments``, no traceback, nothing written or changed.

    ``output``, where given, is the path (relative to ``root``) the command would have written;
    unless it existed before, it must not exist now. Returns the message (the stderr line
    without its trailing newline).
    """
    shown = f"exit code {result.exit_code}; stdout:\n{result.stdout}\nstderr:\n{result.stderr}\n" \
            f"exception: {result.exception!r}"
    assert "Traceback" not in result.output, shown
    assert result.exception is None or isinstance(result.exception, SystemExit), shown
    assert result.exit_code == 2, shown
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"stderr is not exactly one line: {result.stderr!r}"
    message = lines[0]
    assert message.startswith("error: ") and message[len("error: "):].strip(), message
    for fragment in fragments:
        options = fragment if isinstance(fragment, tuple) else (fragment,)
        assert any(o in message for o in options), f"none of {options!r} in {message!r}"

    after = snapshot(root)
    new = sorted(set(after) - set(before))
    leftovers = [n for n in new if ".tmp-" in n or n.rstrip("/").endswith(".ckpt")]
    assert not leftovers, f"temporary or checkpoint files or directories were left behind: {leftovers}"
    side = [n for n in new if n.rstrip("/").endswith(SIDE_FILE_SUFFIXES)]
    assert not side, f"artifacts or side files were written: {side}"
    assert not new, f"files or directories were written: {new}"
    if output is not None and output not in before and output + "/" not in before:
        assert not (root / output).exists(), f"{output} was written"
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"input files were changed or removed: {changed}"
    return message


def invoke(args: list[str]) -> Result:
    """Runs the deepslim CLI in-process on ``args``."""
    return CliRunner().invoke(cli.app, args)


def ok(args: list) -> Result:
    """Runs the CLI on ``args`` (paths allowed) and asserts that it succeeded."""
    result = invoke([str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def kill_when(args: list[str], ready: Callable[[], bool], *, timeout: float = 120, settle: float = 0.0) -> None:
    """Start ``args`` in its own process group and SIGKILL the group once ``ready()`` holds (then ``settle``
    seconds more); fails if the process ends first or ``ready()`` never holds."""
    import signal
    import subprocess
    import time
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + timeout
    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(settle)
    assert ready() and proc.poll() is None, "the process ended (or never got ready) before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


_TAKES_DATASET = {"train", "eval", "export", "bench", "compress", "auto"}


def with_dataset(args: list[str]) -> list[str]:
    """``args`` with ``-d digits`` added when the command takes --dataset and the case names none.

    The cases' models are built from --arch or are bare bundles that record no dataset, which is an
    error of its own (tests/integration/test_dataset_default.py); each case is about something else."""
    given = any(a in ("-d", "--dataset") or a.startswith("--dataset=") for a in args)
    return args if given or not args or args[0] not in _TAKES_DATASET else [*args, "-d", "digits"]


def assert_bad_input(args: list[str], fragments: list[Fragment], root: Path, *, output: str | None = None) -> str:
    """Snapshots ``root``, runs the CLI on ``args`` (with a dataset, see :func:`with_dataset`) and asserts the
    clean failure; returns the message."""
    before = snapshot(root)
    result = invoke(with_dataset(args))
    return assert_clean_failure(result, fragments, before=before, root=root, output=output)


# --- the cases: each makes its inputs and returns (args, fragments the message must contain) ---

Case = Callable[[Any], tuple[list[str], list[Fragment]]]


class Cases(dict[str, Case]):
    """A test module's bad-input cases by id, in the order they were registered, with their marks."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: dict[str, list[pytest.MarkDecorator]] = {}

    def case(self, case_id: str, *marks: pytest.MarkDecorator) -> Callable[[Case], Case]:
        """Decorator: registers a case function under ``case_id`` (ids are unique)."""
        def register(fn: Case) -> Case:
            assert case_id not in self, case_id
            self[case_id] = fn
            self.marks[case_id] = list(marks)
            return fn
        return register

    def params(self) -> list[Any]:
        """The case ids as ``pytest.param``s carrying their marks, for ``parametrize("case_id", ...)``."""
        return [pytest.param(k, marks=self.marks[k]) for k in self]
