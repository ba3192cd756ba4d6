"""Training on several processes launched by ``torchrun``: process group, device, shards and checks.

A multi-GPU run of a bundle is ``torchrun --standalone --nproc_per_node=N -m monai.bundle run
training --config_file "['<bundle>/configs/train.yaml','<bundle>/configs/multi_gpu_train.yaml']"``.
``torchrun`` starts N processes and gives each its place in the environment (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` / ``MASTER_PORT``); the functions here read it, so
the configs stay free of environment parsing. Outside ``torchrun`` every process is rank 0 of 1.
"""

from __future__ import annotations

import logging
import os
from typing import Any, List, Sequence, Union

import torch
import torch.distributed as dist
from monai.data import partition_dataset

from sasnet_components.utils.errors import InvalidInputError

__all__ = [
    "MULTI_GPU_COMMAND",
    "check_single_process",
    "destroy_process_group",
    "init_process_group",
    "is_distributed",
    "launched_world_size",
    "process_device",
    "shard",
    "sync_batchnorm",
]

logger = logging.getLogger(__name__)

MULTI_GPU_COMMAND = (
    "torchrun --standalone --nproc_per_node=N -m monai.bundle run training --config_file "
    "\"['bundles/<name>/configs/train.yaml','bundles/<name>/configs/multi_gpu_train.yaml']\""
)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(f"environment variable {name} must be an integer (torchrun sets it), got {value!r}.") from None


def launched_world_size() -> int:
    """Processes of this launch: ``WORLD_SIZE`` as ``torchrun`` sets it, 1 outside ``torchrun``."""
    return _env_int("WORLD_SIZE", 1)


def is_distributed() -> bool:
    """Whether a process group of more than one process is initialised (collectives are needed)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def process_device() -> torch.device:
    """This process's device: ``cuda:<LOCAL_RANK>`` when CUDA is available, the CPU otherwise."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{_env_int('LOCAL_RANK', 0)}")
    return torch.device("cpu")


def check_single_process() -> bool:
    """Refuse to train one model per process when a ``torchrun`` launch started several.

    Every process of such a launch would train on its own and write the same checkpoints. Wire it
    in the ``initialize`` of a single-process training config; the multi-GPU layer replaces it with
    :func:`init_process_group`.

    Returns:
        True outside ``torchrun`` or with one process.

    Raises:
        ValueError: ``WORLD_SIZE`` is above 1.
    """
    world = launched_world_size()
    if world > 1:
        raise InvalidInputError(
            f"this process is one of {world} started by torchrun, but the configs train one process: layer "
            f"configs/multi_gpu_train.yaml over train.yaml, e.g. {MULTI_GPU_COMMAND}."
        )
    return True


def init_process_group(device: Union[str, torch.device], backend: str = "auto", quiet_ranks: bool = True) -> bool:
    """Join the process group of a ``torchrun`` launch: NCCL on GPUs, gloo on CPU.

    Sets this process's CUDA device first (NCCL needs it). Ranks above 0 log warnings and errors only
    (``quiet_ranks``): the run's log and progress come from rank 0, as its checkpoints do. Calling
    it again in a process that joined changes nothing.

    Args:
        device: this process's training device (``cuda:<LOCAL_RANK>`` or ``cpu``, see :func:`process_device`).
        backend: ``"auto"`` (``nccl`` for a CUDA device, ``gloo`` otherwise), or a backend name.
        quiet_ranks: raise the root logger's level to WARNING on ranks above 0.

    Returns:
        True.

    Raises:
        ValueError: the process was not started by ``torchrun`` (no ``RANK`` / ``WORLD_SIZE`` /
            ``MASTER_ADDR`` in the environment), the CUDA device is not this process's ``LOCAL_RANK``,
            or there are fewer visible GPUs than processes on this machine.
    """
    if dist.is_initialized():
        return True
    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise InvalidInputError(
            f"multi_gpu_train.yaml runs one process per GPU under torchrun, which sets {missing} in the environment; "
            f"start it as {MULTI_GPU_COMMAND} (train.yaml alone trains on one device)."
        )
    device = torch.device(device)
    if device.type == "cuda":
        local = _env_int("LOCAL_RANK", 0)
        visible = torch.cuda.device_count()
        if local >= visible:
            advice = f"start one process per GPU (torchrun --nproc_per_node={visible})" if visible else "train on the CPU"
            raise InvalidInputError(
                f"process of local rank {local} needs GPU cuda:{local}, but this machine shows {visible} GPU(s): {advice}."
            )
        if device.index is not None and device.index != local:
            raise InvalidInputError(
                f"process of local rank {local} was given device {device}; each process trains on its own GPU "
                f"cuda:<LOCAL_RANK> (leave `device` as multi_gpu_train.yaml sets it)."
            )
        torch.cuda.set_device(torch.device("cuda", local))
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    logger.info("process %d of %d joined the %s process group on %s", rank, world, backend, device)
    if quiet_ranks and rank > 0:
        logging.getLogger().setLevel(logging.WARNING)
    return True


def destroy_process_group() -> bool:
    """Leave the process group, if any (wire it in ``finalize``). Returns True."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return True


def shard(items: Sequence[Any], what: str = "validation cases") -> List[Any]:
    """This process's share of `items`: every ``world_size``-th item from its rank on (MONAI's
    ``partition_dataset`` without padding, so each item is evaluated exactly once); all of them in a
    single process.

    Args:
        items: the items (e.g. the validation datalist), in order.
        what: what they are, for the error message.

    Returns:
        Items ``rank, rank + world_size, ...``.

    Raises:
        ValueError: fewer items than processes (a process would have none, while MONAI's metrics
            wait for every process); an empty list is returned as is (nothing to validate anywhere).
    """
    items = list(items)
    if not is_distributed():
        return items
    world, rank = dist.get_world_size(), dist.get_rank()
    if items and len(items) < world:
        raise InvalidInputError(
            f"{len(items)} {what} cannot be shared by {world} processes: each process needs at least one; "
            f"train on at most {len(items)} processes or give more {what}."
        )
    if not items:
        return items
    return list(partition_dataset(items, num_partitions=world, shuffle=False, even_divisible=False)[rank])


def sync_batchnorm(network: torch.nn.Module, enabled: bool, device: Union[str, torch.device]) -> torch.nn.Module:
    """`network` with its batch norms synchronised across processes (``torch.nn.SyncBatchNorm``) when `enabled`.

    Each process normalises its share of the batch with the statistics of the whole batch, as a
    single process would. The parameters and buffers are the same tensors, so an optimizer built
    on `network` before or after the conversion trains the same weights, and its state dict loads
    into the plain network.

    Args:
        network: the network.
        enabled: convert (True) or return `network` unchanged (False).
        device: the training device; PyTorch synchronises batch norms on GPUs only.

    Returns:
        `network` itself, its batch norms replaced by ``SyncBatchNorm`` when `enabled`.

    Raises:
        ValueError: `enabled` on a CPU device.
    """
    if not enabled:
        return network
    if torch.device(device).type != "cuda":
        raise InvalidInputError(
            f"`sync_batchnorm` needs GPUs (torch.nn.SyncBatchNorm runs on CUDA), the device is {device}: "
            "leave it false on CPU."
        )
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
