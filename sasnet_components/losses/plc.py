"""Pseudo Label Cross-supervision (PLC) loss of SASNet (paper Sec. 3.4.2, Eq. 15).

Each decoder branch is supervised by the sharpened softmax prediction of the other branch:

    L_plc = MSE(p_low, sharpen(p_high)) + MSE(p_high, sharpen(p_low))

with ``sharpen(p)_k = p_k^(1/T) / sum_j p_j^(1/T)`` and temperature ``T = 0.1``. Eq. 15 of the
paper writes the plain squared difference of the two predictions; the reference code (and the
method description) sharpens the target, which is what is implemented here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sasnet_components.losses._checks import check_branch_pair
from sasnet_components.utils.errors import InputTypeError, InvalidInputError

__all__ = ["PLCLoss", "sharpen"]


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise InputTypeError(f"`temperature` must be a positive number, got {type(temperature).__name__}.")
    if not (math.isfinite(temperature) and temperature > 0):
        raise InvalidInputError(f"`temperature` must be a positive finite number, got {temperature}.")
    return float(temperature)


def sharpen(prob: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Temperature sharpening of class probabilities along the channel dim.

    ``sharpen(p)_k = p_k^(1/T) / sum_j p_j^(1/T)``, computed stably as
    ``softmax(log(max(p, tiny)) / T, dim=1)``. For two classes whose probabilities sum to 1 this
    is the reference code's ``p^(1/T) / (p^(1/T) + (1 - p)^(1/T))`` applied per channel. ``T < 1``
    pushes the probabilities towards one-hot, ``T = 1`` is the identity, a one-hot input is
    returned unchanged.

    Args:
        prob: class probabilities ``(B, C, *spatial)`` in [0, 1], summing to 1 over ``C``.
        temperature: ``T > 0``.

    Returns:
        sharpened probabilities, same shape and dtype as ``prob``, in [0, 1], summing to 1 over
        ``C``. Differentiable with respect to ``prob``.

    Raises:
        TypeError: ``temperature`` is not a number.
        ValueError: ``temperature`` is not positive and finite, or ``prob`` has fewer than 2 dims.
    """
    temperature = _check_temperature(temperature)
    if prob.ndim < 2:
        raise ValueError(f"`prob` must have shape (B, C, *spatial), got shape {tuple(prob.shape)}.")
    tiny = torch.finfo(prob.dtype).tiny if prob.is_floating_point() else 1e-38
    return torch.softmax(torch.log(prob.clamp_min(tiny)) / temperature, dim=1)


class PLCLoss(nn.Module):
    """Pseudo Label Cross-supervision loss (paper Eq. 15 with sharpened targets).

    For the two branch predictions ``p_low`` and ``p_high`` (softmax probabilities):

        L_plc = mean((p_low - sharpen(p_high))^2) + mean((p_high - sharpen(p_low))^2)

    i.e. the sum over the ordered pairs of branches ``(i, j), i != j`` of the mean squared error
    between ``p_i`` and the sharpened ``p_j`` (:func:`sharpen`), each mean taken over all
    ``B * C * prod(spatial)`` elements, as the reference code's ``mse_loss``. All samples of the
    batch take part, labeled and unlabeled.

    By default gradients flow through the sharpened target as well (as in the reference code);
    ``detach_target=True`` treats ``sharpen(p_j)`` as a constant pseudo-label.

    Args:
        temperature: sharpening temperature ``T > 0`` (paper and reference: 0.1).
        detach_target: stop the gradient through the sharpened targets.

    Raises:
        TypeError: ``temperature`` is not a number.
        ValueError: ``temperature`` is not positive and finite.

    Example:
        >>> loss = PLCLoss(temperature=0.1)
        >>> p_low = torch.softmax(torch.randn(2, 2, 8, 8, 8), dim=1)
        >>> p_high = torch.softmax(torch.randn(2, 2, 8, 8, 8), dim=1)
        >>> loss(p_low, p_high).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.1, detach_target: bool = False) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.detach_target = bool(detach_target)

    def forward(self, prob_low: torch.Tensor, prob_high: torch.Tensor) -> torch.Tensor:
        """Compute the PLC loss.

        Args:
            prob_low: softmax probabilities of the low-level branch, ``(B, C, H, W[, D])``,
                values in [0, 1], ``C >= 2``.
            prob_high: softmax probabilities of the high-level branch, same shape.

        Returns:
            scalar tensor >= 0 (sum of the two mean squared errors, each in [0, 1]).

        Raises:
            TypeError: an input is not a tensor.
            ValueError: shapes differ, fewer than 3 dims, or fewer than 2 channels.
        """
        check_branch_pair(("prob_low", "prob_high"), prob_low, prob_high)
        target_low = sharpen(prob_low, self.temperature)
        target_high = sharpen(prob_high, self.temperature)
        if self.detach_target:
            target_low, target_high = target_low.detach(), target_high.detach()
        return F.mse_loss(prob_low, target_high) + F.mse_loss(prob_high, target_low)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, detach_target={self.detach_target}"
