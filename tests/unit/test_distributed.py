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


def _bn_net():
    from torch import nn
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8),
                         nn.BatchNorm1d(8, momentum=0.05), nn.Linear(8, 3))


def test_sync_batchnorm_is_undone_after_training_with_the_same_tensors():
    import torch
    from torch import nn
    from deepslim.batchnorm import synced_batchnorm
    net = _bn_net()
    net(torch.randn(5, 1, 8, 8))  # running statistics away from their defaults
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = [id(p) for p in net.parameters()]
    with synced_batchnorm(net) as converted:
        assert converted == 2
        assert [type(m) for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] == \
            [nn.SyncBatchNorm, nn.SyncBatchNorm]
        net[1].running_mean.add_(1.0)  # training moves the statistics of the synced layer
    assert type(net[1]) is nn.BatchNorm2d and type(net[5]) is nn.BatchNorm1d and net[5].momentum == 0.05
    assert [id(p) for p in net.parameters()] == params  # the optimizer's tensors are the model's
    after = net.state_dict()
    assert list(after) == list(before)
    assert torch.equal(after["1.running_mean"], before["1.running_mean"] + 1.0)
    assert all(torch.equal(after[k], before[k]) for k in before if k != "1.running_mean")


def test_sync_bn_is_refused_on_cpu_under_torchrun_and_noted_alone():
    import torch
    from deepslim.config import TrainConfig
    from deepslim.distributed import batchnorm_sync
    notes: list[str] = []
    cfg = TrainConfig(sync_bn=True)
    with pytest.raises(ConfigError, match=r"^--sync-bn needs CUDA: PyTorch's SyncBatchNorm does not run on cpu "):
        batchnorm_sync(_bn_net(), cfg.sync_bn, DistContext(world_size=2), torch.device("cpu"), notes.append)
    with batchnorm_sync(_bn_net(), cfg.sync_bn, DistContext(), torch.device("cpu"), notes.append):
        pass
    assert notes == ["--sync-bn: one process, so BatchNorm already sees the whole batch; nothing to synchronise"]
    assert TrainConfig(sync_bn=True).to_json()["sync_bn"] is True  # recorded with the stage's config


def test_a_collective_broken_by_a_dead_rank_is_said_as_that():
    from deepslim.errors import ModelError
    from deepslim.distributed import raise_if_a_peer_stopped
    gloo = RuntimeError("[/pytorch/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:2255: Connection reset by "
                        "peer. This is typically caused by a remote worker hanging or bugs in the application.")
    with pytest.raises(ModelError, match=r"^Another rank of the process group stopped during epoch 2 \(gloo: "
                                         r"connection reset by peer\); torchrun restarts the group"):
        raise_if_a_peer_stopped(gloo, DistContext(world_size=2, backend="gloo"), 1)
    raise_if_a_peer_stopped(gloo, DistContext(), 1)  # one process: not a peer's failure, nothing raised
    raise_if_a_peer_stopped(RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
                             DistContext(world_size=2, backend="gloo"), 1)
