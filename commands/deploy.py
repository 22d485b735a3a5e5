"""`deepslim export` and `deepslim bench`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import (Arch, ArchKwargs, Channels, FeatureColumns, Force, LabelColumn, TextColumn, Mean, Model, Severity,
                             Std, TaskOption, TaskOutput, TrustCode, TrustPickle, Weights, dataset_ref, load_bundle,
                             parse_batches, print_bench, trusting)
from deepslim.errors import ConfigError
from export.options import Exporter, OVSource, Precision, Target


@trusting
def export_cmd(
    model: Model = None,
    target: Annotated[Optional[Target], typer.Option("--target", "-t", help="Artifact to produce.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="model.onnx | model.xml | model.engine")] = None,
    precision: Annotated[Precision, typer.Option(help="fp32; fp16 (ONNX/TensorRT: fp16 graph, OpenVINO: fp16 "
                                                          "weights); int8 (TensorRT, from a Q/DQ ONNX).")] = Precision.FP32,
    input_size: Annotated[Optional[str], typer.Option(
        "--input-size", help="Export at another resolution than the model was trained at (N); with --arch, the "
        "image input size N or HxW the model is built at.", show_default=False)] = None,
    exporter: Annotated[Exporter, typer.Option(help="ONNX exporter: dynamo, or the TorchScript-based legacy one.")]
    = Exporter.DYNAMO,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Clean the ONNX graph with onnxslim.")] = True,
    ov_via: Annotated[OVSource, typer.Option("--ov-via", help="OpenVINO from the ONNX export, or directly from torch.")]
    = "onnx",
    batch: Annotated[str, typer.Option(help="TensorRT profile batch sizes: min,..,max (opt = the largest).")] = "1",
    seq_len: Annotated[Optional[str], typer.Option("--seq-len", help="TensorRT profile of a text model's sequence "
                       "axis: MIN,OPT,MAX tokens, e.g. 16,128,512 (default 1,L,L, L = the tokenizer's max length).",
                       show_default=False)] = None,
    workspace: Annotated[int, typer.Option(help="TensorRT workspace limit in MiB.")] = 1024,
    timing_cache: Annotated[Optional[Path], typer.Option(help="TensorRT timing cache file (read and updated).")] = None,
    print_trtexec: Annotated[bool, typer.Option("--print-trtexec", help="Print the equivalent trtexec command and "
                                                "exit (works without TensorRT).")] = False,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Parity inputs from this dataset's test "
                                                   "split (default: the model's own dataset from its lineage, else seeded random inputs).")] = None,
    label_column: LabelColumn = None, text_column: TextColumn = None, feature_columns: FeatureColumns = None, task: TaskOption = None,
    parity_samples: Annotated[int, typer.Option(help="Inputs compared by the parity check.")] = 64,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check parity with the source model.")] = True,
    check: Annotated[bool, typer.Option("--check", help="Only say whether MODEL exports to each target, and which "
                                        "ops fail.")] = False,
    arch: Arch = None, weights: Weights = None, arch_kwargs: ArchKwargs = None, channels: Channels = None,
    mean: Mean = None, std: Std = None, task_output: TaskOutput = None, trust_pickle: TrustPickle = False,
    trust_code: TrustCode = False, force: Force = False,
) -> None:
    """Export a model to ONNX, OpenVINO IR or a TensorRT engine, then check parity with the source.

    Example: deepslim export base.safetensors --target openvino --dataset digits -o base.xml
    """
    import export as ex
    dataset = dataset_ref(dataset, label_column, feature_columns, task, text_column)
    build = dict(arch=arch, weights=weights, arch_kwargs=arch_kwargs, trust_pickle=trust_pickle, dataset=dataset,
                 channels=channels, mean=mean, std=std, task_output=task_output,
                 input_size=input_size if arch is not None else None)
    size = None if arch is not None else _export_size(input_size)
    if check:
        return _export_check(model, size, **build)
    if target is None or output is None:
        raise ConfigError("Give --target onnx|openvino|tensorrt and -o OUTPUT (or --check).")
    onnx_config = ex.OnnxConfig(exporter=exporter.value, simplify=simplify, input_size=size)
    from export.options import parse_seq_len
    if seq_len is not None and target is not Target.TENSORRT:
        raise ConfigError("--seq-len sets the TensorRT optimisation profile; ONNX and OpenVINO exports keep a dynamic "
                          "sequence axis.")
    trt_config = ex.TensorRTConfig(precision=precision.value, batches=parse_batches(batch), workspace_mib=workspace,
                                   timing_cache=timing_cache,
                                   dim_ranges={"sequence": parse_seq_len(seq_len)} if seq_len else {})
    if print_trtexec:
        return _print_trtexec(model, output, trt_config, target)
    verify_config = ex.VerifyConfig(dataset=dataset, samples=parity_samples) if verify else None
    is_onnx = model is not None and model.suffix.lower() == ".onnx"
    out = _check_outputs(output, target, is_onnx, force, inputs=[model, weights])
    if is_onnx:
        source = model
    else:
        source = load_bundle(model, severity=None, **build)
    result = ex.export_model(source, target.value, out, precision=precision.value, onnx_config=onnx_config,
                             ov_via=ov_via.value, tensorrt_config=trt_config, verify=verify_config, force=force)
    typer.echo(f"wrote {result.artifact}" + "".join(f", {p}" for p in result.extra_files))
    if result.parity is None:
        typer.echo("warning: parity NOT checked (--no-verify); the artifact may differ from the model.", err=True)
    else:
        typer.echo(result.parity.summary())


def _check_outputs(output: Path, target: Target, from_onnx: bool, force: bool, inputs: list) -> Path:
    """Every file the export will write, checked against --force before any work (the artifact's side files too)."""
    from deepslim.fileio import check_output
    from export import planned_files
    files = planned_files(target, output, from_bundle=not from_onnx)
    for path in files:
        check_output(path, force=force, inputs=inputs)
    return files[0]


def _export_size(text: str | None) -> int | tuple[int, int] | None:
    """The resolution an existing one-image model is exported at: N (N x N) or (H, W)."""
    from commands.common import parse_input_size
    size = parse_input_size(text)
    if size is None:
        return None
    return size[0] if size[0] == size[1] else size


def _export_check(model, export_size: int | tuple[int, int] | None, **build) -> None:
    from rich.console import Console
    from rich.table import Table
    from export import check_exportable
    bundle = load_bundle(model, severity=None, **build)
    results = check_exportable(bundle, input_size=export_size)
    table = Table(title=f"exportability of {model or build['arch']}")
    for col in ("target", "status", "detail", "failing ops"):
        table.add_column(col)
    for r in results:
        color = {"ok": "green", "fails": "red"}.get(r.status, "yellow")
        table.add_row(r.target, f"[{color}]{r.status}[/]", r.detail, ", ".join(r.failing_ops) or "-")
    Console().print(table)
    if any(r.status == "fails" for r in results):
        raise typer.Exit(1)


def _print_trtexec(model, output: Path, trt_config, target) -> None:
    from deepslim.artifact import read_onnx_meta
    from export import plan_build, trtexec_command
    if target is not Target.TENSORRT or model is None or model.suffix.lower() != ".onnx":
        raise ConfigError("--print-trtexec needs --target tensorrt and an ONNX MODEL exported by deepslim.")
    meta = read_onnx_meta(model)
    if meta is None:
        raise ConfigError(f"{model} has no deepslim metadata; export it with `deepslim export --target onnx`.")
    plan = plan_build(meta, trt_config)
    typer.echo(trtexec_command(model, output, plan, trt_config.timing_cache))
    if plan.convert_to_fp16:
        typer.echo("# fp16: convert the ONNX to fp16 first (deepslim export --target onnx --precision fp16)", err=True)


@trusting
def bench(
    artifacts: Annotated[list[Path], typer.Argument(help="Bundles, .onnx, .xml or .engine files; the first is the "
                                                   "baseline of every ratio.", show_default=False)],
    backend: Annotated[str, typer.Option("--backend", "-b", help="Comma-separated: torch, onnxruntime, openvino, "
                                         "tensorrt. Bundles are exported on the way (with parity checks).")]
    = "torch,onnxruntime,openvino",
    report: Annotated[Path, typer.Option("--report", "-r", help="Directory for report.json/.md/.html and plots.")]
    = Path("runs/bench"),
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Accuracy on this dataset's split "
                                                   "(default: the one the models' lineage records).",
                                                   show_default=False)] = None,
    label_column: LabelColumn = None, text_column: TextColumn = None, feature_columns: FeatureColumns = None, task: TaskOption = None,
    split: Annotated[str, typer.Option(help="Evaluation split.")] = "test",
    limit: Annotated[Optional[int], typer.Option(help="Evaluate a seeded subset of this many samples.")] = None,
    severity: Severity = None,
    no_accuracy: Annotated[bool, typer.Option("--no-accuracy", help="Latency only.")] = False,
    metric: Annotated[Optional[str], typer.Option(help="path/file.py:fn(outputs, targets) -> {name: value}, for "
                                                  "models that are not classifiers.")] = None,
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    seq_len: Annotated[Optional[str], typer.Option("--seq-len", help="Text models: sequence lengths, comma-separated "
                       "(e.g. 32,128,384); every batch is timed at each on real texts padded or truncated to it.",
                       show_default=False)] = None,
    duration: Annotated[float, typer.Option(help="Seconds of timing per artifact and batch (over all rounds).")] = 5.0,
    rounds: Annotated[int, typer.Option(help="Interleaved timing rounds.")] = 5,
    iterations: Annotated[Optional[int], typer.Option(help="Fixed iterations per round instead of --duration.")] = None,
    warmup: Annotated[int, typer.Option(help="Warm-up iterations per artifact and batch.")] = 10,
    threads: Annotated[Optional[int], typer.Option(help="Threads per backend (default: usable cores).")] = None,
    device: Annotated[str, typer.Option(help="cpu, or cuda for torch/onnxruntime.")] = "cpu",
    input_size: Annotated[Optional[str], typer.Option(
        "--input-size", help="Run one-image bundles and OpenVINO IRs at this resolution, N or HxW (bundles are "
        "exported at it).")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the torch runner.")] = False,
    trust_code: TrustCode = False, force: Force = False,
) -> None:
    """Measure accuracy, latency, size and MACs of several artifacts on several backends in one run.

    Example: deepslim bench base.safetensors --backend torch,onnxruntime,openvino --batch 1,8 --report runs/bench
    """
    dataset = dataset_ref(dataset, label_column, feature_columns, task, text_column)
    from benchmarks import LatencyConfig, RunnerOptions, bench as run_bench, load_metric, write_report
    from benchmarks.text_inputs import parse_sequences
    latency = LatencyConfig(batches=parse_batches(batch), sequences=parse_sequences(seq_len), rounds=rounds,
                            duration=duration, iterations=iterations, warmup=warmup)
    options = RunnerOptions(threads=threads, device=device, compile=compile)
    backends = _backends(backend)
    if report.exists() and not report.is_dir():
        raise ConfigError(f"--report {report} is a file; give a directory.")
    if (report / "report.json").exists() and not force:
        raise ConfigError(f"{report} already holds a report; pass --force to replace it or choose another --report.")
    user_metric = load_metric(metric) if metric else None
    from deepslim.data import check_split
    check_split(split)
    from pipeline.bench import check_sequence_lengths, plan_targets
    check_sequence_lengths(artifacts, latency.sequences)  # before the dataset is resolved
    texts = None  # --no-accuracy --seq-len: time on texts of --dataset or the models' own (else random token ids)
    if no_accuracy and latency.sequences:
        from deepslim.errors import DeepSlimError
        try:
            texts = _bench_data(artifacts, dataset, None)[0]
        except DeepSlimError:
            texts = None
    dataset, severity = (None, None) if no_accuracy else _bench_data(artifacts, dataset, severity)
    targets, notes = plan_targets(artifacts, backends, report / "artifacts", input_size=input_size,
                           dataset=dataset, sequences=latency.sequences, batches=latency.batches)
    from rich.console import Console
    console = Console(stderr=True)
    with console.status("benchmarking") as status:
        result = run_bench(targets, latency, dataset=dataset, split=split, limit=limit, severity=severity or 3, metric=user_metric, options=options,
                           tick=lambda text: status.update(text), notes=notes, texts=texts)
    paths = write_report(result, report)
    print_bench(result)
    typer.echo(f"report: {paths['report.html']} (also report.md, report.json)")


