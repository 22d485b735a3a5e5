"""`deepslim compress prune`, `distill` and `quantize`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import (Accumulate, SyncBN, Arch, ArchKwargs, Augment, BatchSize, Channels, Dataset, Device, Epochs,
                             FeatureColumns, Force, InputSize, LabelColumn, TextColumn, LabelSmoothing, Lr, Mean, Model, Momentum,
                             Optim, PrimaryMetric, Quiet, Resume, Sched, Seed, Severity, Std, TaskOption, TaskOutput,
                             TrustCode, TrustPickle, WarmupEpochs, WeightDecay, Weights, Workers, choose_data,
                             dataset_ref, is_main_process, load_bundle, load_with_data, trusting, with_primary)
from commands.compress_tables import print_distill, print_prune, print_quantize
from compress.options import Activations, Allocation, Calibration, Importance, Method, QuantTarget, Recover
from deepslim.config import Augment as AugmentPolicy
from deepslim.config import OptimizerKind, Schedule
from deepslim.errors import ConfigError

compress_app = typer.Typer(help="Compression stages: structured pruning, knowledge distillation, quantization.",
                           no_args_is_help=True)


@compress_app.command("prune")
@trusting
def prune_cmd(
    model: Model = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Pruned bundle (.safetensors), or for a "
                                                   "Hugging Face model a directory (no suffix) that from_pretrained "
                                                   "loads.")] = None,
    ratio: Annotated[Optional[float], typer.Option(help="Fraction of channels removed (0 < R < 1).")] = None,
    head_ratio: Annotated[Optional[float], typer.Option(
        help="Fraction of attention heads removed per layer (0 <= R < 1; default: --ratio's).")] = None,
    depth: Annotated[Optional[int], typer.Option(
        help="Hugging Face encoders: keep N layers, evenly spaced with the first and last (6 of 12: 0,2,4,7,9,11).")]
    = None,
    speedup: Annotated[Optional[float], typer.Option(help="Reduce MACs this many times; the ratio is searched.")]
    = None,
    importance: Annotated[Importance, typer.Option(help="Which channels go.")] = Importance.L2,
    global_pruning: Annotated[bool, typer.Option("--global/--local", help="Rank channels across layers or within "
                                                 "each layer.")] = False,
    iterative_steps: Annotated[int, typer.Option(help="Prune in K steps, fine-tuning between them.")] = 1,
    round_to: Annotated[int, typer.Option(help="Keep channel counts multiples of N (1: off).")] = 8,
    max_layer_ratio: Annotated[float, typer.Option(help="No layer loses more than this fraction.")] = 0.9,
    ignore: Annotated[Optional[str], typer.Option(help="Comma-separated layer names never pruned (the head never "
                                                  "is).")] = None,
    finetune_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs after pruning (shared train loop).")] = 0,
    finetune_lr: Annotated[float, typer.Option(help="Fine-tuning learning rate (cosine schedule).")] = 0.03,
    finetune_optimizer: Annotated[OptimizerKind, typer.Option(help="Fine-tuning optimizer (adamw with a small "
                                                              "--finetune-lr, e.g. 1e-3, for transformers).")]
    = OptimizerKind.SGD,
    recover: Annotated[Recover, typer.Option(help="How fine-tuning recovers accuracy: cross-entropy with the "
                                             "labels, or knowledge distillation from the unpruned model.")]
    = Recover.FINETUNE,
    temperature: Annotated[float, typer.Option(help="--recover kd: softmax temperature.")] = 4.0,
    alpha: Annotated[float, typer.Option(help="--recover kd: weight of the KD term against cross-entropy.")] = 0.5,
    sparsity_train_epochs: Annotated[int, typer.Option(help="bn importance: epochs of L1 on BatchNorm scales first "
                                                       "(network slimming).")] = 0,
    dataset: Annotated[Optional[str], typer.Option(
        "--dataset", "-d", help="Data for BatchNorm recalibration, fine-tuning, Taylor importance, sensitivity and "
        "accuracy (default: the dataset recorded in the model's lineage).", show_default=False)] = None,
    label_column: LabelColumn = None, text_column: TextColumn = None, feature_columns: FeatureColumns = None, task: TaskOption = None,
    primary_metric: PrimaryMetric = None,
    severity: Severity = None,
    sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Measure per-layer sensitivity (table + plot); "
                                              "without -o, only that.")] = False,
    allocation: Annotated[Allocation, typer.Option(help="Same ratio for every layer, or spread by sensitivity.")]
    = Allocation.UNIFORM,
    report: Annotated[Optional[Path], typer.Option(help="Directory for the sensitivity table and plot.")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Check exportability before pruning.")] = True,
    arch: Arch = None, weights: Weights = None, arch_kwargs: ArchKwargs = None, trust_pickle: TrustPickle = False,
    trust_code: TrustCode = False, input_size: InputSize = None, channels: Channels = None, mean: Mean = None,
    std: Std = None, task_output: TaskOutput = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0, sync_bn: SyncBN = False,
    force: Force = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Remove whole channels (torch-pruning's DepGraph) so the model is really smaller and faster.

    Example: deepslim compress prune base.safetensors --speedup 2 --finetune-epochs 5 -o pruned.safetensors
    """
    dataset = dataset_ref(dataset, label_column, feature_columns, task, text_column)
    from compress.prune import PruneConfig
    layers = tuple(n.strip() for n in (ignore or "").split(",") if n.strip())
    wants_sensitivity = sensitivity or allocation is Allocation.SENSITIVITY
    if output is None and not sensitivity:
        raise ConfigError("Give -o OUTPUT for the pruned bundle (or --sensitivity for the analysis only).")
    if output is None and ratio is None and speedup is None:
        ratio = 0.5  # analysis only: the target is unused, the importance and --ignore settings are
    cfg = PruneConfig(ratio=ratio, speedup=speedup, importance=importance.value, global_pruning=global_pruning,
                      iterative_steps=iterative_steps, round_to=None if round_to == 1 else round_to,
                      max_layer_ratio=max_layer_ratio, ignore=layers, finetune_epochs=finetune_epochs,
                      finetune_lr=finetune_lr, recover=recover, temperature=temperature, alpha=alpha,
                      sparsity_train_epochs=sparsity_train_epochs, seed=seed, head_ratio=head_ratio, depth=depth,
                      finetune_optimizer=finetune_optimizer, sync_bn=sync_bn)
    from deepslim.fileio import check_output
    out = check_output(output, force=force, inputs=[model, weights], suffix=".safetensors", directory=True) \
        if output else None
    bundle, data = load_with_data(model, arch=arch, weights=weights, arch_kwargs=arch_kwargs, input_size=input_size,
                                  channels=channels, trust_pickle=trust_pickle, dataset=dataset, severity=severity,
                                  seed=seed, quiet=quiet, mean=mean, std=std, task_output=task_output,
                                  primary_metric=primary_metric)
    dataset = data.spec
    from deepslim.models import check_saveable
    check_saveable(bundle, out)
    if allocation is Allocation.SENSITIVITY and bundle.arch.source.value == "hf":
        raise ConfigError("--allocation sensitivity gives the FFNs different widths, which a Hugging Face config "
                          "(one intermediate size) cannot hold; use --allocation uniform.")
    from rich.console import Console
    console = Console(stderr=True, quiet=quiet or not is_main_process())  # under torchrun rank 0 speaks
    _prune_preflight(bundle, cfg, check, console)
    if wants_sensitivity:
        cfg = _sensitivity(bundle, cfg, data, report or _default_report(out), allocation, console)
    if out is None:
        return
    from compress.prune import prune
    from deepslim.models import save_model
    pruned = prune(bundle, cfg, dataset=dataset, severity=data.severity, progress=not quiet,
                   log=lambda m: console.print(m, highlight=False))
    if not is_main_process():  # every rank pruned alike and fine-tuned its shard; rank 0 writes
        return
    save_model(pruned, out, force=force)
    print_prune(pruned, out)
    record = pruned.lineage[-1].metrics
    if "sequence_length" in record:
        console.print(f"MACs counted at sequence length {record['sequence_length']} (the tokenizer's max_length)",
                      highlight=False)
    if "sizes" in record:
        s = record["sizes"]
        console.print(f"config: {s['layers']} layers, FFN width {s['ffn']}, heads per layer {s['heads']}",
                      highlight=False)


