"""Tests of the Pancreas-CT case readers (``sasnet_components.data.pancreas``).

All data are small synthetic files written to ``tmp_path``: CT series written with pydicom
(slices saved in shuffled file order), label NIfTI files written with nibabel, h5 files.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from sasnet_components.data.pancreas import (
    PancreasReader,
    detect_pancreas_layout,
    find_pancreas_cases,
    load_pancreas_dicom,
    load_pancreas_h5,
    missing_pancreas_cases,
    pancreas_case_id,
    pancreas_crop_box,
    prepare_pancreas,
    preprocess_pancreas,
    resample_to_1mm,
    window_hu,
)
from sasnet_components.utils.errors import InvalidInputError, MissingInputError, UnknownKeyError

ROWS, COLS, NSLICES = 12, 16, 6
PIXEL = (0.5, 0.75)  # PixelSpacing: between rows, between columns
THICK = 2.0
ORIGIN = (-30.0, -40.0, 100.0)  # ImagePositionPatient (LPS) of InstanceNumber 1, the top slice


def write_series(folder: Path, stored: np.ndarray, intercept: float = -1024.0, slope: float = 1.0, seed: int = 0):
    """Write ``stored`` (rows, columns, slices in InstanceNumber order) as a CT series, files in shuffled order.

    Standard axial orientation (rows along +x, columns along +y in LPS); InstanceNumber 1 is the
    top slice and z decreases with the InstanceNumber, as in the TCIA scans.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    order = np.random.default_rng(seed).permutation(stored.shape[2])
    for file_index, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"1-{file_index:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.InstanceNumber = int(k) + 1
        ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] - THICK * int(k)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = list(PIXEL)
        ds.SliceThickness = THICK
        ds.Rows, ds.Columns = stored.shape[:2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept = intercept
        ds.RescaleSlope = slope
        ds.PixelData = np.ascontiguousarray(stored[:, :, k], dtype="<i2").tobytes()
        ds.save_as(str(folder / f"1-{file_index:03d}.dcm"), write_like_original=False)


def nih_label_affine(nslices: int = NSLICES) -> np.ndarray:
    """RAS affine of a label stored as (columns, rows, slices from the bottom up), the NIH files' convention."""
    bottom = ORIGIN[2] - THICK * (nslices - 1)
    return np.array(
        [
            [-PIXEL[1], 0, 0, -ORIGIN[0]],
            [0, -PIXEL[0], 0, -ORIGIN[1]],
            [0, 0, THICK, bottom],
            [0, 0, 0, 1],
        ]
    )


#: RAS affine of a label stored in the DICOM array order (rows, columns, slices in InstanceNumber order):
#: rows go along +y (LPS), i.e. -y (RAS); columns along +x (LPS), i.e. -x (RAS); slices go down in z.
DICOM_ORDER_AFFINE = np.array(
    [[0, -PIXEL[1], 0, -ORIGIN[0]], [-PIXEL[0], 0, 0, -ORIGIN[1]], [0, 0, -THICK, ORIGIN[2]], [0, 0, 0, 1]]
)


def to_nih_axes(volume: np.ndarray) -> np.ndarray:
    """(rows, columns, slices in InstanceNumber order) -> (columns, rows, slices from the bottom up)."""
    return volume.transpose(1, 0, 2)[:, :, ::-1]


def write_label(path: Path, label: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(path))
    return path


def asymmetric_case():
    """Stored pixels (rows, cols, slices) with a bright block at rows 2-4, columns 10-14, the top 2 slices."""
    stored = np.full((ROWS, COLS, NSLICES), 1024, dtype=np.int16)  # 0 HU
    stored[2:5, 10:15, 0:2] = 1224  # 200 HU
    mask = np.zeros(stored.shape, dtype=np.uint8)
    mask[2:5, 10:15, 0:2] = 1
    return stored, mask


# ---------------------------------------------------------------------------------------------
# DICOM reader
# ---------------------------------------------------------------------------------------------


def test_dicom_slice_order_and_hu_rescale(tmp_path):
    stored = np.zeros((ROWS, COLS, NSLICES), dtype=np.int16)
    for k in range(NSLICES):
        stored[:, :, k] = 1024 + 10 * k  # HU of the slice of InstanceNumber k + 1: 10 * k
    write_series(tmp_path / "s", stored, seed=3)
    label = np.zeros(stored.shape, dtype=np.uint8)
    label[0, 0, 0] = 1
    write_label(tmp_path / "label0001.nii.gz", label, DICOM_ORDER_AFFINE)
    image, lab, spacing = load_pancreas_dicom(tmp_path / "s", tmp_path / "label0001.nii.gz", "image0001")
    assert image.dtype == np.float32 and lab.dtype == np.uint8
    assert image.shape == (ROWS, COLS, NSLICES)
    assert [float(image[0, 0, k]) for k in range(NSLICES)] == [10.0 * k for k in range(NSLICES)]
    assert spacing == pytest.approx((PIXEL[0], PIXEL[1], THICK))


def test_dicom_rescale_slope(tmp_path):
    stored = np.full((ROWS, COLS, 2), 100, dtype=np.int16)
    write_series(tmp_path / "s", stored, intercept=-1000.0, slope=2.0)
    write_label(tmp_path / "l.nii.gz", np.zeros((COLS, ROWS, 2)), nih_label_affine(2))
    image, _, _ = load_pancreas_dicom(tmp_path / "s", tmp_path / "l.nii.gz")
    assert np.all(image == -800.0)


def test_dicom_orientation_follows_label(tmp_path):
    stored, mask = asymmetric_case()
    write_series(tmp_path / "PANCREAS_0001" / "study" / "series", stored)
    label = to_nih_axes(mask)  # (cols, rows, slices bottom up)
    write_label(tmp_path / "label0001.nii.gz", label, nih_label_affine())
    image, lab, spacing = load_pancreas_dicom(tmp_path / "PANCREAS_0001", tmp_path / "label0001.nii.gz", "image0001")
    assert image.shape == lab.shape == (COLS, ROWS, NSLICES)
    assert spacing == pytest.approx((PIXEL[1], PIXEL[0], THICK))
    assert np.all(image[lab == 1] == 200.0) and np.all(image[lab == 0] == 0.0)
    # by hand: columns 10-14 on axis 0, rows 2-4 on axis 1, the top two slices are the last two
    assert np.array_equal(np.argwhere(image == 200.0).min(0), [10, 2, NSLICES - 2])
    assert np.array_equal(np.argwhere(image == 200.0).max(0), [14, 4, NSLICES - 1])


def test_dicom_orientation_other_label_axes(tmp_path):
    """The same scan against a label stored in the DICOM array order: the image keeps that order."""
    stored, mask = asymmetric_case()
    write_series(tmp_path / "s", stored)
    write_label(tmp_path / "l.nii.gz", mask, DICOM_ORDER_AFFINE)
    image, lab, _ = load_pancreas_dicom(tmp_path / "s", tmp_path / "l.nii.gz")
    assert image.shape == (ROWS, COLS, NSLICES)
    assert np.array_equal(image == 200.0, lab == 1)


def test_dicom_errors(tmp_path):
    stored, mask = asymmetric_case()
    write_series(tmp_path / "s", stored)
    label_path = write_label(tmp_path / "l.nii.gz", to_nih_axes(mask), nih_label_affine())
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInputError, match=r"case 'image0009'.*no DICOM file"):
        load_pancreas_dicom(tmp_path / "empty", label_path, "image0009")
    with pytest.raises(MissingInputError, match=r"case 'image0009'.*label file .*missing\.nii\.gz"):
        load_pancreas_dicom(tmp_path / "s", tmp_path / "missing.nii.gz", "image0009")
    bad = tmp_path / "bad"
    write_series(bad, stored)
    corrupt = sorted(bad.glob("*.dcm"))[2]
    corrupt.write_bytes(b"not a dicom file at all")
    with pytest.raises(InvalidInputError, match=r"case 'image0009'.*cannot read DICOM file .*" + corrupt.name):
        load_pancreas_dicom(bad, label_path, "image0009")
    small = write_label(tmp_path / "small.nii.gz", np.zeros((COLS, ROWS, NSLICES - 1)), nih_label_affine())
    with pytest.raises(InvalidInputError, match=r"case 'image0009'.*sizes differ.*\(16, 12, 6\).*\(16, 12, 5\)"):
        load_pancreas_dicom(tmp_path / "s", small, "image0009")
    values = to_nih_axes(mask) * 2
    two = write_label(tmp_path / "two.nii.gz", values, nih_label_affine())
    with pytest.raises(InvalidInputError, match=r"case 'image0009'.*label values must be in \{0, 1\}"):
        load_pancreas_dicom(tmp_path / "s", two, "image0009")


