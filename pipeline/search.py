"""The accuracy-budget search (`deepslim auto`): pruning x quantization, measured on the target, with Optuna.

Each trial picks a MAC speedup (1 = no pruning), an importance criterion, the recovery
(fine-tune or KD from the original) and a quantization method. It is screened cheaply first:
the MAC count, then a short fine-tune and the val top-1; a candidate already far outside the
accuracy budget is pruned there. Only promising ones are fine-tuned fully, quantized and
timed on the target's runner (batch 1, at ``latency_size``). Objectives: val top-1 drop,
latency, size, a multi-objective Optuna study (NSGA-II), so the result is a Pareto front; the
chosen model is the fastest one within the budget. The demo's fixed recipe (2x, KD, int8) is
the first trial, so the search never returns something slower than it when that one fits.

Several workers share one study through Optuna's storage (``sqlite:///search.db`` or a
PostgreSQL URL): each runs the same command with ``--storage`` and ``--study``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compress.options import QuantTarget
from deepslim.errors import BackendMissingError, ConfigError, first_line
from deepslim.fileio import atomic_path

Say = Callable[[str], None]
SPEEDUPS = (1.0, 1.5, 2.0, 3.0)
IMPORTANCES = ("l2", "lamp", "taylor")
FIXED_RECIPE = {"speedup": 2.0, "importance": "l2", "recover": "kd", "method": "ptq"}


@dataclass(frozen=True)
class SearchConfig:
    max_accuracy_drop: float = 1.0       # val top-1 points
    target: QuantTarget = QuantTarget.OPENVINO
    time_budget: float = 600.0           # seconds for this worker's share of the search
    trials: int | None = None            # at most this many trials (this worker); None: until the time budget
    latency_size: int | None = None      # input size for timing (default: the model's)
    screen_epochs: int = 1
    finetune_epochs: int = 3
    storage: str | None = None           # Optuna storage URL shared by workers
    study: str = "deepslim-auto"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", QuantTarget(self.target))
        if not self.max_accuracy_drop >= 0:
            raise ConfigError(f"--max-accuracy-drop must be >= 0, got {self.max_accuracy_drop}.")
        if not self.time_budget > 0:
            raise ConfigError(f"--time-budget must be a positive number of seconds, got {self.time_budget}.")
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"--trials must be a positive integer, got {self.trials}.")
        if self.screen_epochs < 1 or self.finetune_epochs < self.screen_epochs:
            raise ConfigError("--finetune-epochs must be at least the screening epochs (1).")
        if self.target is QuantTarget.TENSORRT:
            from pipeline.recipe import tensorrt_available
            if not tensorrt_available():
                raise BackendMissingError("deepslim auto --target tensorrt times candidates on TensorRT, which needs "
                                          "the tensorrt package and a CUDA GPU; none here.")


@dataclass
class SearchResult:
    chosen: dict[str, Any] | None
    pareto: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    baseline: dict[str, Any]
    report: Path
    seconds: float
    notes: list[str] = field(default_factory=list)


def search(model: Path, dataset: str, cfg: SearchConfig, out_dir: str | Path, *, log: Say | None = None) -> SearchResult:
    """Run (or join) the study; write ``out_dir/search.json``, ``search.md``, ``pareto.png`` and the chosen artifact."""
    import optuna

    from deepslim.evaluation import evaluate
    from deepslim.models import load_model
    say = log or (lambda _msg: None)
    start = time.perf_counter()
    out = Path(out_dir)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    base = load_model(model)
    base_val = evaluate(base, dataset, split="val").metrics["top1"]
    baseline = {"val_top1": base_val, "latency_ms": None}
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are reported in search.md
    study = _open_study(cfg)
    if not study.trials:
        study.enqueue_trial(FIXED_RECIPE)
    deadline = time.monotonic() + cfg.time_budget
    objective = _Objective(model, dataset, cfg, out, base_val, deadline, say)
    study.optimize(objective, n_trials=cfg.trials, timeout=cfg.time_budget, catch=(Exception,))
    return _finish(study, cfg, out, baseline, time.perf_counter() - start, say)


def _open_study(cfg: SearchConfig):
    """Create or join the study. Workers starting together race to create the storage's tables (SQLite says
    "table ... already exists"); the loser waits and joins."""
    import random

    import optuna
    for attempt in range(8):
        try:
            return optuna.create_study(directions=["minimize", "minimize", "minimize"], storage=cfg.storage,
                                       study_name=cfg.study, load_if_exists=True,
                                       sampler=optuna.samplers.NSGAIISampler(seed=cfg.seed))
        except Exception as exc:  # SQLAlchemy raises several types while another worker sets the storage up
            if attempt == 7:
                raise ConfigError(f"Could not open the Optuna storage {cfg.storage}: {first_line(exc)}.") from exc
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


class _Objective:
    def __init__(self, model: Path, dataset: str, cfg: SearchConfig, out: Path, base_val: float, deadline: float,
                 say: Say) -> None:
        self.model, self.dataset, self.cfg, self.out = model, dataset, cfg, out
        self.base_val, self.deadline, self.say = base_val, deadline, say
        self.durations: list[float] = []

    def __call__(self, trial) -> tuple[float, float, float]:
        start = time.monotonic()
        try:
            return self._run(trial)
        finally:
            self.durations.append(time.monotonic() - start)

    def _run(self, trial) -> tuple[float, float, float]:
        import optuna

        from compress.prune import PruneConfig, prune
        from deepslim.evaluation import evaluate
        from deepslim.models import load_model, save_model
        cfg = self.cfg
        speedup = trial.suggest_categorical("speedup", list(SPEEDUPS))
        importance = trial.suggest_categorical("importance", list(IMPORTANCES))
        recover = trial.suggest_categorical("recover", ["finetune", "kd"])
        method = trial.suggest_categorical("method", ["ptq", "none"])
        seen = self._seen(trial)
        if seen is not None:  # the sampler proposed a candidate already measured: reuse it, spend no time
            for key, value in seen.user_attrs.items():
                trial.set_user_attr(key, value)
            trial.set_user_attr("same_as", seen.number)
            if seen.state.name == "PRUNED":
                raise optuna.TrialPruned()
            return tuple(seen.values)
        typical = sorted(self.durations)[len(self.durations) // 2] if self.durations else 0.0
        if time.monotonic() + typical > self.deadline:  # it would not finish inside --time-budget
            trial.study.stop()
            trial.set_user_attr("skipped", "time budget")
            raise optuna.TrialPruned()
        tdir = self.out / "trials" / f"{trial.number:03d}"
        if tdir.exists():
            shutil.rmtree(tdir)
        tdir.mkdir(parents=True)
        bundle = load_model(self.model)
        if speedup > 1:
            screen = PruneConfig(speedup=speedup, importance=importance, finetune_epochs=cfg.screen_epochs,
                                 recover=recover, round_to=None, seed=cfg.seed)
            pruned = prune(bundle, screen, dataset=self.dataset, progress=False)
            trial.set_user_attr("macs", pruned.lineage[-1].metrics["macs_after"])
            screen_drop = 100 * (self.base_val - evaluate(pruned, self.dataset, split="val").metrics["top1"])
            trial.set_user_attr("screen_drop_points", round(screen_drop, 3))
            if screen_drop > cfg.max_accuracy_drop + 3.0 or time.monotonic() > self.deadline:
                self.say(f"trial {trial.number}: {speedup}x {importance} {recover}: screened out "
                         f"(val drop {screen_drop:.2f} pt after {cfg.screen_epochs} epoch)")
                raise optuna.TrialPruned()
            if cfg.finetune_epochs > cfg.screen_epochs:
                pruned = self._finetune(pruned, bundle, recover, cfg.finetune_epochs - cfg.screen_epochs)
            bundle = pruned
        path = save_model(bundle, tdir / "model.safetensors")
        drop, artifact, latency, size = self._measure(path, method, tdir)
        trial.set_user_attr("artifact", str(artifact))
        trial.set_user_attr("latency_ms", latency)
        trial.set_user_attr("size_bytes", size)
        trial.set_user_attr("val_drop_points", round(drop, 3))
        self.say(f"trial {trial.number}: {speedup}x {importance} {recover} {method}: val drop {drop:.2f} pt, "
                 f"{latency:.3f} ms, {size / 2**20:.1f} MiB")
        return drop, latency, float(size)

    @staticmethod
    def _seen(trial):
        import optuna
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return next((t for t in trial.study.get_trials(deepcopy=False, states=done) if t.params == trial.params), None)

    def _finetune(self, pruned, original, recover: str, epochs: int):
        from compress.distill import kd_finetune_loss
        from deepslim.config import TrainConfig
        from deepslim.data import open_dataset
        from deepslim.training import fit
        source = open_dataset(self.dataset)
        spec = pruned.input_spec
        loss = kd_finetune_loss(original.model, 4.0, 0.5) if recover == "kd" else None
        fit(pruned.model, source.split("train", spec, augment=True), source.split("val", spec),
            TrainConfig(epochs=epochs, lr=0.01, seed=self.cfg.seed, warmup_epochs=0), loss_fn=loss, progress=False)
        pruned.model.cpu().eval()
        return pruned

    def _measure(self, path: Path, method: str, tdir: Path) -> tuple[float, Path, float, int]:
        """Val drop at the trained size, and p50 at batch 1 on the target's runner at ``latency_size``."""
        from benchmarks.bench import artifact_size
        from compress.quantize import QuantizeConfig, quantize
        from deepslim.evaluation import evaluate
        from deepslim.models import load_model
        from export import OnnxConfig, export_model
        cfg = self.cfg
        backend = "openvino" if cfg.target is QuantTarget.OPENVINO else "onnxruntime"
        suffix = ".xml" if backend == "openvino" else ".onnx"
        if method == "ptq":
            result = quantize(load_model(path), tdir / f"model_int8{suffix}",
                              QuantizeConfig(target=cfg.target, latency=False, seed=cfg.seed), self.dataset,
                              progress=False)
            artifact = result.artifact
            drop = 100 * (self.base_val - result.record.metrics["quantized"]["val"]["top1"])
        else:
            target = "openvino" if backend == "openvino" else "onnx"
            artifact = export_model(load_model(path), target, tdir / f"model{suffix}", verify=None).artifact
            drop = 100 * (self.base_val - evaluate(load_model(path), self.dataset, split="val").metrics["top1"])
        timed = artifact
        if cfg.latency_size and backend == "onnxruntime":  # an ONNX file keeps its size: make one for timing
            bundle = load_model(path)
            timed = (quantize(bundle, tdir / f"timing_int8{suffix}", QuantizeConfig(target=cfg.target, latency=False,
                                                                                    input_size=cfg.latency_size),
                              self.dataset, progress=False).artifact if method == "ptq" else
                     export_model(bundle, "onnx", tdir / f"timing{suffix}",
                                  onnx_config=OnnxConfig(input_size=cfg.latency_size), verify=None).artifact)
        latency = _p50(timed, backend, cfg.latency_size if backend == "openvino" else None)
        return drop, artifact, latency, artifact_size(artifact)


