from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import SlidingWindowInferer
from monai.inferers.utils import _get_scan_interval

from sasnet_components.data.sliding_window import overlap_for_stride, paper_window_positions

LA_ROI, LA_STRIDE = (112, 112, 80), (18, 18, 4)
PANCREAS_ROI, PANCREAS_STRIDE = (96, 96, 96), (16, 16, 16)


def _monai_step(roi, overlap):
    # the formula of monai.inferers.utils._get_scan_interval
    return tuple(int(r * (1 - o)) for r, o in zip(roi, overlap))


def _windows_visited(image_size, roi, stride):
    """Window starts (padded coordinates) that SlidingWindowInferer actually visits, in visiting order.

    Two independent records: the coordinates MONAI passes with ``with_coord=True`` and the content
    of each window. Every input voxel holds ``1 + its flat (C-order) index`` in the unpadded volume
    (exact in float32 for these sizes); the centre voxel of a window always lies inside the original
    volume (padding is centred), so its value gives back the window's start along every axis.
    """
    pad_before = [max(r - s, 0) // 2 for s, r in zip(image_size, roi)]
    inputs = (torch.arange(math.prod(image_size), dtype=torch.float32) + 1).reshape(1, 1, *image_size)
    centre = tuple(r // 2 for r in roi)
    from_coord, from_content = [], []

    def predictor(window, coords):
        assert window.shape[0] == 1 and tuple(window.shape[2:]) == tuple(roi)
        from_coord.append(tuple(sl.start for sl in coords[0][2:]))
        flat = int(window[(0, 0) + centre].item()) - 1
        assert flat >= 0, "the window centre fell into the padding"
        original = [int(v) for v in np.unravel_index(flat, image_size)]
        from_content.append(tuple(original[k] + pad_before[k] - centre[k] for k in range(len(roi))))
        return torch.zeros((1, 1, *window.shape[2:]))

    inferer = SlidingWindowInferer(
        roi_size=roi, sw_batch_size=1, overlap=overlap_for_stride(roi, stride), mode="constant", with_coord=True
    )
    out = inferer(inputs, predictor)
    assert tuple(out.shape[2:]) == tuple(image_size)
    return from_coord, from_content


def test_overlap_for_stride_la_and_pancreas_give_exact_steps():
    la = overlap_for_stride(LA_ROI, LA_STRIDE)
    # middle of the valid interval: 1 - (stride + 0.5) / roi = 1 - 18.5/112, 1 - 18.5/112, 1 - 4.5/80
    assert la == pytest.approx((1 - 18.5 / 112, 1 - 18.5 / 112, 1 - 4.5 / 80))
    assert _monai_step(LA_ROI, la) == (18, 18, 4)
    assert _get_scan_interval((200, 200, 100), LA_ROI, 3, la) == (18, 18, 4)
    pancreas = overlap_for_stride(PANCREAS_ROI, PANCREAS_STRIDE)
    assert _monai_step(PANCREAS_ROI, pancreas) == (16, 16, 16)
    assert all(0.0 <= o < 1.0 for o in la + pancreas)


def test_overlap_for_stride_every_stride_of_small_rois():
    for roi in range(1, 130):
        for s in range(1, roi + 1):
            (o,) = overlap_for_stride((roi,), (s,))
            assert 0.0 <= o < 1.0
            assert int(roi * (1 - o)) == s, (roi, s, o)
    assert overlap_for_stride((80,), (80,)) == (0.0,)  # stride == roi: no overlap


@pytest.mark.parametrize(
    "stride, roi, match",
    [
        ((0, 18, 4), LA_ROI, r"stride 0 and roi_size 112 on axis 0"),
        ((18, 18, 81), LA_ROI, r"stride 81 and roi_size 80 on axis 2"),
        ((18, 18), LA_ROI, r"one entry per spatial dim.*length 3.*length 2"),
    ],
)
def test_overlap_for_stride_errors(stride, roi, match):
    with pytest.raises(ValueError, match=match):
        overlap_for_stride(roi, stride)


def test_overlap_for_stride_type_error():
    with pytest.raises(TypeError, match="`stride` must hold integers, got 4.5"):
        overlap_for_stride(LA_ROI, (18, 18, 4.5))


def test_paper_window_positions_by_hand():
    # x: ceil((160 - 112) / 18) + 1 = 4 -> 0, 18, 36, min(54, 48) = 48
    # y: ceil((130 - 112) / 18) + 1 = 2 -> 0, min(18, 18) = 18
    # z: ceil((88 - 80) / 4) + 1 = 3 -> 0, 4, 8
    assert paper_window_positions((160, 130, 88), LA_ROI, LA_STRIDE) == [[0, 18, 36, 48], [0, 18], [0, 4, 8]]
    # equal to the patch, or smaller (padded to it): a single window at 0
    assert paper_window_positions((112, 100, 60), LA_ROI, LA_STRIDE) == [[0], [0], [0]]
    with pytest.raises(ValueError, match="`image_size` entries must be >= 1, got 0 on axis 1"):
        paper_window_positions((112, 0, 80), LA_ROI, LA_STRIDE)
    with pytest.raises(ValueError, match="`image_size` must have one entry per spatial dim"):
        paper_window_positions((112, 80), LA_ROI, LA_STRIDE)


@pytest.mark.parametrize(
    "image_size, roi, stride",
    [
        ((160, 130, 88), LA_ROI, LA_STRIDE),
        ((244, 160, 88), LA_ROI, LA_STRIDE),
        ((112, 112, 80), LA_ROI, LA_STRIDE),  # exactly one patch
        ((100, 130, 70), LA_ROI, LA_STRIDE),  # x and z smaller than the patch: padded
        ((121, 113, 81), LA_ROI, LA_STRIDE),  # one voxel more than the patch on every axis
        ((120, 150, 140), PANCREAS_ROI, PANCREAS_STRIDE),
        ((90, 97, 96), PANCREAS_ROI, PANCREAS_STRIDE),  # x padded
    ],
)
def test_monai_windows_equal_reference_windows(image_size, roi, stride):
    expected_axes = paper_window_positions(image_size, roi, stride)
    expected = list(itertools.product(*expected_axes))  # C order, as MONAI enumerates them

    # 1) MONAI's internal formulas on the padded size, as sliding_window_inference calls them
    padded = tuple(max(s, r) for s, r in zip(image_size, roi))
    interval = _get_scan_interval(padded, roi, 3, overlap_for_stride(roi, stride))
    slices = dense_patch_slices(padded, roi, interval)
    assert [tuple(sl.start for sl in s) for s in slices] == expected

    # 2) the windows the inferer actually runs the predictor on
    from_coord, from_content = _windows_visited(image_size, roi, stride)
    assert from_coord == expected
    assert from_content == expected


def test_reference_window_counts_for_la_volume():
    # (244, 160, 88): x ceil(132/18)+1 = 9, y ceil(48/18)+1 = 4, z ceil(8/4)+1 = 3 -> 108 windows
    axes = paper_window_positions((244, 160, 88), LA_ROI, LA_STRIDE)
    assert [len(a) for a in axes] == [9, 4, 3]
    assert axes[0][-1] == 244 - 112 and axes[1][-1] == 160 - 112 and axes[2][-1] == 88 - 80
