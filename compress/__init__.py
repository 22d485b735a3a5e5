"""Compression stages: structured pruning and knowledge distillation (quantization arrives in a later issue).

    from compress import prune, PruneConfig, distill, DistillConfig, open_teacher
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"prune": "compress.prune", "PruneConfig": "compress.prune", "Importance": "compress.prune",
         "PruneError": "compress.prune", "plan": "compress.prune", "analyze": "compress.sensitivity",
         "allocate": "compress.sensitivity", "write_sensitivity": "compress.sensitivity",
         "distill": "compress.distill", "DistillConfig": "compress.distill", "open_teacher": "compress.distill",
         "DistillError": "compress.distill", "kd_loss": "compress.losses", "distillation_loss": "compress.losses",
         "feature_loss": "compress.losses"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'compress' has no attribute {name!r}")
