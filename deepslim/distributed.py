"""Data-parallel training under ``torchrun``: the process group, sharding and cross-rank reductions.

The same command runs alone or under ``torchrun --nproc-per-node N`` (one process per GPU
with NCCL, or CPU processes with gloo), on one node or several (``--nnodes``, a c10d
rendezvous). When torchrun's elastic agent restarts the group after a rank died
(``--max-restarts``), training carries on from rank 0's last epoch checkpoint, which every
rank reads: the checkpoint directory must be one they share. Every rank trains on its shard of each epoch; metrics
are computed from predictions gathered across ranks, so every rank takes the same decisions
(best epoch, early stop) and only rank 0 writes files.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun); known before setup()."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


def launched() -> bool:
    """Whether torchrun (or another launcher setting WORLD_SIZE) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def restarts() -> int:
    """How many times torchrun's elastic agent of this node has restarted its workers after a failure
    (``--max-restarts``); an agent that restarts healthy workers because another node failed does not count it."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) if launched() else 0


def restarted_from(checkpoint: Path | None, ctx: DistContext) -> bool:
    """Whether this start of the group follows an elastic restart and must carry on from ``checkpoint``.

    Every rank gets the same answer: the group was restarted when any node's agent counted a restart, and
    there is something to carry on from when the checkpoint (rank 0's, in a directory every rank shares)
    is there."""
    if not ctx.enabled or checkpoint is None:
        return False
    seen = checkpoint.is_file()
    any_restart, ranks_seeing = all_sum([float(restarts() > 0), float(seen)], ctx)
    if not any_restart or not ranks_seeing:
        return False
    if ranks_seeing < ctx.world_size:
        from deepslim.errors import ConfigError
        raise ConfigError(f"torchrun restarted the workers, but {ctx.world_size - int(ranks_seeing)} of "
                          f"{ctx.world_size} ranks cannot see the checkpoint {checkpoint}; put the output on a "
                          "directory every node shares.")
    return True


def context() -> DistContext:
    """This process's place in the process group (rank 0 of 1 when there is none)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                           dist.get_backend())
    return DistContext()


def setup(device: str = "auto") -> DistContext:
    """Join torchrun's process group when launched by it (once per process); a no-op otherwise.

    NCCL when the run uses CUDA, gloo on CPU. Rendezvous (single node or multi-node) comes from
    torchrun's environment: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK.
    """
    if not launched():
        return DistContext()
    if re.fullmatch(r"cuda:\d+", device):
        from deepslim.errors import ConfigError
        raise ConfigError(f"Under torchrun every process uses the GPU of its LOCAL_RANK; use --device cuda or auto, "
                          f"not {device}.")
    import torch.distributed as dist
    if not dist.is_initialized():
        cuda = device != "cpu" and not device.startswith("mps") and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        _init_group("nccl" if cuda else "gloo")
        atexit.register(_teardown)
    return context()


def _init_group(backend: str) -> None:
    """``init_process_group`` from torchrun's environment, its keys under a prefix that this round of workers
    alone shares (:func:`_round_prefix`)."""
    import torch.distributed as dist
    from torch.distributed.rendezvous import rendezvous
    try:
        store, rank, world_size = next(rendezvous("env://"))
    except dist.DistNetworkError as exc:  # rank 0 serves the store at MASTER_ADDR:MASTER_PORT, the others join it
        raise _store_error(exc) from exc
    store = dist.PrefixStore(_round_prefix(store, rank, world_size), store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)


def _store_error(exc: Exception) -> Exception:
    """One sentence for a process group whose store cannot be served or reached."""
    from deepslim.errors import ConfigError
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    if "EADDRINUSE" in str(exc) or "address already in use" in str(exc):
        return ConfigError(f"Port {where} is already in use by another program; give the job a free port "
                           "(MASTER_PORT, torchrun's --master-port or --rdzv-endpoint HOST:PORT).")
    return ConfigError(f"The process group's store at {where} cannot be reached "
                       f"({str(exc).splitlines()[0][:200]}); check MASTER_ADDR and MASTER_PORT.")


def _round_prefix(store, rank: int, world_size: int, timeout: float = 1800.0) -> str:
    """A key prefix that every worker of this start of the group agrees on, and no earlier start used.

    torchrun's agents keep one store for the whole job: after an elastic restart it still holds the dead
    workers' gloo/NCCL addresses, and the new workers would connect to those. The restart count cannot name
    the round: an agent whose own workers were healthy restarts them for a failed node without counting a
    restart. So rank 0 draws a fresh token and hands it to each other rank in answer to a nonce that rank
    drew; a rank acknowledges under the token, and rank 0 waits for every acknowledgement. Keys left by
    dead workers are never waited on, since each names a nonce or token nobody draws again."""
    import secrets
    import time
    from datetime import timedelta
    if rank != 0:
        nonce = secrets.token_hex(8)
        store.set(f"deepslim/ask/{rank}", nonce)
        try:
            store.wait([f"deepslim/answer/{nonce}"], timedelta(seconds=timeout))
        except RuntimeError as exc:  # DistStoreError: rank 0 never came
            from deepslim.errors import ConfigError
            raise ConfigError(f"Rank {rank} heard nothing from rank 0 within {timeout:.0f} s.") from exc
        token = store.get(f"deepslim/answer/{nonce}").decode()
        store.set(f"deepslim/{token}/ack/{rank}", "1")
        return f"deepslim/{token}"
    token, answered, deadline = secrets.token_hex(8), set(), time.monotonic() + timeout
    waiting = set(range(1, world_size))
    while waiting:
        for other in sorted(waiting):
            if store.check([f"deepslim/ask/{other}"]):
                nonce = store.get(f"deepslim/ask/{other}").decode()
                if nonce not in answered:  # a stale question from a dead worker is answered too, harmlessly
                    store.set(f"deepslim/answer/{nonce}", token)
                    answered.add(nonce)
            if store.check([f"deepslim/{token}/ack/{other}"]):
                waiting.discard(other)
        if time.monotonic() > deadline:
            from deepslim.errors import ConfigError
            raise ConfigError(f"Ranks {sorted(waiting)} did not join the process group within {timeout:.0f} s.")
        if waiting:
            time.sleep(0.02)
    return f"deepslim/{token}"


def _teardown() -> None:
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


def local_device(ctx: DistContext, device: str) -> str:
    """The device of this rank: its own GPU under torchrun, else what was asked."""
    if ctx.enabled and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ctx.local_rank}"
    return device