# ---------------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------------


def test_resample_shape_and_label_nearest():
    image = np.random.default_rng(0).normal(size=(64, 64, 10)).astype(np.float32)
    label = np.zeros((64, 64, 10), dtype=np.uint8)
    label[20:40, 20:40, 3:7] = 1
    out_image, out_label = resample_to_1mm(image, label, (0.5, 0.5, 2.0))
    assert out_image.shape == out_label.shape == (32, 32, 20)
    assert out_image.dtype == np.float32 and out_label.dtype == np.uint8
    assert set(np.unique(out_label).tolist()) == {0, 1}
    # a constant image stays constant under the cubic B-spline
    const, _ = resample_to_1mm(np.full((8, 8, 4), 5.0), np.zeros((8, 8, 4)), (0.5, 0.5, 2.0))
    assert np.allclose(const, 5.0, atol=1e-4)


def test_window_hu():
    out = window_hu(np.array([-1000.0, -125.0, 75.0, 275.0, 2000.0]))
    assert out.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert out.dtype == np.float32


def test_crop_box():
    label = np.zeros((200, 120, 4), dtype=np.uint8)
    label[100:110, 60:70, 1] = 1  # 10 wide: widened to 96 (43 low, 43 high), plus 25 each side
    (x0, x1), (y0, y1) = pancreas_crop_box(label)
    assert (x0, x1) == (100 - 43 - 25, 110 + 43 + 25)
    assert x1 - x0 == 146
    assert (y0, y1) == (0, 120)  # 60-43-25 < 0 and 70+43+25 > 120: clipped to the image
    big = np.zeros((300, 300, 2), dtype=np.uint8)
    big[100:220, 150:151, 0] = 1  # 120 wide: no widening; 1 wide: widened by 95 (47 low, 48 high)
    assert pancreas_crop_box(big) == ((75, 245), (150 - 47 - 25, 151 + 48 + 25))
    edge = np.zeros((300, 300, 2), dtype=np.uint8)
    edge[0:5, 295:300, 0] = 1  # at the borders: the 96 box is shifted inside, the margin clipped
    assert pancreas_crop_box(edge) == ((0, 96 + 25), (300 - 96 - 25, 300))
    with pytest.raises(InvalidInputError, match="no foreground"):
        pancreas_crop_box(np.zeros((5, 5, 5)))


