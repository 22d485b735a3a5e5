"""Tiny trained models of every kind beyond one-image classifiers (issue #13), built once per test session.

``KINDS`` names each: a tabular MLP on the wine table (3 classes), a regression MLP on diabetes, a
multilabel MLP on a synthetic 5-label task, a two-input model (image + features) with a dict output,
a non-square image model (1x28x56) and a 1-D signal model (Conv1d). The file architectures and
datasets live in ``tests/data/any_models.py``; commands that load their bundles need ``--trust-code``
(or ``--arch`` naming that file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
MODELS = ROOT / "data" / "any_models.py"


@dataclass(frozen=True)
class Kind:
    arch: str
    dataset: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 3
    lr: float = 3e-3

    @property
    def file_arch(self) -> bool:
        return self.arch.endswith(".py:" + self.arch.rsplit(":", 1)[-1]) if ":" in self.arch else False


def _file(name: str) -> str:
    return f"{MODELS}:{name}"


KINDS: dict[str, Kind] = {
    "tabular": Kind("mlp", "wine", {"hidden": [32, 16]}, epochs=8, lr=1e-2),
    "regression": Kind("mlp", "diabetes", {"hidden": [32, 16]}, epochs=15, lr=1e-2),
    "multilabel": Kind("mlp", _file("multilabel_data"), {"hidden": [32, 16]}, epochs=6, lr=1e-2),
    "two_input": Kind(_file("two_input_model"), _file("two_input_data"), {"width": 8}, epochs=5, lr=1e-2),
    "wide": Kind(_file("wide_model"), _file("wide_data"), {"width": 8}, epochs=4, lr=1e-2),
    "signal": Kind(_file("signal_model"), _file("signal_data"), {"width": 8}, epochs=3),
}


def train_kind(name: str, directory: Path) -> Path:
    """Train kind ``name`` briefly (seeded) and save it as ``directory/<name>.safetensors``."""
    from deepslim.config import TrainConfig
    from deepslim.models import save_model
    from deepslim.training import model_for_dataset, train
    kind = KINDS[name]
    bundle = model_for_dataset(kind.arch, kind.dataset, arch_kwargs=kind.kwargs, seed=0)
    cfg = TrainConfig(epochs=kind.epochs, optimizer="adamw", lr=kind.lr, batch_size=64, seed=0)
    bundle = train(bundle, kind.dataset, cfg, progress=False)
    return save_model(bundle, directory / f"{name}.safetensors")