def _default_report(out: Path | None) -> Path:
    return out.with_name(out.stem + "_sensitivity") if out else Path("runs/prune-sensitivity")


def _prune_preflight(bundle, cfg, check: bool, console) -> None:
    """Before any long job: exportability per target, prunable groups, layers left out and why."""
    from compress.prune import plan
    the_plan = plan(bundle, cfg)
    if check:
        from export import check_exportable
        for r in check_exportable(bundle):
            ops = f" (failing ops: {', '.join(r.failing_ops)})" if r.failing_ops else ""
            console.print(f"export check: {r.target}: {r.status}: {r.detail}{ops}", highlight=False)
    console.print(f"{the_plan.prunable_groups} prunable layer groups"
                  + (f", {the_plan.attention_modules} attention modules (whole heads where the module allows)"
                     if the_plan.attention_modules else ""), highlight=False)
    for layer, why in the_plan.ignored.items():
        console.print(f"left out: {layer} ({why})", highlight=False)


def _sensitivity(bundle, cfg, data, report: Path, allocation, console):
    from dataclasses import replace
    from compress.sensitivity import allocate, analyze, write_sensitivity
    with console.status("pruning sensitivity") as status:
        base, rows = analyze(bundle, data.spec, cfg, severity=data.severity, tick=lambda text: status.update(text))
    if is_main_process():  # under torchrun every rank measures (each needs the allocation); rank 0 writes
        paths = write_sensitivity(base, rows, report)
        console.print(f"sensitivity ({base.describe()}: {base:.4f}): {paths['md']} and {paths['png']}",
                      highlight=False)
    if allocation is Allocation.SENSITIVITY and (cfg.ratio or cfg.speedup):
        weights = allocate(rows)
        layer_ratios = {k: min(w * cfg.ratio, cfg.max_layer_ratio) for k, w in weights.items()} if cfg.ratio \
            else weights
        return replace(cfg, layer_ratios=layer_ratios)
    return cfg


