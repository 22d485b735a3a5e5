"""The one training loop behind train, fine-tune, distillation and QAT."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from deepslim.codespec import parse_code_spec
from deepslim.batchnorm import BatchNormGuard, batchnorm_layers
from deepslim.checkpoints import cpu_state, load_checkpoint, save_checkpoint
from deepslim.config import Augment, Init, OptimizerKind, Schedule, TrainConfig
from deepslim.data import aspect_note, collate_for, open_dataset
from deepslim.errors import ConfigError, ModelError, first_line
from deepslim.distributed import (DistContext, all_sum, batchnorm_sync, broadcast_buffers, launched_rank, local_device,
                                  raise_if_a_peer_stopped, restarted_from, setup)
from deepslim.evaluation import check_compatible, predict_all, resolve_device
from deepslim.finetune import Start, assess_start, finetune_config, kept_start_note
from deepslim.fingerprint import state_fingerprint
from deepslim.losses import task_criterion
from deepslim.metrics import task_metrics
from deepslim.modelio import batch_len, call, shapes, task_output, to_device
from deepslim.provenance import data_policies, recorded_name
from deepslim.models import BUILTIN, ModelBundle, find_head, load_model
from deepslim.signature import Signature
from deepslim.spec import StageRecord
from deepslim.tasks import Task

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
console = Console(stderr=True)


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_top1: float = float("-inf")  # the best val score: the task's primary metric (negated when lower is better)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the loop decided on its own, in words

    @property
    def best_val(self) -> float:
        return self.best_val_top1


def train(bundle: ModelBundle, dataset: str = "digits", config: TrainConfig | None = None, *, severity: int = 3,
          checkpoint: str | Path | None = None, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] | None = None) -> ModelBundle:
    """Train ``bundle`` on ``dataset``; keep the best epoch on the val split; test it; record the lineage.

    A bundle that starts trained is fine-tuned: at a tenth of the default learning rate unless
    ``config.lr`` is set, and its starting weights are kept when no epoch beats them on val
    (:mod:`deepslim.finetune`). What was decided is said through ``log``
    (default: the console, when ``progress``) and kept in the record's ``notes``.
    """
    cfg = config or TrainConfig()
    say = sayer(progress, log)
    start = time.perf_counter()
    source = open_dataset(dataset, severity=severity)
    check_compatible(bundle, source.info, dataset)
    seed_everything(cfg.seed)
    model = bundle.model
    initialize(model, cfg.init)
    if cfg.freeze_backbone:
        freeze_backbone(model, bundle.num_classes)
    spec = bundle.signature
    splits = open_splits(source, spec, cfg.augment, model, task=bundle.task)  # every split opens before any work
    # resume only from a checkpoint of these starting weights (the bundle, or --arch with its --weights)
    identity = {"arch": bundle.arch.to_json(), "input": input_identity(spec), "dataset": source.info.name,
                "starting weights": state_fingerprint(model)}
    device = local_device(setup(cfg.device), cfg.device)
    bundle = fit_target_scale(bundle, splits["train"])
    begin = measure_start(model, splits["val"], bundle.lineage, cfg, device, task=bundle.task, signature=spec)
    if not begin.trained:
        start_at_target_mean(model, bundle.task)
    cfg, lr_note = finetune_config(cfg, begin)
    if lr_note:
        say(lr_note)
    result = fit(model, splits["train"], splits["val"], cfg, checkpoint=Path(checkpoint) if checkpoint else None,
                 resume=resume, progress=progress, identity=identity, keep_start=begin.trained,
                 start_val_top1=begin.val_top1, bn_data=splits.get("bn"), task=bundle.task, signature=spec)
    notes = ([lr_note] if lr_note else []) + result.notes
    if result.best_epoch == 0:
        notes.append(kept_start_note(begin.val_top1, result.history))
        say(notes[-1])
    logits, labels = predict_all(model, splits["test"], device=device, signature=spec)
    test = task_metrics(bundle.task, logits, labels)
    record = StageRecord("train", {**cfg.to_json(), "dataset": recorded_name(dataset, severity),
                                   "task": bundle.task.to_json(), "data": data_policies(source, spec, cfg.augment)},
                         round(time.perf_counter() - start, 2),
                         {**val_metric(bundle.task, result.best_val_top1), "best_epoch": result.best_epoch,
                          "start_val_top1": begin.val_top1, "kept_start": result.best_epoch == 0,
                          "test": test, "history": result.history, "notes": notes}, versions=versions())
    return bundle.with_record(record, model=model.cpu().eval())


def open_splits(source, spec, augment, model: nn.Module, *, task: Task | None = None) -> dict[str, Dataset]:
    """train (augmented with ``augment``), val and test; and ``bn``, the train split without augmentation,
    when ``model`` has BatchNorm layers whose statistics may need recomputing."""
    splits = {name: source.split(name, spec, augment=augment if name == "train" else Augment.NONE, task=task)
              for name in ("train", "val", "test")}
    if batchnorm_layers(model, trainable_only=True):
        splits["bn"] = source.split("train", spec, augment=Augment.NONE, task=task)
    return splits


def fit_target_scale(bundle: ModelBundle, train_ds: Dataset) -> ModelBundle:
    """A regression bundle whose task records its train targets' mean and std (the loss's standard units)."""
    if bundle.task.kind.value != "regression" or bundle.task.scale:
        return bundle
    targets = np.stack([np.asarray(train_ds[i][1]) for i in range(len(train_ds))])
    return replace(bundle, task=bundle.task.with_target_scale(targets))


def start_at_target_mean(model: nn.Module, task: Task) -> None:
    """A regression trained from scratch starts predicting the train mean: its head's bias is set to it."""
    if task.kind.value != "regression" or not task.offset:
        return
    try:
        _, head = find_head(model, task.width)
    except ModelError:
        return
    if getattr(head, "bias", None) is not None and head.bias.shape == (task.width,):
        with torch.no_grad():
            head.bias.copy_(torch.tensor(task.offset))


