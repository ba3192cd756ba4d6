"""Tests for sasnet_components.metrics.segmentation (agreement with medpy, hand values, errors)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary
from scipy.ndimage import gaussian_filter

from sasnet_components.metrics.segmentation import (
    EmptyMaskWarning,
    asd,
    dice,
    hd95,
    jaccard,
    segmentation_metrics,
)

SHAPE = (40, 36, 30)
ANISO = (0.625, 0.625, 2.5)


def _random_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A (pred, gt) pair of correlated random blobs of shape SHAPE.

    Even seeds fill the whole volume (blobs touch the array edges, exercising the
    edge-is-background erosion); odd seeds confine the blobs to an interior box (exercising the
    bounding-box crop).
    """
    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.standard_normal(SHAPE), sigma=3.0)
    noise = gaussian_filter(rng.standard_normal(SHAPE), sigma=2.0)
    base /= base.std()
    noise /= noise.std()
    gt = base > 0.3
    pred = (base + 0.6 * noise) > 0.3
    if seed % 2 == 1:
        inside = np.zeros(SHAPE, dtype=bool)
        inside[8:30, 5:25, 6:20] = True
        gt &= inside
        inside_pred = np.zeros(SHAPE, dtype=bool)
        inside_pred[10:33, 7:27, 4:19] = True
        pred &= inside_pred
    assert pred.any() and gt.any()  # generator sanity, not an input check
    return pred, gt


def _line_pair() -> tuple[np.ndarray, np.ndarray]:
    """gt: 4-voxel line x = 2..5, pred: 8-voxel line x = 2..9 (y = z = 1) in a (12, 3, 3) volume."""
    gt = np.zeros((12, 3, 3), dtype=np.uint8)
    gt[2:6, 1, 1] = 1
    pred = np.zeros((12, 3, 3), dtype=np.uint8)
    pred[2:10, 1, 1] = 1
    return pred, gt


# ---------------------------------------------------------------------------------------------
# agreement with medpy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("spacing", [None, ANISO])
def test_agrees_with_medpy_random_3d(seed, spacing):
    pred, gt = _random_pair(seed)
    ref_dc = medpy_binary.dc(pred, gt)
    ref_jc = medpy_binary.jc(pred, gt)
    ref_hd95 = medpy_binary.hd95(pred, gt, voxelspacing=spacing)
    ref_asd = medpy_binary.asd(pred, gt, voxelspacing=spacing)
    # the pairs are not trivial: imperfect overlap and non-zero distances
    assert 0.2 < ref_dc < 0.99 and ref_hd95 > 0

    assert dice(pred, gt) == pytest.approx(ref_dc, rel=1e-4)
    assert jaccard(pred, gt) == pytest.approx(ref_jc, rel=1e-4)
    assert hd95(pred, gt, spacing=spacing) == pytest.approx(ref_hd95, rel=1e-4)
    assert asd(pred, gt, spacing=spacing) == pytest.approx(ref_asd, rel=1e-4)

    m = segmentation_metrics(pred, gt, spacing=spacing)
    assert m["dice"] == pytest.approx(ref_dc, rel=1e-4)
    assert m["jaccard"] == pytest.approx(ref_jc, rel=1e-4)
    if spacing is None:
        assert "hd95_mm" not in m and "asd_mm" not in m
        assert m["hd95"] == pytest.approx(ref_hd95, rel=1e-4)
        assert m["asd"] == pytest.approx(ref_asd, rel=1e-4)
    else:
        assert m["hd95_mm"] == pytest.approx(ref_hd95, rel=1e-4)
        assert m["asd_mm"] == pytest.approx(ref_asd, rel=1e-4)
        assert m["hd95"] == pytest.approx(medpy_binary.hd95(pred, gt), rel=1e-4)
        assert m["asd"] == pytest.approx(medpy_binary.asd(pred, gt), rel=1e-4)
    assert m["empty_prediction"] is False and m["empty_ground_truth"] is False


def test_asd_is_directed_like_medpy():
    pred, gt = _random_pair(1)
    forward, backward = asd(pred, gt), asd(gt, pred)
    assert forward == pytest.approx(medpy_binary.asd(pred, gt), rel=1e-4)
    assert backward == pytest.approx(medpy_binary.asd(gt, pred), rel=1e-4)
    assert forward != pytest.approx(backward, rel=1e-3)


