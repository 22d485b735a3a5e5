"""Run a recipe in a resumable run directory (`deepslim run recipe.yaml --run-dir DIR`).

    DIR/00-model/model.safetensors      the starting model (built, or copied from model.path)
    DIR/01-train/model.safetensors      one folder per stage, holding its artifacts only
    DIR/02-prune/model.safetensors
    DIR/03-quantize/model_int8.xml (+ .bin)
    DIR/bench/report.html|.md|.json     every stage's artifact side by side
    DIR/manifest.json                   per stage: config, its hash, input and output hashes, seconds, metrics

A stage is skipped when its config and the hashes of its inputs match the manifest and its
outputs are still there, unchanged. Its inputs are the files it reads (sha256), the user code it
runs (the Python files of a ``file.py:fn`` architecture, by content), the dataset (a ``file.py:fn``
by content, a directory by the names, sizes and mtimes of its files) and the environment facts
that decide its outcome (torch's version; for export, quantize and bench, the versions of their
backends' packages and, for TensorRT, the GPU). Otherwise its folder is emptied and it runs
again, and so does every stage after it (their inputs change). The manifest is rewritten atomically after
each stage, and every artifact is written under a temporary name and renamed, so a run killed
at any point leaves finished stages intact and no partial file that a rerun would trust.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepslim import fingerprint
from deepslim.errors import ConfigError, InputFileError
from deepslim.fileio import atomic_path, sha256_file
from pipeline.recipe import (DistillStage, ExportStage, ModelSpec, PruneStage, QuantizeStage, Recipe, TrainStage,
                             feasibility, recipe_dataset, resolve, resolve_arch, tensorrt_available)

MANIFEST_VERSION = 1
Say = Callable[[str], None]


@dataclass
class StageOutcome:
    index: int
    kind: str
    outputs: list[Path]
    cached: bool
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    run_dir: Path
    stages: list[StageOutcome]
    report: Path | None
    notes: list[str]


def run_recipe(recipe: Recipe, run_dir: str | Path, *, base: Path = Path("."), progress: bool = True,
               log: Say | None = None) -> RunResult:
    """Run (or resume) ``recipe`` in ``run_dir``; returns what each stage did and the report path."""
    say = log or (lambda _msg: None)
    run_dir = Path(run_dir)
    dataset_spec = recipe_dataset(recipe, base)
    if recipe.dataset is None:
        say(f"dataset: {dataset_spec} (the one the recipe's model records)")
    recipe = recipe.model_copy(update={"dataset": dataset_spec, "label_column": None, "feature_columns": None,
                                       "task": None})  # the options now live in the dataset reference
    notes = feasibility(recipe)
    for note in notes:
        say(f"note: {note}")
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(run_dir, recipe)
    dataset = fingerprint.dataset_fingerprint(recipe.dataset)  # once: a large directory takes a while to list
    steps: list[Any] = [recipe.model, *recipe.stages]
    current: Path | None = None
    original: Path | None = None
    outcomes: list[StageOutcome] = []
    for index, step in enumerate(steps):
        kind = "model" if index == 0 else step.stage
        stage_dir = run_dir / f"{index:02d}-{kind}"
        inputs = _inputs(step, current, original, dataset, base)
        key = _key(recipe, step, inputs)
        entry = manifest["stages"].get(str(index))
        if entry is not None and entry["key"] == key and _outputs_intact(run_dir, entry):
            outputs = [run_dir / p for p in entry["outputs"]]
            outcomes.append(StageOutcome(index, kind, outputs, True, entry["seconds"], entry.get("metrics", {})))
            say(f"[{index}] {kind}: unchanged, kept {', '.join(p.name for p in outputs)}")
        else:
            _invalidate(manifest, index, run_dir)
            if stage_dir.exists():
                shutil.rmtree(stage_dir)
            stage_dir.mkdir(parents=True)
            say(f"[{index}] {kind}: running{_changes(entry, key, _config(step), inputs)}")
            start = time.perf_counter()
            outputs, metrics = _execute(step, current, original, stage_dir, recipe, base, progress, say)
            seconds = round(time.perf_counter() - start, 2)
            manifest["stages"][str(index)] = {
                "kind": kind, "config": _config(step), "key": key, "inputs": inputs, "seconds": seconds,
                "outputs": [str(p.relative_to(run_dir)) for p in outputs],
                "output_hashes": {str(p.relative_to(run_dir)): sha256_file(p) for p in outputs},
                "metrics": metrics, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            _write_manifest(run_dir, manifest)
            outcomes.append(StageOutcome(index, kind, outputs, False, seconds, metrics))
            say(f"[{index}] {kind}: done in {seconds:.1f} s -> {', '.join(p.name for p in outputs)}")
        if kind != "export":
            current = outcomes[-1].outputs[0]
        if kind in ("model", "train"):
            original = current
    report = _bench(recipe, run_dir, outcomes, manifest, notes, dataset, say) if recipe.bench else None
    return RunResult(run_dir, outcomes, report, notes)


# --- one stage --------------------------------------------------------------------------------

def _execute(step, current: Path | None, original: Path | None, stage_dir: Path, recipe: Recipe, base: Path,
             progress: bool, say: Say) -> tuple[list[Path], dict[str, Any]]:
    from deepslim.models import load_model, save_model
    if current is None:  # the model step
        return _model(step, stage_dir, recipe, base)
    if isinstance(step, TrainStage):
        from deepslim.config import TrainConfig
        from deepslim.training import train
        cfg = TrainConfig(epochs=step.epochs, batch_size=step.batch_size, lr=step.lr,
                          label_smoothing=step.label_smoothing, augment=step.augment, seed=recipe.seed,
                          **({"optimizer": step.optimizer} if step.optimizer else {}))
        out = train(_with_loss(load_model(current), step.loss), recipe.dataset, cfg, progress=progress)
        return [save_model(out, stage_dir / "model.safetensors", force=True)], _test(out)
    if isinstance(step, PruneStage):
        from compress.prune import PruneConfig, prune
        cfg = PruneConfig(ratio=step.ratio, speedup=step.speedup, importance=step.importance,
                          global_pruning=step.global_pruning, iterative_steps=step.iterative_steps,
                          round_to=None if step.round_to == 1 else step.round_to, finetune_epochs=step.finetune_epochs,
                          finetune_lr=step.finetune_lr, recover=step.recover, temperature=step.temperature,
                          alpha=step.alpha, seed=recipe.seed, head_ratio=step.head_ratio, depth=step.depth,
                          finetune_optimizer=step.finetune_optimizer or "sgd")
        out = prune(load_model(current), cfg, dataset=recipe.dataset, progress=progress, log=say)
        m = out.lineage[-1].metrics
        return [save_model(out, stage_dir / "model.safetensors", force=True)], {**_test(out), "mac_reduction": m["mac_reduction"]}
    if isinstance(step, DistillStage):
        from compress.distill import DistillConfig, distill, open_teacher
        from deepslim.config import TrainConfig
        teacher = original if step.teacher == "original" else resolve(step.teacher, base)
        features = {k: v for k, v in (("hidden_weight", step.hidden_weight), ("attention_weight", step.attention_weight),
                                      ("layer_map", step.layer_map), ("attention_loss", step.attention_loss))
                    if v is not None}
        cfg = DistillConfig(temperature=step.temperature, alpha=step.alpha, **features,
                            train=TrainConfig(epochs=step.epochs, lr=step.lr, seed=recipe.seed))
        out = distill(open_teacher(teacher), load_model(current), recipe.dataset, cfg, progress=progress, log=say)
        return [save_model(out, stage_dir / "model.safetensors", force=True)], _test(out)
    if isinstance(step, QuantizeStage):
        from compress.quantize import QuantizeConfig, quantize
        cfg = QuantizeConfig(method=step.method, target=step.target, calibration=step.calibration,
                             calibration_samples=step.calibration_samples, max_accuracy_drop=step.max_accuracy_drop,
                             input_size=step.input_size, qat_epochs=step.qat_epochs, seed=recipe.seed)
        source = load_model(current) if current.suffix == ".safetensors" else current
        result = quantize(source, stage_dir / f"model_int8{cfg.suffix}", cfg, recipe.dataset, progress=progress,
                          log=say)
        m = result.record.metrics
        return [result.artifact, *result.extra_files], {"test": m["quantized"]["test"],
                                                        "test_drop_points": m["test_drop_points"],
                                                        "primary": m.get("primary", "top1")}
    return _export(step, current, stage_dir, recipe, say), {}


def _model(spec, stage_dir: Path, recipe: Recipe, base: Path) -> tuple[list[Path], dict[str, Any]]:
    from deepslim.models import load_model, save_model
    if spec.path is not None:
        source = resolve(spec.path, base)
        out = stage_dir / (Path(spec.path).name if source.is_file() else "model.safetensors")
        if source.suffix.lower() == ".safetensors" or source.is_dir():
            return [save_model(_judged(load_model(source), recipe.primary_metric), out, force=True)], {}
        with atomic_path(out) as tmp:
            shutil.copyfile(source, tmp)
        return [out], {}
    from deepslim.training import model_for_dataset
    bundle = model_for_dataset(resolve_arch(spec.arch, base), recipe.dataset, input_size=spec.size,
                               arch_kwargs=spec.arch_kwargs, seed=recipe.seed, channels=spec.channels,
                               mean=tuple(spec.mean) if spec.mean else None, std=tuple(spec.std) if spec.std else None,
                               output=spec.output, primary_metric=recipe.primary_metric,
                               tokenizer=resolve(spec.tokenizer, base) if spec.tokenizer else None,
                               max_length=spec.max_length)
    return [save_model(bundle, stage_dir / "model.safetensors", force=True)], {}


def _judged(bundle, primary_metric: str | None):
    """``bundle`` judged by the recipe's ``primary_metric`` (recorded in its task, so every later stage reads it)."""
    if not primary_metric:
        return bundle
    from dataclasses import replace
    return replace(bundle, task=bundle.task.with_primary(primary_metric))