def input_identity(signature: Signature) -> dict[str, Any]:
    """What a checkpoint records of the inputs (a one-image model: its input spec, as before signatures)."""
    return signature.to_input_spec().to_json() if signature.single_image else signature.to_json()


def val_metric(task: Task | None, score: float) -> dict[str, float]:
    """The best val score as a record's metric: ``val_top1`` for classification, ``val_<primary>`` else
    (a lower-is-better metric is stored as itself, not negated)."""
    if task is None or task.primary == "top1":
        return {"val_top1": score}
    value = score if task.primary_info.higher_is_better else -score
    return {f"val_{task.primary}": value, "val_score": score}


def measure_start(model: nn.Module, val_ds: Dataset, lineage: list[StageRecord], cfg: TrainConfig,
                  device: str, *, task: Task | None = None, signature: Signature | None = None) -> Start:
    """The model's val score (the primary metric) before any training step, and whether it starts trained."""
    logits, labels = predict_all(model, val_ds, batch_size=max(cfg.batch_size, 256), device=device,
                                 signature=signature)
    if task is None or task.is_classification:  # trained: top-1 well above chance; compared: the primary score
        start = assess_start(float(np.mean(logits.argmax(1) == labels)), labels, lineage, cfg.init)
        return start if task is None or task.primary == "top1" else \
            replace(start, val_top1=task.score(task_metrics(task, logits, labels)))
    metrics = task_metrics(task, logits, labels)
    start = assess_start(task.score(metrics), None, lineage, cfg.init)
    above = well_above_trivial(task, metrics, labels)
    if above and cfg.init is Init.DEFAULT:
        start = replace(start, trained_because="; ".join(filter(None, [start.trained_because, above])))
    return start


