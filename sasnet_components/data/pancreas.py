"""NIH Pancreas-CT: reading and preprocessing of one case, discovery of the cases, and dataset preparation.

The per-case functions write nothing; :func:`prepare_pancreas` (the preparation core with
:class:`PancreasReader`, see the end of this docstring) calls them and writes the output. Two
input layouts are accepted, because users hold one or the other:

``"h5"`` (community files, the output of MC-Net's preprocessing notebook)::

    <root>/Pancreas_h5/<id>_norm.h5      (or directly <root>/<id>_norm.h5)
        keys "image" (float32, z-scored) and "label" ({0, 1}), axes (X, Y, Z), 1 mm isotropic

``"raw"`` (the public release: TCIA DICOM series and the NIH label NIfTI files)::

    <root>/Pancreas-CT/PANCREAS_0001/<study>/<series>/*.dcm   (any depth under the patient folder;
        <root>/PANCREAS_0001/... and <root>/<download folder>/Pancreas-CT/PANCREAS_0001/... too)
    <root>/TCIA_pancreas_labels-02-05-2017/label0001.nii.gz    (or <root>/labels/label0001.nii.gz)

Case ids are those of the literature's split lists (``train.list`` / ``test.list``):
``image0001``; ``PANCREAS_0001`` and ``label0001`` map to it (:func:`pancreas_case_id`).

A raw case goes through :func:`load_pancreas_dicom` (HU volume put in the label's voxel grid) and
:func:`preprocess_pancreas` (the public preprocessing of this literature): resampling to 1 mm
(cubic B-spline image, nearest label), HU window [-125, 275] scaled to [0, 1], crop of x and y to
the label's bounding box widened to at least 96 voxels plus 25 voxels per side (z not cropped),
z-score of the cropped image. Like the community files, the crop uses the ground truth label.

Orientation: the image array is put in the axis order and direction of the label NIfTI by
geometry, not by a fixed transpose: the DICOM voxel-to-patient matrix (ImageOrientationPatient,
ImagePositionPatient, PixelSpacing, slices in InstanceNumber order) and the label's affine are
compared with ``nibabel.orientations`` and the image is permuted / flipped to the label's axes.
Misaligned axes (image transposed or flipped against the label) is the known cause of a Dice of
0.1-0.2 after DICOM conversion.

TCIA removed two cases of the original 82 as duplicates: ``image0025`` (in the usual
``test.list``) and ``image0070`` (in the usual ``train.list``, position 11, so among the first 12,
the labeled cases of the 20 % protocol; not among the first 6 of the 10 % protocol). Users who
downloaded the release after the removal lack them; :func:`missing_pancreas_cases` reports them.
What a split does without ``image0070`` is the caller's choice and must be stated: taking the
first 12 ids of ``train.list`` and dropping the missing one gives 11 labeled cases (the protocol's
labeled set minus one); dropping it first and then taking 12 makes ``image0048`` (the 13th id)
labeled instead. The 10 % protocol (first 6) is unchanged either way, and the test split has 19
cases without ``image0025``.

Preparation: :class:`PancreasReader` plugs both layouts into the shared preparation core
(:mod:`sasnet_components.data.prepare`) and :func:`prepare_pancreas` (``scripts/prepare_pancreas.py``)
writes NIfTI volumes, a manifest and the datalist. It filters absent removed duplicates out of
the lists first and then takes the first ``num_labeled`` ids: without ``image0070`` the 12 labeled
cases are the literature's other 11 plus ``image0048``. The literature's lists ship with the
package (``sasnet_components/data/splits/pancreas_{train,test}.list``) and are used when the
input has no ``train.list``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from sasnet_components.data.checks import nonfinite_message, read_error
from sasnet_components.data.prepare import (
    CaseData,
    CaseReader,
    CaseSource,
    prepare_cases,
    read_h5_pair,
    read_id_list,
    read_id_lists,
    resolve_folders,
)
from sasnet_components.utils.errors import InvalidInputError, MissingInputError

__all__ = [
    "PANCREAS_SPACING",
    "PANCREAS_HU_WINDOW",
    "PANCREAS_CROP_MARGIN",
    "PANCREAS_MIN_EXTENT",
    "TCIA_REMOVED_DUPLICATES",
    "pancreas_case_id",
    "detect_pancreas_layout",
    "find_pancreas_cases",
    "missing_pancreas_cases",
    "load_pancreas_h5",
    "load_pancreas_dicom",
    "resample_to_1mm",
    "window_hu",
    "pancreas_crop_box",
    "preprocess_pancreas",
    "PANCREAS_LAYOUTS",
    "PancreasDicomSource",
    "PancreasReader",
    "prepare_pancreas",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
Spacing = tuple[float, float, float]

#: Voxel spacing (mm) of the community h5 files and of the output of :func:`preprocess_pancreas`.
PANCREAS_SPACING: Spacing = (1.0, 1.0, 1.0)
#: HU window of the public preprocessing, mapped to [0, 1].
PANCREAS_HU_WINDOW: tuple[float, float] = (-125.0, 275.0)
#: Voxels added on each side of the (widened) label box in x and y.
PANCREAS_CROP_MARGIN = 25
#: The label box is widened to at least this many voxels in x and y before the margin is added.
PANCREAS_MIN_EXTENT = 96
#: Ids of the two cases TCIA removed as duplicates, with the usual list that names them.
TCIA_REMOVED_DUPLICATES: dict[str, str] = {"image0025": "test.list", "image0070": "train.list"}
#: Accepted values of ``layout`` for :func:`prepare_pancreas`.
PANCREAS_LAYOUTS: tuple[str, ...] = ("auto", "h5", "raw")
#: The literature's split lists shipped in ``sasnet_components/data/splits/`` (62 and 20 ids).
PANCREAS_TRAIN_LIST = "pancreas_train.list"
PANCREAS_TEST_LIST = "pancreas_test.list"

# mean HU under the label outside this range hints at a misaligned image and label (a warning only)
_PLAUSIBLE_LABEL_HU = (-20.0, 250.0)
_H5_FOLDER = "Pancreas_h5"
_H5_SUFFIX = "_norm.h5"
_DICOM_FOLDER = "Pancreas-CT"
_LABEL_FOLDERS = ("TCIA_pancreas_labels-02-05-2017", "labels")
_ID_PATTERN = re.compile(r"^(?:image|label|pancreas_?)(\d+)$", re.IGNORECASE)
_LAYOUTS_HELP = (
    f"expected one of two layouts: (1) community h5 files '<root>/{_H5_FOLDER}/image0001{_H5_SUFFIX}' "
    f"(or '<root>/image0001{_H5_SUFFIX}'); (2) the TCIA release: DICOM series under "
    f"'<root>/{_DICOM_FOLDER}/PANCREAS_0001/' and label files "
    f"'<root>/{_LABEL_FOLDERS[0]}/label0001.nii.gz' (or '<root>/labels/label0001.nii.gz')"
)


# ---------------------------------------------------------------------------------------------
# case ids, layout and discovery
# ---------------------------------------------------------------------------------------------


def pancreas_case_id(name: str) -> str:
    """The literature's case id (``image0001``) of a file or folder name of either layout.

    Args:
        name: ``PANCREAS_0001``, ``label0001.nii.gz``, ``label0001.nii``, ``image0001_norm.h5`` or
            ``image0001`` (case-insensitive).

    Returns:
        ``"image"`` followed by the number on 4 digits, e.g. ``"image0001"``.

    Raises:
        InvalidInputError: the name holds no case number in one of these forms.

    Example:
        >>> pancreas_case_id("PANCREAS_0070"), pancreas_case_id("label0001.nii.gz")
        ('image0070', 'image0001')
    """
    stem = Path(str(name)).name
    for suffix in (".nii.gz", ".nii", _H5_SUFFIX, ".h5"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    match = _ID_PATTERN.match(stem)
    if match is None:
        raise InvalidInputError(
            f"'{name}' is not a Pancreas-CT case name; expected 'PANCREAS_0001', 'label0001.nii.gz' or 'image0001'."
        )
    return f"image{int(match.group(1)):04d}"


def _h5_folders(root: Path) -> list[Path]:
    return [p for p in (root / _H5_FOLDER, root) if p.is_dir()]


def _dicom_folders(root: Path) -> list[Path]:
    """Folders that hold ``PANCREAS_*`` patient folders: ``root/Pancreas-CT``, ``root``, ``root/*/Pancreas-CT``."""
    candidates = [root / _DICOM_FOLDER, root]
    if root.is_dir():
        candidates += sorted(sub / _DICOM_FOLDER for sub in root.iterdir() if sub.is_dir())
    out = []
    for folder in candidates:
        if folder.is_dir() and any(p.is_dir() and p.name.upper().startswith("PANCREAS_") for p in folder.iterdir()):
            out.append(folder)
    return out


def _label_files(root: Path) -> list[Path]:
    files = []
    for name in _LABEL_FOLDERS:
        folder = root / name
        if folder.is_dir():
            files += sorted(p for p in folder.iterdir() if p.is_file() and re.match(r"^label\d+\.nii(\.gz)?$", p.name))
    return files


def detect_pancreas_layout(root: PathLike) -> str:
    """Detect which Pancreas-CT layout ``root`` holds.

    The h5 layout wins when both are present.

    Args:
        root: root folder of the dataset.

    Returns:
        ``"h5"`` if some ``<root>/Pancreas_h5/*_norm.h5`` or ``<root>/*_norm.h5`` exists, else
        ``"raw"`` if a ``PANCREAS_*`` patient folder exists (under ``<root>/Pancreas-CT``, ``<root>``
        or ``<root>/*/Pancreas-CT``) and a ``label*.nii.gz`` file under
        ``<root>/TCIA_pancreas_labels-02-05-2017`` or ``<root>/labels``.

    Raises:
        MissingInputError: ``root`` does not exist or holds neither layout (the message names both).
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"Pancreas-CT root '{root}' does not exist or is not a directory; {_LAYOUTS_HELP}.")
    for folder in _h5_folders(root):
        if any(p.is_file() for p in folder.glob(f"*{_H5_SUFFIX}")):
            return "h5"
    if _dicom_folders(root) and _label_files(root):
        return "raw"
    raise MissingInputError(f"Pancreas-CT root '{root}' holds no case files; {_LAYOUTS_HELP}.")


