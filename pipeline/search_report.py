"""The report of `deepslim auto`: search.json, search.md (every trial, the front, the chosen model) and pareto.png.

Drops are in the unit of the task's primary metric (points of top-1, R², mAP...; percent of the
baseline for mae/rmse/loss; :meth:`deepslim.tasks.Task.drop`), positive when the candidate is worse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deepslim.fileio import atomic_path


def unit(task) -> str:
    """The unit of a drop of the task's primary metric: ``pt`` (points) or ``%`` (of the baseline)."""
    return "pt" if task.drop_unit() == "points" else "%"


def write_report(result, cfg, out: Path, task) -> None:
    """search.json, search.md and pareto.png of ``result`` (a :class:`pipeline.search.SearchResult`)."""
    from deepslim.tasks import metric_info
    label = metric_info(task.primary).label
    data = {"config": {**cfg.reported(), "primary": task.primary, "drop_unit": task.drop_unit()},
            "chosen": result.chosen, "pareto": result.pareto,
            "trials": result.trials, "baseline": result.baseline, "timing": result.timing, "seconds": result.seconds,
            "notes": result.notes}
    if result.worker is not None:
        data["worker"] = result.worker
    with atomic_path(out / "search.json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))
    pareto = {r["number"] for r in result.pareto}
    chosen = result.chosen["number"] if result.chosen else None
    lines = [f"# deepslim auto: {cfg.target.value}, val {label} drop budget {cfg.max_accuracy_drop:g} {unit(task)}", "",
             f"| trial | state | speedup | importance | recover | method | val drop ({unit(task)}) | p50 ms alone | "
             "p50 ms together | vs unpruned | size MiB | |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.trials:
        p = r["params"]
        mark = "**chosen**" if r["number"] == chosen else ("Pareto" if r["number"] in pareto else "")
        lines.append(f"| {r['number']} | {r['state'].lower()} | {p.get('speedup')} | {p.get('importance')} | "
                     f"{p.get('recover')} | {p.get('method')} | {_f(r['val_drop_points'])} | "
                     f"{_f(r['search_latency_ms'], 3)} | {_f(r['latency_ms'], 3)} | "
                     f"{_speedup(r)} | "
                     f"{_f(r['size_bytes'] / 2**20 if r['size_bytes'] else None, 1)} | {mark} |")
    failed = [f"- trial {r['number']} failed: {r['error'][0]}" for r in result.trials if r["state"] == "FAIL" and r["error"]]
    lines += ["", *_summary(result, task), *[f"- {n}" for n in result.notes], *failed, ""]
    with atomic_path(out / "search.md") as tmp:
        tmp.write_text("\n".join(lines))
    _plot(result, out, chosen, pareto, f"val {label} drop ({'points' if unit(task) == 'pt' else '% of the baseline'})")


def moved(task, base: dict[str, Any], new: dict[str, Any]) -> str:
    """How the primary metric moved from ``base`` to ``new`` in its unit: '-0.37 pt', or '3.10 % worse'."""
    drop = task.drop(base, new)
    return f"{0.0 - drop:+.2f} pt" if unit(task) == "pt" else f"{abs(drop):.2f} % {'worse' if drop > 0 else 'better'}"


def _summary(result, task) -> list[str]:
    """The lines under the table: where "together" was measured, and the chosen model on the test split."""
    if not result.chosen or not result.timing:
        return []
    from deepslim.tasks import metric_info
    c, b, t = result.chosen, result.baseline, result.timing
    label, p = metric_info(task.primary).label, task.primary
    agreement = f", agreement with the unpruned model {c['test']['agreement']:.4f}" if "agreement" in c["test"] else ""
    return [f"- p50 ms together: one interleaved run ({t['created']}, {t['report']}) of the unpruned model "
            f"({b['latency_ms']:.3f} ms) and the fastest candidates within the budget on {t['backend']}, batch 1; "
            "\"vs unpruned\" is the ratio measured in that run (~: inside the noise, the spreads of the round medians "
            "overlap); \"alone\" is each trial's own timing during the search",
            f"- chosen, trial {c['number']}: test {label} {b['test'][p]:.4f} (unpruned) -> {c['test'][p]:.4f} "
            f"({moved(task, b['test'], c['test'])}){agreement}"]


def _speedup(row: dict[str, Any]) -> str:
    if row["speedup"] is None:
        return "-"
    return f"{row['speedup']:.2f}x" + (" ~" if row["within_noise"] else "")


def _f(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _plot(result, out: Path, chosen, pareto: set[int], ylabel: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    done = [r for r in result.trials if r["state"] == "COMPLETE"]
    if not done:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["search_latency_ms"] for r in done], [r["val_drop_points"] for r in done], c="lightgray",
               label="trials")
    front = sorted((r for r in done if r["number"] in pareto), key=lambda r: r["search_latency_ms"])
    ax.plot([r["search_latency_ms"] for r in front], [r["val_drop_points"] for r in front], "o-", label="Pareto front")
    for r in done:
        if r["number"] == chosen:
            ax.scatter([r["search_latency_ms"]], [r["val_drop_points"]], s=160, facecolors="none", edgecolors="red",
                       label="chosen")
    ax.set_xlabel("p50 latency, batch 1, timed alone during the search (ms)")
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "pareto.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