def well_above_trivial(task: Task, metrics: dict[str, float], targets: np.ndarray) -> str:
    """Why a regression or multilabel model's val metrics show it was trained (a quarter of the way from what
    the trivial predictor gets to perfect), or "" when they do not: R² >= 0.25 (the train mean scores 0);
    mAP a quarter of the way from the labels' prevalence to 1."""
    if task.kind.value == "regression" and metrics.get("r2", float("-inf")) >= 0.25:
        return f"val R² {metrics['r2']:.4f} at the start, 0 for the mean"
    if task.kind.value == "multilabel" and "map" in metrics:
        prevalence = float(np.mean(targets))
        if metrics["map"] >= prevalence + 0.25 * (1 - prevalence):
            return f"val mAP {metrics['map']:.4f} at the start, {prevalence:.2f} by chance"
    return ""


def sayer(progress: bool, log: Callable[[str], None] | None) -> Callable[[str], None]:
    """Where a stage's sentences go: ``log`` when given, else the console (rank 0, when ``progress``)."""
    if log is not None:
        return log
    if progress and launched_rank() == 0:  # known before the process group is set up
        return lambda message: console.print(message, highlight=False, soft_wrap=True)
    return lambda _message: None


def fit(model: nn.Module, train_ds: Dataset, val_ds: Dataset, cfg: TrainConfig, *, loss_fn: LossFn | None = None,
        checkpoint: Path | None = None, resume: bool = False, progress: bool = True,
        identity: dict[str, Any] | None = None, keep_start: bool = False, start_val_top1: float | None = None,
        bn_data: Dataset | None = None, task: Task | None = None, signature: Signature | None = None) -> FitResult:
    """Train ``model`` in place; at the end it holds the weights of the best epoch on ``val_ds``.

    ``keep_start`` validates the model before training (or takes ``start_val_top1``, measured by
    the caller) and lets that state win (best epoch 0) when no epoch beats it: fine-tuning
    then never ends below where it started.

    Before each validation, BatchNorm running statistics are recomputed on ``bn_data`` (training
    images without augmentation; default ``train_ds``) when their momentum is too slow to follow
    the weights or eval mode has collapsed on a training batch (:class:`deepslim.batchnorm.BatchNormGuard`);
    the rows say ``bn_recalibrated`` and ``notes`` says why, once.

    ``task`` decides the loss (:func:`deepslim.losses.task_criterion`) and the val score (its primary
    metric; default: classification, top-1); ``signature`` says which output the task reads.

    ``identity`` (architecture, input spec, dataset...) is stored in the checkpoint and must
    match on ``resume``, like the config. Under torchrun the model is wrapped in
    DistributedDataParallel, each rank trains on its shard, validation metrics come from
    predictions gathered over ranks, and only rank 0 writes the checkpoint.
    """
    ctx = setup(cfg.device)
    # the process count sets the batches per epoch, the schedule's length and the effective batch
    identity = {**(identity or {}), "processes": ctx.world_size}
    seed_everything(cfg.seed)
    device = resolve_device(local_device(ctx, cfg.device))
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("The model has no trainable parameters.")
    batches = len(_loader(train_ds, cfg, 0, ctx))
    optimizer = _optimizer(params, cfg)
    scheduler = _scheduler(optimizer, cfg, math.ceil(batches / cfg.accumulate))
    judge = Judge(task, signature, cfg.label_smoothing)
    loss_fn = loss_fn or judge.loss_fn
    state, first_epoch, best = FitResult(), 0, cpu_state(model)
    # torchrun restarted the group after a rank died: carry on from rank 0's last epoch
    restarted = not resume and restarted_from(checkpoint, ctx)
    resume = resume or restarted
    if keep_start and not resume:
        state.best_val_top1 = start_val_top1 if start_val_top1 is not None else \
            judge.validate(model, val_ds, cfg, device)["val_score"]
    if resume:
        data = load_checkpoint(checkpoint, model, optimizer, scheduler, cfg, identity, ctx)
        state = FitResult(list(data["history"]), data["best_epoch"], data["best_val_top1"], data["seconds"],
                          list(data.get("notes", [])))
        first_epoch, best = int(data["epoch"]), data["best"]
    note = _noter(state, progress and ctx.is_main)
    if restarted:
        note(f"torchrun restarted the workers after a failure; resumed from {checkpoint.name} after epoch "
             f"{first_epoch}")
    if ctx.enabled:  # the effective batch, and what a resumed run must match, depend on it
        note(f"data-parallel over {ctx.world_size} processes ({ctx.backend}): batch {cfg.batch_size} per process, "
             f"{cfg.batch_size * ctx.world_size} per step in all")
    with batchnorm_sync(model, cfg.sync_bn, ctx, device, note):
        guard = BatchNormGuard(model, bn_data if bn_data is not None else train_ds, note, read=judge.class_logits)
        net = _data_parallel(model, device) if ctx.enabled else model
        begin = time.perf_counter() - state.seconds
        with _progress(progress and ctx.is_main) as bar:
            task = bar.add_task("train", total=batches * cfg.epochs, completed=batches * first_epoch)
            for epoch in range(first_epoch, cfg.epochs):
                bar.update(task, description=f"epoch {epoch + 1}/{cfg.epochs}")
                if ctx.enabled:  # each rank draws its own augmentation and dropout, reproducibly after a resume
                    seed_everything(cfg.seed * 1_000_003 + epoch * 7_919 + ctx.rank)
                row = _train_epoch(net, _loader(train_ds, cfg, epoch, ctx), cfg, epoch, optimizer, scheduler, loss_fn,
                                   device, ctx, lambda: bar.advance(task))
                broadcast_buffers(model, ctx)
                guard.before_validation(row, epoch + 1)
                if row.get("bn_recalibrated"):
                    broadcast_buffers(model, ctx)
                row.update(judge.validate(model, val_ds, cfg, device))
                if row["val_score"] > state.best_val_top1:
                    state.best_val_top1, state.best_epoch = row["val_score"], epoch + 1
                    best = cpu_state(model)
                state.history.append(row)
                state.seconds = time.perf_counter() - begin
                if progress and ctx.is_main:
                    bar.console.print(judge.epoch_line(row, cfg.epochs), highlight=False, soft_wrap=True)
                if checkpoint is not None and ctx.is_main:
                    save_checkpoint(checkpoint, model, optimizer, scheduler, cfg, state, best, epoch, identity)
    model.load_state_dict(best)
    state.seconds = time.perf_counter() - begin
    return state