def _is_dicom_name(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".dcm"


def find_pancreas_cases(root: PathLike, layout: str) -> dict[str, Union[Path, tuple[Path, Path]]]:
    """Find the cases under ``root``, keyed by the literature's case id.

    Args:
        root: root folder of the dataset (see the module docstring for the layouts).
        layout: ``"h5"`` or ``"raw"`` (see :func:`detect_pancreas_layout`).

    Returns:
        ``{case_id: source}`` sorted by id. For ``"h5"`` the source is the ``<id>_norm.h5`` path
        (``<root>/Pancreas_h5`` is searched before ``<root>``; the first file found for an id is
        kept). For ``"raw"`` it is ``(dicom_dir, label_path)``: ``dicom_dir`` is the folder that
        holds the ``*.dcm`` files of the patient (the patient folder itself when they lie in
        several folders; :func:`load_pancreas_dicom` reads ``*.dcm`` at any depth under it).
        Patient folders without a label file, or without ``*.dcm`` file, and label files
        without a patient folder, are left out and logged (warning).

    Raises:
        InvalidInputError: ``layout`` is not ``"h5"`` or ``"raw"``.
        MissingInputError: ``root`` does not exist.
    """
    root = Path(root)
    if layout not in ("h5", "raw"):
        raise InvalidInputError(f"`layout` must be 'h5' or 'raw', got {layout!r}.")
    if not root.is_dir():
        raise MissingInputError(f"Pancreas-CT root '{root}' does not exist or is not a directory; {_LAYOUTS_HELP}.")
    cases: dict[str, Union[Path, tuple[Path, Path]]] = {}
    if layout == "h5":
        for folder in _h5_folders(root):
            for path in sorted(folder.glob(f"*{_H5_SUFFIX}")):
                try:
                    case_id = pancreas_case_id(path.name)
                except InvalidInputError:
                    logger.warning("'%s' is not named like a Pancreas-CT case (image0001%s); ignored", path, _H5_SUFFIX)
                    continue
                cases.setdefault(case_id, path)
        return dict(sorted(cases.items()))
    labels: dict[str, Path] = {}
    for path in _label_files(root):
        labels.setdefault(pancreas_case_id(path.name), path)
    patients: dict[str, Path] = {}
    for folder in _dicom_folders(root):
        for patient in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.upper().startswith("PANCREAS_")):
            try:
                patients.setdefault(pancreas_case_id(patient.name), patient)
            except InvalidInputError:
                logger.warning("'%s' is not named like a Pancreas-CT patient folder (PANCREAS_0001); ignored", patient)
    for case_id, patient in sorted(patients.items()):
        if case_id not in labels:
            logger.warning("case '%s': patient folder '%s' has no label file; case left out", case_id, patient)
            continue
        dirs = sorted({p.parent for p in patient.rglob("*") if _is_dicom_name(p)})
        if not dirs:
            logger.warning("case '%s': no *.dcm file under '%s'; case left out", case_id, patient)
            continue
        cases[case_id] = (dirs[0] if len(dirs) == 1 else patient, labels[case_id])
    for case_id in sorted(set(labels) - set(patients)):
        logger.warning(
            "case '%s': label file '%s' has no DICOM patient folder; case left out", case_id, labels[case_id]
        )
    return dict(sorted(cases.items()))