# ---------------------------------------------------------------------------------------------
# hand-checkable values
# ---------------------------------------------------------------------------------------------


def test_dice_jaccard_overlapping_bars_by_hand():
    # A = 8 voxels (x = 0..7), B = 8 voxels (x = 4..11), overlap 4 voxels (x = 4..7):
    # dice = 2 * 4 / (8 + 8) = 0.5, jaccard = 4 / 12 = 1/3
    a = np.zeros((16, 3, 3), dtype=bool)
    a[0:8, 1, 1] = True
    b = np.zeros((16, 3, 3), dtype=bool)
    b[4:12, 1, 1] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert jaccard(a, b) == pytest.approx(1 / 3)


def test_line_pair_hd95_asd_by_hand():
    # A 1-voxel-thick line is all border (face-connected erosion removes every voxel).
    # pred x = 2..9 -> gt x = 2..5: distances [0, 0, 0, 0, 1, 2, 3, 4]
    # gt -> pred: [0, 0, 0, 0]
    # asd(pred, gt) = 10 / 8 = 1.25; asd(gt, pred) = 0
    # pooled sorted = [0]*8 + [1, 2, 3, 4] (12 values); p95 index 0.95 * 11 = 10.45
    #   -> 3 + 0.45 * (4 - 3) = 3.45
    # (max of the per-direction p95s would be 3.65: index 0.95 * 7 = 6.65 in [0,0,0,0,1,2,3,4])
    # dice = 2 * 4 / (8 + 4) = 2/3, jaccard = 4 / 8 = 0.5
    pred, gt = _line_pair()
    assert asd(pred, gt) == pytest.approx(1.25)
    assert asd(gt, pred) == pytest.approx(0.0)
    assert hd95(pred, gt) == pytest.approx(3.45)
    assert hd95(gt, pred) == pytest.approx(3.45)
    assert dice(pred, gt) == pytest.approx(2 / 3)
    assert jaccard(pred, gt) == pytest.approx(0.5)


def test_line_pair_with_spacing_by_hand():
    # spacing 2 mm along the line axis doubles every distance: asd 2.5 mm, hd95 6.9 mm;
    # voxel-unit values stay 1.25 and 3.45.
    pred, gt = _line_pair()
    spacing = (2.0, 1.0, 1.0)
    assert asd(pred, gt, spacing=spacing) == pytest.approx(2.5)
    assert hd95(pred, gt, spacing=spacing) == pytest.approx(6.9)
    m = segmentation_metrics(pred, gt, spacing=spacing)
    assert m["asd"] == pytest.approx(1.25)
    assert m["hd95"] == pytest.approx(3.45)
    assert m["asd_mm"] == pytest.approx(2.5)
    assert m["hd95_mm"] == pytest.approx(6.9)
    assert m["dice"] == pytest.approx(2 / 3)
    assert m["jaccard"] == pytest.approx(0.5)


def test_shifted_bar_pooled_percentile_by_hand():
    # gt x = 2..5, pred x = 4..7 (shift by 2 voxels), both lines (all border).
    # pred -> gt: [0, 0, 1, 2], gt -> pred: [2, 1, 0, 0]; asd(pred, gt) = 3 / 4 = 0.75
    # pooled sorted [0, 0, 0, 0, 1, 1, 2, 2]; index 0.95 * 7 = 6.65 -> 2.0
    gt = np.zeros((10, 3, 3), dtype=np.float32)
    gt[2:6, 1, 1] = 1
    pred = np.zeros((10, 3, 3), dtype=np.float32)
    pred[4:8, 1, 1] = 1
    assert asd(pred, gt) == pytest.approx(0.75)
    assert hd95(pred, gt) == pytest.approx(2.0)
    assert dice(pred, gt) == pytest.approx(0.5)  # 2 * 2 / 8


def test_identical_cubes_are_perfect():
    cube = np.zeros((10, 10, 10), dtype=np.int64)
    cube[3:7, 3:7, 3:7] = 1
    m = segmentation_metrics(cube, cube, spacing=ANISO)
    assert m["dice"] == 1.0 and m["jaccard"] == 1.0
    assert m["hd95"] == 0.0 and m["asd"] == 0.0
    assert m["hd95_mm"] == 0.0 and m["asd_mm"] == 0.0
    assert hd95(cube, cube) == 0.0 and asd(cube, cube) == 0.0