def _noter(state: FitResult, show: bool) -> Callable[[str], None]:
    """Keep a note in ``state.notes``; print it too when ``show``."""
    def note(message: str) -> None:
        if message in state.notes:  # said before an interruption
            return
        state.notes.append(message)
        if show:
            console.print(message, highlight=False, soft_wrap=True)
    return note


def _loader(train_ds: Dataset, cfg: TrainConfig, epoch: int, ctx: DistContext) -> DataLoader:
    """This rank's shuffled batches of one epoch (a DistributedSampler under torchrun)."""
    per_rank = math.ceil(len(train_ds) / ctx.world_size)
    drop_last = per_rank > cfg.batch_size
    if ctx.enabled:
        sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                     seed=cfg.seed)
        sampler.set_epoch(epoch)
        return DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                          drop_last=drop_last, collate_fn=collate_for(train_ds))
    return DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                      drop_last=drop_last, generator=torch.Generator().manual_seed(cfg.seed * 10_007 + epoch),
                      collate_fn=collate_for(train_ds))


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _train_epoch(net, loader, cfg, epoch, optimizer, scheduler, loss_fn, device, ctx, tick) -> dict[str, float]:
    """One pass over ``loader``; the optimizer steps every ``cfg.accumulate`` batches (and at the end)."""
    net.train()
    _freeze_frozen_batchnorm(net)
    total, count, batches = 0.0, 0, len(loader)
    optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(loader):
        x, y = to_device(x, device, non_blocking=True), y.to(device, non_blocking=True)
        group_start = i - i % cfg.accumulate
        group = min(cfg.accumulate, batches - group_start)  # micro-batches in this optimizer step
        steps_now = i == group_start + group - 1
        sync = contextlib.nullcontext() if steps_now or not ctx.enabled else net.no_sync()
        with sync:
            try:
                with _autocast(device, cfg.amp):
                    loss = loss_fn(net, x, y)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise_if_a_peer_stopped(exc, ctx, epoch)
                hint = "; check --input-size and --channels" if _looks_like_shape_error(exc) else ""
                raise ModelError(f"Training failed on a batch of shape {shapes(x)}: {first_line(exc)}"
                                 f"{hint}.") from exc
            if not torch.isfinite(loss):
                raise ConfigError(f"Training diverged (loss {loss.item()}) in epoch {epoch + 1}; lower --lr.")
            try:
                (loss / group).backward()
            except RuntimeError as exc:  # DDP reduces the gradients during backward
                raise_if_a_peer_stopped(exc, ctx, epoch)
                raise
        if steps_now:
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        total += loss.item() * batch_len(x)
        count += batch_len(x)
        tick()
    total, count = all_sum([total, count], ctx)
    return {"epoch": epoch + 1, "train_loss": total / max(count, 1), "lr": optimizer.param_groups[0]["lr"]}