@compress_app.command("distill")
@trusting
def distill_cmd(
    teacher: Annotated[Path, typer.Option(
        "--teacher", help="The teacher: a bundle or model directory, or an exported .onnx / OpenVINO .xml / "
                          "TensorRT .engine (run through its runtime: one inference per training batch, logits "
                          "only).", show_default=False)],
    student: Annotated[str, typer.Option(
        "--student", help="The student: a bundle or model directory (e.g. a pruned model), small_cnn, a "
                          "torchvision name, hf:TYPE with --arch-kwargs (a text one takes the teacher's "
                          "tokenizer), or path/file.py:build_fn (built at the teacher's input size).",
        show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Distilled student bundle (.safetensors), or for "
                                         "a Hugging Face student a directory (no suffix) from_pretrained loads.",
                                         show_default=False)],
    dataset: Dataset = None, label_column: LabelColumn = None, text_column: TextColumn = None, feature_columns: FeatureColumns = None,
    task: TaskOption = None, primary_metric: PrimaryMetric = None, severity: Severity = None,
    temperature: Annotated[float, typer.Option(help="Softmax temperature of the KD term (> 0).")] = 4.0,
    alpha: Annotated[float, typer.Option(help="Weight of the KD term; 1 - alpha goes to cross-entropy with the "
                                         "labels.")] = 0.5,
    feature_pairs: Annotated[Optional[str], typer.Option(
        help="Also match features: teacher.LAYER:student.LAYER,... (a learned 1x1 adapter when channels "
             "differ; `deepslim info MODEL --layers` lists the names).")] = None,
    feature_weight: Annotated[float, typer.Option(help="Weight of the feature MSE term.")] = 1.0,
    hidden_weight: Annotated[float, typer.Option(
        help="Transformers: weight of the hidden-state MSE between each student encoder layer and its teacher layer "
             "(--layer-map; a learned projection when widths differ, not saved). 0: off.")] = 0.0,
    attention_weight: Annotated[float, typer.Option(
        help="Transformers: weight of the attention-map loss over the --layer-map pairs (heads averaged when their "
             "counts differ). 0: off.")] = 0.0,
    layer_map: Annotated[str, typer.Option(
        help="Which teacher layer each student encoder layer learns: auto (evenly spaced, last to last) or "
             "STUDENT:TEACHER pairs such as 0:1,1:3 (0-based).")] = "auto",
    attention_loss: Annotated[str, typer.Option(
        help="Attention-map loss: kl (teacher to student, per query) or mse (of the probabilities).")] = "kl",
    teacher_backend: Annotated[Optional[str], typer.Option(
        help="Runtime of an exported teacher: onnxruntime, openvino or tensorrt (default: by file type).")] = None,
    arch_kwargs: ArchKwargs = None, input_size: InputSize = None, channels: Channels = None, mean: Mean = None,
    std: Std = None, task_output: TaskOutput = None, trust_pickle: TrustPickle = False, trust_code: TrustCode = False,
    epochs: Epochs = 10, batch_size: BatchSize = 64, lr: Lr = None, optimizer: Optim = OptimizerKind.SGD,
    momentum: Momentum = 0.9, weight_decay: WeightDecay = 5e-4, schedule: Sched = Schedule.COSINE,
    warmup_epochs: WarmupEpochs = None, label_smoothing: LabelSmoothing = 0.0, augment: Augment = AugmentPolicy.LIGHT,
    accumulate: Accumulate = 1, sync_bn: SyncBN = False, seed: Seed = 0, device: Device = "auto",
    workers: Workers = 0, resume: Resume = False, force: Force = False, quiet: Quiet = False,
) -> None:
    """Train a smaller student to match a teacher (Hinton KD, optional feature distillation).

    Runs the same under `torchrun --nproc-per-node N --no-python deepslim compress distill ...` (DDP:
    gloo on CPU, NCCL on GPUs; only rank 0 writes).

    Example: deepslim compress distill --teacher base.safetensors --student pruned.safetensors -o student.safetensors
    """
    dataset = dataset_ref(dataset, label_column, feature_columns, task, text_column)
    from compress.distill import DistillConfig, parse_feature_pairs
    from deepslim.config import TrainConfig
    train_cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
                            weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs,
                            label_smoothing=label_smoothing, augment=augment, seed=seed, device=device,
                            num_workers=workers, accumulate=accumulate, sync_bn=sync_bn)
    if attention_loss not in ("kl", "mse"):
        raise ConfigError(f"--attention-loss must be kl or mse, got '{attention_loss}'.")
    cfg = DistillConfig(temperature=temperature, alpha=alpha, feature_pairs=parse_feature_pairs(feature_pairs),
                        feature_weight=feature_weight, hidden_weight=hidden_weight, attention_weight=attention_weight,
                        layer_map=layer_map, attention_loss=attention_loss, train=train_cfg)
    student_path = Path(student) if _is_model_file(student) or Path(student).is_dir() else None
    from deepslim.fileio import check_output, require_file
    out = check_output(output, force=force, inputs=[teacher, student_path], suffix=".safetensors", directory=True)
    if not teacher.is_dir():
        require_file(teacher, "teacher")
    if student_path is not None and not student_path.is_dir():
        require_file(student_path, "student")
    from compress.distill import distill, open_teacher
    from deepslim.models import check_saveable, save_model
    teacher_model = _load_teacher(teacher, teacher_backend, trust_pickle, dataset, severity)
    data = choose_data(dataset, _lineage(teacher_model), severity=severity, classes=teacher_model.classes,
                       task=teacher_model.task, what=f"The teacher {teacher.name}", quiet=quiet)
    dataset, severity_value = data.spec, data.severity
    import tempfile
    with tempfile.TemporaryDirectory(prefix="deepslim-tokenizer-") as scratch:
        text = _teacher_tokenizer(student, student_path, teacher_model, Path(scratch))
        student_bundle = _student(student, student_path, teacher_model, data, arch_kwargs=arch_kwargs,
                                  input_size=input_size, channels=channels, mean=mean, std=std,
                                  task_output=task_output, trust_pickle=trust_pickle, seed=seed, **text)
    student_bundle = with_primary(student_bundle, primary_metric)
    check_saveable(student_bundle, out)
    from rich.console import Console
    console = Console(stderr=True, quiet=quiet or not is_main_process())
    ckpt = out.with_name(out.name + ".ckpt")
    result = distill(open_teacher(teacher_model, backend=teacher_backend), student_bundle, dataset, cfg,
                     severity=severity_value, checkpoint=ckpt, resume=resume, progress=not quiet,
                     log=lambda m: console.print(m, highlight=False))
    if not is_main_process():
        return
    save_model(result, out, force=force)
    ckpt.unlink(missing_ok=True)
    print_distill(result, out)