def _with_loss(bundle, loss: str | None):
    """A regression bundle trained with the train stage's ``loss``; refused for other tasks."""
    if loss is None:
        return bundle
    if bundle.task.kind.value != "regression":
        raise ConfigError(f"The train stage's loss {loss} applies to regression; the model's task is "
                          f"{bundle.task.kind.value}.")
    from dataclasses import replace
    return replace(bundle, task=replace(bundle.task, loss=loss))


def _export(step: ExportStage, current: Path, stage_dir: Path, recipe: Recipe, say: Say) -> list[Path]:
    from deepslim.models import load_model
    from export import OnnxConfig, VerifyConfig, export_model
    bundle = load_model(current)
    outputs: list[Path] = []
    for target in step.targets:
        if target == "tensorrt" and not tensorrt_available():
            say("export to tensorrt skipped: no tensorrt package or no CUDA GPU here")
            continue
        suffix = {"onnx": ".onnx", "openvino": ".xml", "tensorrt": ".engine"}[target]
        result = export_model(bundle, target, stage_dir / f"model{suffix}", onnx_config=OnnxConfig(input_size=step.input_size),
                              verify=VerifyConfig(recipe.dataset), force=True)
        outputs += [result.artifact, *result.extra_files]
    return outputs


def _test(bundle) -> dict[str, Any]:
    test = bundle.lineage[-1].metrics.get("test")
    return {"test": test, "primary": bundle.task.primary} if test else {}


