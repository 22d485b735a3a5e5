"""The per-start key prefix of the process group (`_round_prefix`) and the agreed elastic-restart decision."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import torch.distributed as dist

from deepslim.distributed import DistContext, _round_prefix, restarted_from
from deepslim.errors import ConfigError


def _start(store, world_size: int, order: list[int]) -> list[str]:
    """One start of a group of ``world_size`` workers on ``store``, launched in ``order``: each one's prefix."""
    prefixes: list[str | None] = [None] * world_size

    def worker(rank: int) -> None:
        prefixes[rank] = _round_prefix(store, rank, world_size, timeout=20)

    threads = [threading.Thread(target=worker, args=(rank,)) for rank in order]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return prefixes


def test_every_worker_of_a_start_shares_a_prefix_no_earlier_start_used():
    store = dist.HashStore()
    store.set_timeout(timedelta(seconds=20))
    first = _start(store, 3, [0, 1, 2])
    assert len(set(first)) == 1 and first[0].startswith("deepslim/")
    # the next start finds the first start's questions and answers in the store, and its ranks asking
    # before rank 0 is up must not read those
    second = _start(store, 3, [2, 1, 0])
    assert len(set(second)) == 1 and second[0] != first[0]


def test_a_rank_that_never_hears_from_rank_0_fails_in_one_sentence():
    with pytest.raises(ConfigError, match=r"^Rank 1 heard nothing from rank 0 within 0 s\.$"):
        _round_prefix(dist.HashStore(), 1, 2, timeout=0.2)


def test_rank_0_waiting_for_a_rank_that_never_comes_fails_in_one_sentence():
    with pytest.raises(ConfigError, match=r"^Ranks \[1\] did not join the process group within 0 s\.$"):
        _round_prefix(dist.HashStore(), 0, 2, timeout=0.2)


def test_one_process_is_never_restarted(tmp_path):
    checkpoint = tmp_path / "out.ckpt"
    checkpoint.write_bytes(b"x")
    assert restarted_from(checkpoint, DistContext()) is False
    assert restarted_from(None, DistContext(world_size=2)) is False