def _looks_like_shape_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("shape", "size", "channels", "dimension"))


class Judge:
    """A task's loss and val score in the train loop; without a task, classification judged by top-1."""

    def __init__(self, task: Task | None, signature: Signature | None, label_smoothing: float = 0.0) -> None:
        self.task, self.signature = task, signature
        if task is None:
            self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        else:
            self.criterion = task_criterion(task, label_smoothing=label_smoothing)
        self.primary = "top1" if task is None else task.primary

    def output(self, out: Any) -> torch.Tensor:
        return out if self.signature is None else task_output(out, self.signature)

    def loss_fn(self, model: nn.Module, x: Any, y: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.output(call(model, x)), y)

    @property
    def class_logits(self) -> Callable[[Any], torch.Tensor] | None:
        """How the BatchNorm guard reads class logits (None: the task has none)."""
        return self.output if self.task is None or self.task.is_classification else None

    @torch.no_grad()
    def validate(self, model: nn.Module, val_ds: Dataset, cfg: TrainConfig, device) -> dict[str, float]:
        logits, labels = predict_all(model, val_ds, batch_size=max(cfg.batch_size, 256), device=str(device),
                                     signature=self.signature)
        loss = self.criterion(torch.from_numpy(logits), torch.from_numpy(labels)).item()
        if self.task is None or self.primary == "top1":
            top1 = float(np.mean(logits.argmax(1) == labels))
            return {"val_loss": loss, "val_top1": top1, "val_score": top1}
        metrics = task_metrics(self.task, logits, labels)
        return {"val_loss": loss, f"val_{self.primary}": metrics.get(self.primary, float("nan")),
                "val_score": self.task.score(metrics)}

    def epoch_line(self, row: dict[str, float], epochs: int) -> str:
        label = "top-1" if self.primary == "top1" else self.primary
        return (f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
                f"val {label} {row[f'val_{self.primary}']:.4f}  lr {row['lr']:.2e}")


def _autocast(device: torch.device, amp: bool):
    enabled = amp and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer is OptimizerKind.ADAMW:
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)


def _scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    total = steps_per_epoch * cfg.epochs
    if cfg.schedule is Schedule.ONECYCLE:
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.learning_rate, total_steps=total)
    warmup = steps_per_epoch * cfg.warmup
    cosine = cfg.schedule is Schedule.COSINE

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, disable=not enabled, transient=True)