def test_preprocess_pancreas():
    rng = np.random.default_rng(1)
    image = rng.uniform(-300, 400, size=(300, 140, 10)).astype(np.float32)
    label = np.zeros(image.shape, dtype=np.uint8)
    label[140:160, 60:80, 2:8] = 1
    out_image, out_label, box = preprocess_pancreas(image, label, (0.8, 0.8, 2.0), return_box=True)
    # at 1 mm: (240, 112, 20), label x 112-127, y 48-63: x box 96 + 2 * 25 wide, y the whole 112
    assert box == ((112 - 40 - 25, 128 + 40 + 25), (0, 112))
    assert out_image.shape == out_label.shape == (146, 112, 20)
    assert out_image.dtype == np.float32 and out_label.dtype == np.uint8
    assert abs(float(out_image.mean())) < 1e-5 and abs(float(out_image.std()) - 1.0) < 1e-5
    assert out_label.sum() > 0
    with pytest.raises(InvalidInputError, match=r"values must be in \{0, 1\}"):
        preprocess_pancreas(image, label * 3, (1, 1, 1))
    with pytest.raises(InvalidInputError, match="same shape"):
        preprocess_pancreas(image, label[:-1], (1, 1, 1))
    nan = image.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="non-finite"):
        preprocess_pancreas(nan, label, (1, 1, 1))


