"""The built-in end-to-end run on scikit-learn's digits (``deepslim demo`` / ``make demo``).

Today: train the built-in CNN on ``digits`` and evaluate it on the clean and the
corrupted (``digits-c``) test split. Later stages (prune, distill, quantize, export,
benchmark) join as they land.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deepslim.config import TrainConfig
from deepslim.evaluation import evaluate
from deepslim.models import save_model
from deepslim.training import model_for_dataset, train

DEMO_ARCH, DEMO_SIZE, DEMO_DATASET = "small_cnn", 16, "digits"


@dataclass
class DemoResult:
    model_path: Path
    train_seconds: float
    evaluations: dict[str, dict[str, float]] = field(default_factory=dict)


def run_demo(out_dir: str | Path = "runs/demo", *, epochs: int = 10, progress: bool = True) -> DemoResult:
    """Train the built-in CNN on digits, save it, evaluate on digits and digits-c (severity 3)."""
    out = Path(out_dir)
    config = TrainConfig(epochs=epochs, seed=0)
    bundle = model_for_dataset(DEMO_ARCH, DEMO_DATASET, input_size=DEMO_SIZE)
    trained = train(bundle, DEMO_DATASET, config, progress=progress)
    path = save_model(trained, out / "base.safetensors")
    result = DemoResult(path, trained.lineage[-1].seconds)
    for name in ("digits", "digits-c"):
        label = name if name == "digits" else f"{name} (severity 3)"
        result.evaluations[label] = evaluate(trained, name, severity=3).metrics
    return result
