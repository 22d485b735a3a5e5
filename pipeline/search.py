"""The accuracy-budget search (`deepslim auto`): pruning x quantization, measured on the target, with Optuna.

Each trial picks a MAC speedup (1 = no pruning), an importance criterion, the recovery
(fine-tune or KD from the original) and a quantization method. It is screened cheaply first:
the MAC count, then a short fine-tune and the val score; a candidate already far outside the
accuracy budget is pruned there. Only promising ones are fine-tuned fully, quantized and
timed on the target's runner (batch 1, at ``latency_size``). The accuracy is the task's primary
metric (top-1, mAP, R², or ``primary_metric``), its drop direction-aware and in its unit
(:meth:`deepslim.tasks.Task.drop`: points, or percent of the baseline for mae/rmse/loss).
Objectives: val drop,
latency, size, a multi-objective Optuna study (NSGA-II), so the result is a Pareto front. The
accuracy of a candidate is that of the artifact that ships (the int8 model, or the fp32 export,
checked for parity against the bundle). The demo's fixed recipe (2x, KD, int8) is the first
trial, so the search considers it whenever it fits.

A trial timed alone, minutes after another, says little about which is faster on a noisy
machine, so at the end the fastest candidates of the front within the budget are timed again
together with the unpruned baseline in one interleaved benchmark run (``timing/``); the chosen
model is the fastest of that run, its speedup is the ratio measured there, and it alone is
scored on the test split.

Several workers share one study through Optuna's storage (:mod:`pipeline.storage`: PostgreSQL for
several machines, a journal file on a shared file system, SQLite on one machine): each runs the same
command with ``--storage`` and ``--study``. ``--total-trials`` is the study's budget: a worker starts no
trial once the study has that many finished (complete or pruned; a failed trial is not finished). Each
trial's artifacts are named by study and trial number, and their sha256 are trial attributes; the study
records its search (model hash, data, target, budget: a worker of another search is refused) and, from
each worker that finishes, the chosen model's path and hash, so ``--report-only`` rebuilds the report
from the study alone, on any machine.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from compress.options import QuantTarget
from deepslim.errors import BackendMissingError, ConfigError
from deepslim.fileio import atomic_path, sha256_file
from pipeline.storage import open_study, storage_errors

Say = Callable[[str], None]
SPEEDUPS = (1.0, 1.5, 2.0, 3.0)
IMPORTANCES = ("l2", "lamp", "taylor")
FIXED_RECIPE = {"speedup": 2.0, "importance": "l2", "recover": "kd", "method": "ptq"}
RETIMED = 5  # candidates timed again together with the baseline at the end
FINISHED = ("COMPLETE", "PRUNED")  # the trial states a budget counts


@dataclass(frozen=True)
class SearchConfig:
    max_accuracy_drop: float = 1.0       # val drop of the primary metric (points; % of the baseline for mae...)
    target: QuantTarget = QuantTarget.OPENVINO
    time_budget: float = 600.0           # seconds for this worker's share of the search
    trials: int | None = None            # at most this many trials (this worker); None: until the time budget
    latency_size: int | None = None      # input size for timing (default: the model's)
    screen_epochs: int = 1
    finetune_epochs: int = 3
    storage: str | None = None           # Optuna storage URL shared by workers
    study: str = "deepslim-auto"
    seed: int = 0
    primary_metric: str | None = None    # judge by this metric instead of the task's own primary one
    total_trials: int | None = None      # the study's budget: finished trials over all workers
    heartbeat: int = 30                  # seconds between a running trial's heartbeats (RDB storages)
    grace: int | None = None             # seconds without one before a trial counts as dead (2 x heartbeat)
    retries: int = 2                     # times a dead worker's trial is queued again

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", QuantTarget(self.target))
        if not self.max_accuracy_drop >= 0:
            raise ConfigError(f"--max-accuracy-drop must be >= 0, got {self.max_accuracy_drop}.")
        if not self.time_budget > 0:
            raise ConfigError(f"--time-budget must be a positive number of seconds, got {self.time_budget}.")
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"--trials must be a positive integer, got {self.trials}.")
        if self.total_trials is not None and self.total_trials < 1:
            raise ConfigError(f"--total-trials must be a positive integer, got {self.total_trials}.")
        self.storage_config()  # checks the URL's scheme and the heartbeat settings
        if self.screen_epochs < 1 or self.finetune_epochs < self.screen_epochs:
            raise ConfigError("--finetune-epochs must be at least the screening epochs (1).")
        if self.target is QuantTarget.TENSORRT:
            from pipeline.recipe import tensorrt_available
            if not tensorrt_available():
                raise BackendMissingError("deepslim auto --target tensorrt times candidates on TensorRT, which needs "
                                          "the tensorrt package and a CUDA GPU; none here.")

    def storage_config(self):
        from pipeline.storage import StorageConfig
        return StorageConfig(self.storage, self.heartbeat, self.grace, self.retries)

    def reported(self) -> dict[str, Any]:
        """The config as the report shows it: the storage's password hidden."""
        from pipeline.storage import shown
        data = {**asdict(self), "target": self.target.value}
        return {**data, "storage": shown(self.storage) if self.storage else None}


