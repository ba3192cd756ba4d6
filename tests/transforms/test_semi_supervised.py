"""Tests of the semi-supervised dictionary transforms: ``LabelPlaceholderd``, ``RandCropWithLocationd``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sasnet_components.transforms.semi_supervised import LabelPlaceholderd, RandCropWithLocationd


def _volume(shape=(6, 5, 4), channels: int = 1) -> torch.Tensor:
    """`(C, *shape)` float volume whose voxel values are their flat index (all distinct)."""
    n = channels * int(np.prod(shape))
    return torch.arange(n, dtype=torch.float32).reshape(channels, *shape)


# ---------------------------------------------------------------------- LabelPlaceholderd
def test_placeholder_for_unlabeled_sample():
    out = LabelPlaceholderd()({"case_id": "u1", "image": _volume((6, 5, 4), channels=2)})
    assert out["label"].dtype == torch.uint8
    assert tuple(out["label"].shape) == (1, 6, 5, 4)
    assert int(out["label"].count_nonzero()) == 0
    assert out["labeled"].dtype == torch.bool and out["labeled"].shape == () and not bool(out["labeled"])


def test_label_none_is_treated_as_missing():
    out = LabelPlaceholderd()({"image": _volume((4, 4, 4)), "label": None})
    assert not bool(out["labeled"])
    assert tuple(out["label"].shape) == (1, 4, 4, 4)


def test_labeled_sample_keeps_its_label():
    label = (torch.rand(1, 6, 5, 4) > 0.5).to(torch.uint8)
    data = {"case_id": "a", "image": _volume(), "label": label}
    out = LabelPlaceholderd()(data)
    assert bool(out["labeled"])
    assert out["label"] is label
    assert "labeled" not in data  # the input dict is not modified


def test_custom_keys():
    out = LabelPlaceholderd(image_key="img", label_key="seg", flag_key="has_seg")({"img": _volume((2, 3, 4))})
    assert tuple(out["seg"].shape) == (1, 2, 3, 4) and not bool(out["has_seg"])


def test_placeholder_shape_mismatch_names_case_and_shapes():
    data = {"case_id": "case07", "image": _volume((6, 5, 4)), "label": torch.zeros(1, 6, 5, 3)}
    with pytest.raises(ValueError, match=r"case case07: label spatial shape \(6, 5, 3\) differs from image spatial shape \(6, 5, 4\)"):
        LabelPlaceholderd()(data)


def test_placeholder_missing_image():
    with pytest.raises(KeyError, match="key 'image' \\(image\\) is missing"):
        LabelPlaceholderd()({"label": torch.zeros(1, 2, 2, 2)})


# ---------------------------------------------------------------------- RandCropWithLocationd
def test_crop_matches_slicing_at_recorded_start():
    image = _volume((6, 5, 4), channels=2)
    label = (image[:1] % 3 == 0).to(torch.uint8)
    crop = RandCropWithLocationd(keys=["image", "label"], roi_size=(3, 2, 4))
    crop.set_random_state(0)
    for _ in range(10):
        out = crop({"case_id": "a", "image": image, "label": label})
        s = out["crop_start"].tolist()
        assert out["crop_start"].dtype == torch.long and len(s) == 3
        # valid starts: [0, 6-3] x [0, 5-2] x [0, 4-4]
        assert 0 <= s[0] <= 3 and 0 <= s[1] <= 3 and s[2] == 0
        window = (slice(None), slice(s[0], s[0] + 3), slice(s[1], s[1] + 2), slice(s[2], s[2] + 4))
        assert torch.equal(torch.as_tensor(out["image"]), image[window])
        assert torch.equal(torch.as_tensor(out["label"]), label[window])
        assert out["case_shape"].tolist() == [6, 5, 4] and out["case_shape"].dtype == torch.long


def test_every_start_is_reachable():
    # shape 5, roi 4 on the first axis: starts 0 and 1; shape 3, roi 1: starts 0, 1, 2
    crop = RandCropWithLocationd(keys="image", roi_size=(4, 1, 2))
    crop.set_random_state(123)
    starts = set()
    for _ in range(200):
        starts.add(tuple(crop({"image": _volume((5, 3, 2))})["crop_start"].tolist()))
    assert starts == {(a, b, 0) for a in (0, 1) for b in (0, 1, 2)}


def test_full_size_crop_is_the_volume():
    image = _volume((4, 4, 4))
    out = RandCropWithLocationd(keys="image", roi_size=(4, 4, 4))({"image": image})
    assert out["crop_start"].tolist() == [0, 0, 0]
    assert torch.equal(torch.as_tensor(out["image"]), image)


def test_seeded_reproducibility():
    def draws(seed):
        crop = RandCropWithLocationd(keys="image", roi_size=(2, 2, 2))
        crop.set_random_state(seed)
        return [crop({"image": _volume((8, 8, 8))})["crop_start"].tolist() for _ in range(8)]

    assert draws(5) == draws(5)
    assert draws(5) != draws(6)


def test_numpy_input():
    image = _volume((6, 5, 4)).numpy()
    out = RandCropWithLocationd(keys="image", roi_size=(2, 2, 2))({"image": image})
    s = out["crop_start"].tolist()
    assert np.array_equal(np.asarray(out["image"]), image[:, s[0] : s[0] + 2, s[1] : s[1] + 2, s[2] : s[2] + 2])


def test_custom_location_keys():
    out = RandCropWithLocationd(keys="image", roi_size=(2, 2, 2), location_key="loc", shape_key="grid")({"image": _volume()})
    assert set(out) == {"image", "loc", "grid"}
    assert out["grid"].tolist() == [6, 5, 4]


def test_allow_missing_keys():
    crop = RandCropWithLocationd(keys=["image", "label"], roi_size=(2, 2, 2), allow_missing_keys=True)
    out = crop({"image": _volume()})
    assert tuple(out["image"].shape) == (1, 2, 2, 2) and "label" not in out


def test_patch_larger_than_volume():
    crop = RandCropWithLocationd(keys="image", roi_size=(4, 6, 2))
    with pytest.raises(ValueError, match=r"case c3: patch size \(4, 6, 2\) does not fit in the volume of spatial shape \(6, 5, 4\)"):
        crop({"case_id": "c3", "image": _volume((6, 5, 4))})


def test_keys_with_different_shapes():
    crop = RandCropWithLocationd(keys=["image", "label"], roi_size=(2, 2, 2))
    data = {"case_id": "c4", "image": _volume((6, 5, 4)), "label": torch.zeros(1, 6, 5, 3)}
    with pytest.raises(ValueError, match=r"case c4: spatial shapes differ between keys: .*'image': \(6, 5, 4\).*'label': \(6, 5, 3\)"):
        crop(data)


def test_roi_size_must_be_positive():
    with pytest.raises(ValueError, match=r"`roi_size` must hold positive sizes, got \(2, 0, 2\)"):
        RandCropWithLocationd(keys="image", roi_size=(2, 0, 2))
