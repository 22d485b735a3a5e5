"""Compression stages: structured pruning (distillation and quantization arrive in later issues).

    from compress import prune, PruneConfig
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"prune": "compress.prune", "PruneConfig": "compress.prune", "Importance": "compress.prune",
         "PruneError": "compress.prune", "plan": "compress.prune", "analyze": "compress.sensitivity",
         "allocate": "compress.sensitivity", "write_sensitivity": "compress.sensitivity"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'compress' has no attribute {name!r}")
