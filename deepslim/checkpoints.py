"""Checkpoints of the train loop: torch.save of tensors and plain data, loaded with weights_only=True."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from deepslim.config import TrainConfig
from deepslim.distributed import DistContext
from deepslim.errors import ConfigError, InputFileError, first_line
from deepslim.fileio import atomic_path

console = Console(stderr=True)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, model, optimizer, scheduler, cfg: TrainConfig, state: Any,
                    best: dict[str, torch.Tensor], epoch: int, identity: dict[str, Any]) -> None:
    """Everything a resumed run needs after ``epoch``; ``state`` is the loop's FitResult so far."""
    payload = {"epoch": epoch + 1, "config": cfg.to_json(), "identity": json.dumps(identity, sort_keys=True),
               "model": cpu_state(model), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "best": best, "best_epoch": state.best_epoch, "best_val_top1": state.best_val_top1,
               "history": state.history, "seconds": state.seconds, "notes": state.notes,
               "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path | None, model, optimizer, scheduler, cfg: TrainConfig, identity: dict[str, Any],
                    ctx: DistContext) -> dict[str, Any]:
    """The checkpoint's contents after checking that it was made with ``cfg`` and ``identity``; the model,
    optimizer, scheduler and random generators are restored from it."""
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
    if ctx.is_main:
        console.print(f"resuming from {path} after epoch {data['epoch']}", highlight=False)
    return data


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
