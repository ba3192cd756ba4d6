"""Sliding-window settings that reproduce the published window stride with MONAI's inferer.

The SASNet / UA-MT evaluation (``test_single_case`` of the reference code) slides a window of the
training patch size over the volume with a fixed stride (LA: patch ``(112, 112, 80)``, stride 18
in-plane and 4 along z; Pancreas-CT: patch ``(96, 96, 96)``, stride 16) and averages the
overlapping softmax outputs uniformly. MONAI's :func:`monai.inferers.sliding_window_inference`
(and :class:`monai.inferers.SlidingWindowInferer`) take an *overlap* instead and compute the step
per axis as ``int(roi * (1 - overlap))``. :func:`overlap_for_stride` returns the overlap whose
step is exactly the requested stride, and :func:`paper_window_positions` lists the window starts
of the reference code, so that tests can check that both place the windows at the same voxels.

With ``mode="constant"`` (uniform averaging) and the overlap from :func:`overlap_for_stride`,
MONAI's windows coincide with the reference windows: both pad an axis shorter than the patch to
the patch size (``(patch - size) // 2`` voxels before, the rest after, zeros by default), use
``ceil((size - patch) / stride) + 1`` windows per axis and shift the last window back so that it
ends at the border of the (padded) volume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sasnet_components.utils.errors import InputTypeError, InvalidInputError

__all__ = ["overlap_for_stride", "paper_window_positions"]


def _as_int_tuple(value: Sequence[int], name: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InputTypeError(f"`{name}` must be a sequence of integers (one per spatial dim), got {value!r}.")
    out = []
    for axis, v in enumerate(value):
        if isinstance(v, bool) or int(v) != v:
            raise InputTypeError(f"`{name}` must hold integers, got {v!r} on axis {axis} of {value!r}.")
        out.append(int(v))
    return tuple(out)


def _check_roi_and_stride(roi_size: Sequence[int], stride: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    roi = _as_int_tuple(roi_size, "roi_size")
    step = _as_int_tuple(stride, "stride")
    if len(roi) != len(step):
        raise InvalidInputError(
            f"`roi_size` and `stride` must have one entry per spatial dim each, got roi_size {roi} "
            f"(length {len(roi)}) and stride {step} (length {len(step)})."
        )
    for axis, (r, s) in enumerate(zip(roi, step)):
        if r < 1:
            raise InvalidInputError(f"`roi_size` entries must be >= 1, got {r} on axis {axis} (roi_size {roi}).")
        if s < 1 or s > r:
            raise InvalidInputError(
                f"`stride` must satisfy 1 <= stride <= roi_size on every axis, got stride {s} and "
                f"roi_size {r} on axis {axis} (stride {step}, roi_size {roi})."
            )
    return roi, step


def overlap_for_stride(roi_size: Sequence[int], stride: Sequence[int]) -> tuple[float, ...]:
    """Per-axis ``overlap`` for MONAI's sliding window so that its step equals ``stride`` exactly.

    MONAI computes the step of axis ``i`` as ``int(roi_size[i] * (1 - overlap[i]))``. That equals
    ``stride[i]`` for every overlap in ``(1 - (stride + 1) / roi, 1 - stride / roi]``; the value
    returned is the middle of that interval, ``1 - (stride + 0.5) / roi``, so float rounding
    cannot move the step to a neighbouring integer (``0.0`` when ``stride == roi``, since MONAI
    requires ``0 <= overlap < 1``). Each value is checked against MONAI's formula before it is
    returned.

    Args:
        roi_size: window (patch) size per spatial axis, e.g. ``(112, 112, 80)`` for LA.
        stride: requested window step per spatial axis, ``1 <= stride <= roi_size``, e.g.
            ``(18, 18, 4)`` for LA or ``(16, 16, 16)`` for Pancreas-CT.

    Returns:
        One overlap in ``[0, 1)`` per axis, to pass as ``overlap=`` to
        :class:`monai.inferers.SlidingWindowInferer` or
        :func:`monai.inferers.sliding_window_inference`.

    Raises:
        TypeError: when ``roi_size`` or ``stride`` is not a sequence of integers.
        ValueError: when the lengths differ or a stride is outside ``[1, roi_size]`` (the message
            names the axis and the values).

    Example:
        >>> ov = overlap_for_stride((112, 112, 80), (18, 18, 4))
        >>> [int(r * (1 - o)) for r, o in zip((112, 112, 80), ov)]
        [18, 18, 4]
    """
    roi, step = _check_roi_and_stride(roi_size, stride)
    overlaps = []
    for axis, (r, s) in enumerate(zip(roi, step)):
        o = 0.0 if s == r else 1.0 - (s + 0.5) / r
        if not (0.0 <= o < 1.0) or int(r * (1 - o)) != s:  # pragma: no cover - guards float surprises
            raise InvalidInputError(
                f"could not find an overlap giving stride {s} for roi_size {r} on axis {axis}: "
                f"overlap {o!r} gives step {int(r * (1 - o))}."
            )
        overlaps.append(o)
    return tuple(overlaps)


def paper_window_positions(
    image_size: Sequence[int], roi_size: Sequence[int], stride: Sequence[int]
) -> list[list[int]]:
    """Window start positions per axis used by the reference ``test_single_case`` (UA-MT / SASNet).

    The reference code pads every axis shorter than the patch to the patch size (``(patch - size)
    // 2`` zeros before, the rest after), then uses ``n = ceil((size - patch) / stride) + 1``
    windows per axis starting at ``min(stride * i, size - patch)`` for ``i = 0 .. n - 1`` (sizes
    after padding). Windows are all combinations of the per-axis starts. This function is meant for
    documentation and tests (compare with the windows MONAI visits); inference itself runs with
    MONAI's inferer and :func:`overlap_for_stride`.

    Args:
        image_size: spatial size of the volume before padding, e.g. ``(160, 130, 88)``.
        roi_size: window (patch) size per spatial axis, e.g. ``(112, 112, 80)``.
        stride: window step per spatial axis, ``1 <= stride <= roi_size``, e.g. ``(18, 18, 4)``.

    Returns:
        Per axis, the sorted list of window start indices in the coordinates of the *padded*
        volume (an axis that was padded has the single start 0).

    Raises:
        TypeError: when an argument is not a sequence of integers.
        ValueError: when the lengths differ, a size is < 1 or a stride is outside
            ``[1, roi_size]``.

    Example:
        >>> paper_window_positions((160, 130, 88), (112, 112, 80), (18, 18, 4))[0]
        [0, 18, 36, 48]
    """
    roi, step = _check_roi_and_stride(roi_size, stride)
    size = _as_int_tuple(image_size, "image_size")
    if len(size) != len(roi):
        raise InvalidInputError(
            f"`image_size` must have one entry per spatial dim of `roi_size` (length {len(roi)}), "
            f"got image_size {size} (length {len(size)})."
        )
    positions = []
    for axis, (w, p, s) in enumerate(zip(size, roi, step)):
        if w < 1:
            raise InvalidInputError(f"`image_size` entries must be >= 1, got {w} on axis {axis} (image_size {size}).")
        w = max(w, p)  # padded to at least the patch size
        n = math.ceil((w - p) / s) + 1
        positions.append([min(s * i, w - p) for i in range(n)])
    return positions