def missing_pancreas_cases(
    ids: Sequence[str],
    cases: Iterable[str],
    list_name: str = "list",
    num_labeled: Optional[int] = None,
) -> list[str]:
    """The ids of a split list that have no case, each logged with its reason.

    Ids of the two cases TCIA removed as duplicates (:data:`TCIA_REMOVED_DUPLICATES`) are logged
    as such at info level (an expected absence for a recent download); other missing ids at
    warning level. With ``num_labeled``, missing ids among the first ``num_labeled`` of ``ids``
    (the labeled cases of a protocol) are logged as shrinking the labeled set.

    Args:
        ids: the ids of a list, in order (e.g. the 62 of ``train.list``).
        cases: the ids found (e.g. the keys of :func:`find_pancreas_cases`).
        list_name: the list's name, for the log messages.
        num_labeled: the number of labeled cases of the protocol (6 or 12), or None.

    Returns:
        The missing ids, in list order (empty when every id has a case).

    Example:
        >>> missing_pancreas_cases(["image0057", "image0070"], ["image0057"], "train.list")
        ['image0070']
    """
    found = set(cases)
    missing = [i for i in ids if i not in found]
    for case_id in missing:
        if case_id in TCIA_REMOVED_DUPLICATES:
            logger.info(
                "%s: case '%s' is absent; TCIA removed it from Pancreas-CT as a duplicate scan", list_name, case_id
            )
        else:
            logger.warning("%s: case '%s' has no data", list_name, case_id)
    if num_labeled is not None:
        labeled_missing = [i for i in ids[: int(num_labeled)] if i not in found]
        if labeled_missing:
            logger.warning(
                "%s: %d of the first %d (labeled) ids are absent (%s): %d labeled cases remain if they are "
                "dropped, or the next ids of the list move into the labeled set if the list is filtered first",
                list_name,
                len(labeled_missing),
                int(num_labeled),
                ", ".join(labeled_missing),
                int(num_labeled) - len(labeled_missing),
            )
    if missing:
        logger.info("%s: %d of %d ids have no data: %s", list_name, len(missing), len(ids), ", ".join(missing))
    return missing


# ---------------------------------------------------------------------------------------------
# checks shared by the readers
# ---------------------------------------------------------------------------------------------


def _check_label_values(label: np.ndarray, case_id: str, path: PathLike) -> None:
    message = nonfinite_message(label)
    if message is not None:
        raise InvalidInputError(f"case '{case_id}': label has {message} in '{path}'.")
    values = np.unique(label)
    if np.any((values != 0) & (values != 1)):
        raise InvalidInputError(
            f"case '{case_id}': label values must be in {{0, 1}}, got {values[:10].tolist()} in '{path}'."
        )


def _check_pair(image: np.ndarray, label: np.ndarray, case_id: str, path: PathLike) -> None:
    if image.shape != label.shape:
        raise InvalidInputError(
            f"case '{case_id}': image and label must have the same shape, got image {tuple(image.shape)} "
            f"and label {tuple(label.shape)} ('{path}')."
        )
    if image.ndim != 3:
        raise InvalidInputError(
            f"case '{case_id}': image must be 3D (X, Y, Z), got shape {tuple(image.shape)} ('{path}')."
        )
    message = nonfinite_message(image)
    if message is not None:
        raise InvalidInputError(f"case '{case_id}': image has {message} ('{path}').")
    _check_label_values(label, case_id, path)


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------