# --- the bench over every stage's artifact ---------------------------------------------------

def _bench(recipe: Recipe, run_dir: Path, outcomes: list[StageOutcome], manifest: dict[str, Any], notes: list[str],
           dataset: dict[str, str], say: Say) -> Path:
    from benchmarks import Backend, LatencyConfig, bench, write_report
    from benchmarks.runners import can_run
    from pipeline.bench import plan_targets
    spec = recipe.bench
    artifacts = _bench_artifacts(outcomes)
    key = hashlib.sha256(json.dumps({"bench": spec.model_dump(mode="json"),
                                     "artifacts": {str(p.relative_to(run_dir)): sha256_file(p) for p in artifacts},
                                     "dataset": dataset if spec.accuracy else None,
                                     "environment": fingerprint.environment_facts(spec.backends)},
                                    sort_keys=True).encode()).hexdigest()
    report_dir = run_dir / "bench"
    entry = manifest.get("bench")
    if entry and entry["key"] == key and (report_dir / "report.html").is_file():
        say("bench: unchanged, kept the report")
        return report_dir / "report.html"
    backends = [Backend(b) for b in spec.backends if b != "tensorrt" or tensorrt_available()]
    runnable = [p for p in artifacts if p.suffix == ".safetensors" or any(can_run(b, p) for b in backends)]
    if spec.input_size is not None:  # ONNX files and engines keep the size they were made at
        fixed = [p for p in runnable if p.suffix in (".onnx", ".engine")]
        notes = notes + [f"{p.name} is not benchmarked: bench.input_size {spec.input_size} needs a bundle or an "
                         "OpenVINO IR" for p in fixed]
        runnable = [p for p in runnable if p not in fixed]
    if report_dir.exists():
        shutil.rmtree(report_dir)
    dataset = recipe.dataset if spec.accuracy else None
    targets, bench_notes = plan_targets(runnable, backends, report_dir / "artifacts", input_size=spec.input_size,
                                        dataset=dataset, sources=_bench_sources(outcomes))
    say(f"bench: {len(targets)} artifact/backend pairs")
    result = bench(targets, LatencyConfig(batches=tuple(spec.batches), rounds=spec.rounds, duration=spec.duration),
                   dataset=dataset, notes=notes + bench_notes)
    paths = write_report(result, report_dir)
    manifest["bench"] = {"key": key, "report": str(paths["report.html"].relative_to(run_dir))}
    _write_manifest(run_dir, manifest)
    return paths["report.html"]


