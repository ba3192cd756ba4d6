"""The training pool of a MONAI Label datastore: labeled pairs plus the folder's images without a label."""

from __future__ import annotations

from pathlib import Path

import pytest

from sasnet_components.data import datastore_datalists


def _touch(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return str(path)


@pytest.fixture()
def studies(tmp_path) -> Path:
    """A LocalDatastore layout: 5 images (2 labeled, 1 validation), labels under labels/final, one non-image."""
    for name in ("a.nii.gz", "b.nii.gz", "c.nii", "d.nii.gz", "e.nii.gz"):
        _touch(tmp_path / name)
    for name in ("a.nii.gz", "b.nii.gz", "e.nii.gz"):
        _touch(tmp_path / "labels" / "final" / name)
    _touch(tmp_path / "notes.txt")
    return tmp_path


def _pair(studies: Path, name: str) -> dict:
    return {"image": str(studies / name), "label": str(studies / "labels" / "final" / name)}


def test_unlabeled_images_are_the_folder_images_without_label(studies):
    out = datastore_datalists([_pair(studies, "a.nii.gz"), _pair(studies, "b.nii.gz")], [_pair(studies, "e.nii.gz")])
    assert [item["case_id"] for item in out["train"]] == ["a", "b", "c", "d"]
    assert [item["labeled"] for item in out["train"]] == [True, True, False, False]
    assert out["labeled_indices"] == [0, 1] and out["unlabeled_indices"] == [2, 3]
    assert out["num_labeled"] == 2 and out["num_unlabeled"] == 2
    assert out["train"][2] == {"image": str(studies / "c.nii"), "case_id": "c", "labeled": False}  # no label key
    assert out["train"][0]["label"] == str(studies / "labels" / "final" / "a.nii.gz")
    assert [item["image"] for item in out["validation"]] == [str(studies / "e.nii.gz")]  # left the unlabeled pool


def test_validation_images_count_as_unlabeled_when_not_listed(studies):
    out = datastore_datalists([_pair(studies, "a.nii.gz")])
    assert [item["case_id"] for item in out["train"]] == ["a", "b", "c", "d", "e"]
    assert out["unlabeled_indices"] == [1, 2, 3, 4]


def test_image_dirs_and_extensions(studies, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    _touch(other / "x.nii.gz")
    _touch(other / "y.nrrd")
    out = datastore_datalists([_pair(studies, "a.nii.gz")], image_dirs=[str(other)], extensions=(".nii.gz", ".nrrd"))
    assert [item["case_id"] for item in out["train"]] == ["a", "x", "y"]


def test_errors_name_what_is_wrong(studies, tmp_path):
    with pytest.raises(ValueError, match="no labeled image/label pair"):
        datastore_datalists([])
    with pytest.raises(ValueError, match=r"labeled\[0\] has no \['label'\] entry"):
        datastore_datalists([{"image": str(studies / "a.nii.gz")}])
    with pytest.raises(FileNotFoundError, match="zz.nii.gz"):
        datastore_datalists([{"image": str(studies / "zz.nii.gz"), "label": str(studies / "a.nii.gz")}])
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        datastore_datalists([_pair(studies, "a.nii.gz")], image_dirs=[str(tmp_path / "missing_dir")])
    only = {"image": _touch(tmp_path / "full" / "a.nii.gz"), "label": _touch(tmp_path / "full" / "labels" / "a.nii.gz")}
    with pytest.raises(ValueError, match="no unlabeled image"):  # every image of the folder is labeled
        datastore_datalists([only])


def test_duplicate_case_ids_are_refused(studies):
    _touch(studies / "d.nii")  # d.nii and d.nii.gz would share the SAR memory of case "d"
    with pytest.raises(ValueError, match="case id 'd'"):
        datastore_datalists([_pair(studies, "a.nii.gz")])