def load_pancreas_h5(path: PathLike, case_id: str = "") -> tuple[np.ndarray, np.ndarray, Spacing]:
    """Read and check one community ``<id>_norm.h5`` file (already preprocessed).

    Args:
        path: the h5 file, with datasets ``image`` and ``label``.
        case_id: used in error messages.

    Returns:
        ``(image, label, spacing)``: float32 image (z-scored) and uint8 label ``{0, 1}``, both of
        shape ``(X, Y, Z)``, and ``spacing`` ``(1.0, 1.0, 1.0)`` mm.

    Raises:
        MissingInputError: the file does not exist.
        UnknownKeyError: the file lacks ``image`` or ``label`` (a ``KeyError``).
        InvalidInputError: the file cannot be read (not HDF5, damaged), the shapes differ or are
            not 3D, a volume holds NaN or infinite values, or the label holds values outside
            ``{0, 1}``. Messages name the case and the file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"case '{case_id}': h5 file '{path}' does not exist.")
    image, label = read_h5_pair(path, case_id)
    _check_pair(image, label, case_id, path)
    return image.astype(np.float32, copy=False), label.astype(np.uint8, copy=False), PANCREAS_SPACING


def _dicom_files(series_dir: Path) -> list[Path]:
    return sorted(p for p in series_dir.rglob("*") if _is_dicom_name(p))


def _read_slices(series_dir: Path, case_id: str) -> list:
    """The CT slices under ``series_dir`` sorted by InstanceNumber, checked for one consistent series."""
    import pydicom

    if not series_dir.is_dir():
        raise MissingInputError(f"case '{case_id}': DICOM folder '{series_dir}' does not exist.")
    files = _dicom_files(series_dir)
    if not files:
        raise MissingInputError(f"case '{case_id}': no DICOM file (*.dcm) under '{series_dir}'.")
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(str(path))
        except Exception as e:  # InvalidDicomError, OSError, EOFError, struct.error ... on damaged files
            raise read_error(f"case '{case_id}': cannot read DICOM file '{path}'", e) from e
        if "PixelData" not in ds:
            raise InvalidInputError(f"case '{case_id}': DICOM file '{path}' holds no pixel data.")
        for key in ("InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if ds.get(key) is None:
                raise InvalidInputError(
                    f"case '{case_id}': DICOM file '{path}' lacks {key}, needed to place the slice."
                )
        slices.append((int(ds.InstanceNumber), path, ds))
    numbers = [n for n, _, _ in slices]
    if len(set(numbers)) != len(numbers):
        dups = sorted({n for n in numbers if numbers.count(n) > 1})[:5]
        raise InvalidInputError(
            f"case '{case_id}': InstanceNumber repeats under '{series_dir}' ({dups}); one series per case is expected."
        )
    series = {str(ds.get("SeriesInstanceUID", "")) for _, _, ds in slices}
    if len(series) > 1:
        raise InvalidInputError(
            f"case '{case_id}': '{series_dir}' holds {len(series)} DICOM series; one series per case is expected."
        )
    slices.sort(key=lambda s: s[0])
    first = slices[0][2]
    for _, path, ds in slices[1:]:
        if (int(ds.Rows), int(ds.Columns)) != (int(first.Rows), int(first.Columns)):
            raise InvalidInputError(
                f"case '{case_id}': slice '{path}' is {int(ds.Rows)}x{int(ds.Columns)}, the series "
                f"{int(first.Rows)}x{int(first.Columns)}."
            )
        orientation = np.asarray(ds.ImageOrientationPatient, float)
        if not np.allclose(orientation, np.asarray(first.ImageOrientationPatient, float), atol=1e-4):
            raise InvalidInputError(
                f"case '{case_id}': slice '{path}' has another ImageOrientationPatient than the series."
            )
    return [(path, ds) for _, path, ds in slices]


def _dicom_affine(slices: list, case_id: str, series_dir: Path) -> np.ndarray:
    """RAS voxel-to-world affine of the volume ``(rows, columns, slices in InstanceNumber order)``."""
    first = slices[0][1]
    iop = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]  # direction of increasing column index, of increasing row index
    spacing_rows, spacing_cols = (float(v) for v in first.PixelSpacing)  # between rows, between columns
    positions = np.asarray([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for _, ds in slices])
    normal = np.cross(row_dir, col_dir)
    if len(slices) > 1:
        along = positions @ normal
        steps = np.diff(along)
        if np.any(steps == 0) or not (np.all(steps > 0) or np.all(steps < 0)):
            raise InvalidInputError(
                f"case '{case_id}': slice positions under '{series_dir}' are not strictly monotonic in "
                "InstanceNumber order; cannot stack the series."
            )
        if np.ptp(np.abs(steps)) > 0.01 * np.mean(np.abs(steps)) + 1e-3:
            logger.warning(
                "case '%s': slice gaps vary from %.3f to %.3f mm under '%s'; the mean gap is used",
                case_id, np.abs(steps).min(), np.abs(steps).max(), series_dir,
            )
        step = (positions[-1] - positions[0]) / (len(slices) - 1)
    else:
        step = normal * float(first.get("SliceThickness", 1.0) or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = col_dir * spacing_rows  # array axis 0: row index
    lps[:3, 1] = row_dir * spacing_cols  # array axis 1: column index
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM LPS to NIfTI RAS


def load_pancreas_dicom(
    series_dir: PathLike, label_path: PathLike, case_id: str = ""
) -> tuple[np.ndarray, np.ndarray, Spacing]:
    """Read one TCIA Pancreas-CT DICOM series and its NIH label NIfTI, in the label's voxel grid.

    The slices (``*.dcm`` at any depth under ``series_dir``) are stacked in InstanceNumber order
    into an array ``(rows, columns, slices)`` of HU values ``pixel * RescaleSlope +
    RescaleIntercept`` (slope 1, intercept 0 when absent). Its voxel-to-world matrix comes from
    ImageOrientationPatient, PixelSpacing and ImagePositionPatient; the image is then permuted
    and flipped (``nibabel.orientations``) so that its axes have the orientation of the label
    NIfTI's affine: ``image[i, j, k]`` and ``label[i, j, k]`` are the same voxel. The geometry
    (spacing) is the label's. Warnings (logged, not raised): voxel sizes or origins of the two
    files that disagree, and a mean HU under the label outside [-20, 250] (the pancreas in
    contrast CT lies well inside; far outside hints at misaligned files).

    Args:
        series_dir: folder of the case's DICOM files (one series).
        label_path: the NIH label file ``label<NNNN>.nii.gz``.
        case_id: used in error messages.

    Returns:
        ``(image_hu, label, spacing)``: float32 HU image and uint8 label ``{0, 1}``, both of the
        label's shape ``(X, Y, Z)``, and the label's voxel spacing in mm ``(sx, sy, sz)``.

    Raises:
        MissingInputError: ``series_dir`` or ``label_path`` does not exist, or there is no
            ``*.dcm`` file under ``series_dir``.
        InvalidInputError: a DICOM file or the label cannot be read (damaged), a slice lacks the
            tags that place it, several series or repeated InstanceNumbers, slices of different
            sizes or orientations, the image (after reorientation) and label shapes differ, the
            label holds values outside ``{0, 1}``, or a volume holds NaN or infinite values.
            Messages name the case and the file.
    """
    import nibabel as nib
    from nibabel import orientations

    series_dir = Path(series_dir)
    label_path = Path(label_path)
    if not label_path.is_file():
        raise MissingInputError(f"case '{case_id}': label file '{label_path}' does not exist.")
    slices = _read_slices(series_dir, case_id)
    planes = []
    for path, ds in slices:
        try:
            pixels = np.asarray(ds.pixel_array, dtype=np.float64)
        except Exception as e:  # pydicom raises many types for truncated or undecodable pixel data
            raise read_error(f"case '{case_id}': cannot decode the pixels of DICOM file '{path}'", e) from e
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        planes.append((pixels * slope + intercept).astype(np.float32))
    image = np.stack(planes, axis=-1)  # (rows, columns, slices)
    affine = _dicom_affine(slices, case_id, series_dir)

    try:
        nifti = nib.load(str(label_path))
        label = np.asanyarray(nifti.dataobj)
        label_affine = np.asarray(nifti.affine, dtype=np.float64)
    except Exception as e:  # nibabel raises ImageFileError, EOFError, zlib.error, OSError ... on damaged files
        raise read_error(f"case '{case_id}': cannot read label '{label_path}'", e) from e
    if label.ndim != 3:
        raise InvalidInputError(
            f"case '{case_id}': label must be 3D, got shape {tuple(label.shape)} in '{label_path}'."
        )
    zooms = np.linalg.norm(label_affine[:3, :3], axis=0)
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise InvalidInputError(
            f"case '{case_id}': label '{label_path}' has a degenerate affine {label_affine.tolist()}."
        )

    transform = orientations.ornt_transform(
        orientations.io_orientation(affine), orientations.io_orientation(label_affine)
    )
    image = orientations.apply_orientation(image, transform)
    if image.shape != label.shape:
        raise InvalidInputError(
            f"case '{case_id}': image and label sizes differ: DICOM series '{series_dir}' gives {tuple(image.shape)} "
            f"in the label's axis order, label '{label_path}' is {tuple(label.shape)}."
        )
    moved = affine @ orientations.inv_ornt_aff(transform, image.shape)
    dicom_zooms = np.linalg.norm(moved[:3, :3], axis=0)
    if not np.allclose(dicom_zooms, zooms, rtol=0.02):
        logger.warning(
            "case '%s': voxel size %s mm of the DICOM series differs from %s mm of the label; the label's is used",
            case_id, np.round(dicom_zooms, 4).tolist(), np.round(zooms, 4).tolist(),
        )
    if np.linalg.norm(moved[:3, 3] - label_affine[:3, 3]) > float(zooms.max()):
        logger.warning(
            "case '%s': origin %s of the DICOM series differs from %s of the label by more than a voxel",
            case_id, np.round(moved[:3, 3], 2).tolist(), np.round(label_affine[:3, 3], 2).tolist(),
        )
    _check_pair(image, label, case_id, label_path)
    if label.any():
        inside = float(image[label == 1].mean())
        if not _PLAUSIBLE_LABEL_HU[0] <= inside <= _PLAUSIBLE_LABEL_HU[1]:
            logger.warning(
                "case '%s': the mean HU under the label is %.1f, outside %s where the pancreas lies in "
                "contrast CT; check that image '%s' and label '%s' are aligned",
                case_id, inside, list(_PLAUSIBLE_LABEL_HU), series_dir, label_path,
            )
    spacing = (float(zooms[0]), float(zooms[1]), float(zooms[2]))
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label, dtype=np.uint8), spacing


# ---------------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------------


def resample_to_1mm(
    image: np.ndarray, label: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Resample an image and its label to 1 mm isotropic voxels.

    ``scipy.ndimage.zoom`` with factors ``spacing`` (mm per voxel): cubic B-spline (order 3) for
    the image, nearest neighbour (order 0) for the label. The output shape is
    ``round(shape * spacing)`` per axis, e.g. ``(64, 64, 10)`` at ``(0.5, 0.5, 2.0)`` mm gives
    ``(32, 32, 20)``.

    Args:
        image: array ``(X, Y, Z)``, any real dtype.
        label: array of the same shape.
        spacing: voxel size in mm ``(sx, sy, sz)``, positive.

    Returns:
        ``(image, label)``: float32 image and uint8 label of shape ``round(shape * spacing)``.

    Raises:
        InvalidInputError: shapes differ or are not 3D, or ``spacing`` is not 3 positive numbers.
    """
    from scipy import ndimage

    image = np.asarray(image)
    label = np.asarray(label)
    if image.shape != label.shape or image.ndim != 3:
        raise InvalidInputError(
            f"`image` and `label` must be 3D arrays of the same shape, got {tuple(image.shape)} "
            f"and {tuple(label.shape)}."
        )
    factors = np.asarray(spacing, dtype=np.float64)
    if factors.shape != (3,) or not np.all(np.isfinite(factors)) or np.any(factors <= 0):
        raise InvalidInputError(f"`spacing` must be 3 positive numbers (mm), got {spacing!r}.")
    if np.allclose(factors, 1.0):
        return image.astype(np.float32), label.astype(np.uint8)
    out_image = ndimage.zoom(image.astype(np.float32), factors, order=3)
    out_label = ndimage.zoom(label.astype(np.uint8), factors, order=0)
    return out_image.astype(np.float32, copy=False), out_label.astype(np.uint8, copy=False)


