"""Tests of the BraTS 2019 preparation (``sasnet_components.data.brats``) on small synthetic release folders and h5."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from sasnet_components.data.brats import (
    BratsReader,
    brats_crop_box,
    brats_label,
    detect_brats_layout,
    prepare_brats,
    preprocess_brats,
)
from sasnet_components.utils.errors import InvalidInputError, MissingInputError

REPO = Path(__file__).resolve().parents[2]
SHAPE = (24, 24, 16)
BOX = ((3, 20), (5, 19), (2, 13))  # the brain box of the synthetic FLAIR, half-open
IDS = ["BraTS19_A_001_1", "BraTS19_A_002_1", "BraTS19_B_003_1"]
MODS = ("flair", "t1", "t1ce", "t2")


def _volumes(seed: int):
    """Four modalities with brain voxels inside BOX (t2 one voxel wider in x), and a seg with values 0, 1, 2, 4."""
    rng = np.random.default_rng(seed)
    region = tuple(slice(lo, hi) for lo, hi in BOX)
    vols = {}
    for i, key in enumerate(MODS):
        v = np.zeros(SHAPE, dtype=np.float32)
        v[region] = rng.uniform(10, 100 + 50 * i, size=[hi - lo for lo, hi in BOX]).astype(np.float32)
        vols[key] = v
    vols["flair"][BOX[0][0], BOX[1][0], BOX[2][0]] = 5000.0  # an outlier above the 99.9th percentile
    vols["t2"][BOX[0][1], 8:10, 5:7] = 30.0  # extends the union box by one voxel in x
    seg = np.zeros(SHAPE, dtype=np.int16)
    seg[8:12, 8:12, 4:8] = 2
    seg[9:11, 9:11, 5:7] = 4
    seg[10, 10, 6] = 1
    return vols, seg


def _save(path: Path, array: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> None:
    img = nib.Nifti1Image(array, np.diag(list(zooms) + [1.0]))
    nib.save(img, str(path))


def _release(root: Path, ids=IDS, grade: bool = True, mods=MODS) -> dict:
    data = {}
    for n, case_id in enumerate(ids):
        folder = root / ("HGG" if n % 2 == 0 else "LGG") / case_id if grade else root / case_id
        folder.mkdir(parents=True)
        vols, seg = _volumes(n)
        for key in mods:
            _save(folder / f"{case_id}_{key}.nii.gz", vols[key])
        _save(folder / f"{case_id}_seg.nii.gz", seg)
        data[case_id] = (vols, seg, folder)
    return data


def _lists(root: Path, train, val=(), test=()) -> None:
    for name, ids in (("train.txt", train), ("val.txt", val), ("test.txt", test)):
        (root / name).write_text("".join(i + "\n" for i in ids))


def _ids(datalist, key):
    return [e["case_id"] for e in datalist[key]]


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


# --- pure preprocessing ---------------------------------------------------------------------


def test_preprocess_crop_clip_zscore_by_hand():
    vols, seg = _volumes(0)
    assert brats_crop_box([vols["flair"]]) == BOX
    image, label, box = preprocess_brats([vols["flair"]], seg, "whole")
    assert box == BOX and image.shape == tuple(hi - lo for lo, hi in BOX) and image.dtype == np.float32
    cropped = vols["flair"][tuple(slice(lo, hi) for lo, hi in BOX)].astype(np.float64)
    clipped = np.minimum(cropped, np.percentile(cropped, 99.9))
    assert clipped.max() < 5000.0
    brain = cropped != 0
    expected = (clipped[brain] - clipped[brain].mean()) / clipped[brain].std()
    np.testing.assert_allclose(image[brain], expected, rtol=1e-5, atol=1e-5)
    assert abs(image[brain].mean()) < 1e-5 and abs(image[brain].std() - 1) < 1e-5
    assert np.all(image[~brain] == 0)
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
    assert label.sum() == (seg > 0).sum()  # the tumour lies inside the box


def test_preprocess_all_modalities_union_box_and_classes():
    vols, seg = _volumes(1)
    image, label, box = preprocess_brats([vols[k] for k in MODS], seg, "classes")
    union = ((BOX[0][0], BOX[0][1] + 1), BOX[1], BOX[2])
    assert box == union and image.shape == (18, 14, 11, 4)
    for c in range(4):
        brain = image[..., c] != 0
        assert abs(image[..., c][brain].mean()) < 1e-5 and abs(image[..., c][brain].std() - 1) < 1e-4
    assert not np.any(image[-1, ..., 0])  # the FLAIR has no brain in the extra x slice
    assert sorted(np.unique(label).tolist()) == [0, 1, 2, 3]
    region = tuple(slice(lo, hi) for lo, hi in union)
    np.testing.assert_array_equal(label == 3, seg[region] == 4)
    np.testing.assert_array_equal(label == 1, seg[region] == 1)


def test_constant_modality_refused():
    vols, seg = _volumes(0)
    vols["t1"][vols["t1"] != 0] = 7.0
    with pytest.raises(ValueError, match=r"t1: a modality is constant over its non-zero voxels"):
        preprocess_brats([vols[k] for k in MODS], seg)


def test_label_values_refused():
    with pytest.raises(ValueError, match=r"label values must be in \{0, 1, 2, 4\}, got \[3\]"):
        brats_label(np.array([0, 1, 3]), "whole")
    with pytest.raises(ValueError, match="label_mode"):
        brats_label(np.array([0, 1]), "binary")


# --- prepare_brats on release folders ---------------------------------------------------------


@pytest.mark.parametrize("grade", [True, False])
def test_prepare_release_flair_whole(tmp_path, grade):
    root, out = tmp_path / "in", tmp_path / "out"
    data = _release(root, grade=grade, mods=("flair",))
    _lists(root, IDS[:2], test=IDS[2:])
    assert detect_brats_layout(root) == "release"
    datalist = prepare_brats(root, out, num_labeled=1)
    assert _ids(datalist, "labeled") == [IDS[0]] and _ids(datalist, "unlabeled") == [IDS[1]]
    assert datalist["validation"] == [] and _ids(datalist, "test") == [IDS[2]]
    assert datalist["name"] == "BraTS2019" and datalist["source_layout"] == "release"
    image = _load(out / "imagesTr" / f"{IDS[0]}.nii.gz")
    label = _load(out / "labelsTr" / f"{IDS[0]}.nii.gz")
    vols, seg, _ = data[IDS[0]]
    expected, expected_label, _ = preprocess_brats([vols["flair"]], seg)
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(label, expected_label)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    record = json.loads((out / "manifest.json").read_text())["cases"][IDS[0]]
    assert record["modalities"] == "flair" and record["label_mode"] == "whole"
    assert record["crop_box"] == [list(b) for b in BOX] and record["source_shape"] == list(SHAPE)
    assert "label_voxels_cut" not in record
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("*/*.nii.gz")}
    assert prepare_brats(root, out, num_labeled=1) == datalist  # complete cases are skipped
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*/*.nii.gz")} == written


def test_prepare_release_all_classes_and_validation_list(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    _release(root)
    _lists(root, IDS[:2], val=IDS[2:])
    datalist = prepare_brats(root, out, num_labeled=1, modalities="all", label_mode="classes")
    assert _ids(datalist, "validation") == [IDS[2]]
    assert _ids(datalist, "unlabeled") == [IDS[1], IDS[2]]  # the validation ids stay in the unlabeled pool
    image = _load(out / "imagesTr" / f"{IDS[2]}.nii.gz")
    label = _load(out / "labelsTr" / f"{IDS[2]}.nii.gz")
    assert image.shape == (18, 14, 11, 4) and image.dtype == np.float32
    assert sorted(np.unique(label).tolist()) == [0, 1, 2, 3]
    record = json.loads((out / "manifest.json").read_text())["cases"][IDS[0]]
    assert record["modalities"] == "all" and record["label_mode"] == "classes"
    with pytest.raises(ValueError, match=r"num_labeled.*\[1, 2\]"):  # validation ids are never labeled
        prepare_brats(root, tmp_path / "o2", num_labeled=3)
    (root / "val.txt").write_text("BraTS19_X_009_1\n")
    with pytest.raises(MissingInputError, match="case 'BraTS19_X_009_1' of the validation list has no data"):
        prepare_brats(root, tmp_path / "o3", num_labeled=1)
    (root / "val.txt").write_text(IDS[1] + "\n")
    with pytest.raises(ValueError, match="must not be in both"):
        prepare_brats(root, tmp_path / "o3", num_labeled=1)


def test_shipped_lists(tmp_path):
    reader = BratsReader("release")
    train, test = reader.default_ids(tmp_path)
    assert len(train) == 275 and len(test) == 60 and len(set(train) | set(test)) == 335
    assert train[:2] == ["BraTS19_TCIA02_370_1", "BraTS19_CBICA_ASA_1"] and train[249] == "BraTS19_TCIA10_346_1"
    assert train[250:252] == ["BraTS19_CBICA_AAP_1", "BraTS19_TCIA10_282_1"]
    assert test[:2] == ["BraTS19_TCIA02_309_1", "BraTS19_CBICA_AYA_1"]
    assert train[-1] == "BraTS19_CBICA_ABO_1" and test[-1] == "BraTS19_CBICA_AQR_1"  # the lists' last ids
    # without lists in the input, the shipped ones are used: the first training id has no data
    root = tmp_path / "in"
    _release(root, ids=IDS[:1], mods=("flair",))
    with pytest.raises(MissingInputError, match="case 'BraTS19_TCIA02_370_1' of the training list has no data"):
        prepare_brats(root, tmp_path / "out")


def test_prepare_h5(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n, case_id in enumerate(IDS):
        with h5py.File(root / "data" / f"{case_id}.h5", "w") as f:
            f["image"] = rng.normal(size=(10, 12, 8)).astype(np.float32)
            f["label"] = (np.arange(960).reshape(10, 12, 8) % 7 == n).astype(np.uint8) * (2 if n == 1 else 1)
    _lists(root, IDS[:2], val=IDS[2:])
    assert detect_brats_layout(root) == "h5"
    datalist = prepare_brats(root, out, num_labeled=1)
    assert _ids(datalist, "validation") == [IDS[2]] and datalist["source_layout"] == "h5"
    with h5py.File(root / "data" / f"{IDS[1]}.h5", "r") as f:
        np.testing.assert_array_equal(_load(out / "imagesTr" / f"{IDS[1]}.nii.gz"), f["image"][()])
        np.testing.assert_array_equal(_load(out / "labelsTr" / f"{IDS[1]}.nii.gz"), f["label"][()] > 0)
    for kwargs in ({"modalities": "all"}, {"label_mode": "classes"}):
        with pytest.raises(ValueError, match="h5 layout .* supports modalities='flair' and label_mode='whole' only"):
            prepare_brats(root, tmp_path / "o2", num_labeled=1, **kwargs)


# --- bad inputs -------------------------------------------------------------------------------


def _refused(root: Path, out: Path, case_id: str, pattern: str, **kwargs) -> None:
    with pytest.raises(ValueError, match=rf"1 of \d cases refused.*case '{case_id}'.*{pattern}"):
        prepare_brats(root, out, num_labeled=1, **kwargs)


def test_bad_release_inputs(tmp_path):
    root = tmp_path / "in"
    data = _release(root)
    _lists(root, IDS)
    folder = data[IDS[1]][2]
    (folder / f"{IDS[1]}_t1ce.nii.gz").unlink()
    missing = rf"modality 't1ce' is missing: expected '.*{IDS[1]}_t1ce.nii.gz'"
    _refused(root, tmp_path / "o1", IDS[1], missing, modalities="all")
    prepare_brats(root, tmp_path / "o1b", num_labeled=1)  # FLAIR only does not need it

    seg = data[IDS[1]][1].copy()
    seg[0, 0, 0] = 2  # tumour outside the brain box: cut, with a warning and a manifest field
    _save(folder / f"{IDS[1]}_seg.nii.gz", seg)
    prepare_brats(root, tmp_path / "o1c", num_labeled=1)
    assert json.loads((tmp_path / "o1c" / "manifest.json").read_text())["cases"][IDS[1]]["label_voxels_cut"] == 1
    seg[0, 0, 0] = 3
    _save(folder / f"{IDS[1]}_seg.nii.gz", seg)
    _refused(root, tmp_path / "o2", IDS[1], r"label values must be in \{0, 1, 2, 4\}, got \[3\]")
    _save(folder / f"{IDS[1]}_seg.nii.gz", data[IDS[1]][1])

    _save(folder / f"{IDS[1]}_t2.nii.gz", np.ones((24, 24, 15), dtype=np.float32))
    (folder / f"{IDS[1]}_t1ce.nii.gz").write_bytes(b"not a nifti file")
    _refused(root, tmp_path / "o3", IDS[1], rf"cannot read t1ce '.*{IDS[1]}_t1ce.nii.gz'", modalities="all")
    _save(folder / f"{IDS[1]}_t1ce.nii.gz", data[IDS[1]][0]["t1ce"])
    pattern = rf"'{IDS[1]}_t2.nii.gz' has shape \(24, 24, 15\).*same shape"
    _refused(root, tmp_path / "o4", IDS[1], pattern, modalities="all")

    _save(folder / f"{IDS[1]}_seg.nii.gz", np.zeros((24, 24, 15), dtype=np.int16))
    _refused(root, tmp_path / "o5", IDS[1], rf"'{IDS[1]}_seg.nii.gz' has shape \(24, 24, 15\)")
    _save(folder / f"{IDS[1]}_seg.nii.gz", data[IDS[1]][1])

    flair = data[IDS[1]][0]["flair"].copy()
    flair[10, 10, 5] = np.nan
    _save(folder / f"{IDS[1]}_flair.nii.gz", flair)
    _refused(root, tmp_path / "o6", IDS[1], r"flair has 1 non-finite voxel")

    _save(folder / f"{IDS[1]}_flair.nii.gz", data[IDS[1]][0]["flair"], zooms=(1.0, 1.0, 2.0))
    _refused(root, tmp_path / "o7", IDS[1], r"voxel size \[1.0, 1.0, 2.0\] mm, expected 1 mm isotropic")

    (folder / f"{IDS[1]}_flair.nii.gz").unlink()
    _refused(root, tmp_path / "o8", IDS[1], r"modality 'flair' is missing")

    with pytest.raises(MissingInputError, match="no BraTS case found"):
        prepare_brats(tmp_path / "o1", tmp_path / "o9")
    with pytest.raises(InvalidInputError, match="modalities"):
        prepare_brats(root, tmp_path / "o10", modalities="t1")


def test_bad_h5(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for n, case_id in enumerate(IDS[:2]):
        with h5py.File(root / f"{case_id}.h5", "w") as f:
            f["image"] = np.ones((4, 4, 4), dtype=np.float32)
            f["label"] = np.full((4, 4, 4), 5 if n else 1, dtype=np.uint8)
    _lists(root, IDS[:2])
    _refused(root, tmp_path / "o1", IDS[1], r"label values must be in \{0, 1, 2, 4\}, got \[5\]")
    (root / f"{IDS[1]}.h5").write_bytes(b"not hdf5")
    _refused(root, tmp_path / "o2", IDS[1], rf"cannot read '.*{IDS[1]}.h5'")


# --- command line -----------------------------------------------------------------------------


def _load_cli():
    spec = importlib.util.spec_from_file_location("prepare_brats_script", REPO / "scripts" / "prepare_brats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_brats_cli(tmp_path, capsys):
    cli = _load_cli()
    root = tmp_path / "in"
    _release(root, grade=False, mods=("flair",))
    _lists(root, IDS[:2], val=IDS[2:])
    args = ["--input_dir", str(root), "--num_labeled", "1", "--progress", "false"]
    datalist = cli.main(args + ["--output_dir", str(tmp_path / "out"), "--layout", "release"])
    assert _ids(datalist, "validation") == [IDS[2]]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args + ["--output_dir", str(tmp_path / "o2"), "--modalities", "all"])
    assert exit_info.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"prepare_brats.py: error: 3 of 3 cases refused.*modality 't1' is missing", last)