@dataclass
class SearchResult:
    chosen: dict[str, Any] | None
    pareto: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    baseline: dict[str, Any]
    report: Path
    seconds: float
    notes: list[str] = field(default_factory=list)
    timing: dict[str, Any] | None = None  # the interleaved run that timed the baseline and the contenders
    worker: dict[str, Any] | None = None  # this worker's part: the trials it finished (None: --report-only)


def search(model: Path, dataset: str, cfg: SearchConfig, out_dir: str | Path, *, log: Say | None = None) -> SearchResult:
    """Run (or join) the study; write ``out_dir/search.json``, ``search.md``, ``pareto.png`` and the chosen artifact."""
    import optuna

    from deepslim.evaluation import evaluate
    say = log or (lambda _msg: None)
    start = time.perf_counter()
    out = Path(out_dir)
    bundle = load_judged(model, cfg)
    base_val = evaluate(bundle, dataset, split="val").metrics  # a model that cannot load writes nothing
    task = bundle.task
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are reported in search.md
    study = open_study(cfg.storage_config(), cfg.study, seed=cfg.seed,
                       record=_search_record(Path(model), dataset, cfg, task))
    (out / "trials").mkdir(parents=True, exist_ok=True)
    if not study.trials:
        study.enqueue_trial(FIXED_RECIPE)
    deadline = time.monotonic() + cfg.time_budget
    objective = _Objective(model, dataset, cfg, out, base_val, deadline, say, task)
    with storage_errors(cfg.storage):
        _optimize(study, objective, cfg)
        baseline = {"primary": task.primary, f"val_{task.primary}": base_val[task.primary]}
        worker = {"finished": sorted(objective.finished)}
        say(f"this worker finished {len(objective.finished)} trial(s): "
            f"{', '.join(map(str, worker['finished'])) or '-'}")
        return _finish(study, cfg, out, Path(model), dataset, baseline, start, say, task, worker)


def _optimize(study, objective: _Objective, cfg: SearchConfig) -> None:
    """Run trials one at a time until this worker's ``--trials`` or time budget, or the study's
    ``--total-trials``, is spent: the study's budget is checked before each trial is asked for, so no worker
    starts one after the budget is met (trials running elsewhere still finish)."""
    ran = 0
    while not objective.stopped and (cfg.trials is None or ran < cfg.trials):
        if cfg.total_trials is not None and len(_finished(study)) >= cfg.total_trials:
            break
        left = objective.deadline - time.monotonic()
        if left <= 0:
            break
        study.optimize(objective, n_trials=1, timeout=left, catch=(Exception,))
        ran += 1


def _finished(study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED]


def _search_record(model: Path, dataset: str, cfg: SearchConfig, task) -> dict[str, Any]:
    """What decides a study's trials: a worker joins a study only if it searches the same."""
    return {"model_sha256": sha256_file(model), "dataset": dataset, "target": cfg.target.value,
            "max_accuracy_drop": cfg.max_accuracy_drop, "latency_size": cfg.latency_size,
            "screen_epochs": cfg.screen_epochs, "finetune_epochs": cfg.finetune_epochs, "task": task.to_json(),
            "space": {"speedup": list(SPEEDUPS), "importance": list(IMPORTANCES), "recover": ["finetune", "kd"],
                      "method": ["ptq", "none"]}}


def load_judged(model: Path, cfg: SearchConfig):
    """The bundle at ``model``, judged by ``cfg.primary_metric`` when it is set."""
    from deepslim.models import load_model
    bundle = load_model(model)
    return replace(bundle, task=bundle.task.with_primary(cfg.primary_metric)) if cfg.primary_metric else bundle