def window_hu(image_hu: np.ndarray, window: Sequence[float] = PANCREAS_HU_WINDOW) -> np.ndarray:
    """Clip HU values to ``window`` and scale them linearly to [0, 1].

    Args:
        image_hu: array of HU values, any shape.
        window: ``(low, high)`` HU, ``low < high``; ``low`` maps to 0 and ``high`` to 1.

    Returns:
        float32 array of the same shape, values in [0, 1].

    Example:
        >>> window_hu(np.array([-1000.0, -125.0, 75.0, 275.0, 3000.0])).tolist()
        [0.0, 0.0, 0.5, 1.0, 1.0]
    """
    low, high = (float(v) for v in window)
    if not low < high:
        raise InvalidInputError(f"`window` must be (low, high) with low < high, got {tuple(window)}.")
    clipped = np.clip(np.asarray(image_hu, dtype=np.float32), low, high)
    return ((clipped - low) / (high - low)).astype(np.float32)


def pancreas_crop_box(
    label: np.ndarray, margin: int = PANCREAS_CROP_MARGIN, min_extent: int = PANCREAS_MIN_EXTENT
) -> tuple[tuple[int, int], tuple[int, int]]:
    """In-plane crop box around the foreground of ``label``, as in the public Pancreas preprocessing.

    For each of the first two axes, with ``lo`` / ``hi`` the first / last foreground index: the
    box ``[lo, hi]`` is widened symmetrically to ``min_extent`` voxels when narrower (the extra
    voxel, if odd, goes to the high side; the widened box is shifted back inside the image when
    it would cross a border and the image is wide enough), then ``margin`` voxels are added on
    each side and the result is clipped to the image.

    Args:
        label: binary mask ``(X, Y, Z)`` with at least one foreground voxel.
        margin: voxels added on each side after the widening.
        min_extent: the least width of the box before the margin.

    Returns:
        ``((x0, x1), (y0, y1))``: half-open index ranges; each width is
        ``min(max(hi - lo + 1, min_extent) + 2 * margin, size)`` away from borders, and at least
        ``min(min_extent, size)`` always.

    Raises:
        InvalidInputError: ``label`` is not 3D or has no foreground voxel, or ``margin`` /
            ``min_extent`` is negative.
    """
    label = np.asarray(label)
    if label.ndim != 3:
        raise InvalidInputError(f"`label` must be a 3D array (X, Y, Z), got shape {tuple(label.shape)}.")
    if int(margin) < 0 or int(min_extent) < 0:
        raise InvalidInputError(f"`margin` and `min_extent` must be >= 0, got {margin} and {min_extent}.")
    fg = np.nonzero(label)
    if fg[0].size == 0:
        raise InvalidInputError("`label` has no foreground voxel; the crop box is defined by the label's bounding box.")
    box = []
    for axis in (0, 1):
        size = label.shape[axis]
        lo, hi = int(fg[axis].min()), int(fg[axis].max()) + 1  # half-open
        short = int(min_extent) - (hi - lo)
        if short > 0:
            lo, hi = lo - short // 2, hi + short - short // 2
            if hi - lo <= size:  # keep the widened box inside the image
                shift = max(-lo, 0) - max(hi - size, 0)
                lo, hi = lo + shift, hi + shift
        box.append((max(lo - int(margin), 0), min(hi + int(margin), size)))
    return box[0], box[1]


