"""The process-wide random generators as checkpointable state."""

from __future__ import annotations

import logging
import random
from typing import Any, Dict, List, Mapping

import numpy as np
import torch

from sasnet_components.utils.errors import UnknownKeyError

__all__ = ["GlobalRandomState"]

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
