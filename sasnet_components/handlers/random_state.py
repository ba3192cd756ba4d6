"""The process-wide random generators: as checkpointable state, or seeded at every iteration."""

from __future__ import annotations

import logging
import numbers
import random
from typing import Any, Dict, List, Mapping

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from sasnet_components.utils.errors import InvalidInputError, UnknownKeyError

__all__ = ["GlobalRandomState", "IterationSeeding"]

logger = logging.getLogger(__name__)

_KEYS = ("torch", "cuda", "numpy", "python")


class GlobalRandomState:
    """State of the global random generators of torch (CPU and CUDA), NumPy and Python's ``random``.

    Put it in a checkpoint's ``save_dict`` (next to the network, optimizer and trainer) so that a
    resumed run continues every global random stream where the saved run was: dropout masks on
    CPU and GPU, and anything else drawn from the global generators. :meth:`state_dict` holds only
    tensors, numbers and ``None`` (loadable with ``torch.load(weights_only=True)`` as MONAI's
    ``CheckpointLoader`` does).

    The state is read when the checkpoint is written and restored when it is loaded, so nothing
    may draw from these generators between the two points in one of the runs only: give data
    loaders their own ``generator`` (``torch.Generator``), since creating a loader iterator draws
    its workers' base seed from the global generator otherwise.

    CUDA generators are saved when CUDA has been initialised and restored when the loading process
    has as many CUDA devices; with another number of devices they are not restored and a warning
    says so (a checkpoint written on CPU leaves them as they are).

    Example::

        save_dict = {"model": net, "optimizer": opt, "trainer": trainer, "random_state": GlobalRandomState()}
    """

    def state_dict(self) -> Dict[str, Any]:
        """The four generators' states."""
        kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        cuda: List[torch.Tensor] = (
            [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_initialized() else []
        )
        return {
            "torch": torch.get_rng_state().clone(),
            "cuda": cuda,
            "numpy": {
                "kind": str(kind),
                "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached_gaussian),
            },
            "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Set the global generators to a state written by :meth:`state_dict`.

        Raises:
            KeyError: an entry is missing.
        """
        missing = [k for k in _KEYS if k not in state_dict]
        if missing:
            raise UnknownKeyError(f"GlobalRandomState state_dict is missing {missing}; expected keys {list(_KEYS)}.")
        torch.set_rng_state(torch.as_tensor(state_dict["torch"], dtype=torch.uint8).cpu())
        cuda = list(state_dict["cuda"])
        devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if cuda and devices == len(cuda):
            torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8).cpu() for s in cuda])
        elif cuda:
            logger.warning(
                "the checkpoint holds the CUDA generators of %d device(s), this process has %d: they are not restored, "
                "so random draws on the GPU (dropout) differ from those of the saved run continued.",
                len(cuda),
                devices,
            )
        n = state_dict["numpy"]
        keys = torch.as_tensor(n["keys"]).cpu().numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"])))
        p = state_dict["python"]
        internal = tuple(int(v) for v in torch.as_tensor(p["internal"]).tolist())
        random.setstate((int(p["version"]), internal, p["gauss_next"]))


class IterationSeeding:
    """Seed the global generators of torch (CPU and CUDA), NumPy and Python's ``random`` at the start
    of every iteration from ``(seed, rank, iteration)``.

    For training on several processes: dropout masks (and anything else drawn from the global
    generators during an iteration) are then a function of the seed, the process's rank and the
    iteration. The processes draw different masks, and a run resumed at any iteration draws the
    masks of the uninterrupted run, with no generator state of the other processes in the
    checkpoint (rank 0 writes it; gathering the others' states would make every save a collective,
    also the save that an error on one process alone triggers, which would then wait forever).

    Args:
        seed: base seed (>= 0).

    Raises:
        ValueError: a negative seed.

    Example (bundle YAML, a training handler)::

        - _target_: sasnet_components.IterationSeeding
          seed: '@seed'
    """

    def __init__(self, seed: int) -> None:
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
            raise InvalidInputError(f"`seed` must be an integer >= 0, got {seed!r}.")
        self.seed = int(seed)

    def attach(self, engine: Engine) -> None:
        """Seed at every ``Events.ITERATION_STARTED`` of `engine` (after its batch is drawn)."""
        if not engine.has_event_handler(self, Events.ITERATION_STARTED):
            engine.add_event_handler(Events.ITERATION_STARTED, self)

    def seeds(self, rank: int, iteration: int) -> List[int]:
        """The three 32-bit seeds (torch, NumPy, Python) of process `rank` at `iteration` (1-based)."""
        return [int(s) for s in np.random.SeedSequence([self.seed, 3, int(rank), int(iteration)]).generate_state(3)]

    def __call__(self, engine: Engine) -> None:
        """Seed the generators for `engine`'s iteration and this process's rank (0 without a process group)."""
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        torch_seed, numpy_seed, python_seed = self.seeds(rank, engine.state.iteration)
        torch.manual_seed(torch_seed)  # also every CUDA device
        np.random.seed(numpy_seed)
        random.seed(python_seed)
