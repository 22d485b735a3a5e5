"""deepslim's kernel and public Python API.

    import deepslim
    bundle = deepslim.load_model(arch="small_cnn", num_classes=10, input_size=16)
    bundle = deepslim.train(bundle, "digits", deepslim.TrainConfig(epochs=10))
    deepslim.save_model(bundle, "base.safetensors")  # an existing file is replaced only with force=True
    print(deepslim.evaluate(bundle, "digits").metrics)

Heavy modules (torch, torchvision) are imported on first use of an attribute, so
``import deepslim`` and ``deepslim --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from deepslim.config import Init, OptimizerKind, Schedule, TrainConfig
from deepslim.errors import DeepSlimError
from deepslim.spec import ArchSource, ArchSpec, InputSpec, StageRecord

__version__ = "0.1.0"

_LAZY = {
    "load_model": "deepslim.models", "save_model": "deepslim.models", "ModelBundle": "deepslim.models",
    "build_model": "deepslim.models", "train": "deepslim.training", "fit": "deepslim.training",
    "evaluate": "deepslim.evaluation", "EvalResult": "deepslim.evaluation",
    "classification_metrics": "deepslim.metrics", "open_dataset": "deepslim.data",
}

__all__ = ["ArchSource", "ArchSpec", "DeepSlimError", "Init", "InputSpec", "OptimizerKind", "Schedule",
           "StageRecord", "TrainConfig", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deepslim' has no attribute {name!r}")
