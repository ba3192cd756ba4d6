"""A user's NIfTI folders: image/label matching, the fingerprint and the settings it suggests."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from sasnet_components.data.fingerprint import (
    case_statistics,
    dataset_fingerprint,
    match_images_labels,
    normalise_intensities,
    suggest_overrides,
)
from sasnet_components.utils.errors import InvalidInputError, MissingInputError


def _save(path, array=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32) if array is None else array, np.eye(4)), str(path))


def test_labels_match_images_by_name_or_suffix(tmp_path):
    for name in ("a.nii.gz", "b.nii", "c.nii.gz", "notes.txt"):
        (tmp_path / "img").mkdir(exist_ok=True)
        if name.endswith("txt"):
            (tmp_path / "img" / name).write_text("x")
        else:
            _save(tmp_path / "img" / name)
    _save(tmp_path / "lab" / "a.nii.gz")
    _save(tmp_path / "lab" / "b_seg.nii.gz")
    _save(tmp_path / "lab" / "z.nii.gz")  # no image z
    cases, unmatched = match_images_labels(tmp_path / "img", tmp_path / "lab")
    assert list(cases) == ["a", "b", "c"]
    assert cases["a"][1].name == "a.nii.gz" and cases["b"][1].name == "b_seg.nii.gz" and cases["c"][1] is None
    assert unmatched == ["z"]
    assert all(label is None for _, label in match_images_labels(tmp_path / "img")[0].values())


def test_labels_in_the_images_folder_need_a_suffix(tmp_path):
    for name in ("a.nii.gz", "a_seg.nii.gz", "b.nii.gz"):
        _save(tmp_path / "both" / name)
    cases, unmatched = match_images_labels(tmp_path / "both", tmp_path / "both")
    # a file never labels itself, and the label files are not images
    assert list(cases) == ["a", "b"] and cases["a"][1].name == "a_seg.nii.gz" and cases["b"][1] is None
    assert unmatched == []


def test_cases_are_read_in_ras(tmp_path):
    from sasnet_components.data.nifti_folders import load_nifti_case

    image = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])  # x and y point left and posterior
    nib.save(nib.Nifti1Image(image, lps), str(tmp_path / "i.nii.gz"))
    nib.save(nib.Nifti1Image((image > 11).astype(np.uint8), lps), str(tmp_path / "l.nii.gz"))
    out, label, spacing, affine = load_nifti_case("c", tmp_path / "i.nii.gz", tmp_path / "l.nii.gz")
    assert np.array_equal(out, image[::-1, ::-1, :]) and np.array_equal(label, (image[::-1, ::-1, :] > 11))
    assert spacing == (1.0, 1.0, 2.0) and np.all(np.diag(affine)[:3] > 0)
    nib.save(nib.Nifti1Image(np.full((2, 3, 4), 2, np.uint8), lps), str(tmp_path / "two.nii.gz"))
    with pytest.raises(InvalidInputError, match=r"case 'c': label .* must hold 0 \(background\) and 1 .* got values \[2\]"):
        load_nifti_case("c", tmp_path / "i.nii.gz", tmp_path / "two.nii.gz")


def test_matching_errors(tmp_path):
    with pytest.raises(MissingInputError, match="`images` folder '.*nowhere' does not exist"):
        match_images_labels(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="holds no NIfTI image"):
        match_images_labels(tmp_path / "empty")
    _save(tmp_path / "img" / "a.nii.gz")
    _save(tmp_path / "lab" / "a.nii.gz")
    _save(tmp_path / "lab" / "a_mask.nii.gz")
    with pytest.raises(InvalidInputError, match="image 'a' has two labels"):
        match_images_labels(tmp_path / "img", tmp_path / "lab")


def test_fingerprint_of_a_ct_like_dataset_by_hand():
    # two "CT" volumes of whole numbers with air (-1000): foreground of 100 HU in case 1, 300 HU in case 2
    stats = []
    for value, shape, spacing in ((100, (40, 40, 20), (1.0, 1.0, 2.0)), (300, (60, 60, 30), (1.0, 1.0, 2.0))):
        image = np.full(shape, -1000, np.int16)
        label = np.zeros(shape, np.uint8)
        image[5:10, 5:10, 5:10], label[5:10, 5:10, 5:10] = value, 1
        stats.append(case_statistics(image, label, spacing))
    fp = dataset_fingerprint(stats)
    assert fp["modality"] == "CT" and fp["num_labeled"] == 2
    assert fp["median_spacing"] == [1.0, 1.0, 2.0] and fp["median_shape"] == [50, 50, 25]
    # foreground samples: 125 voxels of 100 and 125 of 300: median 200, percentiles at the two values
    assert fp["intensity"]["p50"] == pytest.approx(200.0) and fp["intensity"]["from"] == "labelled foreground"
    assert fp["intensity"]["p0.5"] == pytest.approx(100.0) and fp["intensity"]["p99.5"] == pytest.approx(300.0)
    assert fp["normalisation"] == {"method": "clip_zscore", "clip": [100.0, 300.0]}
    overrides = suggest_overrides(fp, "data/mine", num_labeled=1)
    # median shape 50x50x25 at 1x1x2 mm: multiples of 16 within it: 48x48x16; the first two axes have the same
    # side and voxel size: the in-plane swap; CT: the clip as the inference window
    assert overrides == {
        "dataset_dir": "data/mine",
        "num_labeled": 1,
        "resample_spacing": [1.0, 1.0, 2.0],
        "patch_size": [48, 48, 16],
        "views": [[0, 1, 2], [1, 0, 2]],
        "eval_roi_size": [48, 48, 16],
        "eval_stride": [24, 24, 8],
        "intensity": "window_zscore",
        "intensity_window": [100.0, 300.0],
    }
    # an unlabelled case adds nothing to the foreground's percentiles
    third = case_statistics(np.full((100, 100, 50), -1000, np.int16), None, (1.0, 1.0, 2.0))
    assert dataset_fingerprint(stats + [third])["normalisation"] == {"method": "clip_zscore", "clip": [100.0, 300.0]}


def test_views_swap_only_axes_of_equal_side_and_voxel_size():
    # 96^3 patches: at 0.7 x 0.7 x 2.5 mm only the in-plane swap keeps the voxel size
    stats = [case_statistics(np.zeros((140, 140, 100), np.float32), None, (0.7, 0.7, 2.5))]
    overrides = suggest_overrides(dataset_fingerprint(stats), "d", 0)
    assert overrides["patch_size"] == [96, 96, 96] and overrides["views"] == [[0, 1, 2], [1, 0, 2]]


def test_mr_like_dataset_and_large_volumes():
    rng = np.random.default_rng(0)
    stats = [case_statistics(rng.random((200, 200, 160)).astype(np.float32) * 500, None, (0.8, 0.8, 0.8)) for _ in range(2)]
    fp = dataset_fingerprint(stats)
    assert fp["modality"] == "MR" and fp["normalisation"] == {"method": "zscore"} and fp["num_labeled"] == 0
    assert fp["intensity"]["from"] == "whole volumes"
    # 200x200x160: 128 per side at most, then the largest side shrinks until 112*112*80 voxels fit
    overrides = suggest_overrides(fp, "d", num_labeled=0)
    patch = overrides["patch_size"]
    assert all(p % 16 == 0 for p in patch) and np.prod(patch) <= 112 * 112 * 80 and patch == [96, 96, 96]
    # isotropic voxels and a cube: every swap of two axes
    assert overrides["views"] == [[0, 1, 2], [1, 0, 2], [0, 2, 1], [2, 1, 0]]
    assert overrides["intensity"] == "zscore" and overrides["intensity_window"] is None


def test_normalisation():
    image = np.array([-1000.0, 0.0, 100.0, 200.0, 3000.0])
    out = normalise_intensities(image, {"method": "clip_zscore", "clip": [0.0, 200.0]})
    clipped = np.array([0.0, 0.0, 100.0, 200.0, 200.0])
    assert np.allclose(out, (clipped - clipped.mean()) / clipped.std()) and out.dtype == np.float32
    assert np.allclose(normalise_intensities(np.full(4, 7.0), {"method": "zscore"}), 0.0)
    with pytest.raises(InvalidInputError, match="unknown normalisation"):
        normalise_intensities(image, {"method": "minmax"})