def test_dicom_to_preprocessed_case(tmp_path):
    """End to end: the bright block (200 HU) lies under the label after loading and preprocessing."""
    stored, mask = asymmetric_case()
    write_series(tmp_path / "s", stored)
    write_label(tmp_path / "l.nii.gz", to_nih_axes(mask), nih_label_affine())
    image_hu, label, spacing = load_pancreas_dicom(tmp_path / "s", tmp_path / "l.nii.gz", "image0001")
    image, lab = preprocess_pancreas(image_hu, label, spacing)
    assert image.shape[2] == round(NSLICES * THICK)
    inside, outside = image[lab == 1], image[lab == 0]
    assert inside.min() > outside.mean() + 1.0


# ---------------------------------------------------------------------------------------------
# h5 reader, layouts, discovery
# ---------------------------------------------------------------------------------------------


def write_h5(path: Path, image, label) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if image is not None:
            f.create_dataset("image", data=image)
        if label is not None:
            f.create_dataset("label", data=label)
    return path


def test_load_pancreas_h5(tmp_path):
    image = np.random.default_rng(0).normal(size=(10, 9, 8)).astype(np.float64)
    label = (image > 1).astype(np.int16)
    path = write_h5(tmp_path / "image0001_norm.h5", image, label)
    out_image, out_label, spacing = load_pancreas_h5(path, "image0001")
    assert out_image.dtype == np.float32 and out_label.dtype == np.uint8
    assert np.array_equal(out_label, label) and spacing == (1.0, 1.0, 1.0)
    with pytest.raises(UnknownKeyError, match=r"case 'image0002'.*missing \['label'\]"):
        load_pancreas_h5(write_h5(tmp_path / "a.h5", image, None), "image0002")
    with pytest.raises(InvalidInputError, match=r"case 'image0002'.*same shape"):
        load_pancreas_h5(write_h5(tmp_path / "b.h5", image, label[:-1]), "image0002")
    with pytest.raises(InvalidInputError, match=r"case 'image0002'.*label values"):
        load_pancreas_h5(write_h5(tmp_path / "c.h5", image, label * 2), "image0002")
    nan = image.copy()
    nan[1, 1, 1] = np.inf
    with pytest.raises(InvalidInputError, match=r"case 'image0002'.*non-finite"):
        load_pancreas_h5(write_h5(tmp_path / "d.h5", nan, label), "image0002")
    (tmp_path / "e.h5").write_bytes(b"garbage")
    with pytest.raises(InvalidInputError, match=r"case 'image0002'.*cannot read"):
        load_pancreas_h5(tmp_path / "e.h5", "image0002")
    with pytest.raises(MissingInputError, match="does not exist"):
        load_pancreas_h5(tmp_path / "none.h5", "image0002")


def test_case_ids():
    assert pancreas_case_id("PANCREAS_0070") == "image0070"
    assert pancreas_case_id("label0001.nii.gz") == "image0001"
    assert pancreas_case_id("image0012_norm.h5") == "image0012"
    with pytest.raises(InvalidInputError):
        pancreas_case_id("case12")


