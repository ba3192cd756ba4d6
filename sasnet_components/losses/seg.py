"""Supervised segmentation loss of SASNet on the labeled samples (paper Sec. 3.4.1, Eq. 12-14).

Both decoder branches are supervised by the ground truth and their losses summed:

    L_seg = L_seg(logits_low, y) + L_seg(logits_high, y)

Two modes:

- ``"dice_ce"`` (the paper, Eq. 12-14): cross-entropy + soft Dice per branch.
- ``"dice"`` (the reference code): foreground soft Dice only, pooled over the labeled batch,
  epsilon 1e-8, no cross-entropy.

The weight ``beta = 0.5`` of the total objective is applied by the training engine, not here.
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from sasnet_components.losses._checks import check_branch_pair
from sasnet_components.utils.errors import InvalidInputError

__all__ = ["SegLoss", "SEG_LOSS_MODES"]

SEG_LOSS_MODES = ("dice_ce", "dice")
_DEFAULT_SMOOTH = {"dice_ce": 1e-5, "dice": 1e-8}


class SegLoss(nn.Module):
    """Segmentation loss of both branches on labeled samples (paper Eq. 12-14).

    Per branch, with ``p = softmax(logits, dim=1)`` and ``y`` the one-hot label:

    - ``mode="dice_ce"`` (paper Eq. 12): ``L = L_CE + L_Dice``. ``L_CE`` (Eq. 14) is the
      cross-entropy of the logits, averaged over all labeled voxels. ``L_Dice`` (Eq. 13) is
      ``1 - (2 sum(p_c y_c) + smooth_nr) / (sum(p_c) + sum(y_c) + smooth_dr)`` with the sums
      pooled over the whole labeled batch and all voxels (one Dice per class for the batch),
      averaged over the classes ``c`` (foreground only unless ``include_background``);
      ``smooth_nr = smooth_dr = 1e-5`` by default. Built from ``monai.losses.DiceCELoss``
      (``softmax=True, to_onehot_y=True, batch=True``).
    - ``mode="dice"`` (reference code): the same pooled soft Dice with ``smooth_nr = smooth_dr =
      1e-8`` and no cross-entropy. For ``C = 2`` this is the reference's
      ``1 - (2 sum(p_1 y_1) + 1e-8) / (sum(p_1) + sum(y_1) + 1e-8)`` on the foreground channel;
      for ``C > 2`` the mean over the foreground classes. Built from ``monai.losses.DiceLoss``.

    The result is the sum of the two branches' losses; with ``logits_low=None`` (a one-branch
    network) the high-level branch's loss alone. Pass the labeled samples only; an
    empty batch (``B = 0``, no labeled sample in the batch) gives 0 (still attached to the graph).

    Args:
        mode: ``"dice_ce"`` (paper) or ``"dice"`` (reference code).
        include_background: include class 0 in the Dice average (default ``False``: foreground
            classes only, as both the paper setting and the reference code).
        smooth_nr: constant added to the Dice numerator; ``None`` = 1e-5 for ``"dice_ce"``,
            1e-8 for ``"dice"``.
        smooth_dr: constant added to the Dice denominator; ``None`` = same defaults.
        check_labels: check every call that ``label`` holds class indices in [0, C) (reading the
            answer waits for the device); ``False`` for callers that checked the labels once, e.g.
            a ``DeviceBatchLoader`` with ``num_classes``.

    Raises:
        ValueError: ``mode`` is not one of ``SEG_LOSS_MODES``; a smoothing constant is negative.

    Example:
        >>> loss = SegLoss(mode="dice_ce")
        >>> logits_low, logits_high = torch.randn(2, 2, 8, 8, 8), torch.randn(2, 2, 8, 8, 8)
        >>> label = torch.randint(0, 2, (2, 1, 8, 8, 8))
        >>> loss(logits_low, logits_high, label).shape
        torch.Size([])
    """

    def __init__(
        self,
        mode: str = "dice_ce",
        include_background: bool = False,
        smooth_nr: float | None = None,
        smooth_dr: float | None = None,
        check_labels: bool = True,
    ) -> None:
        super().__init__()
        self.check_labels = bool(check_labels)
        if not isinstance(mode, str) or mode not in SEG_LOSS_MODES:
            raise InvalidInputError(f"`mode` must be one of {SEG_LOSS_MODES}, got {mode!r}.")
        self.mode = mode
        self.include_background = bool(include_background)
        self.smooth_nr = float(_DEFAULT_SMOOTH[mode] if smooth_nr is None else smooth_nr)
        self.smooth_dr = float(_DEFAULT_SMOOTH[mode] if smooth_dr is None else smooth_dr)
        for name, value in (("smooth_nr", self.smooth_nr), ("smooth_dr", self.smooth_dr)):
            if not value >= 0:
                raise InvalidInputError(f"`{name}` must be >= 0, got {value}.")
        common = dict(
            include_background=self.include_background,
            to_onehot_y=True,
            softmax=True,
            batch=True,
            smooth_nr=self.smooth_nr,
            smooth_dr=self.smooth_dr,
        )
        self.branch_loss: nn.Module = DiceCELoss(**common) if mode == "dice_ce" else DiceLoss(**common)

    def forward(self, logits_low: torch.Tensor | None, logits_high: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Compute the segmentation loss summed over the two branches.

        Args:
            logits_low: segmentation logits of the low-level branch on the labeled samples,
                ``(B, C, H, W[, D])``, ``C >= 2``; ``None`` for a one-branch network (the
                high-level branch's loss only).
            logits_high: segmentation logits of the high-level branch, same shape.
            label: ground truth class indices ``(B, 1, H, W[, D])``, integer values in [0, C)
                (any integer, bool or float dtype holding whole numbers).

        Returns:
            scalar tensor >= 0.

        Raises:
            TypeError: an input is not a tensor.
            ValueError: logits shapes differ, fewer than 3 dims or 2 channels, ``label`` shape is
                not ``(B, 1, *spatial)``, or (with `check_labels`) ``label`` holds values outside
                [0, C) or non-integers.
        """
        one_branch = logits_low is None
        low = logits_high if one_branch else logits_low
        check_branch_pair(("logits_low", "logits_high"), low, logits_high, ("label", label))
        expected = (logits_high.shape[0], 1) + tuple(logits_high.shape[2:])
        if tuple(label.shape) != expected:
            raise ValueError(
                f"`label` must have shape (B, 1, *spatial) = {expected} for logits of shape "
                f"{tuple(logits_high.shape)}, got {tuple(label.shape)}."
            )
        if label.is_complex():
            raise TypeError(f"`label` must hold integer class indices, got dtype {label.dtype}.")
        channels = logits_high.shape[1]
        bad = (label < 0) | (label >= channels)
        if label.is_floating_point():
            bad |= label != label.round()
        if self.check_labels and bool(bad.any()):
            values = torch.unique(label[bad]).cpu().tolist()
            raise ValueError(
                f"`label` must hold integer class indices in [0, {channels}) for {channels}-channel "
                f"logits, got out-of-range values {values[:10]}."
            )
        if logits_high.shape[0] == 0:
            return (logits_high.sum() if one_branch else logits_low.sum() + logits_high.sum()) * 0.0
        label = label.long()
        loss_high = self.branch_loss(logits_high, label)
        return loss_high if one_branch else self.branch_loss(logits_low, label) + loss_high

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, include_background={self.include_background}, "
            f"smooth_nr={self.smooth_nr}, smooth_dr={self.smooth_dr}"
        )
