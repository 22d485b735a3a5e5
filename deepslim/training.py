"""The one training loop behind train, fine-tune, distillation and QAT."""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from deepslim.config import Init, OptimizerKind, Schedule, TrainConfig
from deepslim.data import open_dataset
from deepslim.errors import ConfigError, InputFileError, ModelError, first_line
from deepslim.distributed import DistContext, all_sum, broadcast_buffers, context, local_device, setup
from deepslim.evaluation import check_compatible, predict_all, resolve_device
from deepslim.fileio import atomic_path
from deepslim.fingerprint import state_fingerprint
from deepslim.metrics import classification_metrics
from deepslim.models import BUILTIN, ModelBundle, find_head, load_model
from deepslim.spec import StageRecord

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
console = Console(stderr=True)


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_top1: float = -1.0
    seconds: float = 0.0


def train(bundle: ModelBundle, dataset: str = "digits", config: TrainConfig | None = None, *, severity: int = 3,
          checkpoint: str | Path | None = None, resume: bool = False, progress: bool = True) -> ModelBundle:
    """Train ``bundle`` on ``dataset``; keep the best epoch on the val split; test it; record the lineage."""
    cfg = config or TrainConfig()
    start = time.perf_counter()
    source = open_dataset(dataset, severity=severity)
    check_compatible(bundle, source.info.num_classes, dataset)
    seed_everything(cfg.seed)
    model = bundle.model
    initialize(model, cfg.init)
    if cfg.freeze_backbone:
        freeze_backbone(model, bundle.num_classes)
    spec = bundle.input_spec
    splits = {name: source.split(name, spec, augment=cfg.augment and name == "train")
              for name in ("train", "val", "test")}  # every split opens before any work
    # resume only from a checkpoint of these starting weights (the bundle, or --arch with its --weights)
    identity = {"arch": bundle.arch.to_json(), "input": spec.to_json(), "dataset": source.info.name,
                "starting weights": state_fingerprint(model)}
    result = fit(model, splits["train"], splits["val"], cfg, checkpoint=Path(checkpoint) if checkpoint else None,
                 resume=resume, progress=progress, identity=identity)
    logits, labels = predict_all(model, splits["test"], device=local_device(context(), cfg.device))
    test = classification_metrics(logits, labels)
    record = StageRecord("train", {**cfg.to_json(), "dataset": source.info.name},
                         round(time.perf_counter() - start, 2),
                         {"val_top1": result.best_val_top1, "best_epoch": result.best_epoch,
                          "test": test, "history": result.history}, versions=versions())
    return bundle.with_record(record, model=model.cpu().eval())


def fit(model: nn.Module, train_ds: Dataset, val_ds: Dataset, cfg: TrainConfig, *, loss_fn: LossFn | None = None,
        checkpoint: Path | None = None, resume: bool = False, progress: bool = True,
        identity: dict[str, Any] | None = None, keep_start: bool = False) -> FitResult:
    """Train ``model`` in place; at the end it holds the weights of the best epoch on ``val_ds``.

    ``keep_start`` validates the model before training and lets that state win (best epoch 0)
    when no epoch beats it: fine-tuning (QAT) then never ends below where it started.

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
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    loss_fn = loss_fn or (lambda m, x, y: criterion(m(x), y))
    state, first_epoch, best = FitResult(), 0, _cpu_state(model)
    if keep_start and not resume:
        state.best_val_top1 = _validate(model, val_ds, cfg, criterion, device)["val_top1"]
    if resume:
        state, first_epoch, best = _load_checkpoint(checkpoint, model, optimizer, scheduler, cfg, identity, ctx)
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
            row.update(_validate(model, val_ds, cfg, criterion, device))
            if row["val_top1"] > state.best_val_top1:
                state.best_val_top1, state.best_epoch = row["val_top1"], epoch + 1
                best = _cpu_state(model)
            state.history.append(row)
            state.seconds = time.perf_counter() - begin
            if progress and ctx.is_main:
                bar.console.print(_epoch_line(row, cfg.epochs), highlight=False, soft_wrap=True)
            if checkpoint is not None and ctx.is_main:
                _save_checkpoint(checkpoint, model, optimizer, scheduler, cfg, state, best, epoch, identity)
    model.load_state_dict(best)
    state.seconds = time.perf_counter() - begin
    return state


def _loader(train_ds: Dataset, cfg: TrainConfig, epoch: int, ctx: DistContext) -> DataLoader:
    """This rank's shuffled batches of one epoch (a DistributedSampler under torchrun)."""
    per_rank = math.ceil(len(train_ds) / ctx.world_size)
    drop_last = per_rank > cfg.batch_size
    if ctx.enabled:
        sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                     seed=cfg.seed)
        sampler.set_epoch(epoch)
        return DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                          drop_last=drop_last)
    return DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                      drop_last=drop_last, generator=torch.Generator().manual_seed(cfg.seed * 10_007 + epoch))


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
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        group_start = i - i % cfg.accumulate
        group = min(cfg.accumulate, batches - group_start)  # micro-batches in this optimizer step
        steps_now = i == group_start + group - 1
        sync = contextlib.nullcontext() if steps_now or not ctx.enabled else net.no_sync()
        with sync:
            try:
                with _autocast(device, cfg.amp):
                    loss = loss_fn(net, x, y)
            except (RuntimeError, ValueError, TypeError) as exc:
                hint = "; check --input-size and --channels" if _looks_like_shape_error(exc) else ""
                raise ModelError(f"Training failed on a batch of shape {tuple(x.shape)}: {first_line(exc)}"
                                 f"{hint}.") from exc
            if not torch.isfinite(loss):
                raise ConfigError(f"Training diverged (loss {loss.item()}) in epoch {epoch + 1}; lower --lr.")
            (loss / group).backward()
        if steps_now:
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        total += loss.item() * len(y)
        count += len(y)
        tick()
    total, count = all_sum([total, count], ctx)
    return {"epoch": epoch + 1, "train_loss": total / max(count, 1), "lr": optimizer.param_groups[0]["lr"]}