def test_layouts_and_discovery(tmp_path, caplog):
    h5_root = tmp_path / "h5"
    for i in (1, 2):
        write_h5(h5_root / "Pancreas_h5" / f"image000{i}_norm.h5", np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))
    assert detect_pancreas_layout(h5_root) == "h5"
    assert list(find_pancreas_cases(h5_root, "h5")) == ["image0001", "image0002"]
    flat = tmp_path / "flat"
    write_h5(flat / "image0003_norm.h5", np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))
    assert detect_pancreas_layout(flat) == "h5"
    assert find_pancreas_cases(flat, "h5") == {"image0003": flat / "image0003_norm.h5"}

    raw = tmp_path / "raw"
    stored, mask = asymmetric_case()
    write_series(raw / "Pancreas-CT" / "PANCREAS_0001" / "study" / "series", stored)
    write_series(raw / "Pancreas-CT" / "PANCREAS_0002" / "st", stored)  # no label
    write_label(raw / "TCIA_pancreas_labels-02-05-2017" / "label0001.nii.gz", to_nih_axes(mask), nih_label_affine())
    write_label(raw / "TCIA_pancreas_labels-02-05-2017" / "label0003.nii.gz", to_nih_axes(mask), nih_label_affine())
    assert detect_pancreas_layout(raw) == "raw"
    with caplog.at_level(logging.WARNING, logger="sasnet_components.data.pancreas"):
        cases = find_pancreas_cases(raw, "raw")
    assert "case 'image0002'" in caplog.text and "no label file" in caplog.text
    assert "case 'image0003'" in caplog.text and "no DICOM patient folder" in caplog.text
    assert cases == {
        "image0001": (
            raw / "Pancreas-CT" / "PANCREAS_0001" / "study" / "series",
            raw / "TCIA_pancreas_labels-02-05-2017" / "label0001.nii.gz",
        )
    }
    series_dir, label_path = cases["image0001"]
    assert load_pancreas_dicom(series_dir, label_path, "image0001")[0].shape == (COLS, ROWS, NSLICES)

    flat_labels = tmp_path / "raw2"
    write_series(flat_labels / "PANCREAS_0004" / "x", stored)
    write_label(flat_labels / "labels" / "label0004.nii.gz", to_nih_axes(mask), nih_label_affine())
    assert detect_pancreas_layout(flat_labels) == "raw"
    assert list(find_pancreas_cases(flat_labels, "raw")) == ["image0004"]

    (tmp_path / "nothing").mkdir()
    with pytest.raises(MissingInputError, match="holds no case files"):
        detect_pancreas_layout(tmp_path / "nothing")
    with pytest.raises(InvalidInputError, match="`layout`"):
        find_pancreas_cases(raw, "nrrd")


def test_missing_cases_report_duplicates(caplog):
    train = ["image0057", "image0018", "image0070", "image0019"]
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.pancreas"):
        missing = missing_pancreas_cases(train, ["image0057", "image0018", "image0019"], "train.list", num_labeled=3)
    assert missing == ["image0070"]
    text = caplog.text
    assert "image0070" in text and "duplicate" in text
    assert "2 labeled cases remain" in text
    assert missing_pancreas_cases(["image0025", "image0001"], ["image0001"], "test.list") == ["image0025"]


def test_dicom_misalignment_warning(tmp_path, caplog):
    """A label over air (-1000 HU) logs a warning that image and label may be misaligned."""
    stored, mask = asymmetric_case()
    stored[mask == 1] = 24  # -1000 HU
    write_series(tmp_path / "s", stored)
    write_label(tmp_path / "l.nii.gz", to_nih_axes(mask), nih_label_affine())
    with caplog.at_level(logging.WARNING, logger="sasnet_components.data.pancreas"):
        load_pancreas_dicom(tmp_path / "s", tmp_path / "l.nii.gz", "image0005")
    assert "case 'image0005'" in caplog.text and "aligned" in caplog.text