def _bench_data(artifacts: list[Path], dataset: str | None, severity: int | None) -> tuple[str, int]:
    """The dataset (and severity) of the accuracy columns: --dataset, else the one every artifact's lineage
    records."""
    from benchmarks.runners import read_meta
    from deepslim.bundle import read_header
    from deepslim.errors import DeepSlimError
    from deepslim.artifact import is_bundle
    from deepslim.fileio import require_model
    from deepslim.provenance import common_dataset
    models = []
    for path in artifacts:
        require_model(path, "artifact")
        try:
            meta = read_header(path) if is_bundle(path) else read_meta(path)
        except DeepSlimError:
            if dataset is None:
                raise
            meta = None  # the runner that loads it says precisely what is wrong
        models.append((path.name, meta.lineage if meta else [], meta.classes if meta else None))
    try:
        choice = common_dataset(dataset, models, severity=severity)
    except DeepSlimError as exc:
        raise type(exc)(f"{str(exc).rstrip('.')} (or --no-accuracy for latency only).") from None
    if choice.recorded and choice.why == "--dataset":
        typer.echo(f"note: --dataset {choice.spec} differs from the dataset the models were made on "
                   f"({choice.recorded}).", err=True)
    elif choice.why != "--dataset":
        why = choice.why.replace("model's", "models'")
        typer.echo(f"dataset: {choice.label()} ({why})", err=True)
    return choice.spec, choice.severity


def _backends(text: str):
    from benchmarks import Backend
    names = [b.strip() for b in text.split(",") if b.strip()]
    try:
        return [Backend(b) for b in names]
    except ValueError:
        raise ConfigError(f"--backend takes torch, onnxruntime, openvino or tensorrt, got '{text}'.") from None
