"""``deepslim bench``: accuracy, latency, size and cost of several artifacts, measured in one run."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.accuracy import Metric, predict, score
from benchmarks.env import environment
from benchmarks.latency import (NAMED_DIM, SEQUENCE, LatencyConfig, LatencyStats, Point, measure, named_dims,
                                point_key)
from benchmarks.runners import Backend, Runner, RunnerOptions, open_runner
from benchmarks.runners.base import Batch
from benchmarks.text_inputs import TextSamples, check_sequences, sequence_limit
from deepslim.artifact import ArtifactKind, artifact_kind
from deepslim.tasks import metric_info

if TYPE_CHECKING:
    from deepslim.models import ModelBundle
    from deepslim.signature import Signature

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BenchTarget:
    """One artifact on one backend (the first target is the baseline of every ratio)."""

    path: Path
    backend: Backend
    input_size: int | tuple[int, int] | None = None  # torch and OpenVINO runners: a one-image model at another size
    compile: bool | None = None     # torch runner only: override RunnerOptions.compile for this target
    note: str = ""
    source: ModelBundle | None = None  # the bundle it was exported from: MACs are recounted at the shape run


@dataclass
class Entry:
    label: str
    artifact: str
    backend: str
    kind: str
    precision: str
    size_bytes: int
    params: int | None
    macs: int | None
    input_shape: list[int]
    trained_input_size: list[int] | None
    runner: dict[str, Any]
    load_seconds: float
    peak_rss_mib: float | None          # resident memory added by loading + evaluating this artifact
    accuracy: dict[str, float] = field(default_factory=dict)
    latency: dict[Point, LatencyStats] = field(default_factory=dict)  # by batch, or (sequence, batch): --seq-len
    notes: list[str] = field(default_factory=list)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per input: sample shape (named dims by
    #                                     name), dtype and kind; input_shape is the first input's, concrete
    task: str = "classification"
    primary: str = "top1"               # the task's primary metric (registry name)
    drop: float | None = None           # task.drop of the primary metric vs the first entry (points or %)
    macs_per_sequence: dict[int, int] = field(default_factory=dict)  # --seq-len: MACs of one row at each length

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency"] = {point_key(p): s.to_json() for p, s in self.latency.items()}
        if not self.macs_per_sequence:
            del data["macs_per_sequence"]
        return data


@dataclass
class BenchReport:
    created: str
    environment: dict[str, Any]
    config: dict[str, Any]
    entries: list[Entry]
    notes: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "created": self.created, "environment": self.environment,
                "config": self.config, "notes": self.notes, "entries": [e.to_json() for e in self.entries]}


def bench(targets: Sequence[BenchTarget], latency: LatencyConfig, *, dataset: str | None = "digits",
          split: str = "test", limit: int | None = None, severity: int = 3, metric: Metric | None = None,
          options: RunnerOptions | None = None, tick: Callable[[str], None] | None = None,
          notes: Sequence[str] = (), texts: str | None = None) -> BenchReport:
    """Load every target, score it on the same eval set, time them interleaved, and return the report.

    With ``latency.sequences`` (text models), every batch is timed at each sequence length on real texts of
    ``texts`` (default: ``dataset``), tokenized by each model and padded or truncated to that length."""
    options = options or RunnerOptions()
    runners, entries, reference = [], [], None
    for target in targets:
        before = _reset_peak_rss()
        start = time.perf_counter()
        sized = target.input_size is not None and target.backend in (Backend.TORCH, Backend.OPENVINO)
        runner = open_runner(target.path, target.backend, _options(options, target),
                             **({"input_size": target.input_size} if sized else {}))
        _check_sequences(target, runner, latency.sequences)
        entry = _entry(target, runner, time.perf_counter() - start, latency.sequences)
        if dataset is not None:
            if tick:
                tick(f"accuracy: {runner.label}")
            outputs, targets = predict(runner, dataset, split=split, limit=limit, severity=severity)
            entry.accuracy = score(outputs, targets, task=runner.meta.task, reference=reference, metric=metric)
            reference = outputs if reference is None else reference
            entry.drop = _drop(runner, entries[0] if entries else entry, entry)
        peak = _status_mib("VmHWM")
        entry.peak_rss_mib = round(peak - before, 1) if peak is not None and before is not None else None
        runners.append(runner)
        entries.append(entry)
    samples = TextSamples.load(texts or dataset, split, max(latency.batches)) if latency.sequences else None
    for entry, runner, stats in zip(entries, runners, measure(runners, latency, tick, _inputs(samples))):
        entry.latency = stats
        _add_padding(entry, runner, samples)
    add_backend_speedups(entries)
    config = {"batches": list(latency.batches), "rounds": latency.rounds, "duration_s": latency.duration,
              "iterations": latency.iterations, "warmup": latency.warmup, "dataset": dataset, "split": split,
              "limit": limit, "threads": options.threads, "device": options.device, **_task_config(runners),
              "named_dims": {k: v for r in runners for k, v in named_dims(r.signature).items()}}
    if latency.sequences:
        config.update(sequences=list(latency.sequences), named_dims={SEQUENCE: list(latency.sequences)},
                      latency_inputs=samples.where)
    notes = [*_notes(entries, latency), *_sequence_notes(latency, samples), *notes]
    return BenchReport(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       environment(options.threads), config, entries, notes)


def _check_sequences(target: BenchTarget, runner: Runner, sequences: tuple[int, ...]) -> None:
    """--seq-len fits the model: a sequence input, no length beyond its position embeddings (read from the
    torch module's or the source bundle's config, else the tokenizer's limit)."""
    if not sequences:
        return
    model = getattr(runner, "eager", None)
    if model is None and target.source is not None:
        model = target.source.model
    check_sequences(runner.signature, sequences, target.path.name, sequence_limit(runner.signature, model))


def _inputs(samples: TextSamples | None) -> Callable[[Runner, Point], Batch] | None:
    """The latency input maker of a --seq-len run (None: the seeded random inputs of :func:`measure`)."""
    if samples is None:
        return None
    return lambda runner, point: samples.batch(runner.signature, *point)


def _add_padding(entry: Entry, runner: Runner, samples: TextSamples | None) -> None:
    if samples is None:
        return
    for (length, batch), stats in entry.latency.items():
        stats.padding = samples.padding(runner.signature, length, batch)


def _sequence_notes(latency: LatencyConfig, samples: TextSamples | None) -> list[str]:
    if samples is None:
        return []
    how = ("tokenized by each model's own tokenizer, padded to each length (attention mask 0) or truncated to it"
           if samples.texts is not None else "at each length")
    return [f"latency at sequence lengths {', '.join(map(str, latency.sequences))}: {samples.where}, {how}; "
            "throughput is sequences/s"]


def _options(options: RunnerOptions, target: BenchTarget) -> RunnerOptions:
    if target.compile is None or target.compile == options.compile:
        return options
    from dataclasses import replace
    return replace(options, compile=target.compile)


def _drop(runner: Runner, first: Entry, entry: Entry) -> float | None:
    """How much worse ``entry`` is than the first entry on the primary metric (:meth:`Task.drop`)."""
    task = runner.meta.task
    if first is entry or task.primary not in entry.accuracy or task.primary not in first.accuracy:
        return None
    return round(task.drop(first.accuracy, entry.accuracy), 6)


def _task_config(runners: list[Runner]) -> dict[str, Any]:
    """What the accuracy columns show: the first artifact's task and primary metric, with its label, its
    direction and the unit of a drop; ``images``: every artifact takes one image (titles count images)."""
    if not runners:
        return {}
    task = runners[0].meta.task
    info = metric_info(task.primary)
    return {"task": task.kind.value, "primary_metric": task.primary, "primary_label": info.label,
            "higher_is_better": info.higher_is_better, "drop_unit": task.drop_unit(),
            "images": all(r.signature.single_image for r in runners)}


def _entry(target: BenchTarget, runner: Runner, seconds: float, sequences: tuple[int, ...] = ()) -> Entry:
    meta = runner.meta
    export = meta.export
    sizes = {SEQUENCE: sequences[0]} if sequences else None
    macs, params = _macs_params(target, runner, sizes)
    notes = [target.note] if target.note else []
    image = meta.signature.single_image
    trained = export.get("trained_input_size") if image else None
    if macs is None and export.get("macs") is not None and image:
        counted = export.get("input_size")
        at = f" (it records them at {counted[0]}x{counted[1]} only)" if counted else ""
        notes.append(f"MACs unknown at {meta.input_spec.size[0]}x{meta.input_spec.size[1]}{at}; bench the "
                     "bundle at that --input-size to count them")
    if trained and list(meta.input_spec.size) != list(trained):
        notes.append(f"runs at {meta.input_spec.size[0]}x{meta.input_spec.size[1]}, trained at "
                     f"{trained[0]}x{trained[1]}")
    dims = {**named_dims(meta.signature), **(sizes or {})}
    if sequences:
        notes += _text_notes(target, runner, sequences)
    elif dims:
        notes.append(f"latency inputs give every named dim ({', '.join(dims)}) size {NAMED_DIM}")
    first = meta.signature.inputs[0]
    inputs = {i.name: {"shape": list(i.sample_shape), "dtype": i.dtype, "kind": i.kind.value}
              for i in meta.signature.inputs}
    entry = Entry(runner.label, str(target.path), target.backend.value, artifact_kind(target.path).value,
                  export.get("precision", "fp32"), artifact_size(target.path), params, macs,
                  list(first.concrete_shape(1, dims)[1:]), trained, dict(runner.details),
                  round(seconds, 3), None, notes=notes, inputs=inputs, task=meta.task.kind.value,
                  primary=meta.task.primary)
    if sequences and macs is not None:
        entry.macs_per_sequence = {n: _macs_params(target, runner, {SEQUENCE: n})[0] for n in sequences}
    return entry


def _text_notes(target: BenchTarget, runner: Runner, sequences: tuple[int, ...]) -> list[str]:
    """What a --seq-len entry's reader should know: lengths beyond what it was trained at; MACs not recounted."""
    notes = []
    text = runner.signature.text
    longer = [n for n in sequences if text is not None and n > text.max_length]
    if longer:
        notes.append(f"sequence {', '.join(map(str, longer))} is longer than its tokenizer's max length "
                     f"{text.max_length} (what it was trained and evaluated at)")
    if not _countable(target):
        notes.append("MACs unknown at the --seq-len lengths (an export records them at one length only); bench "
                     "its bundle to count them")
    return notes


def _countable(target: BenchTarget) -> bool:
    return target.backend is Backend.TORCH or target.source is not None


def _macs_params(target: BenchTarget, runner: Runner,
                 sizes: dict[str, int] | None = None) -> tuple[int | None, int | None]:
    """MACs of one sample at the shape actually run, and the parameter count.

    An artifact records the MACs of the shape it was exported at; run at another size
    (``--input-size``, or a ``--seq-len`` given as ``sizes``) they are recounted from the
    source bundle when the target names it, else unknown (None) rather than the exported
    shape's count."""
    signature, export = runner.meta.signature, runner.meta.export
    if target.backend is Backend.TORCH:
        return count_macs(runner.eager, signature, sizes)
    if sizes:
        if target.source is not None:
            return count_macs(target.source.model, signature, sizes)
        return None, export.get("params")
    counted_at = export.get("input_size")
    resized = signature.single_image and target.input_size is not None
    if not resized or (counted_at is not None and list(counted_at) == list(signature.inputs[0].size)):
        return export.get("macs"), export.get("params")
    if target.source is not None:
        return count_macs(target.source.model, signature)
    return None, export.get("params")


def count_macs(model: Any, signature: Signature, sizes: dict[str, int] | None = None) -> tuple[int, int]:
    """MACs of one sample (every input; named dims at the latency size, or ``sizes``) and the parameter count, by
    torch-pruning's counter; a one-image model as :func:`deepslim.profile.count_macs_params` counts it."""
    if signature.single_image:
        from deepslim.profile import count_macs_params
        return count_macs_params(model, signature.to_input_spec())
    import torch
    import torch_pruning as tp

    from deepslim.modelio import example_inputs
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = tuple(t.to(device) for t in example_inputs(signature, 1, sizes={**named_dims(signature), **(sizes or {})}))
    was_training = model.training
    try:
        model.eval()
        macs, params = tp.utils.count_ops_and_params(model, x)
    finally:
        model.train(was_training)
    return int(macs), int(params)


def add_backend_speedups(entries: list[Entry]) -> None:
    """Each entry's speedup over the first artifact on its own backend (the original, on that runtime)."""
    first: dict[str, Entry] = {}
    for entry in entries:
        base = first.setdefault(entry.backend + str(bool(entry.runner.get("compile"))), entry)
        for point, stats in entry.latency.items():
            if point in base.latency:
                stats.speedup_same_backend = base.latency[point].p50_ms / stats.p50_ms


def artifact_size(path: Path) -> int:
    """Bytes on disk of everything the artifact needs (IR .bin, ONNX external data, a model directory's files)."""
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    kind = artifact_kind(path)
    if kind is ArtifactKind.OPENVINO:
        files.append(path.with_suffix(".bin"))
    elif kind is ArtifactKind.ONNX:
        files.append(path.with_name(path.name + ".data"))
    return sum(f.stat().st_size for f in files if f.is_file())


def _notes(entries: list[Entry], latency: LatencyConfig) -> list[str]:
    notes = [f"latency: p50 is the median of {latency.rounds} interleaved rounds (order rotated each round); "
             "spread is the min..max of the round medians; a speedup inside the baseline's spread is marked ~"]
    if any(e.backend == Backend.OPENVINO.value and e.runner.get("static_batch") for e in entries):
        notes.append("OpenVINO models are reshaped to a static shape and compiled for each batch size "
                     + ("and sequence length (accuracy batches keep a dynamic sequence axis) " if latency.sequences
                        else "") + "(static batch 1 measured 4-12% faster than a dynamic batch here)")
    for e in entries:
        high = (e.runner.get("profile_batches") or [None, None])[1]
        if high is not None and max(latency.batches) > high:
            notes.append(f"{e.label}: batches above {high}, its engine profile's max, run as chunks of {high}; "
                         "rebuild it with a larger `--batch` to time them as one batch")
    return notes


def _reset_peak_rss() -> float | None:
    """Reset the kernel's peak-RSS counter (Linux); return the current RSS in MiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None  # not Linux or not permitted: no per-artifact peak
    return _status_mib("VmRSS")


def _status_mib(key: str) -> float | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return None
