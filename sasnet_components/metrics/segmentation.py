"""Binary segmentation metrics: Dice, Jaccard, 95% Hausdorff distance and average surface distance.

The definitions follow ``medpy.metric.binary`` (``dc``, ``jc``, ``hd95`` and ``asd``) exactly, so
values can be compared with numbers reported by other SASNet / semi-supervised segmentation work
that uses MedPy, while adding:

* input validation (shape, dimensionality, binary values, voxel spacing) with explicit messages;
* an explicit empty-mask policy (``NaN`` plus :class:`EmptyMaskWarning` instead of a crash or a
  misleading distance of 0);
* :func:`segmentation_metrics`, which computes all four metrics and shares the expensive surface
  distance work (each directed surface-distance set is computed once);
* a crop to the bounding box of ``pred | gt`` before the distance transforms, which leaves
  every result unchanged (see :func:`_crop_to_union`).

Surface definition (MedPy, connectivity 1): ``border(X) = X XOR erode(X)`` where the erosion uses
the face-connected structuring element (``generate_binary_structure(ndim, 1)``) and treats
everything outside the array as background, so foreground voxels on the array edge are border
voxels. The directed surface distances from ``A`` to ``B`` are the Euclidean distances from every
border voxel of ``A`` to the nearest border voxel of ``B``.

Units: distances are in voxels when ``spacing`` is ``None`` and in the unit of ``spacing``
(usually millimetres) when a per-axis ``spacing`` is given.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

__all__ = ["EmptyMaskWarning", "dice", "jaccard", "hd95", "asd", "region_metrics", "segmentation_metrics"]

MaskLike = Union[np.ndarray, torch.Tensor]
SpacingLike = Union[Sequence[float], np.ndarray, torch.Tensor, None]

_MAX_SHOWN_VALUES = 5


class EmptyMaskWarning(UserWarning):
    """Warning emitted when a metric is undefined because the prediction and/or ground truth is empty.

    The affected metric is returned as ``float("nan")`` (never as a distance of 0), so that
    aggregations with ``numpy.nanmean`` skip it explicitly and the case stays visible.
    """


# ---------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------


def _to_numpy(x: MaskLike, name: str) -> np.ndarray:
    """Convert a numpy array or (CPU / CUDA) torch tensor to a numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.is_floating_point() and x.dtype not in (torch.float16, torch.float32, torch.float64):
            # e.g. bfloat16 has no numpy equivalent; 0 and 1 are exact in float32.
            x = x.to(torch.float32)
        return x.cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"`{name}` must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}.")


def _as_binary(x: np.ndarray, name: str) -> np.ndarray:
    """Return ``x`` as a bool array, raising if it holds values other than 0 and 1."""
    if x.dtype == np.bool_:
        return x
    valid = (x == 0) | (x == 1)
    if not valid.all():
        unexpected = np.unique(x[~valid])
        shown = ", ".join(repr(v) for v in unexpected[:_MAX_SHOWN_VALUES].tolist())
        if unexpected.size > _MAX_SHOWN_VALUES:
            shown += f", ... ({unexpected.size} distinct unexpected values)"
        raise ValueError(
            f"`{name}` must be a binary mask with values in {{0, 1}} (or bool), got unexpected "
            f"values [{shown}]; select one label of a label map first, e.g. `{name} == k`."
        )
    return x != 0


