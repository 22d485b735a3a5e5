"""Per-layer pruning sensitivity: prune each group alone at a few ratios, measure the drop of the task's
primary metric (top-1, mAP, R², or a lower-is-better one such as MAE: the drop is always "how much worse").

The table and plot tell where channels are cheap; ``allocate`` turns them into per-layer
ratios (robust layers pruned harder, sensitive ones spared) for ``--allocation sensitivity``.
Every input of the model is fed (a real sample of each traces the graph) and the task output is read.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn

from compress.prune import PruneConfig, PruneError, ignored_layers, make_pruner
from compress.prune_inputs import Example, as_example, example_of, reader
from compress.prune_plan import attention_heads, unwrapped
from compress.recover import recalibrate_batchnorm
from deepslim.data import open_dataset, subset
from deepslim.evaluation import check_compatible, predict
from deepslim.fileio import atomic_path
from deepslim.metrics import task_metrics
from deepslim.models import ModelBundle
from deepslim.tasks import Task, metric_info


class ValScore(float):
    """The base val figure of a sensitivity analysis (the task's primary metric), with what it was measured
    on (``images`` of ``total`` samples: the analysis evaluates a seeded subset of the val split)."""

    metric: str
    unit: str       # what a drop is in: points, or % of the baseline
    noun: str       # images or samples
    images: int
    total: int

    def __new__(cls, value: float, images: int, total: int, metric: str = "top1", unit: str = "points",
                noun: str = "images") -> ValScore:
        score = super().__new__(cls, value)
        score.images, score.total, score.metric, score.unit, score.noun = images, total, metric, unit, noun
        return score

    @property
    def label(self) -> str:
        return metric_info(self.metric).label

    def describe(self) -> str:
        """The figure in words: "val top-1 on 300 of 360 val images" ("on all 120 ..." when nothing was left out)."""
        on = f"all {self.total}" if self.images == self.total else f"{self.images} of {self.total}"
        return f"val {self.label} on {on} val {self.noun}"


class ValTop1(ValScore):
    """The base val top-1 of an image classifier's analysis (a :class:`ValScore` of ``top1``)."""

    def __new__(cls, value: float, images: int, total: int) -> ValTop1:
        return super().__new__(cls, value, images, total)


@dataclass
class LayerSensitivity:
    layer: str
    channels: int
    drops: dict[float, float]   # ratio -> how much worse the primary metric gets (ValScore.unit), on the val subset

    def to_json(self) -> dict:
        return {**asdict(self), "drops": {str(k): v for k, v in self.drops.items()}}


def prunable_roots(bundle: ModelBundle, cfg: PruneConfig, example: Example | None = None) -> list[str]:
    """Names of the root layers of the prunable groups (what --allocation assigns ratios to); attention
    projections are left out (they lose whole heads, never a width of their own)."""
    import torch_pruning as tp
    model = bundle.model
    example = as_example(example) if example is not None else example_of(bundle.signature)
    ignored = ignored_layers(bundle, cfg.ignore, example=example)
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example,
                                                  output_transform=reader(bundle.signature),
                                                  unwrapped_parameters=unwrapped(model))
    groups = graph.get_all_groups(ignored_layers=[modules[n] for n in ignored],
                                  root_module_types=[nn.modules.conv._ConvNd, nn.Linear])
    heads = attention_heads(model)
    return [names[g[0].dep.target.module] for g in groups if g[0].dep.target.module in names
            and not any(d.target.module in heads and graph.is_out_channel_pruning_fn(d.handler) for d, _ in g)]


def analyze(bundle: ModelBundle, dataset: str, cfg: PruneConfig, *, severity: int = 3,
            ratios: tuple[float, ...] = (0.25, 0.5, 0.75),
            limit: int = 300, tick=None) -> tuple[ValScore, list[LayerSensitivity]]:
    """The base val figure (the task's primary metric) and, per prunable layer, how much worse it gets when
    only that layer is pruned at each ratio (:meth:`deepslim.tasks.Task.drop`: points, or % of the baseline).

    Both are measured on a seeded subset of at most ``limit`` val samples; the base says how many."""
    source = open_dataset(dataset, severity=severity)
    check_compatible(bundle, source.info, dataset)
    sig, task = bundle.signature, bundle.task
    whole = source.split("val", sig, task=task)
    val = subset(whole, limit)
    train = source.split("train", sig, task=task)
    example = example_of(sig, train)
    base_metrics = _metrics(bundle, bundle.model, val)
    base = ValScore(base_metrics[task.primary], len(val), len(whole), task.primary, task.drop_unit(),
                    "images" if sig.single_image else "samples")
    ignored = ignored_layers(bundle, cfg.ignore, example=example)
    modules = dict(bundle.model.named_modules())
    rows = []
    for name in prunable_roots(bundle, cfg, example):
        drops = {}
        for ratio in ratios:
            model = copy.deepcopy(bundle.model).eval()
            pruner = make_pruner(model, example, _single(cfg), 0.0, ignored, {name: ratio}, signature=sig)
            pruner.step()
            recalibrate_batchnorm(model, train, batches=5)
            drops[ratio] = round(task.drop(base_metrics, _metrics(bundle, model, val)), 2)
        channels = getattr(modules[name], "out_channels", getattr(modules[name], "out_features", 0))
        rows.append(LayerSensitivity(name, int(channels), drops))
        if tick:
            tick(f"sensitivity: {name} {drops}")
    return base, rows


