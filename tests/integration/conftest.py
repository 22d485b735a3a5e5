"""Fixtures for the CLI error-contract tests (see cli_contract.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_contract import Workspace


@pytest.fixture
def workspace(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              artifacts) -> Workspace:
    """The test directory, made the current one, as the requesting module's ``Workspace``.

    The module defines ``Workspace`` (a subclass of ``cli_contract.Workspace``) and a session
    fixture ``artifacts`` holding the bytes that its writers copy into the directory.
    """
    workspace_class = getattr(request.module, "Workspace", None)
    assert isinstance(workspace_class, type) and issubclass(workspace_class, Workspace), \
        f"{request.module.__name__} defines no Workspace subclass of cli_contract.Workspace"
    monkeypatch.chdir(tmp_path)
    return workspace_class(tmp_path, artifacts)