def preprocess_pancreas(
    image_hu: np.ndarray,
    label: np.ndarray,
    spacing: Sequence[float],
    return_box: bool = False,
) -> tuple[np.ndarray, ...]:
    """Preprocess one raw Pancreas-CT case like the community h5 files (MC-Net's notebook).

    Steps: :func:`resample_to_1mm` (cubic B-spline image, nearest label); :func:`window_hu`
    (HU [-125, 275] to [0, 1]); crop of x and y to :func:`pancreas_crop_box` of the resampled
    label (box widened to at least 96 voxels, plus 25 voxels per side, clipped), z not cropped;
    z-score of the cropped image (its own mean and standard deviation, float64 statistics).

    Args:
        image_hu: HU image ``(X, Y, Z)``, e.g. from :func:`load_pancreas_dicom`.
        label: binary label of the same shape.
        spacing: voxel size in mm of both.
        return_box: also return the crop box (indices in the resampled volume).

    Returns:
        ``(image, label)``: float32 image (mean 0, std 1) and uint8 label ``{0, 1}`` of shape
        ``(x1 - x0, y1 - y0, Z')``, at 1 mm (``PANCREAS_SPACING``); with ``return_box``,
        ``(image, label, ((x0, x1), (y0, y1)))``.

    Raises:
        InvalidInputError: the shapes differ or are not 3D, the label holds values outside
            ``{0, 1}`` or no foreground (after resampling), a volume holds NaN or infinite
            values, or the cropped image is constant.
    """
    image_hu = np.asarray(image_hu)
    label = np.asarray(label)
    if image_hu.shape != label.shape or image_hu.ndim != 3:
        raise InvalidInputError(
            f"`image_hu` and `label` must be 3D arrays of the same shape, got {tuple(image_hu.shape)} "
            f"and {tuple(label.shape)}."
        )
    message = nonfinite_message(image_hu)
    if message is not None:
        raise InvalidInputError(f"`image_hu` has {message}.")
    values = np.unique(label)
    if np.any((values != 0) & (values != 1)):
        raise InvalidInputError(f"`label` values must be in {{0, 1}}, got {values[:10].tolist()}.")
    image, lab = resample_to_1mm(image_hu, label, spacing)
    image = window_hu(image)
    (x0, x1), (y0, y1) = pancreas_crop_box(lab)
    image = image[x0:x1, y0:y1].astype(np.float64)
    lab = np.ascontiguousarray(lab[x0:x1, y0:y1])
    std = float(image.std())
    if not std > 0.0:
        raise InvalidInputError("the cropped image is constant; it cannot be z-scored.")
    image = ((image - image.mean()) / std).astype(np.float32)
    if return_box:
        return image, lab, ((x0, x1), (y0, y1))
    return image, lab


# ---------------------------------------------------------------------------------------------
# reader for the preparation core, and the preparation entry point
# ---------------------------------------------------------------------------------------------


def _pancreas_split_path(name: str) -> Path:
    return Path(__file__).resolve().parent / "splits" / name