def test_array_edge_counts_as_background():
    # gt fills the whole 5x5x5 array: the erosion treats outside the array as background, so
    # the border is the outer shell and the 3x3x3 core is interior.
    # pred = the centre voxel (2, 2, 2); its nearest shell voxel is 2 voxels away -> asd = 2.
    # (If the edge were treated as foreground, gt would have no border at all.)
    gt = np.ones((5, 5, 5), dtype=bool)
    pred = np.zeros((5, 5, 5), dtype=bool)
    pred[2, 2, 2] = True
    assert asd(pred, gt) == pytest.approx(2.0)
    assert asd(pred, gt) == pytest.approx(medpy_binary.asd(pred, gt), rel=1e-4)
    assert hd95(pred, gt) == pytest.approx(medpy_binary.hd95(pred, gt), rel=1e-4)
    assert asd(gt, pred) == pytest.approx(medpy_binary.asd(gt, pred), rel=1e-4)


def test_mask_touching_edge_in_crop():
    # pred touches the low-x edge and is far from the other edges: the crop keeps that edge.
    pred = np.zeros((20, 20, 20), dtype=bool)
    pred[0:6, 8:12, 8:12] = True
    gt = np.zeros((20, 20, 20), dtype=bool)
    gt[2:9, 9:13, 7:11] = True
    for spacing in (None, (1.0, 0.5, 3.0)):
        assert hd95(pred, gt, spacing) == pytest.approx(medpy_binary.hd95(pred, gt, spacing), rel=1e-4)
        assert asd(pred, gt, spacing) == pytest.approx(medpy_binary.asd(pred, gt, spacing), rel=1e-4)
        assert asd(gt, pred, spacing) == pytest.approx(medpy_binary.asd(gt, pred, spacing), rel=1e-4)


# ---------------------------------------------------------------------------------------------
# empty masks
# ---------------------------------------------------------------------------------------------


def test_empty_prediction():
    gt = np.zeros((8, 8, 8), dtype=bool)
    gt[2:5, 2:5, 2:5] = True
    empty = np.zeros_like(gt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a genuine failure: no warning for dice / jaccard
        assert dice(empty, gt) == 0.0
        assert jaccard(empty, gt) == 0.0
    with pytest.warns(EmptyMaskWarning, match="prediction is empty"):
        assert math.isnan(hd95(empty, gt))
    with pytest.warns(EmptyMaskWarning, match="prediction is empty"):
        assert math.isnan(asd(empty, gt, spacing=ANISO))
    with pytest.warns(EmptyMaskWarning, match="prediction is empty"):
        m = segmentation_metrics(empty, gt, spacing=ANISO)
    assert m["empty_prediction"] is True and m["empty_ground_truth"] is False
    assert m["dice"] == 0.0 and m["jaccard"] == 0.0
    assert all(math.isnan(m[k]) for k in ("hd95", "asd", "hd95_mm", "asd_mm"))


def test_empty_ground_truth():
    pred = np.zeros((8, 8, 8), dtype=bool)
    pred[2:5, 2:5, 2:5] = True
    empty = np.zeros_like(pred)
    assert dice(pred, empty) == 0.0
    with pytest.warns(EmptyMaskWarning, match="ground truth is empty"):
        assert math.isnan(hd95(pred, empty))
    with pytest.warns(EmptyMaskWarning, match="ground truth is empty"):
        assert math.isnan(asd(pred, empty))
    with pytest.warns(EmptyMaskWarning, match="ground truth is empty"):
        m = segmentation_metrics(pred, empty)
    assert m["empty_prediction"] is False and m["empty_ground_truth"] is True
    assert math.isnan(m["hd95"]) and math.isnan(m["asd"])


def test_both_empty():
    empty = np.zeros((6, 6, 6), dtype=np.uint8)
    with pytest.warns(EmptyMaskWarning, match="both the prediction and the ground truth are empty"):
        assert math.isnan(dice(empty, empty))
    with pytest.warns(EmptyMaskWarning, match="both"):
        assert math.isnan(jaccard(empty, empty))
    with pytest.warns(EmptyMaskWarning, match="both"):
        assert math.isnan(hd95(empty, empty))
    with pytest.warns(EmptyMaskWarning, match="both"):
        m = segmentation_metrics(empty, empty)
    assert m["empty_prediction"] is True and m["empty_ground_truth"] is True
    assert all(math.isnan(m[k]) for k in ("dice", "jaccard", "hd95", "asd"))


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------


def test_mismatched_shapes():
    with pytest.raises(ValueError, match=r"same shape, got pred shape \(4, 4, 4\) and gt shape \(4, 4, 5\)"):
        dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="same shape"):
        segmentation_metrics(np.zeros((4, 4)), np.zeros((4, 4, 1)))


