"""Several processes: the torchrun helpers, and the components' collectives in a 2-process gloo group.

The multi-process checks run in one spawn of two CPU processes (``_worker``), which writes what each
process computed; the tests compare it with a single process doing the same work, by hand where the
values allow.
"""

from __future__ import annotations

import datetime
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine

from sasnet_components import RunLimit, SARFusion
from sasnet_components.engines.semi_supervised_trainer import SemiSupervisedTrainer, _broadcast_buffers
from sasnet_components.utils import (
    InvalidInputError,
    check_single_process,
    init_process_group,
    process_device,
    shard,
    sync_batchnorm,
)

CASE = [6, 6, 6]  # every case's shape
PATCH = [4, 4, 4]
# one labeled sample per process per call: (case, crop start, view); call 3 writes one case from both
CALLS = [
    [("a", [0, 0, 0], [0, 1, 2]), ("b", [2, 2, 2], [1, 0, 2])],
    [("b", [1, 0, 2], [0, 1, 2]), ("a", [2, 1, 0], [1, 0, 2])],  # each reads what the other wrote in call 1
    [("c", [0, 0, 0], [0, 1, 2]), ("c", [2, 2, 2], [0, 1, 2])],  # overlap [2:4]^3: applied in rank order
]


def _whole_batch(call: int):
    """Probabilities and labels of call `call`'s whole batch: labeled samples 0, 1, then unlabeled 2, 3."""
    generator = torch.Generator().manual_seed(call)
    low = torch.softmax(torch.randn(4, 2, *PATCH, generator=generator), dim=1)
    high = torch.softmax(torch.randn(4, 2, *PATCH, generator=generator), dim=1)
    label = torch.randint(0, 2, (4, 1, *PATCH), generator=generator)
    return low, high, label


def _fuse(sar: SARFusion, call: int, samples: list) -> torch.Tensor:
    """Fuse the rows `samples` of call `call`'s whole batch (labeled rows first)."""
    low, high, label = _whole_batch(call)
    writes = [CALLS[call][s] for s in samples if s < 2]
    return sar.fuse(
        low[samples],
        high[samples],
        labeled=[s < 2 for s in samples],
        label=label[samples],
        case_ids=[w[0] for w in writes] + ["u"] * (len(samples) - len(writes)),
        crop_starts=[w[1] for w in writes] + [[0, 0, 0]] * (len(samples) - len(writes)),
        views=[w[2] for w in writes] + [[0, 1, 2]] * (len(samples) - len(writes)),
        case_shapes=[CASE] * len(samples),
    )


def _run_limit_stops_at(rank: int, seconds_by_rank: list) -> int:
    engine = Engine(lambda e, batch: time.sleep(0.05))
    RunLimit(seconds=seconds_by_rank[rank]).attach(engine)
    engine.run(range(8), max_epochs=1)
    return engine.state.iteration


