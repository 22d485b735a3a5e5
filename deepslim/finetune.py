"""Starting from a trained model: the fine-tuning learning rate, and never ending below the start.

A model that starts trained (its lineage measured an accuracy, or its val top-1 at the start
is well above chance) is fine-tuned, not trained from scratch: the from-scratch default
learning rate (0.05 for SGD) with a warm-up to it throws away what it knew in the first
epoch. By default it gets a tenth of that rate (0.005 for SGD, 1e-4 for AdamW, the usual
fine-tuning ratio and QAT's rate) and no warm-up: warm-up protects random weights from
large first steps, and at a tenth of the rate from trained weights it would only spend
part of a short run at an even smaller rate. A learning rate or warm-up the user set is
kept as given.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from deepslim.config import Init, TrainConfig
from deepslim.spec import StageRecord

FINETUNE_FACTOR = 0.1
_MEASURED_STAGES = ("train", "distill", "prune")


@dataclass(frozen=True)
class Start:
    """Where a run starts: val top-1 before any step, what predicting one class would get, and why it counts
    as trained (empty when it does not)."""

    val_top1: float
    chance: float
    trained_because: str = ""

    @property
    def trained(self) -> bool:
        return bool(self.trained_because)


def assess_start(val_top1: float, labels: np.ndarray | None, lineage: list[StageRecord],
                 init: Init = Init.DEFAULT) -> Start:
    """Whether the model starts trained: a stage of its lineage measured it, or val top-1 is well above chance.

    "Well above chance" is a quarter of the way from chance (the majority class's share of val)
    to 1.0: 0.325 for ten balanced classes. A re-initialised model (``init``) starts from scratch.
    Without ``labels`` (a task other than classification, whose ``val_top1`` is its val score) only
    the lineage counts."""
    if labels is None:
        chance = float("inf")
    else:
        counts = np.bincount(np.asarray(labels, dtype=np.int64))
        chance = float(counts.max() / max(counts.sum(), 1)) if counts.size else 0.0
    if init is not Init.DEFAULT:
        return Start(val_top1, chance)
    reasons = []
    stages = [r.stage for r in lineage if r.stage in _MEASURED_STAGES and _measured(r)]
    if stages:
        reasons.append(f"its lineage has a {stages[-1]} stage")
    if labels is not None and val_top1 >= chance + 0.25 * (1 - chance):
        reasons.append(f"val top-1 {val_top1:.4f} at the start, chance {chance:.2f}")
    return Start(val_top1, chance, "; ".join(reasons))


def finetune_config(cfg: TrainConfig, start: Start) -> tuple[TrainConfig, str]:
    """``cfg`` with the fine-tuning learning rate and no warm-up when ``start`` is trained and the user set
    neither; and the sentence that says which learning rate is used and why ("" from scratch)."""
    if not start.trained:
        return cfg, ""
    if cfg.lr is not None:
        return cfg, (f"the model starts trained ({start.trained_because}): fine-tuning at --lr {cfg.lr:g} as "
                     "given")
    scratch = cfg.learning_rate
    lr = scratch * FINETUNE_FACTOR
    tuned = replace(cfg, lr=lr, warmup_epochs=0 if cfg.warmup_epochs is None else cfg.warmup_epochs)
    warm = "no warm-up" if tuned.warmup == 0 else f"{tuned.warmup} warm-up epochs as given"
    return tuned, (f"the model starts trained ({start.trained_because}): fine-tuning learning rate {lr:g} "
                   f"(a tenth of the from-scratch {scratch:g}), {warm}; pass --lr to choose another")


def kept_start_note(start_val_top1: float, history: list[dict]) -> str:
    """The sentence for a run whose starting weights beat every epoch on val."""
    key = lambda row: row.get("val_score", row.get("val_top1", float("-inf")))  # noqa: E731
    best = max(history, key=key, default=None)
    than = f"; best epoch {best['epoch']} reached {abs(key(best)):.4f}" if best else ""
    return f"no epoch beat the starting model on val ({abs(start_val_top1):.4f}{than}); kept the starting weights"


def _measured(record: StageRecord) -> bool:
    m = record.metrics or {}
    return "val_top1" in m or "val_score" in m or isinstance(m.get("test"), dict) and bool(m["test"])