def _student(student: str, path: Path | None, teacher, data, *, input_size, channels, seed, **load):
    """The student: a bundle file as it is, or an architecture built for the data at the teacher's image input
    (its size and, but for torchvision models, its channels) unless --input-size / --channels say otherwise."""
    if path is not None:
        return load_bundle(path, arch=None, weights=None, input_size=input_size, channels=channels,
                           dataset=data.spec, severity=data.severity_option, **load)
    image = teacher.signature.image if teacher.signature.single_image else None
    if image is not None:
        from deepslim.models import torchvision_names
        if channels is None and student not in torchvision_names():  # torchvision models take 3 channels
            channels = image.channels
        if input_size is None:
            h, w = image.size
            input_size = str(h) if h == w else f"{h}x{w}"
    load = {**load, "trust_pickle": False}
    return load_bundle(None, arch=student, weights=None, input_size=input_size, channels=channels,
                       dataset=data.spec, severity=data.severity_option, seed=seed, **load)


def _teacher_tokenizer(student: str, path: Path | None, teacher, scratch: Path) -> dict:
    """A new Hugging Face student of a text teacher (hf:TYPE, or a directory without deepslim's header or a
    tokenizer of its own) is fed by the teacher's tokenizer at its max length: both must see the same token ids."""
    text = teacher.signature.text
    from deepslim import hf
    directory = Path(student[3:]) if student.startswith("hf:") else path
    if student.startswith("hf:") and not hf.is_hf_dir(directory):
        new = True  # hf:TYPE, built from --arch-kwargs
    else:
        new = directory is not None and hf.is_hf_dir(directory) and not (directory / hf.SIDECAR).is_file() \
            and not hf.has_tokenizer(directory)
    if text is None or not new:
        return {}
    with hf.offline():
        text.tokenizer().save_pretrained(str(scratch))
    return {"tokenizer": scratch, "max_length": text.max_length}