# --- set-up helpers ---------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def initialize(model: nn.Module, init: Init) -> nn.Module:
    """Re-initialise Conv/Linear weights (``Init.DEFAULT`` keeps the architecture's own)."""
    if init is Init.DEFAULT:
        return model
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            if init is Init.KAIMING:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif init is Init.XAVIER:
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.normal_(module.weight, 0.0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def freeze_backbone(model: nn.Module, num_classes: int) -> str:
    """Freeze everything but the classifier head; return the head's name."""
    name, head = find_head(model, num_classes)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    return name


def _freeze_frozen_batchnorm(model: nn.Module) -> None:
    """Keep BatchNorm layers whose parameters are frozen in eval mode (their statistics too)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None \
                and not module.weight.requires_grad:
            module.eval()


def versions() -> dict[str, str]:
    import torchvision

    import deepslim
    return {"deepslim": deepslim.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__}


def model_for_dataset(arch: str, dataset: str, *, severity: int = 3, input_size: int | tuple[int, int] | None = None,
                      channels: int | None = None, arch_kwargs: dict[str, Any] | None = None,
                      weights: str | Path | None = None, pretrained: str | None = None,
                      seed: int | None = None, mean: tuple[float, ...] | None = None,
                      std: tuple[float, ...] | None = None, output: str | None = None,
                      primary_metric: str | None = None, tokenizer: str | Path | None = None,
                      max_length: int | None = None) -> ModelBundle:
    """A new model shaped for ``dataset``: its task (classes, labels or targets), its inputs and statistics.

    Image data: the data's mean/std (unless given, or ``pretrained``), its channels for built-in
    models, and for a file architecture its channels and native size when ``--channels`` /
    ``--input-size`` are not given (the signature's notes say what was assumed). Other data: the
    inputs it proposes, named after ``forward``'s parameters. ``seed`` seeds every generator before
    the weights are initialised, so the same seed gives the same starting model.
    """
    info = open_dataset(dataset, severity=severity).info
    if seed is not None:
        seed_everything(seed)
    task = info.task_of().with_primary(primary_metric)
    common = dict(arch=arch, task=task, arch_kwargs=arch_kwargs, weights=weights, pretrained=pretrained,
                  output=output, tokenizer=tokenizer, max_length=max_length)
    if not info.is_image:
        by_name = any(i.name != f"x{k}" and i.name != "x" for k, i in enumerate(info.inputs))
        return load_model(input_size=input_size, channels=channels, inputs=_with_stats(info.inputs, mean, std),
                          inputs_by_name=by_name, **common)
    notes: list[str] = []
    if arch not in BUILTIN and parse_code_spec(arch) is not None:
        input_size, channels, notes = _file_arch_defaults(info, input_size, channels)
    elif arch in BUILTIN:
        channels = channels if channels is not None else info.channels
    stats = {} if pretrained and mean is None else {"mean": mean or info.mean, "std": std or info.std}
    bundle = load_model(input_size=input_size, channels=channels, **stats, **common)
    stretched = aspect_note(info, bundle.signature)
    notes += [stretched] if stretched else []
    if notes:
        bundle.signature = replace(bundle.signature, notes=tuple(notes))
    return bundle


def _file_arch_defaults(info, input_size, channels) -> tuple[Any, int, list[str]]:
    """A file architecture's input size and channels: as given, else the data's (said in words)."""
    notes = []
    if input_size is None and info.native_size is not None:
        input_size = tuple(info.native_size)
        notes.append(f"input size {input_size[0]}x{input_size[1]} from the data (no --input-size)")
    if channels is None:
        channels = info.channels
        notes.append(f"{channels} channel{'s' if channels != 1 else ''} from the data (no --channels)")
    return input_size, channels, notes


def _with_stats(inputs, mean, std):
    """The data's inputs with a user's ``--mean``/``--std`` for its one image input."""
    if mean is None and std is None:
        return inputs
    images = [i for i in inputs if i.kind.value == "image"]
    if len(images) != 1:
        raise ConfigError("--mean and --std apply to a model with one image input.")
    image = images[0]
    m = tuple(mean or image.mean)
    sd = tuple(std or image.std)
    if len(m) == 1 and image.channels > 1:
        m, sd = m * image.channels, sd * image.channels
    return tuple(replace(i, mean=m, std=sd) if i is image else i for i in inputs)
