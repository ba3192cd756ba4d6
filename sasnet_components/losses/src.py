"""Segmentation-Regression Consistency (SRC) loss of SASNet (paper Sec. 3.4.3, Eq. 16).

The ensemble segmentation (SAR fusion of the two branches) is binarised and turned into a
normalised signed distance map (:func:`ensemble_to_sdm`, once per iteration), which supervises
the regression (tanh) head of both branches:

    L_src = mean((P_sdm - P_lreg)^2) + mean((P_sdm - P_hreg)^2)

The reference code computed the same map twice per iteration; here the map is computed once by
the caller and passed to :class:`SRCLoss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sasnet_components.losses._checks import check_branch_pair
from sasnet_components.transforms.signed_distance import signed_distance_map

__all__ = ["SRCLoss", "ensemble_to_sdm"]


@torch.no_grad()
def ensemble_to_sdm(ensemble_prob: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Signed distance map target of the SRC loss from the ensemble probabilities.

    Two classes: the foreground probability is thresholded, ``mask = p[:, 1] > 0.5`` (a voxel at
    exactly 0.5 is background). More classes: ``label = argmax_c p[:, c]`` and one mask per
    foreground class ``label == c``, ``c = 1 .. C-1``. Each mask goes through
    :func:`~sasnet_components.transforms.signed_distance.signed_distance_map` (positive outside,
    negative inside, 0 on the inner boundary; empty or full masks give zeros). Computed without
    gradient tracking.

    Args:
        ensemble_prob: ensemble class probabilities ``(B, C, H, W[, D])`` in [0, 1], ``C >= 2``.
        backend: distance transform backend, one of ``SDM_BACKENDS``: ``"auto"``, ``"scipy"``,
            ``"torch"`` or ``"cupy"`` (CUDA tensors, needs CuPy; see
            :func:`~sasnet_components.transforms.signed_distance.signed_distance_map`).

    Returns:
        float32 tensor ``(B, C - 1, H, W[, D])`` of signed distances in [-1, 1], on the device
        of ``ensemble_prob``, not requiring grad.

    Raises:
        TypeError: ``ensemble_prob`` is not a tensor.
        ValueError: fewer than 3 dims or fewer than 2 channels; unknown ``backend``; backend
            ``"cupy"`` with a tensor that is not on CUDA.
        ImportError: backend ``"cupy"`` without CuPy.
    """
    if not isinstance(ensemble_prob, torch.Tensor):
        raise TypeError(f"`ensemble_prob` must be a torch.Tensor, got {type(ensemble_prob).__name__}.")
    if ensemble_prob.ndim < 4 or ensemble_prob.shape[1] < 2:
        raise ValueError(
            "`ensemble_prob` must have shape (B, C, *spatial) with at least 2 spatial dims and "
            f"C >= 2 channels, got shape {tuple(ensemble_prob.shape)}."
        )
    batch, channels = ensemble_prob.shape[:2]
    spatial = ensemble_prob.shape[2:]
    if channels == 2:
        masks = ensemble_prob[:, 1] > 0.5
    else:
        label = ensemble_prob.argmax(dim=1, keepdim=True)
        classes = torch.arange(1, channels, device=label.device).view((1, channels - 1) + (1,) * len(spatial))
        masks = (label == classes).reshape((batch * (channels - 1),) + tuple(spatial))
    sdm = signed_distance_map(masks, backend=backend)
    return sdm.reshape((batch, channels - 1) + tuple(spatial))


class SRCLoss(nn.Module):
    """Segmentation-Regression Consistency loss (paper Eq. 16).

    ``L_src = mean((reg_low[:, 1:] - sdm)^2) + mean((reg_high[:, 1:] - sdm)^2)``: each branch's
    regression map of the foreground classes is pulled to the signed distance map of the
    ensemble prediction, each mean taken over all ``B * (C - 1) * prod(spatial)`` elements and the
    two branches summed, exactly as the reference code (``mse(sdm, tanh_out[:, 1])`` summed over
    the branches). The background channel of the regression maps is not supervised. All samples
    of the batch take part. ``target_sdm`` is a target: it is detached and gets no gradient. With
    ``reg_low=None`` (a one-branch network) only the high-level term ``mean((reg_high[:, 1:] -
    sdm)^2)`` is computed.

    Example:
        >>> loss = SRCLoss()
        >>> prob = torch.softmax(torch.randn(2, 2, 16, 16, 16), dim=1)
        >>> sdm = ensemble_to_sdm(prob)  # (2, 1, 16, 16, 16), computed once per iteration
        >>> reg_low = torch.tanh(torch.randn(2, 2, 16, 16, 16))
        >>> reg_high = torch.tanh(torch.randn(2, 2, 16, 16, 16))
        >>> loss(reg_low, reg_high, sdm).shape
        torch.Size([])
    """

    def forward(self, reg_low: torch.Tensor | None, reg_high: torch.Tensor, target_sdm: torch.Tensor) -> torch.Tensor:
        """Compute the SRC loss.

        Args:
            reg_low: regression (tanh) map of the low-level branch ``(B, C, H, W[, D])``, values
                in [-1, 1], ``C >= 2``; channel 0 (background) is ignored. ``None`` for a one-branch
                network (the high-level term only).
            reg_high: regression map of the high-level branch, same shape.
            target_sdm: signed distance maps of the foreground classes ``(B, C - 1, H, W[, D])``
                in [-1, 1] (from :func:`ensemble_to_sdm`); for ``C = 2`` also ``(B, H, W[, D])``.

        Returns:
            scalar tensor >= 0.

        Raises:
            TypeError: an input is not a tensor.
            ValueError: ``reg_low`` and ``reg_high`` shapes differ, fewer than 3 dims or fewer
                than 2 channels, or ``target_sdm`` does not have the expected shape.
        """
        one_branch = reg_low is None
        check_branch_pair(("reg_low", "reg_high"), reg_high if one_branch else reg_low, reg_high, ("target_sdm", target_sdm))
        batch, channels = reg_high.shape[:2]
        spatial = tuple(reg_high.shape[2:])
        expected = (batch, channels - 1) + spatial
        target = target_sdm.detach()
        if channels == 2 and tuple(target.shape) == (batch,) + spatial:
            target = target.unsqueeze(1)
        if tuple(target.shape) != expected:
            also = f" or {(batch,) + spatial}" if channels == 2 else ""
            raise ValueError(
                f"`target_sdm` must have shape (B, C - 1, *spatial) = {expected}{also} for "
                f"regression maps of shape {tuple(reg_high.shape)}, got {tuple(target_sdm.shape)}."
            )
        target = target.to(dtype=reg_high.dtype)
        loss_high = F.mse_loss(reg_high[:, 1:], target)
        return loss_high if one_branch else F.mse_loss(reg_low[:, 1:], target) + loss_high