def _is_model_file(student: str) -> bool:
    """A bundle or pickled module path, as opposed to an architecture name or file.py:fn."""
    return Path(student).suffix.lower() in (".safetensors", ".pt", ".pth") and ".py:" not in student


def _lineage(teacher) -> list:
    """The teacher's lineage: a bundle's, or the metadata of an exported artifact."""
    runner = getattr(teacher, "runner", None)
    return list(runner.meta.lineage) if runner is not None else list(teacher.lineage)


def _load_teacher(path: Path, backend: str | None, trust_pickle: bool, dataset: str | None, severity: int | None):
    """Exported artifacts stay paths (run through their runner); anything else loads as a bundle."""
    if path.suffix.lower() in (".onnx", ".xml", ".engine", ".plan"):
        if backend is not None and backend not in ("onnxruntime", "openvino", "tensorrt"):
            raise ConfigError(f"--teacher-backend must be onnxruntime, openvino or tensorrt, got '{backend}'.")
        from compress.distill import RunnerTeacher
        return RunnerTeacher(path, backend)
    if backend is not None:
        raise ConfigError("--teacher-backend applies to exported teachers (.onnx, .xml, .engine) only.")
    return load_bundle(path, arch=None, weights=None, arch_kwargs=None, input_size=None, channels=None,
                       trust_pickle=trust_pickle, dataset=dataset, severity=severity)


