"""Per-layer pruning sensitivity: prune each group alone at a few ratios, measure the accuracy drop.

The table and plot tell where channels are cheap; ``allocate`` turns them into per-layer
ratios (robust layers pruned harder, sensitive ones spared) for ``--allocation sensitivity``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.prune import PruneConfig, ignored_layers, make_pruner
from compress.recover import recalibrate_batchnorm
from deepslim.data import open_dataset, subset
from deepslim.evaluation import check_compatible, predict
from deepslim.fileio import atomic_path
from deepslim.models import ModelBundle


class ValTop1(float):
    """The base val top-1 of a sensitivity analysis, with the val images it was measured on
    (``images`` of ``total``: the analysis evaluates a seeded subset of the val split)."""

    images: int
    total: int

    def __new__(cls, value: float, images: int, total: int) -> ValTop1:
        top1 = super().__new__(cls, value)
        top1.images, top1.total = images, total
        return top1

    def describe(self) -> str:
        """The figure in words: "val top-1 on 300 of 360 val images" ("on all 120 ..." when nothing was left out)."""
        on = f"all {self.total}" if self.images == self.total else f"{self.images} of {self.total}"
        return f"val top-1 on {on} val images"


@dataclass
class LayerSensitivity:
    layer: str
    channels: int
    drops: dict[float, float]   # ratio -> top-1 drop in points on the val subset (ValTop1.images of them)

    def to_json(self) -> dict:
        return {**asdict(self), "drops": {str(k): v for k, v in self.drops.items()}}


def prunable_roots(bundle: ModelBundle, cfg: PruneConfig) -> list[str]:
    """Names of the root layers of the prunable groups (what --allocation assigns ratios to)."""
    import torch_pruning as tp
    model = bundle.model
    ignored = ignored_layers(bundle, cfg.ignore)
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *bundle.input_spec.shape))
    groups = graph.get_all_groups(ignored_layers=[modules[n] for n in ignored],
                                  root_module_types=[nn.modules.conv._ConvNd, nn.Linear])
    return [names[g[0].dep.target.module] for g in groups if g[0].dep.target.module in names]


def analyze(bundle: ModelBundle, dataset: str, cfg: PruneConfig, *, severity: int = 3,
            ratios: tuple[float, ...] = (0.25, 0.5, 0.75),
            limit: int = 300, tick=None) -> tuple[ValTop1, list[LayerSensitivity]]:
    """Base val top-1 and, per prunable layer, the drop when only that layer is pruned at each ratio.

    Both are measured on a seeded subset of at most ``limit`` val images; the base says how many."""
    source = open_dataset(dataset, severity=severity)
    check_compatible(bundle, source.info.num_classes, dataset)
    whole = source.split("val", bundle.input_spec)
    val = subset(whole, limit)
    train = source.split("train", bundle.input_spec)
    base = ValTop1(_top1(bundle.model, val), len(val), len(whole))
    ignored = ignored_layers(bundle, cfg.ignore)
    rows = []
    for name in prunable_roots(bundle, cfg):
        drops = {}
        for ratio in ratios:
            model = copy.deepcopy(bundle.model).eval()
            pruner = make_pruner(model, torch.zeros(1, *bundle.input_spec.shape), _single(cfg), 0.0, ignored,
                                 {name: ratio})
            pruner.step()
            recalibrate_batchnorm(model, train, batches=5)
            drops[ratio] = round(100 * (base - _top1(model, val)), 2)
        channels = getattr(dict(bundle.model.named_modules())[name], "out_channels",
                           getattr(dict(bundle.model.named_modules())[name], "out_features", 0))
        rows.append(LayerSensitivity(name, int(channels), drops))
        if tick:
            tick(f"sensitivity: {name} {drops}")
    return base, rows


def _single(cfg: PruneConfig) -> PruneConfig:
    from dataclasses import replace
    return replace(cfg, iterative_steps=1, global_pruning=False, layer_ratios=None)


def _top1(model: nn.Module, data) -> float:
    logits, labels = predict(model, data, device="cpu")
    return float(np.mean(logits.argmax(1) == labels))


def allocate(rows: list[LayerSensitivity], *, reference_ratio: float = 0.5) -> dict[str, float]:
    """Relative per-layer weights (mean 1): robust layers above 1, sensitive ones below.

    Multiplied by the target ratio (or the searched one for --speedup) they give per-layer ratios."""
    drops = np.array([max(r.drops.get(reference_ratio, max(r.drops.values())), 0.0) for r in rows])
    weights = 1.0 / (1.0 + drops)
    weights = weights / weights.mean()
    return {r.layer: float(w) for r, w in zip(rows, weights)}


def write_sensitivity(base: float, rows: list[LayerSensitivity], directory: str | Path) -> dict[str, Path]:
    """``sensitivity.json``, ``sensitivity.md`` and ``sensitivity.png`` (drop vs ratio per layer)."""
    from matplotlib.figure import Figure
    from benchmarks.report import plot_styles
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ratios = sorted({k for r in rows for k in r.drops})
    on = base.describe() if isinstance(base, ValTop1) else "val top-1"
    md = [f"Unpruned model: {on}: {base:.4f}. Drop in points of the same figure when only that layer is pruned:",
          "",
          "| layer | channels | " + " | ".join(f"ratio {r}" for r in ratios) + " |", "|" + "---|" * (2 + len(ratios))]
    md += [f"| {r.layer} | {r.channels} | " + " | ".join(f"{r.drops[k]:.2f}" for k in ratios) + " |" for r in rows]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for r, (colour, marker) in zip(rows, plot_styles(len(rows))):  # one look per layer, past 10 layers too
        ax.plot(ratios, [r.drops[k] for k in ratios], color=colour, marker=marker, linewidth=1, label=r.layer)
    ax.set(xlabel="pruning ratio of the layer alone", ylabel="top-1 drop (points)",
           title=f"pruning sensitivity ({on})")
    if len(rows) <= 24:
        ax.legend(fontsize=6, ncol=2)
    paths = {"json": out / "sensitivity.json", "md": out / "sensitivity.md", "png": out / "sensitivity.png"}
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps({"base_top1": float(base), "val_images": getattr(base, "images", None),
                                   "val_total": getattr(base, "total", None), "layers": [r.to_json() for r in rows]},
                                  indent=2))
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    with atomic_path(paths["png"]) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return paths