def _worker(rank: int, folder: str) -> None:
    results: dict = {}
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60)
        )
        sar = SARFusion(alpha=0.5, mode="paper", dtype="float32")
        fused = []
        for call in range(len(CALLS)):
            fused.append(_fuse(sar, call, [rank, 2 + rank]))  # this process's labeled and unlabeled sample
            sar.epoch_completed()
        results["fused"], results["sar"] = fused, sar.state_dict()
        # rank 0's clock decides for both: 0.12 s on rank 0 stops both; 0.12 s on rank 1 alone stops none
        results["stops"] = [_run_limit_stops_at(rank, [0.12, 1000.0]), _run_limit_stops_at(rank, [1000.0, 0.12])]
        results["shards"] = [shard(range(5)), shard([]), shard(["x", "y"])]
        try:
            shard(["only"])
        except InvalidInputError as e:
            results["shard_error"] = str(e)
        network = torch.nn.BatchNorm1d(3)
        network.running_mean.fill_(rank + 1.0)
        network.num_batches_tracked.fill_(10 * (rank + 1))
        _broadcast_buffers(network)
        results["buffers"] = {k: v.clone() for k, v in network.state_dict().items()}
        try:
            SemiSupervisedTrainer._wrap_distributed(network, False, "cpu", True)
        except InvalidInputError as e:
            results["not_distributed_error"] = str(e)
        try:
            SemiSupervisedTrainer._wrap_distributed(torch.nn.parallel.DistributedDataParallel(network), True, "cpu", True)
        except InvalidInputError as e:
            results["wrapped_error"] = str(e)
        results["init_again"] = init_process_group("cpu")  # already joined: nothing to do
        dist.destroy_process_group()
    except Exception:  # reported by the test, not lost in the child's stderr
        results["error"] = traceback.format_exc()
    torch.save(results, Path(folder) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> list:
    folder = tmp_path_factory.mktemp("gloo")
    context = mp.start_processes(_worker, args=(str(folder),), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 180
    while not context.join(timeout=5):
        assert time.monotonic() < deadline, "the two processes did not finish: a collective waits"
    results = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for rank, result in enumerate(results):
        assert "error" not in result, f"process {rank}: {result.get('error')}"
    return results


def test_every_process_holds_the_memory_of_one_process_fusing_the_whole_batch(two_processes):
    single = SARFusion(alpha=0.5, mode="paper", dtype="float32")
    whole = []
    for call in range(len(CALLS)):
        whole.append(_fuse(single, call, [0, 1, 2, 3]))
        single.epoch_completed()
    for rank, result in enumerate(two_processes):
        assert sorted(result["sar"]["memory"]) == ["a", "b", "c"]
        for case, memory in single.state_dict()["memory"].items():
            assert torch.equal(result["sar"]["memory"][case], memory), (rank, case)
        for call, fused in enumerate(result["fused"]):  # calls 2 and 3 read what the other process wrote
            assert torch.allclose(fused, whole[call][[rank, 2 + rank]], atol=1e-6), (rank, call)


def test_writes_to_one_case_are_applied_in_rank_order(two_processes):
    # call 3: both processes crop case 'c'; rank 1's confidences win where the crops overlap
    low, high, label = _whole_batch(2)
    own = [torch.stack([low[r].gather(0, label[r]), high[r].gather(0, label[r])])[:, 0] for r in (0, 1)]
    for result in two_processes:
        current = result["sar"]["memory"]["c"][1]  # after the roll: the previous epoch's slot holds call 3
        assert torch.equal(current[:, 2:4, 2:4, 2:4], own[1][:, :2, :2, :2])  # overlap: rank 1's
        assert torch.equal(current[:, 0:2, 0:2, 0:2], own[0][:, :2, :2, :2])  # rank 0's alone
        assert torch.equal(current[:, 4:6, 4:6, 4:6], own[1][:, 2:4, 2:4, 2:4])  # rank 1's alone


def test_rank_zero_clock_stops_every_process_at_one_iteration(two_processes):
    stops = [result["stops"] for result in two_processes]
    assert stops[0] == stops[1]  # both processes stop at the same iteration, or neither stops
    assert 2 <= stops[0][0] < 8 and stops[0][1] == 8


def test_validation_shards(two_processes):
    assert [r["shards"] for r in two_processes] == [[[0, 2, 4], [], ["x"]], [[1, 3], [], ["y"]]]
    assert "1 validation cases cannot be shared by 2 processes" in two_processes[0]["shard_error"]


def test_buffers_of_rank_zero_after_each_step(two_processes):
    for result in two_processes:
        assert result["buffers"]["running_mean"].tolist() == [1.0, 1.0, 1.0]
        assert int(result["buffers"]["num_batches_tracked"]) == 10


def test_trainer_refusals_in_a_process_group(two_processes):
    assert "one of 2 of a process group but the trainer is not `distributed`" in two_processes[0]["not_distributed_error"]
    assert "pass the network itself with `distributed=True`" in two_processes[1]["wrapped_error"]
    assert all(r["init_again"] is True for r in two_processes)


# ---------------------------------------------------------------------- one process
def test_outside_torchrun_every_process_is_alone(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert check_single_process() is True
    assert shard([1, 2, 3]) == [1, 2, 3]
    assert process_device() == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvalidInputError, match=r"under torchrun, which sets \['RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'\]"):
        init_process_group("cpu")
    with pytest.raises(InvalidInputError, match="`distributed=True` needs the torch.distributed process group"):
        SemiSupervisedTrainer._wrap_distributed(torch.nn.Linear(1, 1), True, "cpu", True)


def test_train_yaml_alone_refuses_a_launch_of_several(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(InvalidInputError, match=r"one of 4 started by torchrun.*layer configs/multi_gpu_train.yaml"):
        check_single_process()
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(InvalidInputError, match="WORLD_SIZE must be an integer"):
        check_single_process()


def test_a_process_trains_on_its_own_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "localhost"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(InvalidInputError, match=r"local rank 1 was given device cuda:0"):
        init_process_group("cuda:0")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # more processes than GPUs
    with pytest.raises(InvalidInputError, match=r"needs GPU cuda:1, but this machine shows 1 GPU\(s\): start one process "
                       r"per GPU \(torchrun --nproc_per_node=1\)"):
        init_process_group("cuda")


def test_sync_batchnorm_converts_in_place_and_only_on_gpus():
    network = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2))
    parameters, keys = list(network.parameters()), list(network.state_dict())
    assert sync_batchnorm(network, False, "cpu") is network
    with pytest.raises(InvalidInputError, match="`sync_batchnorm` needs GPUs"):
        sync_batchnorm(network, True, "cpu")
    converted = sync_batchnorm(network, True, "cuda:0")  # the conversion itself runs anywhere
    assert isinstance(converted[1], torch.nn.SyncBatchNorm)
    assert all(a is b for a, b in zip(converted.parameters(), parameters))  # an optimizer built before trains it
    assert list(converted.state_dict()) == keys  # its checkpoints load into the plain network