def _p50(artifact: Path, backend: str, input_size: int | None) -> float:
    from benchmarks.latency import LatencyConfig, measure
    from benchmarks.runners import RunnerOptions, open_runner
    kwargs = {"input_size": input_size} if input_size else {}
    runner = open_runner(artifact, backend, RunnerOptions(), **kwargs)
    return measure([runner], LatencyConfig(batches=(1,), rounds=3, duration=1.0, warmup=3))[0][1].p50_ms


def _finish(study, cfg: SearchConfig, out: Path, baseline: dict[str, Any], seconds: float, say: Say) -> SearchResult:
    import optuna
    done = [t for t in study.trials if t.state is optuna.trial.TrialState.COMPLETE]
    rows = [_row(t) for t in study.trials]
    pareto_numbers = {t.number for t in study.best_trials} if done else set()
    pareto = [r for r in rows if r["number"] in pareto_numbers]
    feasible = [r for r in rows if r["state"] == "COMPLETE" and r["val_drop_points"] <= cfg.max_accuracy_drop + 1e-9]
    chosen = min(feasible, key=lambda r: r["latency_ms"]) if feasible else None
    notes = [] if chosen else [f"no candidate met --max-accuracy-drop {cfg.max_accuracy_drop:g}"]
    if chosen:
        artifact = Path(chosen["artifact"])
        best = out / f"best{artifact.suffix}"
        with atomic_path(best) as tmp:
            shutil.copyfile(artifact, tmp)
        if artifact.suffix == ".xml":
            with atomic_path(best.with_suffix(".bin")) as tmp:
                shutil.copyfile(artifact.with_suffix(".bin"), tmp)
        chosen = {**chosen, "copied_to": str(best)}
        say(f"chosen: trial {chosen['number']} ({chosen['params']}), val drop {chosen['val_drop_points']:.2f} pt, "
            f"{chosen['latency_ms']:.3f} ms -> {best}")
    result = SearchResult(chosen, pareto, rows, baseline, out / "search.md", round(seconds, 1), notes)
    _write(result, cfg, out)
    return result


