"""Input checks shared by the SASNet losses."""

from __future__ import annotations

import torch

__all__ = ["check_branch_pair"]


def check_branch_pair(names: tuple[str, str], low: object, high: object, *others: tuple[str, object]) -> None:
    """Check the two branch maps of a loss: tensors of one shape `(B, C, *spatial)` with `C >= 2`.

    Args:
        names: argument names of `low` and `high`, used in the messages.
        low: map of the low-level branch.
        high: map of the high-level branch.
        others: further `(name, value)` arguments that must be tensors.

    Raises:
        TypeError: an argument is not a tensor.
        ValueError: the shapes differ, or have fewer than 3 dims or 2 channels.
    """
    for name, value in ((names[0], low), (names[1], high), *others):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}.")
    pair = f"`{names[0]}` and `{names[1]}`"
    if low.shape != high.shape:
        raise ValueError(f"{pair} must have the same shape (B, C, *spatial), got {tuple(low.shape)} and {tuple(high.shape)}.")
    if low.ndim < 3 or low.shape[1] < 2:
        raise ValueError(
            f"{pair} must have shape (B, C, *spatial) with at least 3 dims and C >= 2 channels, got {tuple(low.shape)}."
        )