# ---------------------------------------------------------------------------------------------
# preparation: PancreasReader, prepare_pancreas, scripts/prepare_pancreas.py
# ---------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def _load_cli():
    spec = importlib.util.spec_from_file_location("prepare_pancreas_script", REPO / "scripts" / "prepare_pancreas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _h5_dataset(root: Path, numbers, train, test) -> dict[str, np.ndarray]:
    """Tiny community h5 cases ``image<NNNN>_norm.h5`` and the two lists; returns the images by id."""
    images = {}
    for n in numbers:
        rng = np.random.default_rng(n)
        image = rng.normal(size=(8, 7, 4)).astype(np.float32)
        label = (image > 0.5).astype(np.uint8)
        case_id = f"image{n:04d}"
        write_h5(root / "Pancreas_h5" / f"{case_id}_norm.h5", image, label)
        images[case_id] = image
    (root / "train.list").write_text("".join(f"{i}\n" for i in train))
    (root / "test.list").write_text("".join(f"{i}\n" for i in test))
    return images


def _ids(datalist, role):
    return [e["case_id"] for e in datalist[role]]


def test_prepare_pancreas_h5_end_to_end_and_rerun(tmp_path, caplog):
    root, out = tmp_path / "in", tmp_path / "out"
    ids = [f"image{n:04d}" for n in range(1, 7)]
    images = _h5_dataset(root, range(1, 7), ids[:4], ids[4:])
    datalist = prepare_pancreas(root, out, num_labeled=2, num_validation=1)
    assert datalist["name"] == "Pancreas" and datalist["source_layout"] == "h5" and datalist["spacing"] == [1.0] * 3
    assert _ids(datalist, "labeled") == ids[:2] and _ids(datalist, "unlabeled") == ids[2:4]
    assert _ids(datalist, "validation") == ids[3:4] and _ids(datalist, "test") == ids[4:]
    assert json.loads((out / "datalist.json").read_text()) == datalist
    written = nib.load(str(out / "imagesTs" / "image0006.nii.gz"))
    assert np.array_equal(np.asarray(written.dataobj), images["image0006"])
    assert np.allclose(np.diag(written.affine), [1, 1, 1, 1])
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["cases"]) == ids and manifest["cases"]["image0005"]["split"] == "test"
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.pancreas"):
        prepare_pancreas(root, out, num_labeled=2, num_validation=1)
    assert "0 written, 6 skipped" in caplog.text


def test_prepare_pancreas_removed_duplicates_and_missing_ids(tmp_path, caplog):
    root = tmp_path / "in"
    train = ["image0001", "image0002", "image0070", "image0003", "image0004"]
    _h5_dataset(root, range(1, 6), train, ["image0025", "image0005"])
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.pancreas"):
        datalist = prepare_pancreas(root, tmp_path / "out", num_labeled=3, num_validation=1)
    assert _ids(datalist, "labeled") == ["image0001", "image0002", "image0003"]
    assert _ids(datalist, "unlabeled") == ["image0004"] and _ids(datalist, "test") == ["image0005"]
    assert "1 of 2 test.list ids" in datalist["protocol_note"]
    assert "duplicate" in caplog.text and "image0070 dropped" in caplog.text and "image0025" in caplog.text
    assert "image0003 moved into the labeled set" in caplog.text

    (root / "train.list").write_text("image0001\nimage0042\nimage0002\n")
    expected = re.escape(str(root / "Pancreas_h5" / "image0042_norm.h5"))
    with pytest.raises(MissingInputError, match=rf"case 'image0042' of the training list has no data: .*{expected}"):
        prepare_pancreas(root, tmp_path / "out2", num_labeled=1, num_validation=1)


def test_prepare_pancreas_uses_the_shipped_split(tmp_path, caplog):
    root = tmp_path / "in"
    _h5_dataset(root, [1], ["image0001"], [])
    (root / "train.list").unlink()
    (root / "test.list").unlink()
    train, test = PancreasReader("h5").default_ids(root)
    assert len(train) == 62 and len(test) == 20 and train.index("image0070") == 10 and train[12] == "image0048"
    # the literature's lists (as distributed with MC-Net / SASNet), ends and duplicates checked by hand
    assert train[:2] == ["image0057", "image0018"] and train[-1] == "image0003" and "image0070" not in train[:6]
    assert test[0] == "image0050" and test[-1] == "image0009" and "image0025" in test and not set(train) & set(test)
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.pancreas"):
        with pytest.raises(MissingInputError, match=r"case 'image0057' of the training list has no data"):
            prepare_pancreas(root, tmp_path / "out")
    assert "literature's split shipped with the package" in caplog.text