def _looks_like_shape_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("shape", "size", "channels", "dimension"))


@torch.no_grad()
def _validate(model, val_ds, cfg, criterion, device) -> dict[str, float]:
    logits, labels = predict_all(model, val_ds, batch_size=max(cfg.batch_size, 256), device=str(device))
    loss = criterion(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    return {"val_loss": loss, "val_top1": float(np.mean(logits.argmax(1) == labels))}


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


def _epoch_line(row: dict[str, float], epochs: int) -> str:
    return (f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"val top-1 {row['val_top1']:.4f}  lr {row['lr']:.2e}")


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, disable=not enabled, transient=True)


# --- checkpoints (torch.save of tensors and plain data; loaded with weights_only=True) ---------

def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _save_checkpoint(path: Path, model, optimizer, scheduler, cfg: TrainConfig, state: FitResult,
                     best: dict[str, torch.Tensor], epoch: int, identity: dict[str, Any]) -> None:
    payload = {"epoch": epoch + 1, "config": cfg.to_json(), "identity": json.dumps(identity, sort_keys=True), "model": _cpu_state(model),
               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "best": best,
               "best_epoch": state.best_epoch, "best_val_top1": state.best_val_top1, "history": state.history,
               "seconds": state.seconds, "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_checkpoint(path: Path | None, model, optimizer, scheduler, cfg: TrainConfig, identity: dict[str, Any],
                     ctx: DistContext):
    if path is None or not path.is_file():
        raise ConfigError(f"--resume was given but there is no checkpoint {path}; run without --resume to start.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        saved = data["config"]
    except Exception as exc:  # any unreadable checkpoint: one sentence
        raise InputFileError(f"Checkpoint {path} is unreadable ({type(exc).__name__}); delete it and start again.") from exc
    differs = sorted(k for k, v in cfg.to_json().items() if saved.get(k) != v and k != "device")
    saved_identity = json.loads(data.get("identity", "{}"))
    differs += sorted(k for k in set(identity) | set(saved_identity) if identity.get(k) != saved_identity.get(k))
    if differs:
        raise ConfigError(f"Checkpoint {path} was made with other settings ({', '.join(differs)}); rerun with the "
                          "same model, data and options, or without --resume.")
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as exc:
        raise ConfigError(f"Checkpoint {path} does not fit this model ({first_line(exc)}); rerun without "
                          "--resume.") from exc
    optimizer.load_state_dict(data["optimizer"])
    scheduler.load_state_dict(data["scheduler"])
    torch.set_rng_state(data["torch_rng"])
    random.setstate(_as_tuple(data["python_rng"]))
    state = FitResult(list(data["history"]), data["best_epoch"], data["best_val_top1"], data["seconds"])
    if ctx.is_main:
        console.print(f"resuming from {path} after epoch {data['epoch']}", highlight=False)
    return state, int(data["epoch"]), data["best"]


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


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


def model_for_dataset(arch: str, dataset: str, *, severity: int = 3, input_size: int | None = None,
                      channels: int | None = None, arch_kwargs: dict[str, Any] | None = None,
                      weights: str | Path | None = None, pretrained: str | None = None,
                      seed: int | None = None) -> ModelBundle:
    """A new model shaped for ``dataset``: its classes, its statistics, its channels for built-in models.

    ``seed`` seeds every generator before the weights are initialised, so the same seed
    gives the same starting model.
    """
    info = open_dataset(dataset, severity=severity).info
    if seed is not None:
        seed_everything(seed)
    builtin = arch in BUILTIN
    stats = {} if pretrained else {"mean": info.mean, "std": info.std}
    return load_model(arch=arch, classes=list(info.classes), input_size=input_size,
                      channels=channels if channels is not None else (info.channels if builtin else None), arch_kwargs=arch_kwargs,
                      weights=weights, pretrained=pretrained, **stats)