def _row(trial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {"number": trial.number, "state": trial.state.name, "params": trial.params,
            "val_drop_points": attrs.get("val_drop_points"), "latency_ms": attrs.get("latency_ms"),
            "size_bytes": attrs.get("size_bytes"), "macs": attrs.get("macs"), "artifact": attrs.get("artifact"),
            "screen_drop_points": attrs.get("screen_drop_points"), "same_as": attrs.get("same_as"),
            "error": (trial.system_attrs.get("fail_reason") or "").splitlines()[-1:] or None}


def _write(result: SearchResult, cfg: SearchConfig, out: Path) -> None:
    data = {"config": {**asdict(cfg), "target": cfg.target.value}, "chosen": result.chosen, "pareto": result.pareto,
            "trials": result.trials, "baseline": result.baseline, "seconds": result.seconds, "notes": result.notes}
    with atomic_path(out / "search.json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))
    pareto = {r["number"] for r in result.pareto}
    chosen = result.chosen["number"] if result.chosen else None
    lines = [f"# deepslim auto: {cfg.target.value}, val top-1 drop budget {cfg.max_accuracy_drop:g} pt", "",
             "| trial | state | speedup | importance | recover | method | val drop (pt) | p50 ms | size MiB | |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.trials:
        p = r["params"]
        mark = "**chosen**" if r["number"] == chosen else ("Pareto" if r["number"] in pareto else "")
        lines.append(f"| {r['number']} | {r['state'].lower()} | {p.get('speedup')} | {p.get('importance')} | "
                     f"{p.get('recover')} | {p.get('method')} | {_f(r['val_drop_points'])} | {_f(r['latency_ms'], 3)} | "
                     f"{_f(r['size_bytes'] / 2**20 if r['size_bytes'] else None, 1)} | {mark} |")
    failed = [f"- trial {r['number']} failed: {r['error'][0]}" for r in result.trials if r["state"] == "FAIL" and r["error"]]
    lines += ["", *[f"- {n}" for n in result.notes], *failed, ""]
    with atomic_path(out / "search.md") as tmp:
        tmp.write_text("\n".join(lines))
    _plot(result, out, chosen, pareto)


def _f(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _plot(result: SearchResult, out: Path, chosen, pareto: set[int]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    done = [r for r in result.trials if r["state"] == "COMPLETE"]
    if not done:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["latency_ms"] for r in done], [r["val_drop_points"] for r in done], c="lightgray", label="trials")
    front = sorted((r for r in done if r["number"] in pareto), key=lambda r: r["latency_ms"])
    ax.plot([r["latency_ms"] for r in front], [r["val_drop_points"] for r in front], "o-", label="Pareto front")
    for r in done:
        if r["number"] == chosen:
            ax.scatter([r["latency_ms"]], [r["val_drop_points"]], s=160, facecolors="none", edgecolors="red",
                       label="chosen")
    ax.set_xlabel("p50 latency, batch 1 (ms)")
    ax.set_ylabel("val top-1 drop (points)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "pareto.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