def test_non_binary_values():
    label_map = np.zeros((4, 4, 4), dtype=np.int64)
    label_map[1, 1, 1] = 2
    label_map[2, 2, 2] = 1
    with pytest.raises(ValueError, match=r"`gt` must be a binary mask .* unexpected values \[2\]"):
        hd95(label_map.clip(0, 1), label_map)
    with pytest.raises(ValueError, match=r"`pred` must be a binary mask"):
        segmentation_metrics(label_map, label_map.clip(0, 1))
    probs = np.full((4, 4), 0.5)
    with pytest.raises(ValueError, match=r"unexpected values \[0\.5\]"):
        jaccard(probs, np.ones((4, 4)))


def test_wrong_dimensionality():
    with pytest.raises(ValueError, match="must be 2D .* or 3D .* got ndim=1"):
        dice(np.ones(5), np.ones(5))
    with pytest.raises(ValueError, match="got ndim=4"):
        asd(np.ones((1, 4, 4, 4)), np.ones((1, 4, 4, 4)))


def test_bad_spacing():
    pred, gt = _line_pair()
    with pytest.raises(ValueError, match=r"`spacing` must have one entry per spatial dim, i.e. length 3"):
        hd95(pred, gt, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="`spacing` must have one entry per spatial dim"):
        segmentation_metrics(pred, gt, spacing=2.0)
    with pytest.raises(ValueError, match=r"`spacing` entries must all be finite and > 0"):
        asd(pred, gt, spacing=(1.0, 0.0, 1.0))


def test_wrong_type():
    with pytest.raises(TypeError, match="`pred` must be a numpy.ndarray or torch.Tensor, got list"):
        dice([[0, 1]], np.zeros((1, 2)))


# ---------------------------------------------------------------------------------------------
# torch input and 2D
# ---------------------------------------------------------------------------------------------


def test_torch_matches_numpy():
    pred, gt = _random_pair(3)
    expected = segmentation_metrics(pred, gt, spacing=ANISO)
    got = segmentation_metrics(torch.from_numpy(pred), torch.from_numpy(gt.astype(np.float32)), spacing=ANISO)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, bool):
            assert got[key] is value, key
        else:
            assert got[key] == pytest.approx(value, rel=1e-12), key
    assert hd95(torch.from_numpy(pred).float(), torch.from_numpy(gt).long()) == pytest.approx(expected["hd95"])
    assert asd(torch.from_numpy(pred).to(torch.bfloat16), torch.from_numpy(gt)) == pytest.approx(expected["asd"])
    assert dice(torch.from_numpy(pred), torch.from_numpy(gt)) == pytest.approx(expected["dice"])


def test_2d_input():
    # 2D squares: gt rows/cols 2..5 (16 px), pred shifted by 1 row: rows 3..6 (16 px), overlap 12
    # dice = 24 / 32 = 0.75, jaccard = 12 / 20 = 0.6
    gt = np.zeros((10, 10), dtype=bool)
    gt[2:6, 2:6] = True
    pred = np.zeros((10, 10), dtype=bool)
    pred[3:7, 2:6] = True
    m = segmentation_metrics(pred, gt, spacing=(0.5, 2.0))
    assert m["dice"] == pytest.approx(0.75)
    assert m["jaccard"] == pytest.approx(0.6)
    for key, ref in (
        ("hd95", medpy_binary.hd95(pred, gt)),
        ("asd", medpy_binary.asd(pred, gt)),
        ("hd95_mm", medpy_binary.hd95(pred, gt, voxelspacing=(0.5, 2.0))),
        ("asd_mm", medpy_binary.asd(pred, gt, voxelspacing=(0.5, 2.0))),
    ):
        assert m[key] == pytest.approx(ref, rel=1e-4), key
    assert m["hd95"] > 0