@dataclass(frozen=True)
class PancreasDicomSource(CaseSource):
    """A raw case: ``path`` is the DICOM folder, ``stamp`` is ``(label_path,)``.

    Its stamp covers the label file and every ``*.dcm`` file under ``path`` without recording
    one size and time per slice (a series has 100-800 files): see :meth:`stamp_fields`.
    """

    @property
    def label_path(self) -> Path:
        return self.stamp[0]

    def stamp_fields(self) -> dict[str, Any]:
        """``source_size`` ``[label bytes, DICOM bytes]``, ``source_mtime_ns`` ``[label, newest DICOM file]``,
        ``dicom_files`` (their number) and ``dicom_stamp_sha256``: SHA-256 of the label path and of
        each DICOM file's relative path, size and mtime (ns), in sorted path order.

        Adding, removing, renaming, rewriting or touching any file of the case changes the record
        (a file rewritten in place keeping its size and mtime is the one change it cannot see).
        """
        label = self.label_path.stat()
        digest = hashlib.sha256(f"{self.label_path}\t{label.st_size}\t{label.st_mtime_ns}\n".encode("utf-8"))
        total, newest, count = 0, 0, 0
        for path in _dicom_files(self.path):
            st = path.stat()
            total, newest, count = total + st.st_size, max(newest, st.st_mtime_ns), count + 1
            digest.update(f"{path.relative_to(self.path).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode("utf-8"))
        return {
            "source_size": [label.st_size, total],
            "source_mtime_ns": [label.st_mtime_ns, newest],
            "dicom_files": count,
            "dicom_stamp_sha256": digest.hexdigest(),
        }


class PancreasReader(CaseReader):
    """Reader of one Pancreas-CT layout for :func:`~sasnet_components.data.prepare.prepare_cases`.

    Args:
        layout: ``"h5"`` (community ``<id>_norm.h5`` files written unchanged, 1 mm) or ``"raw"``
            (:func:`load_pancreas_dicom` then :func:`preprocess_pancreas`; the manifest records
            ``label_source``, ``raw_shape``, ``raw_spacing``, ``resampled_shape`` and ``crop_box``
            (in the resampled volume), and the preprocessing constants as parameters).

    Stamps: an h5 case is stamped by its file; a raw case by :class:`PancreasDicomSource` (label
    file plus a digest of the names, sizes and mtimes of all its ``*.dcm`` files).
    """

    name = "Pancreas"

    def __init__(self, layout: str) -> None:
        if layout not in ("h5", "raw"):
            raise InvalidInputError(f"`layout` must be 'h5' or 'raw', got {layout!r}.")
        self.layout = layout
        self._found: dict[Path, dict[str, Union[Path, tuple[Path, Path]]]] = {}

    @property
    def parameters(self) -> dict[str, Any]:
        if self.layout == "h5":
            return {}
        return {
            "hu_window": list(PANCREAS_HU_WINDOW),
            "crop_margin": PANCREAS_CROP_MARGIN,
            "min_extent": PANCREAS_MIN_EXTENT,
        }

    def default_ids(self, root: Path) -> tuple[list[str], list[str]]:
        """The literature's split shipped with the package: 62 training and 20 test ids."""
        return read_id_list(_pancreas_split_path(PANCREAS_TRAIN_LIST)), read_id_list(
            _pancreas_split_path(PANCREAS_TEST_LIST)
        )

    def cases(self, root: PathLike) -> dict[str, Union[Path, tuple[Path, Path]]]:
        """:func:`find_pancreas_cases` of ``root`` for this layout (searched once per root)."""
        root = Path(root)
        if root not in self._found:
            self._found[root] = find_pancreas_cases(root, self.layout)
        return self._found[root]

    def expected_where(self, root: Path, case_id: str) -> str:
        """Where the files of ``case_id`` are expected, for messages."""
        number = case_id[len("image") :] if case_id.startswith("image") else case_id
        if self.layout == "h5":
            return f"'{root / _H5_FOLDER / (case_id + _H5_SUFFIX)}' (or '{root / (case_id + _H5_SUFFIX)}')"
        return (
            f"a DICOM series under '{root / _DICOM_FOLDER / ('PANCREAS_' + number)}' and the label "
            f"'{root / _LABEL_FOLDERS[0] / ('label' + number + '.nii.gz')}'"
        )

    def find_cases(
        self, root: Path, train_ids: Sequence[str], test_ids: Sequence[str]
    ) -> tuple[list[CaseSource], list[str]]:
        found = self.cases(root)
        sources: list[CaseSource] = []
        missing_test: list[str] = []
        for split, ids in (("train", train_ids), ("test", test_ids)):
            for case_id in ids:
                src = found.get(case_id)
                if src is None:
                    if split == "test":
                        missing_test.append(case_id)
                        continue
                    raise MissingInputError(
                        f"case '{case_id}' of the training list has no data: expected "
                        f"{self.expected_where(root, case_id)}."
                    )
                if isinstance(src, tuple):
                    sources.append(PancreasDicomSource(case_id, split, src[0], stamp=(src[1],)))
                else:
                    sources.append(CaseSource(case_id, split, src))
        return sources, missing_test

    def read_case(self, source: CaseSource) -> CaseData:
        """Read and check one case; a raw case is preprocessed, its shapes and crop box go to the manifest."""
        case_id = source.case_id
        if self.layout == "h5":
            image, label, spacing = load_pancreas_h5(source.path, case_id)
            return CaseData(image, label, spacing)
        label_path = source.stamp[0]
        image_hu, label, spacing = load_pancreas_dicom(source.path, label_path, case_id)
        extra: dict[str, Any] = {
            "label_source": str(label_path),
            "raw_shape": list(image_hu.shape),
            "raw_spacing": [float(s) for s in spacing],
        }
        try:
            image, label, box = preprocess_pancreas(image_hu, label, spacing, return_box=True)
        except ValueError as e:
            raise InvalidInputError(f"case '{case_id}' ('{source.path}', '{label_path}'): {e}") from e
        extra["resampled_shape"] = [int(round(n * s)) for n, s in zip(image_hu.shape, spacing)]
        extra["crop_box"] = [list(b) for b in box]
        return CaseData(image, label, PANCREAS_SPACING, extra)


def prepare_pancreas(
    input_dir: PathLike,
    output_dir: PathLike,
    num_labeled: int = 12,
    num_validation: int = 6,
    overwrite: bool = False,
    layout: str = "auto",
    train_list: Optional[PathLike] = None,
    test_list: Optional[PathLike] = None,
    datalist_name: str = "datalist.json",
    progress: bool = False,
) -> dict[str, Any]:
    """Convert NIH Pancreas-CT to NIfTI and write the semi-supervised datalist.

    Everything but the Pancreas layouts (output files, manifest, skip on re-run, refused cases,
    datalist) is :func:`~sasnet_components.data.prepare.prepare_cases`; the output is that of
    :func:`prepare_la <sasnet_components.data.la.prepare_la>` with ``"name": "Pancreas"``, 1 mm spacing.

    Lists: ``train_list`` / ``test_list``, else ``<input_dir>/train.list`` / ``test.list``, else
    the literature's split shipped with the package (``sasnet_components/data/splits/
    pancreas_train.list``: 62 ids, ``pancreas_test.list``: 20 ids; the test list is taken from
    there only when the training list is too).

    Cases TCIA removed as duplicates (:data:`TCIA_REMOVED_DUPLICATES`: ``image0070`` of the usual
    ``train.list``, ``image0025`` of ``test.list``) that are absent are reported
    (:func:`missing_pancreas_cases`) and dropped from the lists BEFORE the split: the labeled cases
    are the first ``num_labeled`` present ids. With the usual lists and ``num_labeled=12`` (20 %)
    a download without ``image0070`` therefore labels the literature's other 11 labeled cases plus
    ``image0048`` (the 13th id), so the protocol keeps 12 labeled cases; ``num_labeled=6`` (10 %)
    is unchanged, and the test split has 19 cases without ``image0025``. This is logged. Any other
    training id without data is an error (a test id without data is left out and logged).

    Args:
        input_dir: dataset root in the h5 or raw layout (see the module docstring). Never written.
        output_dir: destination; must not be, contain or lie inside ``input_dir``. Created if needed.
        num_labeled: labeled = first ``num_labeled`` present training ids (12 = the 20 % setting
            of the 62 training cases, 6 = 10 %); the rest are unlabeled.
        num_validation: validation (monitoring) list = last ``num_validation`` training ids; they
            also stay in the unlabeled pool. Default 6: about 10 % of the 62 training cases, as
            LA's 8 of 80, and disjoint from the first 12 (labeled) ids of the usual list.
        overwrite: rewrite every case even when complete, and replace a datalist not written here.
        layout: ``"auto"`` (:func:`detect_pancreas_layout`), ``"h5"`` or ``"raw"``.
        train_list: training id list instead of ``<input_dir>/train.list``.
        test_list: test id list instead of ``<input_dir>/test.list``.
        datalist_name: file name of the datalist in ``output_dir``.
        progress: show a progress bar of the cases on stderr.

    Returns:
        The datalist written to ``output_dir / datalist_name``.

    Raises:
        FileNotFoundError: ``input_dir`` is missing or holds neither layout; a given list is
            missing; a training id other than the removed duplicates has no data (the message
            names the id and the expected files).
        FileExistsError: the datalist exists, was not written by prepare_pancreas (or was edited
            since) and ``overwrite`` is false; raised before any file is written.
        ValueError: the folders overlap; bad ``layout`` / ``num_labeled`` / ``num_validation``; an
            id in both lists; after all other cases are prepared, one or more cases were refused
            (unreadable DICOM or label file, non-finite voxels, shapes that differ ...): the
            message names each case and why, and no datalist is written.

    Example:
        >>> datalist = prepare_pancreas("/data/Pancreas", "data/pancreas")  # doctest: +SKIP
        >>> len(datalist["labeled"]), len(datalist["unlabeled"]), len(datalist["test"])  # doctest: +SKIP
        (12, 50, 20)
    """
    if layout not in PANCREAS_LAYOUTS:
        raise InvalidInputError(f"`layout` must be one of {list(PANCREAS_LAYOUTS)}, got {layout!r}.")
    root, _ = resolve_folders(input_dir, output_dir, _LAYOUTS_HELP)
    if layout == "auto":
        layout = detect_pancreas_layout(root)
    logger.info("Pancreas-CT input '%s': %s layout", root, layout)
    reader = PancreasReader(layout)

    if train_list is None and not (root / "train.list").is_file():
        train_list = _pancreas_split_path(PANCREAS_TRAIN_LIST)
        if test_list is None and not (root / "test.list").is_file():
            test_list = _pancreas_split_path(PANCREAS_TEST_LIST)
        logger.info(
            "no train.list in '%s' and no --train_list given: using the literature's split shipped with the "
            "package ('%s', '%s')",
            root,
            train_list,
            test_list if test_list is not None else root / "test.list",
        )
    train_name = Path(train_list).name if train_list is not None else "train.list"
    test_name = Path(test_list).name if test_list is not None else "test.list"
    train_ids, test_ids = read_id_lists(reader, root, train_list, test_list, log=logger)

    found = reader.cases(root)
    missing_train = missing_pancreas_cases(train_ids, found, train_name, num_labeled=num_labeled)
    missing_pancreas_cases(test_ids, found, test_name)
    dropped = [i for i in missing_train if i in TCIA_REMOVED_DUPLICATES]
    if dropped:
        listed_train = train_ids
        train_ids = [i for i in train_ids if i not in dropped]
        moved_in = []
        if _is_count(num_labeled):
            moved_in = [i for i in train_ids[: int(num_labeled)] if i not in listed_train[: int(num_labeled)]]
        logger.warning(
            "%s: %s dropped (removed by TCIA as duplicate scans) before the split: the labeled cases are the "
            "first %s present ids%s",
            train_name,
            ", ".join(dropped),
            num_labeled,
            f"; {', '.join(moved_in)} moved into the labeled set" if moved_in else "",
        )
    num_test_listed = len(test_ids)
    test_ids = [i for i in test_ids if not (i in TCIA_REMOVED_DUPLICATES and i not in found)]
    return prepare_cases(
        reader,
        root,
        output_dir,
        train_ids,
        test_ids,
        num_labeled,
        num_validation,
        overwrite=overwrite,
        datalist_name=datalist_name,
        progress=progress,
        num_test_listed=num_test_listed,
        program="prepare_pancreas",
        train_list_name=train_name,
        test_list_name=test_name,
        log=logger,
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) >= 0