def _prepare(pred: MaskLike, gt: MaskLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``pred`` / ``gt`` to bool numpy arrays of equal 2D or 3D shape."""
    pred_np = _to_numpy(pred, "pred")
    gt_np = _to_numpy(gt, "gt")
    if pred_np.shape != gt_np.shape:
        raise ValueError(
            f"`pred` and `gt` must have the same shape, got pred shape {tuple(pred_np.shape)} "
            f"and gt shape {tuple(gt_np.shape)}."
        )
    if pred_np.ndim not in (2, 3):
        raise ValueError(
            "`pred` and `gt` must be 2D (H, W) or 3D (H, W, D) masks without batch / channel "
            f"dims, got ndim={pred_np.ndim} (shape {tuple(pred_np.shape)})."
        )
    return _as_binary(pred_np, "pred"), _as_binary(gt_np, "gt")


def _validate_spacing(spacing: SpacingLike, shape: tuple[int, ...]) -> np.ndarray | None:
    """Return ``spacing`` as a float64 array of length ``len(shape)``, or ``None``."""
    if spacing is None:
        return None
    ndim = len(shape)
    if isinstance(spacing, torch.Tensor):
        spacing = spacing.detach().cpu().numpy()
    try:
        arr = np.asarray(spacing, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"`spacing` must be a sequence of {ndim} positive floats (one per spatial dim), "
            f"got {spacing!r}."
        ) from err
    if arr.ndim != 1 or arr.shape[0] != ndim:
        raise ValueError(
            f"`spacing` must have one entry per spatial dim, i.e. length {ndim} for masks of shape "
            f"{tuple(shape)}, got {spacing!r}."
        )
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"`spacing` entries must all be finite and > 0, got {spacing!r}.")
    return np.ascontiguousarray(arr)


def _empty_description(pred_empty: bool, gt_empty: bool) -> str:
    if pred_empty and gt_empty:
        return "both the prediction and the ground truth are empty"
    if pred_empty:
        return "the prediction is empty"
    return "the ground truth is empty"


def _warn_empty(what: str, pred_empty: bool, gt_empty: bool, stacklevel: int) -> None:
    warnings.warn(
        f"{what} undefined because {_empty_description(pred_empty, gt_empty)} "
        f"(pred empty: {pred_empty}, ground truth empty: {gt_empty}); returning NaN.",
        EmptyMaskWarning,
        stacklevel=stacklevel + 1,
    )


# ---------------------------------------------------------------------------------------------
# core computations (inputs already validated bool arrays)
# ---------------------------------------------------------------------------------------------


def _overlap(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int]:
    """Return ``(|pred ∩ gt|, |pred|, |gt|)``."""
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred)), int(np.count_nonzero(gt))


def _dice_from_counts(inter: int, n_pred: int, n_gt: int) -> float:
    # callers handle n_pred == n_gt == 0
    return 2.0 * inter / float(n_pred + n_gt)


def _jaccard_from_counts(inter: int, n_pred: int, n_gt: int) -> float:
    return float(inter) / float(n_pred + n_gt - inter)


def _crop_to_union(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the tight bounding box of ``pred | gt``; all results are unchanged.

    * Outside the box both masks are 0 everywhere, which is exactly what the erosion assumes
      beyond the borders of the (cropped) array (``border_value=0``), so every voxel keeps its
      border / interior status, including foreground voxels on the original array edge.
    * All border voxels lie inside the box and the Euclidean distance transform is exact, so the
      distance from a border voxel to the nearest reference border voxel is unchanged.

    Both masks must not be empty at the same time.
    """
    union = pred | gt
    slices = []
    for axis in range(union.ndim):
        other_axes = tuple(a for a in range(union.ndim) if a != axis)
        idx = np.flatnonzero(union.any(axis=other_axes))
        slices.append(slice(int(idx[0]), int(idx[-1]) + 1))
    box = tuple(slices)
    return pred[box], gt[box]


def _border(mask: np.ndarray) -> np.ndarray:
    """One-voxel surface of ``mask`` (face connectivity, outside of the array counts as background)."""
    structure = generate_binary_structure(mask.ndim, 1)
    return mask ^ binary_erosion(mask, structure=structure, iterations=1)


def _directed(src_border: np.ndarray, ref_border: np.ndarray, sampling: np.ndarray | None) -> np.ndarray:
    """Distances from each voxel of ``src_border`` to the nearest voxel of ``ref_border``."""
    dt = distance_transform_edt(~ref_border, sampling=sampling)
    return dt[src_border]


def _borders_or_warn(
    pred: MaskLike, gt: MaskLike, spacing: SpacingLike, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Validated borders of ``pred`` and ``gt`` (cropped to their union) and the sampling.

    Returns ``None`` after an :class:`EmptyMaskWarning` (attributed to the public caller) when
    either mask is empty, so that the caller reports NaN.
    """
    p, g = _prepare(pred, gt)
    sampling = _validate_spacing(spacing, p.shape)
    pred_empty, gt_empty = not p.any(), not g.any()
    if pred_empty or gt_empty:
        _warn_empty(what, pred_empty, gt_empty, stacklevel=3)
        return None
    p, g = _crop_to_union(p, g)
    return _border(p), _border(g), sampling


def _pooled_hd95(d_pg: np.ndarray, d_gp: np.ndarray) -> float:
    return float(np.percentile(np.concatenate((d_pg, d_gp)), 95))


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def dice(pred: MaskLike, gt: MaskLike) -> float:
    """Dice similarity coefficient ``2 |P ∩ G| / (|P| + |G|)`` (same as ``medpy.metric.binary.dc``).

    Args:
        pred: predicted binary mask of shape ``(H, W)`` or ``(H, W, D)``, numpy array or torch
            tensor (CPU or CUDA), any dtype with values in {0, 1} or bool (nonzero = foreground).
        gt: ground-truth binary mask, same shape and value rules as ``pred``.

    Returns:
        Dice in [0, 1]. An empty ``pred`` with non-empty ``gt`` (or the reverse) gives 0.0, a
        genuine failure. When both masks are empty the score is undefined: ``float("nan")`` is
        returned and an :class:`EmptyMaskWarning` is emitted (MedPy returns 1.0 there).

    Raises:
        TypeError: when an input is neither a numpy array nor a torch tensor.
        ValueError: when the shapes differ, the masks are not 2D / 3D, or a mask holds values
            other than 0 and 1.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((1, 12)); a[0, 0:8] = 1
        >>> b = np.zeros((1, 12)); b[0, 4:12] = 1
        >>> dice(a, b)
        0.5
    """
    p, g = _prepare(pred, gt)
    inter, n_pred, n_gt = _overlap(p, g)
    if n_pred == 0 and n_gt == 0:
        _warn_empty("dice is", True, True, stacklevel=2)
        return math.nan
    return _dice_from_counts(inter, n_pred, n_gt)


def jaccard(pred: MaskLike, gt: MaskLike) -> float:
    """Jaccard index (IoU) ``|P ∩ G| / |P ∪ G|`` (same as ``medpy.metric.binary.jc``).

    Args:
        pred: predicted binary mask of shape ``(H, W)`` or ``(H, W, D)``, numpy array or torch
            tensor (CPU or CUDA), any dtype with values in {0, 1} or bool (nonzero = foreground).
        gt: ground-truth binary mask, same shape and value rules as ``pred``.

    Returns:
        Jaccard index in [0, 1]. An empty ``pred`` with non-empty ``gt`` (or the reverse) gives
        0.0. When both masks are empty ``float("nan")`` is returned with an
        :class:`EmptyMaskWarning` (MedPy returns 1.0 there).

    Raises:
        TypeError: when an input is neither a numpy array nor a torch tensor.
        ValueError: when the shapes differ, the masks are not 2D / 3D, or a mask holds values
            other than 0 and 1.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((1, 12)); a[0, 0:8] = 1
        >>> b = np.zeros((1, 12)); b[0, 4:12] = 1
        >>> round(jaccard(a, b), 6)  # 4 / 12
        0.333333
    """
    p, g = _prepare(pred, gt)
    inter, n_pred, n_gt = _overlap(p, g)
    if n_pred == 0 and n_gt == 0:
        _warn_empty("jaccard is", True, True, stacklevel=2)
        return math.nan
    return _jaccard_from_counts(inter, n_pred, n_gt)


def hd95(pred: MaskLike, gt: MaskLike, spacing: SpacingLike = None) -> float:
    """95th percentile Hausdorff distance, pooled over both directions (as ``medpy.metric.binary.hd95``).

    Let ``d(P -> G)`` be the distances from every border voxel of ``pred`` to the nearest border
    voxel of ``gt`` and ``d(G -> P)`` the reverse. HD95 is the 95th percentile (linear
    interpolation, ``numpy.percentile`` default) of the *concatenation* of both sets. This is not
    ``max(p95(d(P -> G)), p95(d(G -> P)))``, which other toolkits (e.g. MONAI's
    ``compute_hausdorff_distance(percentile=95)``) report; the two usually differ.

    Args:
        pred: predicted binary mask of shape ``(H, W)`` or ``(H, W, D)``, numpy array or torch
            tensor (CPU or CUDA), any dtype with values in {0, 1} or bool (nonzero = foreground).
        gt: ground-truth binary mask, same shape and value rules as ``pred``.
        spacing: voxel size per spatial axis, e.g. ``(0.625, 0.625, 2.5)`` mm for ``(H, W, D)``.
            ``None`` (default) means unit spacing, i.e. the result is in voxels; otherwise it is
            in the unit of ``spacing`` (usually mm).

    Returns:
        HD95 (>= 0) in voxels or in the unit of ``spacing``. If ``pred`` or ``gt`` is empty the
        distance is undefined: ``float("nan")`` is returned (never 0) and an
        :class:`EmptyMaskWarning` names the empty mask(s).

    Raises:
        TypeError: when an input is neither a numpy array nor a torch tensor.
        ValueError: when the shapes differ, the masks are not 2D / 3D, a mask holds values other
            than 0 and 1, or ``spacing`` does not have one positive entry per spatial dim.

    Example:
        >>> import numpy as np
        >>> g = np.zeros((12, 3, 3)); g[2:6, 1, 1] = 1   # 4-voxel line
        >>> p = np.zeros((12, 3, 3)); p[2:10, 1, 1] = 1  # 8-voxel line over it
        >>> round(hd95(p, g), 6)  # pooled [0]*8 + [1, 2, 3, 4] -> 3 + 0.45 * (4 - 3)
        3.45
    """
    borders = _borders_or_warn(pred, gt, spacing, "hd95 is")
    if borders is None:
        return math.nan
    pb, gb, sampling = borders
    return _pooled_hd95(_directed(pb, gb, sampling), _directed(gb, pb, sampling))


def asd(pred: MaskLike, gt: MaskLike, spacing: SpacingLike = None) -> float:
    """Average surface distance from ``pred`` to ``gt`` (directed; as ``medpy.metric.binary.asd``).

    The mean, over the border voxels of ``pred``, of the distance to the nearest border voxel of
    ``gt``. It is *directed*: ``asd(pred, gt) != asd(gt, pred)`` in general (the symmetric
    version is MedPy's ``assd``, the mean of both directions).

    Args:
        pred: predicted binary mask of shape ``(H, W)`` or ``(H, W, D)``, numpy array or torch
            tensor (CPU or CUDA), any dtype with values in {0, 1} or bool (nonzero = foreground).
        gt: ground-truth binary mask, same shape and value rules as ``pred``.
        spacing: voxel size per spatial axis, e.g. ``(0.625, 0.625, 2.5)`` mm for ``(H, W, D)``.
            ``None`` (default) means unit spacing, i.e. the result is in voxels; otherwise it is
            in the unit of ``spacing`` (usually mm).

    Returns:
        ASD (>= 0) in voxels or in the unit of ``spacing``. If ``pred`` or ``gt`` is empty the
        distance is undefined: ``float("nan")`` is returned (never 0) and an
        :class:`EmptyMaskWarning` names the empty mask(s).

    Raises:
        TypeError: when an input is neither a numpy array nor a torch tensor.
        ValueError: when the shapes differ, the masks are not 2D / 3D, a mask holds values other
            than 0 and 1, or ``spacing`` does not have one positive entry per spatial dim.

    Example:
        >>> import numpy as np
        >>> g = np.zeros((12, 3, 3)); g[2:6, 1, 1] = 1
        >>> p = np.zeros((12, 3, 3)); p[2:10, 1, 1] = 1
        >>> asd(p, g)  # (0 + 0 + 0 + 0 + 1 + 2 + 3 + 4) / 8
        1.25
        >>> asd(g, p)  # every voxel of g lies on p
        0.0
    """
    borders = _borders_or_warn(pred, gt, spacing, "asd is")
    if borders is None:
        return math.nan
    pb, gb, sampling = borders
    return float(_directed(pb, gb, sampling).mean())


def segmentation_metrics(pred: MaskLike, gt: MaskLike, spacing: SpacingLike = None) -> dict[str, float | bool]:
    """Dice, Jaccard, HD95 and ASD of one binary mask pair, sharing the surface-distance work.

    The masks are validated and converted once, the borders are extracted once and each directed
    surface-distance set (``pred -> gt`` and ``gt -> pred``) is computed once per unit system;
    HD95 (pooled 95th percentile of both sets) and ASD (mean of ``pred -> gt``, directed) are
    derived from them. Values equal those of :func:`dice`, :func:`jaccard`, :func:`hd95` and
    :func:`asd`.

    Args:
        pred: predicted binary mask of shape ``(H, W)`` or ``(H, W, D)``, numpy array or torch
            tensor (CPU or CUDA), any dtype with values in {0, 1} or bool (nonzero = foreground).
        gt: ground-truth binary mask, same shape and value rules as ``pred``.
        spacing: optional voxel size per spatial axis, e.g. ``(0.625, 0.625, 2.5)`` mm. When
            given, ``"hd95_mm"`` and ``"asd_mm"`` are added to the result.

    Returns:
        A dict with

        * ``"dice"``, ``"jaccard"``: floats in [0, 1]; NaN when both masks are empty;
        * ``"hd95"``, ``"asd"``: floats in voxels (always unit spacing); NaN when either mask is
          empty;
        * ``"hd95_mm"``, ``"asd_mm"``: only when ``spacing`` is given, in the unit of
          ``spacing``; NaN when either mask is empty;
        * ``"empty_prediction"``, ``"empty_ground_truth"``: bools.

        One :class:`EmptyMaskWarning` naming the empty mask(s) is emitted when any value is NaN.

    Raises:
        TypeError: when an input is neither a numpy array nor a torch tensor.
        ValueError: when the shapes differ, the masks are not 2D / 3D, a mask holds values other
            than 0 and 1, or ``spacing`` does not have one positive entry per spatial dim.

    Example:
        >>> import numpy as np
        >>> g = np.zeros((12, 3, 3)); g[2:6, 1, 1] = 1
        >>> p = np.zeros((12, 3, 3)); p[2:10, 1, 1] = 1
        >>> m = segmentation_metrics(p, g, spacing=(2.0, 1.0, 1.0))
        >>> round(m["dice"], 6), m["asd"], m["asd_mm"]
        (0.666667, 1.25, 2.5)
    """
    p, g = _prepare(pred, gt)
    sampling = _validate_spacing(spacing, p.shape)
    inter, n_pred, n_gt = _overlap(p, g)
    pred_empty, gt_empty = n_pred == 0, n_gt == 0

    result: dict[str, float | bool] = {}
    if pred_empty and gt_empty:
        result["dice"] = result["jaccard"] = math.nan
    else:
        result["dice"] = _dice_from_counts(inter, n_pred, n_gt)
        result["jaccard"] = _jaccard_from_counts(inter, n_pred, n_gt)

    distance_keys = ["hd95", "asd"] + (["hd95_mm", "asd_mm"] if sampling is not None else [])
    if pred_empty or gt_empty:
        for key in distance_keys:
            result[key] = math.nan
        nan_keys = (["dice", "jaccard"] if pred_empty and gt_empty else []) + distance_keys
        _warn_empty(", ".join(nan_keys) + " are", pred_empty, gt_empty, stacklevel=2)
    else:
        pc, gc = _crop_to_union(p, g)
        pb, gb = _border(pc), _border(gc)
        d_pg, d_gp = _directed(pb, gb, None), _directed(gb, pb, None)
        result["hd95"] = _pooled_hd95(d_pg, d_gp)
        result["asd"] = float(d_pg.mean())
        if sampling is not None:
            if np.all(sampling == 1.0):
                d_pg_mm, d_gp_mm = d_pg, d_gp
            else:
                d_pg_mm, d_gp_mm = _directed(pb, gb, sampling), _directed(gb, pb, sampling)
            result["hd95_mm"] = _pooled_hd95(d_pg_mm, d_gp_mm)
            result["asd_mm"] = float(d_pg_mm.mean())

    result["empty_prediction"] = bool(pred_empty)
    result["empty_ground_truth"] = bool(gt_empty)
    return result


def region_metrics(
    pred: MaskLike, gt: MaskLike, names: Sequence[str], spacing: SpacingLike = None
) -> dict[str, dict[str, float | bool]]:
    """:func:`segmentation_metrics` of each region of stacked region masks (e.g. BraTS WT / TC / ET).

    Args:
        pred: predicted region masks ``(R, H, W)`` or ``(R, H, W, D)``, values in {0, 1} or bool;
            channel ``r`` is region ``names[r]`` (regions may overlap).
        gt: ground-truth region masks, same shape and value rules.
        names: ``R`` distinct region names, in channel order.
        spacing: optional voxel size per spatial axis (as :func:`segmentation_metrics`).

    Returns:
        region name -> the dict of :func:`segmentation_metrics` for that region's masks (Dice /
        Jaccard in [0, 1], HD95 / ASD in voxels, and in the unit of ``spacing`` when given; NaN
        and an :class:`EmptyMaskWarning` for an empty region, as there).

    Raises:
        TypeError: when an input is neither a numpy array nor a torch tensor.
        ValueError: when the shapes differ, the channel count is not ``len(names)``, names repeat,
            or a region fails the checks of :func:`segmentation_metrics`.

    Example:
        >>> import numpy as np
        >>> p = np.zeros((2, 1, 4)); p[0, 0, :2] = 1; p[1, 0, :1] = 1
        >>> {k: v["dice"] for k, v in region_metrics(p, p, ["wt", "et"]).items()}
        {'wt': 1.0, 'et': 1.0}
    """
    pred_np, gt_np = _to_numpy(pred, "pred"), _to_numpy(gt, "gt")
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise ValueError(f"`names` must be distinct region names, got {names}.")
    if pred_np.shape != gt_np.shape:
        raise ValueError(
            f"`pred` and `gt` must have the same shape (R, *spatial), got {tuple(pred_np.shape)} and {tuple(gt_np.shape)}."
        )
    if pred_np.ndim not in (3, 4) or pred_np.shape[0] != len(names):
        raise ValueError(
            f"`pred` and `gt` must have shape (R, H, W) or (R, H, W, D) with R = {len(names)} regions "
            f"({names}), got shape {tuple(pred_np.shape)}."
        )
    return {name: segmentation_metrics(pred_np[r], gt_np[r], spacing=spacing) for r, name in enumerate(names)}