def _bench_artifacts(outcomes: list[StageOutcome]) -> list[Path]:
    """The starting model (after training) and the main artifact of every stage that makes one."""
    seen, out = set(), []
    for outcome in outcomes:
        if outcome.kind == "model" and any(o.kind == "train" for o in outcomes):
            continue
        for path in outcome.outputs:
            if path.suffix in (".safetensors", ".onnx", ".xml", ".engine") and path not in seen:
                seen.add(path)
                out.append(path)
    return out


def _bench_sources(outcomes: list[StageOutcome]) -> dict[Path, Path]:
    """Each IR a stage made, mapped to the bundle it was made from (the last one before it): its MACs at
    another bench input size are recounted from that bundle (export and quantization keep the MACs)."""
    sources, bundle = {}, None
    for outcome in outcomes:
        for path in outcome.outputs:
            if path.suffix == ".xml" and bundle is not None:
                sources[path] = bundle
        bundle = next((p for p in outcome.outputs if p.suffix == ".safetensors"), bundle)
    return sources


# --- the manifest ------------------------------------------------------------------------------

def _load_manifest(run_dir: Path, recipe: Recipe) -> dict[str, Any]:
    path = run_dir / "manifest.json"
    if not path.exists():
        if any(run_dir.iterdir()):
            raise ConfigError(f"{run_dir} is not empty and has no manifest.json; give a new --run-dir.")
        return {"format_version": MANIFEST_VERSION, "recipe": recipe.name, "stages": {}}
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise InputFileError(f"{path} is corrupt ({exc}); delete the run directory and start again.") from exc
    if manifest.get("recipe") != recipe.name:
        raise ConfigError(f"{run_dir} holds a run of recipe '{manifest.get('recipe')}', not '{recipe.name}'; give "
                          "another --run-dir.")
    return manifest


def _write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    from benchmarks.env import environment
    manifest["environment"] = manifest.get("environment") or environment()
    with atomic_path(run_dir / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str))


def _invalidate(manifest: dict[str, Any], index: int, run_dir: Path) -> None:
    """This stage reruns: its entry and every later one (and the bench) go."""
    for key in [k for k in manifest["stages"] if int(k) >= index]:
        del manifest["stages"][key]
    manifest.pop("bench", None)
    _write_manifest(run_dir, manifest)


