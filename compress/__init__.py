"""Compression stages: structured pruning, knowledge distillation, quantization.

    from compress.prune import PruneConfig, prune
    from compress.distill import DistillConfig, distill, open_teacher
    from compress.quantize import QuantizeConfig, quantize

The stage functions share their module's name, so ``compress.prune`` is the module (Python
binds a submodule to its package's attribute on import); import the functions from the
submodules as above. Configs and helpers are also available lazily from ``compress``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"PruneConfig": "compress.prune", "Importance": "compress.prune",
         "PruneError": "compress.prune", "plan": "compress.prune", "analyze": "compress.sensitivity",
         "allocate": "compress.sensitivity", "write_sensitivity": "compress.sensitivity",
         "DistillConfig": "compress.distill", "open_teacher": "compress.distill",
         "DistillError": "compress.distill", "kd_loss": "compress.losses", "distillation_loss": "compress.losses",
         "task_distillation_loss": "compress.losses",
         "feature_loss": "compress.losses", "QuantizeConfig": "compress.quantize",
         "QuantizeError": "compress.quantize"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'compress' has no attribute {name!r}")
