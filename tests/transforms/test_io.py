"""Tests of ``CheckedLoadImaged``: MONAI's ``LoadImaged`` that names the case on a read error or non-finite voxels."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, LoadImaged

from sasnet_components import CheckedLoadImaged


def _save(path: Path, array: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(array, np.diag([0.5, 0.5, 2.0, 1.0])), str(path))
    return str(path)


@pytest.fixture
def case(tmp_path: Path) -> dict:
    """Image (6, 5, 4) float32 with values 0..119 and a label (6, 5, 4) uint8."""
    image = np.arange(120, dtype=np.float32).reshape(6, 5, 4)
    label = (image > 60).astype(np.uint8)
    return {
        "case_id": "LA003",
        "image": _save(tmp_path / "LA003_image.nii.gz", image),
        "label": _save(tmp_path / "LA003_label.nii.gz", label),
    }


def test_loads_like_load_imaged(case):
    checked = CheckedLoadImaged(keys=["image", "label"], image_only=True, dtype=None)(case)
    plain = LoadImaged(keys=["image", "label"], image_only=True, dtype=None)(case)
    for key in ("image", "label"):
        torch.testing.assert_close(checked[key].as_tensor(), plain[key].as_tensor())
        torch.testing.assert_close(checked[key].affine, plain[key].affine)
    assert checked["image"].shape == (6, 5, 4) and float(checked["image"].max()) == 119.0
    assert checked["label"].dtype == torch.uint8 and int(checked["label"].sum()) == 59  # values 61..119
    assert checked["case_id"] == "LA003"
    # image_only=False stores the metadata dictionary as LoadImaged does
    with_meta = CheckedLoadImaged(keys="image", image_only=False)(case)
    assert with_meta["image_meta_dict"]["filename_or_obj"] == case["image"]


def test_truncated_nifti_names_case_key_path_and_reason(case, tmp_path):
    noise = np.random.default_rng(0).normal(size=(20, 20, 10)).astype(np.float32)  # compresses poorly: 16 kB
    whole = Path(_save(tmp_path / "LA003_whole.nii.gz", noise)).read_bytes()
    truncated = tmp_path / "LA003_cut.nii.gz"
    truncated.write_bytes(whole[: len(whole) // 2])  # the header is intact, the gzip stream ends early
    case["image"] = str(truncated)
    message = rf"^case 'LA003': cannot read image '{re.escape(str(truncated))}': .*end-of-stream.* \(EOFError\)$"
    with pytest.raises(ValueError, match=message):
        CheckedLoadImaged(keys=["image", "label"])(case)


def test_missing_file_names_case_key_and_path(case, tmp_path):
    case["label"] = str(tmp_path / "nowhere.nii.gz")
    message = r"^case 'LA003': cannot read label '.*nowhere.nii.gz': .*\(FileNotFoundError\)$"
    with pytest.raises(FileNotFoundError, match=message):
        CheckedLoadImaged(keys=["image", "label"])(case)


def test_non_finite_voxels_are_refused_with_their_count(case, tmp_path):
    image = np.zeros((6, 5, 4), np.float32)
    image[1:3, 1:3, 0:2] = np.nan  # 2 * 2 * 2 = 8 NaN voxels
    image[5, 4, 3] = np.inf  # and 1 infinite one
    case["image"] = _save(tmp_path / "LA003_nan.nii.gz", image)
    message = (
        rf"case 'LA003': image '{re.escape(case['image'])}' has 9 non-finite voxels \(8 NaN, 1 infinite\) of 120"
    )
    with pytest.raises(ValueError, match=message):
        CheckedLoadImaged(keys=["image", "label"], dtype=None)(case)
    # the keys to check are configurable: a NaN image passes when only the label is checked
    loaded = CheckedLoadImaged(keys=["image", "label"], finite_keys="label")(case)
    assert int(torch.isnan(loaded["image"]).sum()) == 8
    with pytest.raises(ValueError, match=r"`finite_keys` must be among the keys \('image',\), got \['label'\]"):
        CheckedLoadImaged(keys="image", finite_keys="label")


def test_missing_label_key(case):
    del case["label"]  # an unlabeled sample
    loaded = CheckedLoadImaged(keys=["image", "label"], allow_missing_keys=True)(case)
    assert "label" not in loaded and loaded["image"].shape == (6, 5, 4)
    with pytest.raises(KeyError, match=r"case 'LA003': .*`label`.*allow_missing_keys"):
        CheckedLoadImaged(keys=["image", "label"])(case)


def test_without_case_id_the_path_is_named(case, tmp_path):
    del case["case_id"]
    case["image"] = str(tmp_path / "nowhere.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"^cannot read image '.*nowhere.nii.gz'"):
        CheckedLoadImaged(keys="image", case_key="case_id")(case)
    with pytest.raises(FileNotFoundError, match=r"^case 'a1': cannot read image"):
        CheckedLoadImaged(keys="image", case_key="name")({**case, "name": "a1"})


def test_compose_keeps_the_message_as_the_cause(case, tmp_path):
    # MONAI's Compose wraps every exception of a transform in RuntimeError("applying transform ...");
    # the named message is the direct cause, printed first in a traceback
    case["image"] = str(tmp_path / "nowhere.nii.gz")
    with pytest.raises(RuntimeError, match="applying transform") as info:
        Compose([CheckedLoadImaged(keys="image")])(case)
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert str(info.value.__cause__).startswith("case 'LA003': cannot read image")