def shard(dataset: Dataset, ctx: DistContext) -> Dataset:
    """Every world_size-th sample starting at this rank (no padding, so gathered metrics are exact)."""
    if not ctx.enabled:
        return dataset
    return Subset(dataset, list(range(ctx.rank, len(dataset), ctx.world_size)))


def gather_shards(part: np.ndarray, total: int, ctx: DistContext) -> np.ndarray:
    """Reassemble per-rank results of :func:`shard` in the dataset's order, on every rank."""
    if not ctx.enabled:
        return part
    import torch.distributed as dist
    parts: list[np.ndarray | None] = [None] * ctx.world_size
    dist.all_gather_object(parts, part)
    full = np.empty((total, *part.shape[1:]), dtype=part.dtype)
    for rank, piece in enumerate(parts):
        full[rank::ctx.world_size] = piece
    return full


def all_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum of ``values`` over ranks."""
    if not ctx.enabled:
        return values
    import torch.distributed as dist
    tensor = torch.tensor(values, dtype=torch.float64)
    if ctx.backend == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def broadcast_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts buffers at the start of each forward, so after the last training step each
    rank still holds the statistics of its own last batch; without this, ranks would validate
    (and save) slightly different models."""
    if not ctx.enabled:
        return
    import torch.distributed as dist
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist
        dist.barrier()


def batchnorm_sync(model: torch.nn.Module, sync_bn: bool, ctx: DistContext, device: torch.device,
                   note: Callable[[str], None]) -> contextlib.AbstractContextManager:
    """``--sync-bn``: BatchNorm statistics over every rank while training
    (:func:`deepslim.batchnorm.synced_batchnorm`), on CUDA under torchrun; with one process there is nothing to
    synchronise, and ``note`` says so."""
    from deepslim.batchnorm import batchnorm_layers, synced_batchnorm
    if not sync_bn:
        return contextlib.nullcontext()
    if not batchnorm_layers(model):
        note("--sync-bn: the model has no BatchNorm layer with running statistics; nothing to synchronise")
        return contextlib.nullcontext()
    if not ctx.enabled:
        note("--sync-bn: one process, so BatchNorm already sees the whole batch; nothing to synchronise")
        return contextlib.nullcontext()
    if device.type != "cuda":
        from deepslim.errors import ConfigError
        raise ConfigError(f"--sync-bn needs CUDA: PyTorch's SyncBatchNorm does not run on {device.type} (gloo); "
                          "leave it out and each rank normalises with its own batch.")
    note(f"--sync-bn: BatchNorm statistics over all {ctx.world_size} ranks while training")
    return synced_batchnorm(model)


_PEER_GONE = ("connection reset by peer", "connection closed by peer", "broken pipe", "nccl error",
              "socket timeout", "remote worker")


def raise_if_a_peer_stopped(exc: BaseException, ctx: DistContext, epoch: int) -> None:
    """Under torchrun, a collective that failed because another rank died is said as that, not as this
    rank's failure: torchrun's agent restarts the group (``--max-restarts``) or ends the job."""
    seen = [words for words in _PEER_GONE if words in str(exc).lower()]
    if ctx.enabled and seen:
        from deepslim.errors import ModelError
        raise ModelError(f"Another rank of the process group stopped during epoch {epoch + 1} ({ctx.backend}: "
                         f"{seen[0]}); torchrun restarts the group with --max-restarts N and training resumes from "
                         "the last epoch checkpoint.") from exc
