"""Typed export errors."""

from __future__ import annotations

from deepslim.errors import DeepSlimError


class ExportError(DeepSlimError):
    """A model cannot be exported to the requested target."""


class ParityError(DeepSlimError):
    """An exported artifact's outputs differ from the source model's past the tolerance."""