def _outputs_intact(run_dir: Path, entry: dict[str, Any]) -> bool:
    hashes = entry.get("output_hashes", {})
    return bool(entry.get("outputs")) and all((run_dir / p).is_file() and sha256_file(run_dir / p) == hashes.get(p)
                                              for p in entry["outputs"])


_LATER_FIELDS = ("channels", "mean", "std", "output", "loss", "optimizer", "head_ratio", "depth", "finetune_optimizer",
                 "tokenizer", "max_length", "hidden_weight", "attention_weight", "layer_map", "attention_loss")  # added for #13; unset, they leave the key as before


def _config(step) -> dict[str, Any]:
    config = step.model_dump(mode="json")
    return {k: v for k, v in config.items() if not (k in _LATER_FIELDS and v is None)}


def _inputs(step, current: Path | None, original: Path | None, dataset: dict[str, str],
            base: Path) -> dict[str, Any]:
    """Everything but the config that decides this stage's result; the run key hashes it."""
    files: dict[str, Path] = {}
    if current is not None:
        files["input"] = current
    elif step.path is not None:
        files["model"] = resolve(step.path, base)
    if isinstance(step, DistillStage):
        files["teacher"] = original if step.teacher == "original" else resolve(step.teacher, base)
    if isinstance(step, ModelSpec) and step.arch is not None and step.arch.startswith("hf:"):
        target = Path(resolve_arch(step.arch, base)[3:])
        files["hf_model"] = target if target.is_absolute() else None  # a directory: config, weights, tokenizer
        files["tokenizer"] = resolve(step.tokenizer, base) if step.tokenizer else None
    files = {k: v for k, v in files.items() if v is not None and v.exists()}
    digest = {k: fingerprint.directory_fingerprint(v) if v.is_dir() else sha256_file(v) for k, v in files.items()}
    return {**digest, "code": _user_code(step, [f for f in files.values() if f.is_file()], base),
            "dataset": dataset, "environment": fingerprint.environment_facts(_backends(step))}


def _user_code(step, files: Iterable[Path], base: Path) -> dict[str, str]:
    """sha256 of each Python file the stage runs: model.arch's, and the one each input bundle's architecture names."""
    code = []
    if isinstance(step, ModelSpec) and step.arch is not None:
        code.append(fingerprint.user_file(resolve_arch(step.arch, base)))
    code += [_arch_file(f) for f in files]
    return {str(f): fingerprint.file_digest(f) for f in code if f is not None}


def _arch_file(path: Path) -> Path | None:
    """The architecture file a bundle is rebuilt from (read from its header; nothing runs)."""
    from deepslim.bundle import read_header
    from deepslim.spec import ArchSource
    header = read_header(path) if path.suffix == ".safetensors" else None
    if header is None or header.arch.source is not ArchSource.FILE:
        return None
    return fingerprint.user_file(header.arch.name)


def _backends(step) -> list[str]:
    """The backends whose installed packages (and GPU, for TensorRT) decide the stage's outcome."""
    if isinstance(step, ExportStage):
        return list(step.targets)
    if isinstance(step, QuantizeStage):
        return [step.target.value]
    return []


def _changes(entry: dict[str, Any] | None, key: str, config: dict[str, Any], inputs: dict[str, Any]) -> str:
    """Why a recorded stage reruns, e.g. ' (code, dataset changed)'; empty for a stage not run before."""
    if entry is None:
        return ""
    if entry["key"] == key:
        return " (its outputs changed or are missing)"
    before = entry.get("inputs", {})
    changed = (["config"] if entry.get("config") != config else []) + \
        [k for k in sorted(set(inputs) | set(before)) if inputs.get(k) != before.get(k)]
    return f" ({', '.join(changed)} changed)" if changed else " (the recipe's seed or dataset changed)"


def _key(recipe: Recipe, step, inputs: dict[str, str]) -> str:
    payload = {"config": _config(step), "inputs": inputs, "dataset": recipe.dataset, "seed": recipe.seed}
    if recipe.primary_metric:  # only when set, so the keys of runs before it stay the same
        payload["primary_metric"] = recipe.primary_metric
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