def _raw_case(root: Path, n: int) -> None:
    rng = np.random.default_rng(n)
    stored = (1024 + rng.integers(-100, 100, size=(20, 20, NSLICES))).astype(np.int16)
    mask = np.zeros(stored.shape, dtype=np.uint8)
    mask[4:12, 5:14, 1:5] = 1
    stored[mask == 1] += 200
    write_series(root / "Pancreas-CT" / f"PANCREAS_{n:04d}" / "study" / "series", stored, seed=n)
    write_label(
        root / "TCIA_pancreas_labels-02-05-2017" / f"label{n:04d}.nii.gz", to_nih_axes(mask), nih_label_affine()
    )


def test_prepare_pancreas_raw_end_to_end_rerun_and_refused_series(tmp_path, caplog):
    root, out = tmp_path / "in", tmp_path / "out"
    for n in (1, 2, 3):
        _raw_case(root, n)
    (root / "train.list").write_text("image0001\nimage0002\n")
    (root / "test.list").write_text("image0003\n")
    datalist = prepare_pancreas(root, out, num_labeled=1, num_validation=1)
    assert datalist["source_layout"] == "raw" and datalist["spacing"] == [1.0] * 3
    assert _ids(datalist, "labeled") == ["image0001"] and _ids(datalist, "test") == ["image0003"]
    record = json.loads((out / "manifest.json").read_text())["cases"]["image0002"]
    # label axes (columns, rows, slices) at (0.75, 0.5, 2) mm -> (15, 10, 12) at 1 mm, narrower than the crop
    assert record["raw_shape"] == [20, 20, NSLICES] and record["resampled_shape"] == [15, 10, 12]
    assert record["crop_box"] == [[0, 15], [0, 10]] and record["shape"] == [15, 10, 12]
    assert record["dicom_files"] == NSLICES and record["label_source"].endswith("label0002.nii.gz")
    assert record["hu_window"] == [-125.0, 275.0]
    image = np.asarray(nib.load(str(out / "imagesTr" / "image0002.nii.gz")).dataobj)
    label = np.asarray(nib.load(str(out / "labelsTr" / "image0002.nii.gz")).dataobj)
    assert image.shape == label.shape == (15, 10, 12) and image[label == 1].mean() > image[label == 0].mean() + 1

    series = root / "Pancreas-CT" / "PANCREAS_0002" / "study" / "series"
    touched = sorted(series.glob("*.dcm"))[0]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    with caplog.at_level(logging.INFO, logger="sasnet_components.data.pancreas"):
        prepare_pancreas(root, out, num_labeled=1, num_validation=1)
    assert "1 written, 2 skipped" in caplog.text

    corrupt = sorted((root / "Pancreas-CT" / "PANCREAS_0003").rglob("*.dcm"))[2]
    corrupt.write_bytes(b"not a dicom file")
    (out / "datalist.json").unlink()
    refused = rf"1 of 3 cases refused.*case 'image0003'.*cannot read DICOM file .*{corrupt.name}"
    with pytest.raises(ValueError, match=refused):
        prepare_pancreas(root, out, num_labeled=1, num_validation=1)
    assert (out / "imagesTr" / "image0001.nii.gz").is_file() and (out / "imagesTr" / "image0002.nii.gz").is_file()
    assert not (out / "datalist.json").exists()


def test_prepare_pancreas_cli(tmp_path, capsys):
    cli = _load_cli()
    root = tmp_path / "in"
    _h5_dataset(root, [1, 2, 3], ["image0001", "image0002"], ["image0003"])
    split = ["--num_labeled", "1", "--num_validation", "1", "--progress", "false"]
    datalist = cli.main(["--input_dir", str(root), "--output_dir", str(tmp_path / "out")] + split)
    assert _ids(datalist, "test") == ["image0003"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--input_dir", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "o")])
    assert exit_info.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"prepare_pancreas.py: error: `input_dir` '.*nowhere' does not exist", last)
    (root / "train.list").write_text("image0001\nimage0009\n")
    with pytest.raises(SystemExit):
        cli.main(["--input_dir", str(root), "--output_dir", str(tmp_path / "o2"), "--num_validation", "0"] + split[:2])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"prepare_pancreas.py: error: case 'image0009' of the training list has no data", last)