class _Objective:
    def __init__(self, model: Path, dataset: str, cfg: SearchConfig, out: Path, base_val: dict[str, Any],
                 deadline: float, say: Say, task) -> None:
        self.model, self.dataset, self.cfg, self.out = model, dataset, cfg, out
        self.base_val, self.deadline, self.say, self.task = base_val, deadline, say, task
        self.unit = "pt" if task.drop_unit() == "points" else "%"
        self.durations: list[float] = []
        self.finished: list[int] = []  # trials this worker ended complete or pruned
        self.stopped = False

    def __call__(self, trial) -> tuple[float, float, float]:
        import optuna
        start = time.monotonic()
        try:
            values = self._run(trial)
            self.finished.append(trial.number)
            return values
        except optuna.TrialPruned:
            self.finished.append(trial.number)
            raise
        finally:
            self.durations.append(time.monotonic() - start)

    def _run(self, trial) -> tuple[float, float, float]:
        import optuna

        from compress.prune import PruneConfig, prune
        from deepslim.evaluation import evaluate
        from deepslim.models import save_model
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
            self.stopped = True
            trial.set_user_attr("skipped", "time budget")
            raise optuna.TrialPruned()
        tdir = self.out / "trials" / _safe_name(cfg.study) / f"{trial.number:04d}"
        if tdir.exists():
            shutil.rmtree(tdir)
        tdir.mkdir(parents=True)
        trial.set_user_attr("worker", worker_id())
        bundle = load_judged(self.model, cfg)
        if speedup > 1:
            screen = PruneConfig(speedup=speedup, importance=importance, finetune_epochs=cfg.screen_epochs,
                                 recover=recover, round_to=None, seed=cfg.seed)
            pruned = prune(bundle, screen, dataset=self.dataset, progress=False)
            trial.set_user_attr("macs", pruned.lineage[-1].metrics["macs_after"])
            screen_drop = self.task.drop(self.base_val, evaluate(pruned, self.dataset, split="val").metrics)
            trial.set_user_attr("screen_drop_points", round(screen_drop, 3))
            if screen_drop > cfg.max_accuracy_drop + 3.0 or time.monotonic() > self.deadline:
                self.say(f"trial {trial.number}: {speedup}x {importance} {recover}: screened out "
                         f"(val drop {screen_drop:.2f} {self.unit} after {cfg.screen_epochs} epoch)")
                raise optuna.TrialPruned()
            if cfg.finetune_epochs > cfg.screen_epochs:
                pruned = self._finetune(pruned, bundle, recover, cfg.finetune_epochs - cfg.screen_epochs)
            bundle = pruned
        path = save_model(bundle, tdir / "model.safetensors", force=True)
        measured = self._measure(path, method, tdir)
        measured["artifact_sha256"] = sha256_file(measured["artifact"])
        for key, value in measured.items():
            trial.set_user_attr(key, value)
        drop, latency, size = measured["val_drop_points"], measured["latency_ms"], measured["size_bytes"]
        self.say(f"trial {trial.number}: {speedup}x {importance} {recover} {method}: val drop {drop:.2f} {self.unit}, "
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
        spec, task = pruned.signature, pruned.task
        loss = kd_finetune_loss(original.model, 4.0, 0.5, task=task, signature=spec) if recover == "kd" else None
        fit(pruned.model, source.split("train", spec, augment=True, task=task), source.split("val", spec, task=task),
            TrainConfig(epochs=epochs, lr=0.01, seed=self.cfg.seed, warmup_epochs=0), loss_fn=loss, progress=False,
            task=task, signature=spec)
        pruned.model.cpu().eval()
        return pruned

    def _measure(self, path: Path, method: str, tdir: Path) -> dict[str, Any]:
        """Val drop of the artifact that ships, and p50 at batch 1 on the target's runner at ``latency_size``."""
        from benchmarks.bench import artifact_size
        artifact, val, parity = self._ship(path, method, tdir)
        timed = self._timed(path, method, tdir, artifact)
        latency = _p50(timed, _backend(self.cfg), self.cfg.latency_size if _backend(self.cfg) == "openvino" else None)
        return {"artifact": str(artifact), "timed": str(timed), "latency_ms": latency,
                "size_bytes": artifact_size(artifact), f"val_{self.task.primary}": val[self.task.primary],
                "val_drop_points": round(self.task.drop(self.base_val, val), 3), "parity": parity}

    def _ship(self, path: Path, method: str, tdir: Path) -> tuple[Path, dict[str, Any], dict[str, Any] | None]:
        """The artifact that ships, its val metrics measured on it, and (fp32 exports) its parity with the bundle."""
        from compress.quantize import QuantizeConfig, quantize
        from deepslim.models import load_model
        from export import VerifyConfig, export_model
        cfg = self.cfg
        suffix = _suffix(cfg)
        if method == "ptq":
            result = quantize(load_model(path), tdir / f"model_int8{suffix}",
                              QuantizeConfig(target=cfg.target, latency=False, seed=cfg.seed), self.dataset,
                              progress=False)
            return result.artifact, result.record.metrics["quantized"]["val"], None
        target = "openvino" if suffix == ".xml" else "onnx"
        exported = export_model(load_model(path), target, tdir / f"model{suffix}",
                                verify=VerifyConfig(dataset=self.dataset), force=True)
        val = artifact_metrics(exported.artifact, _backend(cfg), self.dataset, "val")[0]
        return exported.artifact, val, exported.parity.to_json()

    def _timed(self, path: Path, method: str, tdir: Path, artifact: Path) -> Path:
        """The artifact itself, or (ONNX at another ``latency_size``) a copy made at that size for timing only."""
        from compress.quantize import QuantizeConfig, quantize
        from deepslim.models import load_model
        from export import OnnxConfig, export_model
        cfg = self.cfg
        if not cfg.latency_size or _backend(cfg) == "openvino":  # OpenVINO reshapes the IR when it is timed
            return artifact
        bundle = load_model(path)
        if method == "ptq":
            return quantize(bundle, tdir / "timing_int8.onnx", QuantizeConfig(target=cfg.target, latency=False,
                                                                              input_size=cfg.latency_size),
                            self.dataset, progress=False).artifact
        return export_model(bundle, "onnx", tdir / "timing.onnx", onnx_config=OnnxConfig(input_size=cfg.latency_size),
                            verify=None, force=True).artifact  # timed only; the artifact that ships was checked


def worker_id() -> str:
    """Which worker ran a trial: host and process id."""
    import os
    import socket
    return f"{socket.gethostname()}:{os.getpid()}"


def _safe_name(study: str) -> str:
    """A study name as a directory name."""
    import re
    return re.sub(r"[^A-Za-z0-9._-]+", "_", study).strip("._") or "study"


def _backend(cfg: SearchConfig) -> str:
    return "openvino" if cfg.target is QuantTarget.OPENVINO else "onnxruntime"


def _suffix(cfg: SearchConfig) -> str:
    return ".xml" if cfg.target is QuantTarget.OPENVINO else ".onnx"


def artifact_metrics(artifact: Path, backend: str, dataset: str, split: str, reference=None):
    """Metrics (and outputs) of any artifact on a split, by the benchmarks harness that `deepslim bench` uses
    (the metrics of the artifact's task)."""
    from benchmarks.accuracy import predict, score
    from benchmarks.runners import RunnerOptions, open_runner
    runner = open_runner(artifact, backend, RunnerOptions())
    logits, labels = predict(runner, dataset, split=split)
    return score(logits, labels, task=runner.meta.task, reference=reference), logits


def _p50(artifact: Path, backend: str, input_size: int | None) -> float:
    from benchmarks.latency import LatencyConfig, measure
    from benchmarks.runners import RunnerOptions, open_runner
    kwargs = {"input_size": input_size} if input_size else {}
    runner = open_runner(artifact, backend, RunnerOptions(), **kwargs)
    return measure([runner], LatencyConfig(batches=(1,), rounds=3, duration=1.0, warmup=3))[0][1].p50_ms


def _finish(study, cfg: SearchConfig, out: Path, model: Path, dataset: str, baseline: dict[str, Any], start: float,
            say: Say, task, worker: dict[str, Any] | None = None) -> SearchResult:
    from deepslim.tasks import metric_info
    from pipeline.search_report import moved, unit, write_report
    import optuna
    done = [t for t in study.trials if t.state is optuna.trial.TrialState.COMPLETE]
    rows = [_row(t, task.primary) for t in study.trials]
    pareto_numbers = {t.number for t in study.best_trials} if done else set()
    pareto = [r for r in rows if r["number"] in pareto_numbers]
    feasible = [r for r in rows if r["state"] == "COMPLETE" and r["val_drop_points"] <= cfg.max_accuracy_drop + 1e-9]
    contenders = _contenders(feasible, pareto_numbers)
    chosen, timing, notes = None, None, []
    if contenders:
        timing = _time_together(model, contenders, cfg, dataset, out, baseline, say)
        chosen = _ship_chosen(min(contenders, key=lambda r: r["latency_ms"]), model, cfg, dataset, out, baseline,
                              task)
        say(f"chosen: trial {chosen['number']} ({chosen['params']}), val drop {chosen['val_drop_points']:.2f} "
            f"{unit(task)}, test {metric_info(task.primary).label} {chosen['test'][task.primary]:.4f} "
            f"({moved(task, baseline['test'], chosen['test'])}), {chosen['latency_ms']:.3f} ms "
            f"({chosen['speedup']:.2f}x the "
            f"unpruned model's speed in the same run) -> {chosen['copied_to']}")
    else:
        notes.append(f"no candidate met --max-accuracy-drop {cfg.max_accuracy_drop:g}")
    result = SearchResult(chosen, pareto, rows, baseline, out / "search.md", round(time.perf_counter() - start, 1),
                          notes, timing, worker)
    retimed = {str(r["number"]): {k: r[k] for k in _RETIMED_FIELDS if k in r} for r in rows if r["latency_ms"] is not None}
    study.set_user_attr("deepslim_result", json.loads(json.dumps(
        {"chosen": chosen, "baseline": baseline, "timing": timing, "notes": notes, "seconds": result.seconds,
         "retimed": retimed, "config": cfg.reported()}, default=str)))
    write_report(result, cfg, out, task)
    return result


_RETIMED_FIELDS = ("latency_ms", "latency_spread_ms", "speedup", "within_noise", "timing_run", "timed")


def report_only(cfg: SearchConfig, out_dir: str | Path) -> SearchResult:
    """The report of a study rebuilt from the study alone (its trials and what the last worker to finish
    recorded): ``out_dir/search.json``, ``search.md`` and ``pareto.png``, the same on any machine, any time."""
    from deepslim.tasks import Task
    from pipeline.search_report import write_report
    if cfg.storage is None:
        raise ConfigError("--report-only reads the study from its storage; give the --storage the workers used.")
    study = open_study(cfg.storage_config(), cfg.study, create=False)
    record = study.user_attrs.get("deepslim_search")
    if record is None:
        raise ConfigError(f"Study '{cfg.study}' was not made by deepslim auto (it records no search).")
    task = Task.from_json(record["task"])
    saved = study.user_attrs.get("deepslim_result") or {}
    cfg = replace(cfg, target=QuantTarget(record["target"]), max_accuracy_drop=record["max_accuracy_drop"],
                  latency_size=record["latency_size"], finetune_epochs=record["finetune_epochs"])
    rows = [_row(t, task.primary) for t in study.trials]
    for row in rows:
        row.update(saved.get("retimed", {}).get(str(row["number"]), {}))
    done = any(r["state"] == "COMPLETE" for r in rows)
    front = {t.number for t in study.best_trials} if done else set()
    notes = saved.get("notes", ["no worker has finished its search yet, so no model is chosen"])
    result = SearchResult(saved.get("chosen"), [r for r in rows if r["number"] in front], rows,
                          saved.get("baseline") or {}, Path(out_dir) / "search.md", saved.get("seconds") or 0.0,
                          list(notes), saved.get("timing"))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_report(result, cfg, Path(out_dir), task)
    return result


def _contenders(feasible: list[dict[str, Any]], pareto: set[int]) -> list[dict[str, Any]]:
    """The fastest candidate within the budget and the fastest of the front within it, one per artifact."""
    by_speed = sorted(feasible, key=lambda r: r["search_latency_ms"])
    picked: dict[str, dict[str, Any]] = {}
    for row in by_speed[:1] + [r for r in by_speed if r["number"] in pareto]:
        if len(picked) < RETIMED:
            picked.setdefault(row["artifact"], row)  # a repeated candidate (same_as) shares its artifact
    return list(picked.values())


def _time_together(model: Path, contenders: list[dict[str, Any]], cfg: SearchConfig, dataset: str, out: Path,
                   baseline: dict[str, Any], say: Say) -> dict[str, Any]:
    """Time the unpruned baseline and ``contenders`` in one interleaved run (``out/timing/``); fill in their p50s."""
    from benchmarks import Backend, BenchTarget, LatencyConfig, bench, write_report
    backend = Backend(_backend(cfg))
    size = cfg.latency_size if backend is Backend.OPENVINO else None
    base = _baseline_artifact(model, cfg, dataset, out / "baseline")
    targets = [BenchTarget(base, backend, input_size=size, note="the unpruned model (fp32)"),
               *(BenchTarget(Path(r["timed"]), backend, input_size=size, note=f"trial {r['number']}")
                 for r in contenders)]
    say(f"timing the unpruned model and {len(contenders)} candidate(s) together in one interleaved run")
    report = bench(targets, LatencyConfig(batches=(1,), rounds=5, duration=2.0, warmup=5), dataset=None,
                   notes=["deepslim auto: the unpruned model, then the fastest candidates within the accuracy budget"])
    paths = write_report(report, out / "timing")
    timing = {"created": report.created, "report": str(paths["report.json"]), "backend": backend.value,
              "input_size": cfg.latency_size}
    for row, entry in zip([baseline, *contenders], report.entries):
        stats = entry.latency[1]
        row.update(latency_ms=stats.p50_ms, latency_spread_ms=list(stats.spread_ms), speedup=stats.speedup,
                   within_noise=stats.within_noise, timing_run=report.created, timed=entry.artifact)
    return timing


def _baseline_artifact(model: Path, cfg: SearchConfig, dataset: str, bdir: Path) -> Path:
    """The unpruned model in the target's fp32 format, at ``latency_size`` (ONNX) or reshaped when timed (IR)."""
    from deepslim.models import load_model
    from export import OnnxConfig, VerifyConfig, export_model
    if bdir.exists():
        shutil.rmtree(bdir)
    bdir.mkdir(parents=True)
    resized = bool(cfg.latency_size) and _backend(cfg) == "onnxruntime"
    target = "openvino" if _suffix(cfg) == ".xml" else "onnx"
    return export_model(load_model(model), target, bdir / f"model{_suffix(cfg)}",
                        onnx_config=OnnxConfig(input_size=cfg.latency_size) if resized else None,
                        verify=None if resized else VerifyConfig(dataset=dataset), force=True).artifact


def _ship_chosen(row: dict[str, Any], model: Path, cfg: SearchConfig, dataset: str, out: Path,
                 baseline: dict[str, Any], task) -> dict[str, Any]:
    """Copy the chosen artifact to ``out/best.*`` and score it, and the unpruned model, on the test split."""
    artifact = Path(row["artifact"])
    best = out / f"best{artifact.suffix}"
    with atomic_path(best) as tmp:
        shutil.copyfile(artifact, tmp)
    if artifact.suffix == ".xml":
        with atomic_path(best.with_suffix(".bin")) as tmp:
            shutil.copyfile(artifact.with_suffix(".bin"), tmp)
    baseline["test"], reference = artifact_metrics(model, "torch", dataset, "test")
    test, _ = artifact_metrics(best, _backend(cfg), dataset, "test", reference=reference)
    row.update(test=test, test_drop_points=round(task.drop(baseline["test"], test), 3))
    return {**row, "copied_to": str(best.resolve()), "sha256": sha256_file(best)}


def _row(trial, primary: str) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {"number": trial.number, "state": trial.state.name, "params": trial.params,
            f"val_{primary}": attrs.get(f"val_{primary}"), "val_drop_points": attrs.get("val_drop_points"),
            "search_latency_ms": attrs.get("latency_ms"), "latency_ms": None, "speedup": None,
            "size_bytes": attrs.get("size_bytes"), "macs": attrs.get("macs"), "artifact": attrs.get("artifact"),
            "timed": attrs.get("timed", attrs.get("artifact")), "parity": attrs.get("parity"),
            "screen_drop_points": attrs.get("screen_drop_points"), "same_as": attrs.get("same_as"),
            "artifact_sha256": attrs.get("artifact_sha256"),
            "error": (trial.system_attrs.get("fail_reason") or "").splitlines()[-1:] or None}