def _single(cfg: PruneConfig) -> PruneConfig:
    from dataclasses import replace
    return replace(cfg, iterative_steps=1, global_pruning=False, layer_ratios=None, head_ratio=None, depth=None)


def _metrics(bundle: ModelBundle, model: nn.Module, data) -> dict[str, float]:
    """The task's metrics of ``model`` on ``data`` (its primary one must be measurable there)."""
    task: Task = bundle.task
    outputs, targets = predict(model, data, device="cpu", signature=bundle.signature)
    if task.primary == "top1":
        return {"top1": float(np.mean(outputs.argmax(1) == targets))}
    metrics = task_metrics(task, outputs, targets)
    if task.primary not in metrics:
        raise PruneError(f"Sensitivity needs {task.primary} on the val split, which cannot be measured there "
                         "(e.g. no label has both positive and negative samples); use a larger val split.")
    return metrics


def allocate(rows: list[LayerSensitivity], *, reference_ratio: float = 0.5) -> dict[str, float]:
    """Relative per-layer weights (mean 1): robust layers above 1, sensitive ones below.

    Multiplied by the target ratio (or the searched one for --speedup) they give per-layer ratios."""
    drops = np.array([max(r.drops.get(reference_ratio, max(r.drops.values())), 0.0) for r in rows])
    weights = 1.0 / (1.0 + drops)
    weights = weights / weights.mean()
    return {r.layer: float(w) for r, w in zip(rows, weights)}


def write_sensitivity(base: float, rows: list[LayerSensitivity], directory: str | Path) -> dict[str, Path]:
    """``sensitivity.json``, ``sensitivity.md`` and ``sensitivity.png`` (drop of ``base``'s metric vs ratio per
    layer; ``base`` is the :class:`ValScore` of :func:`analyze`, a bare float is read as val top-1)."""
    from matplotlib.figure import Figure
    from benchmarks.report import plot_styles
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ratios = sorted({k for r in rows for k in r.drops})
    on = base.describe() if isinstance(base, ValScore) else "val top-1"
    metric, unit = getattr(base, "metric", "top1"), getattr(base, "unit", "points")
    label = metric_info(metric).label
    higher = metric_info(metric).higher_is_better
    how = f"Drop in {unit} of the same figure" if higher and unit == "points" else \
        f"How much worse the same figure gets ({'a fall' if higher else 'a rise'}, in {unit})"
    md = [f"Unpruned model: {on}: {base:.4f}. {how} when only that layer is pruned:", "",
          "| layer | channels | " + " | ".join(f"ratio {r}" for r in ratios) + " |", "|" + "---|" * (2 + len(ratios))]
    md += [f"| {r.layer} | {r.channels} | " + " | ".join(f"{r.drops[k]:.2f}" for k in ratios) + " |" for r in rows]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for r, (colour, marker) in zip(rows, plot_styles(len(rows))):  # one look per layer, past 10 layers too
        ax.plot(ratios, [r.drops[k] for k in ratios], color=colour, marker=marker, linewidth=1, label=r.layer)
    ax.set(xlabel="pruning ratio of the layer alone", ylabel=f"{label} drop ({unit})",
           title=f"pruning sensitivity ({on})")
    if len(rows) <= 24:
        ax.legend(fontsize=6, ncol=2)
    paths = {"json": out / "sensitivity.json", "md": out / "sensitivity.md", "png": out / "sensitivity.png"}
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps({f"base_{metric}": float(base), "metric": metric, "drop_unit": unit,
                                   "val_images": getattr(base, "images", None),
                                   "val_total": getattr(base, "total", None), "layers": [r.to_json() for r in rows]},
                                  indent=2))
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    with atomic_path(paths["png"]) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return paths
