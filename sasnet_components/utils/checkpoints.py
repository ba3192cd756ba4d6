"""Checks of the checkpoint a bundle command is given, before any data is read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch

from .errors import InputPermissionError, InvalidInputError, MissingInputError

__all__ = ["check_checkpoint", "load_checkpoint", "load_model_weights", "weights_mismatch"]

PathLike = Union[str, os.PathLike]


def load_checkpoint(path: Optional[PathLike], option: str, hint: str = "") -> Any:
    """Read a checkpoint named by a bundle option, with errors that name the option and the file.

    The file is memory-mapped (``torch.load(..., mmap=True, weights_only=True)``), so checking a
    large training checkpoint reads little of it.

    Args:
        path: the checkpoint file given; None when the option was not set.
        option: the option that names it (e.g. ``"inference_checkpoint"``), for the messages.
        hint: appended to every message: how to get such a checkpoint.

    Returns:
        The loaded object (tensors mapped from the file, on the CPU).

    Raises:
        InvalidInputError: no path, a folder, or a file ``torch.load`` cannot read.
        MissingInputError: the file does not exist.
        InputPermissionError: the file cannot be read.
    """
    tail = f" {hint}" if hint else ""
    if path is None or str(path) == "":
        raise InvalidInputError(f"`{option}` is not set; expected the path of a checkpoint.{tail}")
    file = Path(path)
    if not file.exists():
        raise MissingInputError(f"`{option}` {str(path)!r} does not exist; expected a checkpoint file.{tail}")
    if not file.is_file():
        raise InvalidInputError(f"`{option}` {str(path)!r} is not a file; expected a checkpoint file.{tail}")
    if not os.access(file, os.R_OK):
        raise InputPermissionError(f"`{option}` {str(path)!r} cannot be read (permission denied).{tail}")
    try:
        return torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # damaged, truncated, not a torch file, or not loadable without running code
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise InvalidInputError(
            f"`{option}` {str(path)!r} is not a readable checkpoint ({reason}); expected a file saved by this bundle's "
            f"training.{tail}"
        ) from e


def weights_mismatch(network: torch.nn.Module, state: Mapping[str, Any]) -> Optional[str]:
    """Why `state` cannot be loaded into `network` with ``strict=True``, or None when it can.

    Args:
        network: the configured network.
        state: a state dict (parameter and buffer name -> tensor).

    Returns:
        None, or e.g. ``"'conv.weight' has shape (4, 1, 3) in the checkpoint and (16, 1, 3) in the
        network (2 of 10 tensors differ in shape)"``, or the names missing from / unexpected in the checkpoint.
    """
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        (k, tuple(state[k].shape), tuple(v.shape))
        for k, v in expected.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if shapes:
        name, saved, wanted = shapes[0]
        problems.append(
            f"{name!r} has shape {saved} in the checkpoint and {wanted} in the network "
            f"({len(shapes)} of {len(expected)} tensors differ in shape)"
        )
    if missing:
        problems.append(f"{len(missing)} tensors of the network are not in the checkpoint (e.g. {missing[0]!r})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors of the checkpoint are not in the network (e.g. {unexpected[0]!r})")
    return "; ".join(problems) or None


def _state_dict_like(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) > 0 and all(isinstance(v, torch.Tensor) for v in value.values())


def _checked_entries(
    path: Optional[PathLike], option: str, network: Optional[torch.nn.Module], keys: Sequence[str], hint: str
) -> Dict[str, Any]:
    """The entries of a checkpoint, checked as :func:`check_checkpoint` describes."""
    tail = f" {hint}" if hint else ""
    content = load_checkpoint(path, option, hint)
    keys = list(keys)
    entries: Dict[str, Any]
    if len(keys) == 1 and _state_dict_like(content) and keys[0] not in content:
        entries = {keys[0]: content}  # MONAI's CheckpointLoader reads such a file the same way
    elif isinstance(content, Mapping):
        entries = dict(content)
    else:
        raise InvalidInputError(f"`{option}` {str(path)!r} holds a {type(content).__name__}, not a checkpoint's dict.{tail}")
    missing = [k for k in keys if k not in entries]
    if missing:
        has = "network weights only" if _state_dict_like(content) else f"the entries {sorted(entries)}"
        raise InvalidInputError(f"`{option}` {str(path)!r} holds {has}; expected the entries {keys}.{tail}")
    if network is not None and keys:
        problem = weights_mismatch(network, entries[keys[0]]) if isinstance(entries[keys[0]], Mapping) else "not a state dict"
        if problem:
            raise InvalidInputError(
                f"`{option}` {str(path)!r}: its weights do not fit the configured network: {problem}; run with the "
                f"network settings of its training (e.g. --network_def#n_filters, --num_classes).{tail}"
            )
    return entries


def check_checkpoint(
    path: Optional[PathLike],
    option: str,
    network: Optional[torch.nn.Module] = None,
    keys: Sequence[str] = ("model",),
    hint: str = "",
) -> str:
    """Check the checkpoint named by a bundle option before any data is read.

    Wire it first in the run list of a command that loads a checkpoint, e.g.
    ``- $sasnet_components.utils.check_checkpoint(@inference_checkpoint, 'inference_checkpoint', @network, hint='...')``.
    A missing, unreadable or unfitting checkpoint then stops the command at once, naming the
    option, instead of failing in MONAI's ``CheckpointLoader`` once the data pipeline has started.

    Args:
        path: the checkpoint given.
        option: the option naming it, for the messages.
        network: when given, the weights under ``keys[0]`` must load into it with ``strict=True``
            (same names and shapes: the network settings of the checkpoint's training).
        keys: entries the checkpoint must hold. A file holding a bare state dict (the ``model.pt``
            that MONAI's ``CheckpointSaver`` writes for one object) stands for a single key.
        hint: how to get a suitable checkpoint, appended to every message.

    Returns:
        `path` as a string.

    Raises:
        InvalidInputError, MissingInputError, InputPermissionError: see :func:`load_checkpoint`; also
        for missing entries and weights that do not fit `network`.
    """
    _checked_entries(path, option, network, keys, hint)
    return str(path)


def load_model_weights(path: PathLike, option: str, network: torch.nn.Module, key: str = "model", hint: str = "") -> None:
    """Load the network weights of a checkpoint (a ``model.pt`` or a training checkpoint's `key` entry) into `network`.

    Args:
        path, option, hint: as :func:`check_checkpoint`.
        network: the network to load into (``strict=True``).
        key: the entry of a training checkpoint that holds the weights.

    Raises:
        As :func:`check_checkpoint`.
    """
    network.load_state_dict(_checked_entries(path, option, network, [key], hint)[key], strict=True)