@compress_app.command("quantize")
@trusting
def quantize_cmd(
    model: Annotated[Path, typer.Argument(help="A bundle (.safetensors), or a deepslim fp32 .onnx for ptq, "
                                          "dynamic and fp16.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Quantized artifact: .onnx for onnxruntime and "
                                         "tensorrt, .xml (+ .bin) for openvino.", show_default=False)],
    method: Annotated[Method, typer.Option(help="ptq: static int8 calibrated on data; qat: fake-quantized "
                                           "fine-tuning; dynamic: onnxruntime int8 weights; fp16.")] = Method.PTQ,
    target: Annotated[QuantTarget, typer.Option(help="The runtime the artifact is for (sets its format).")]
    = QuantTarget.ONNXRUNTIME,
    dataset: Dataset = None, label_column: LabelColumn = None, text_column: TextColumn = None, feature_columns: FeatureColumns = None,
    task: TaskOption = None, primary_metric: PrimaryMetric = None, severity: Severity = None,
    calibration: Annotated[Optional[Calibration], typer.Option(
        help="Activation range estimation (default: the library's own: onnxruntime minmax, NNCF's preset).")]
    = None,
    calibration_samples: Annotated[Optional[int], typer.Option(
        help="Training images used for calibration (default 300, or the whole train split when smaller).")] = None,
    per_channel: Annotated[bool, typer.Option("--per-channel/--per-tensor", help="Weight scales per output "
                                              "channel (TensorRT requires it).")] = True,
    activations: Annotated[Activations, typer.Option(
        help="Activation int8 type: auto = u8 for onnxruntime CPUs (7-bit weights without VNNI), symmetric s8 "
             "for TensorRT.")] = Activations.AUTO,
    max_accuracy_drop: Annotated[Optional[float], typer.Option(
        help="How much of the primary metric (top-1 by default; --primary-metric) the quantized model may lose on "
             "the val split, in points (percent of the baseline for mae/rmse/loss); the most sensitive layers "
             "stay fp32 until it fits.")] = None,
    input_size: Annotated[Optional[int], typer.Option(
        "--input-size", help="Quantize at another resolution N than the model was trained at.")] = None,
    qat_epochs: Annotated[int, typer.Option(help="qat: fine-tuning epochs.")] = 3,
    qat_lr: Annotated[float, typer.Option(help="qat: learning rate (SGD, cosine).")] = 0.005,
    recover: Annotated[Recover, typer.Option(help="qat: cross-entropy, or KD from the fp32 model.")]
    = Recover.FINETUNE,
    temperature: Annotated[float, typer.Option(help="qat --recover kd: softmax temperature.")] = 4.0,
    alpha: Annotated[float, typer.Option(help="qat --recover kd: weight of the KD term.")] = 0.5,
    latency: Annotated[bool, typer.Option("--latency/--no-latency", help="Time fp32 vs quantized on the target's "
                                          "runner and warn when int8 is not faster.")] = True,
    smooth_quant: Annotated[Optional[bool], typer.Option(
        "--smooth-quant/--no-smooth-quant", help="ptq --target openvino, transformer models: NNCF's SmoothQuant on "
        "or off (default: both measured on val, the better kept).", show_default=False)] = None,
    seed: Seed = 0, trust_code: TrustCode = False, force: Force = False, quiet: Quiet = False,
) -> None:
    """Quantize to int8 (or fp16) in the format the target runs fastest, measured against fp32.

    Example: deepslim compress quantize base.safetensors --method ptq --target openvino -o base_int8.xml
    """
    dataset = dataset_ref(dataset, label_column, feature_columns, task, text_column)
    from deepslim.distributed import launched
    if launched() and method is not Method.QAT:
        raise ConfigError(f"--method {method.value} runs in one process (calibration and timing are not "
                          "data-parallel); start it without torchrun, which only --method qat uses.")
    from compress.quantize import QuantizeConfig, check_suffix
    cfg = QuantizeConfig(method=method, target=target, calibration=calibration,
                         calibration_samples=calibration_samples, per_channel=per_channel, activations=activations,
                         max_accuracy_drop=max_accuracy_drop, input_size=input_size, qat_epochs=qat_epochs,
                         qat_lr=qat_lr, recover=recover, temperature=temperature, alpha=alpha, latency=latency,
                         smooth_quant=smooth_quant, seed=seed)
    from deepslim.fileio import check_output, require_model
    check_suffix(output, cfg)
    out = check_output(output, force=force, inputs=[model], suffix=cfg.suffix)
    if out.suffix.lower() == ".xml":
        check_output(out.with_suffix(".bin"), force=force, inputs=[model])
    require_model(model, "model")
    if model.suffix.lower() == ".onnx":
        if method is Method.QAT:
            raise ConfigError("--method qat fine-tunes a PyTorch model; give a bundle, not an ONNX file.")
        if primary_metric:
            raise ConfigError("--primary-metric applies to a bundle, whose task can be judged by another metric; an "
                              "ONNX file keeps the task it was exported with.")
        from benchmarks.runners import read_meta
        source, meta = model, read_meta(model)
        lineage, classes, model_task = meta.lineage, meta.classes, meta.task
    else:
        source = load_bundle(model, arch=None, weights=None, arch_kwargs=None, input_size=None, channels=None,
                             trust_pickle=False, dataset=dataset, severity=severity, primary_metric=primary_metric)
        lineage, classes, model_task = source.lineage, source.classes, source.task
    data = choose_data(dataset, lineage, severity=severity, classes=classes, task=model_task, what=model.name,
                       quiet=quiet)
    from rich.console import Console
    console = Console(stderr=True, quiet=quiet or not is_main_process())  # QAT under torchrun: rank 0 speaks
    from compress.quantize import quantize
    result = quantize(source, out, cfg, data.spec, severity=data.severity, progress=not quiet,
                      log=lambda m: console.print(m, highlight=False))
    if is_main_process():
        print_quantize(result, model_task)
