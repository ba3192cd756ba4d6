"""Preparation of the Left Atrium 2018 (LA) dataset: NIfTI volumes plus a semi-supervised datalist.

Two input layouts are accepted, because users hold one or the other:

``"h5"`` (community layout, what most semi-supervised segmentation work distributes)::

    <input_dir>/train.list                                  # one case id per line
    <input_dir>/test.list
    <input_dir>/2018LA_Seg_Training Set/<id>/mri_norm2.h5   # keys "image" (float32), "label" (uint8)

The volumes are already cropped around the atrium and z-scored; they are written unchanged.

``"raw"`` (the challenge release)::

    <input_dir>/<id>/lgemri.nrrd + laendo.nrrd
    (or <input_dir>/Training Set/<id>/..., <input_dir>/2018LA_Seg_Training Set/<id>/...)
    optional <input_dir>/train.list and test.list

Each raw case goes through :func:`preprocess_raw_case`, the public preprocessing of this
literature: ``label = (laendo == 255)``, z-score over the whole raw volume, crop of the first two
axes to the label's bounding box plus a random margin of 10-19 voxels per side (the box first
widened to 112 voxels when narrower), clipped to the image; the third axis is not cropped. The
original margins were drawn unseeded, so the community h5 files cannot be regenerated bit for bit.
Here the margins come from a ``numpy.random.Generator`` seeded with ``(seed, case id)``: the same
``seed`` always gives the same output for a case, independently of which other cases are prepared.

Output (``output_dir``)::

    imagesTr/<id>.nii.gz   float32      labelsTr/<id>.nii.gz   uint8 {0, 1}   (train.list cases)
    imagesTs/<id>.nii.gz   float32      labelsTs/<id>.nii.gz   uint8 {0, 1}   (test.list cases present)
    datalist.json          the splits, paths relative to its folder (format below)
    manifest.json          per case: source, parameters, output shape and SHA-256 of each file;
                           per datalist written: its SHA-256

NIfTI affines are ``diag(spacing_x, spacing_y, spacing_z, 1)``: 0.625 mm for the h5 layout, the
nrrd ``space directions`` for the raw layout (0.625 mm when the header has none).

Datalist (``datalist.json``)::

    {"name": "LA", "spacing": [0.625, 0.625, 0.625], "source_layout": "h5" | "raw",
     "num_labeled": 16, "protocol_note": "...",
     "labeled":    [{"case_id", "image", "label"}, ...],   # first num_labeled ids of train.list
     "unlabeled":  [...],   # the rest of train.list, in order (label kept only for re-splitting)
     "validation": [...],   # last num_validation ids of train.list; they stay in "unlabeled"
     "test":       [...]}   # test.list ids whose data is present, else []

Re-running is cheap and safe: a case whose two NIfTI files exist and match the SHA-256 recorded
in the manifest (for the same source file and parameters) is skipped; every file is written to a
temporary name and moved into place with ``os.replace``, so an interrupted run never leaves a
truncated file under a final name. An existing datalist is replaced only when the manifest records
its SHA-256 (prepare_la wrote it and nobody edited it since) or with ``overwrite``.

A case that cannot be used (unreadable or damaged file, NaN or infinite voxels, shapes that differ,
label values outside {0, 1} ...) is refused: it is logged with its reason, the other cases are
prepared, and the run ends with a ``ValueError`` naming every refused case. No datalist is written
then (an existing one is left as it was), so no protocol list is silently short of a case: fix
the files, or remove the ids from the lists, and run again (prepared cases are skipped).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import nibabel as nib
import numpy as np
from tqdm import tqdm

from sasnet_components.data.checks import exception_message, nonfinite_message, read_error
from sasnet_components.utils.console import log_above_bars
from sasnet_components.utils.errors import InvalidInputError, MissingInputError, OutputExistsError, UnknownKeyError
from sasnet_components.utils.io import atomic_path, atomic_write_text, sha256_file

__all__ = [
    "LA_SPACING",
    "LA_LAYOUTS",
    "H5_CASE_FOLDER",
    "detect_layout",
    "read_id_list",
    "label_crop_box",
    "preprocess_raw_case",
    "load_h5_case",
    "load_raw_case",
    "build_datalist",
    "prepare_la",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Voxel spacing (mm) of the LA release, used for the h5 layout and for nrrd files without one.
LA_SPACING: tuple[float, float, float] = (0.625, 0.625, 0.625)
#: Accepted values of ``layout``.
LA_LAYOUTS: tuple[str, ...] = ("auto", "h5", "raw")
#: Folder of the community h5 layout that holds ``<id>/mri_norm2.h5``.
H5_CASE_FOLDER = "2018LA_Seg_Training Set"
_H5_TEST_FOLDER = "2018LA_Seg_Testing Set"
_H5_FILE = "mri_norm2.h5"
_RAW_IMAGE = "lgemri.nrrd"
_RAW_LABEL = "laendo.nrrd"
# folders (relative to the input root) searched for raw case folders, in order
_RAW_TRAIN_FOLDERS = ("", "Training Set", H5_CASE_FOLDER)
_RAW_TEST_FOLDERS = ("Testing Set", _H5_TEST_FOLDER)
# 2: non-finite voxels are refused (outputs of version 1 are checked again), datalist checksums recorded
_MANIFEST_VERSION = 2

_LAYOUTS_HELP = (
    "expected one of two layouts: (1) community h5 layout "
    f"'<input_dir>/{H5_CASE_FOLDER}/<id>/{_H5_FILE}' with '<input_dir>/train.list' and "
    "'<input_dir>/test.list'; (2) raw challenge release "
    f"'<input_dir>/<id>/{_RAW_IMAGE}' + '<input_dir>/<id>/{_RAW_LABEL}' (case folders may also "
    "sit under '<input_dir>/Training Set/')"
)


# ---------------------------------------------------------------------------------------------
# layout and id lists
# ---------------------------------------------------------------------------------------------


def _has_case_file(folder: Path, filename: str) -> bool:
    """Whether ``folder/<any>/filename`` exists."""
    if not folder.is_dir():
        return False
    return any((sub / filename).is_file() for sub in folder.iterdir() if sub.is_dir())


def detect_layout(input_dir: PathLike) -> str:
    """Detect which LA layout ``input_dir`` holds.

    The h5 layout wins when both are present (the community files sit next to the raw ones in
    ``2018LA_Seg_Training Set`` when users ran the conversion themselves); pass ``layout="raw"`` to
    :func:`prepare_la` to force the raw files.

    Args:
        input_dir: root folder of the dataset.

    Returns:
        ``"h5"`` if ``<input_dir>/2018LA_Seg_Training Set/<id>/mri_norm2.h5`` exists for some id,
        else ``"raw"`` if ``<id>/lgemri.nrrd`` exists under ``input_dir``, ``input_dir/Training Set``
        or ``input_dir/2018LA_Seg_Training Set``.

    Raises:
        FileNotFoundError: ``input_dir`` does not exist or holds neither layout (the message names
            both expected layouts).

    Example:
        >>> detect_layout("/data/LA")  # doctest: +SKIP
        'h5'
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise MissingInputError(f"`input_dir` '{root}' does not exist or is not a directory; {_LAYOUTS_HELP}.")
    if _has_case_file(root / H5_CASE_FOLDER, _H5_FILE):
        return "h5"
    if any(_has_case_file(root / sub if sub else root, _RAW_IMAGE) for sub in _RAW_TRAIN_FOLDERS):
        return "raw"
    raise MissingInputError(f"`input_dir` '{root}' holds no LA case files; {_LAYOUTS_HELP}.")


def read_id_list(path: PathLike) -> list[str]:
    """Read case ids, one per line; surrounding whitespace and empty lines are ignored.

    Args:
        path: a ``train.list`` / ``test.list`` style text file.

    Returns:
        The ids in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: an id appears twice.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"case id list '{path}' does not exist.")
    ids = [line.strip() for line in path.read_text().splitlines()]
    ids = [i for i in ids if i]
    dups = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dups:
        raise InvalidInputError(f"case id list '{path}' must not repeat ids, got duplicates {dups}.")
    return ids


# ---------------------------------------------------------------------------------------------
# raw preprocessing
# ---------------------------------------------------------------------------------------------


def label_crop_box(
    label: np.ndarray,
    rng: np.random.Generator,
    min_extent: int = 112,
    margin_range: Sequence[int] = (10, 19),
) -> tuple[tuple[int, int], tuple[int, int]]:
    """In-plane crop box around the foreground of ``label``, as in the public LA preprocessing.

    For each of the first two axes, with ``lo`` / ``hi`` the first / last foreground index and
    ``extent = hi - lo`` (index difference, as the public code computes it):
    ``pad = max(min_extent - extent, 0) // 2``, margins ``m_lo, m_hi`` drawn uniformly from
    ``margin_range`` (inclusive), and the box is ``[max(lo - m_lo - pad, 0),
    min(hi + m_hi + pad, size))`` (end exclusive). Draw order: axis 0 low, axis 0 high, axis 1
    low, axis 1 high.

    Args:
        label: binary mask of shape ``(X, Y, Z)`` with at least one foreground voxel.
        rng: generator the four margins are drawn from.
        min_extent: boxes narrower than this are widened by ``(min_extent - extent) // 2`` per
            side before the margins are added (112, the LA patch size).
        margin_range: inclusive ``(low, high)`` bounds of each random margin, in voxels.

    Returns:
        ``((x0, x1), (y0, y1))``, half-open index ranges of the crop.

    Raises:
        ValueError: ``label`` is not 3D, is empty, or ``margin_range`` is not two increasing
            non-negative integers.
    """
    if label.ndim != 3:
        raise InvalidInputError(f"`label` must be a 3D array (X, Y, Z), got shape {tuple(label.shape)}.")
    if len(margin_range) != 2 or not 0 <= int(margin_range[0]) <= int(margin_range[1]):
        raise InvalidInputError(f"`margin_range` must be (low, high) with 0 <= low <= high, got {tuple(margin_range)}.")
    fg = np.nonzero(label)
    if fg[0].size == 0:
        raise InvalidInputError("`label` has no foreground voxel; the crop box is defined by the label's bounding box.")
    box = []
    for axis in (0, 1):
        lo, hi = int(fg[axis].min()), int(fg[axis].max())
        pad = max(int(min_extent) - (hi - lo), 0) // 2
        m_lo = int(rng.integers(margin_range[0], int(margin_range[1]) + 1))
        m_hi = int(rng.integers(margin_range[0], int(margin_range[1]) + 1))
        box.append((max(lo - m_lo - pad, 0), min(hi + m_hi + pad, label.shape[axis])))
    return box[0], box[1]


def preprocess_raw_case(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    min_extent: int = 112,
    margin_range: Sequence[int] = (10, 19),
    return_box: bool = False,
) -> tuple[np.ndarray, ...]:
    """Preprocess one raw LA case (``lgemri`` image, ``laendo`` label) like the public h5 files.

    Steps: ``label = (laendo == 255)``; ``image = (image - mean) / std`` over the whole raw
    volume (float64 statistics, float32 result); crop of the first two axes to
    :func:`label_crop_box` of the binarised label; the third axis is kept whole.

    Args:
        image: raw MRI of shape ``(X, Y, Z)`` (any real dtype, axes as ``nrrd.read`` returns them).
        label: raw ``laendo`` of the same shape, atrium = 255.
        rng: generator for the crop margins (seed it for a reproducible output).
        min_extent: see :func:`label_crop_box`.
        margin_range: see :func:`label_crop_box`.
        return_box: also return the crop box.

    Returns:
        ``(image, label)``: float32 z-scored image and uint8 ``{0, 1}`` label, both of shape
        ``(x1 - x0, y1 - y0, Z)``; with ``return_box``, ``(image, label, ((x0, x1), (y0, y1)))``.

    Raises:
        ValueError: the shapes differ, are not 3D, the label has no 255 voxel, or the image is
            constant (zero standard deviation).

    Example:
        >>> img, lab = preprocess_raw_case(raw, laendo, np.random.default_rng(0))  # doctest: +SKIP
    """
    image = np.asarray(image)
    label = np.asarray(label)
    if image.shape != label.shape:
        raise InvalidInputError(
            f"`image` and `label` must have the same shape, got image {tuple(image.shape)} "
            f"and label {tuple(label.shape)}."
        )
    if image.ndim != 3:
        raise InvalidInputError(f"`image` must be a 3D array (X, Y, Z), got shape {tuple(image.shape)}.")
    binary = (label == 255).astype(np.uint8)
    if not binary.any():
        values = np.unique(label)[:5].tolist()
        raise InvalidInputError(f"`label` must contain atrium voxels of value 255, got values {values}.")
    std = float(np.std(image, dtype=np.float64))
    if std == 0.0 or not np.isfinite(std):
        raise InvalidInputError(f"`image` must have a positive finite standard deviation for z-scoring, got {std}.")
    mean = float(np.mean(image, dtype=np.float64))
    (x0, x1), (y0, y1) = label_crop_box(binary, rng, min_extent=min_extent, margin_range=margin_range)
    out_image = ((image[x0:x1, y0:y1].astype(np.float64) - mean) / std).astype(np.float32)
    out_label = np.ascontiguousarray(binary[x0:x1, y0:y1])
    if return_box:
        return out_image, out_label, ((x0, x1), (y0, y1))
    return out_image, out_label


# ---------------------------------------------------------------------------------------------
# case readers
# ---------------------------------------------------------------------------------------------


def load_h5_case(path: PathLike, case_id: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Read and check one community ``mri_norm2.h5`` file.

    Args:
        path: the h5 file, with datasets ``image`` and ``label``.
        case_id: used in error messages.

    Returns:
        ``(image, label)``: float32 and uint8 arrays of the same 3D shape ``(X, Y, Z)``.

    Raises:
        KeyError: a dataset is missing.
        ValueError: the file cannot be read (not HDF5, damaged; the message names case, path and
            h5py's reason), shapes differ or are not 3D, or the label holds values outside ``{0, 1}``.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("image", "label") if k not in f]
            if missing:
                raise UnknownKeyError(f"case '{case_id}': '{path}' must hold datasets 'image' and 'label', missing {missing}.")
            image = np.asarray(f["image"][()])
            label = np.asarray(f["label"][()])
    except OSError as e:  # h5py's error for a file that is not HDF5 or is damaged
        raise read_error(f"case '{case_id}': cannot read '{path}'", e) from e
    if image.shape != label.shape:
        raise InvalidInputError(
            f"case '{case_id}': image and label must have the same shape, got image {tuple(image.shape)} "
            f"and label {tuple(label.shape)} in '{path}'."
        )
    if image.ndim != 3:
        raise InvalidInputError(f"case '{case_id}': image must be 3D (X, Y, Z), got shape {tuple(image.shape)} in '{path}'.")
    values = np.unique(label)
    bad = values[(values != 0) & (values != 1)]
    if bad.size:
        raise InvalidInputError(
            f"case '{case_id}': label values must be in {{0, 1}}, got {values[:10].tolist()} in '{path}'."
        )
    return image.astype(np.float32, copy=False), label.astype(np.uint8, copy=False)


def _nrrd_spacing(header: dict, path: Path) -> tuple[float, float, float]:
    """Spacing from a nrrd header (``space directions``, else ``spacings``), else :data:`LA_SPACING`."""
    directions = header.get("space directions")
    if directions is not None:
        try:
            d = np.asarray(directions, dtype=np.float64)
            if d.shape == (3, 3) and np.all(np.isfinite(d)):
                sp = np.linalg.norm(d, axis=1)
                if np.all(sp > 0):
                    return (float(sp[0]), float(sp[1]), float(sp[2]))
        except (TypeError, ValueError):
            pass
    spacings = header.get("spacings")
    if spacings is not None:
        sp = np.asarray(spacings, dtype=np.float64)
        if sp.shape == (3,) and np.all(np.isfinite(sp)) and np.all(sp > 0):
            return (float(sp[0]), float(sp[1]), float(sp[2]))
    logger.debug("no usable spacing in '%s'; using %s mm", path, LA_SPACING)
    return LA_SPACING


def load_raw_case(case_dir: PathLike, case_id: str = "") -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read one raw challenge case (``lgemri.nrrd`` and ``laendo.nrrd``).

    Args:
        case_dir: folder holding the two nrrd files.
        case_id: used in error messages.

    Returns:
        ``(image, laendo, spacing)``: the arrays as ``nrrd.read`` returns them (axes ``(X, Y, Z)``)
        and the voxel spacing in mm from the image header (``LA_SPACING`` when absent).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file cannot be read (the message names case, path and the reader's reason),
            or the image and label shapes differ.
    """
    import nrrd

    case_dir = Path(case_dir)
    paths = [case_dir / _RAW_IMAGE, case_dir / _RAW_LABEL]
    for p in paths:
        if not p.is_file():
            raise MissingInputError(f"case '{case_id}': expected raw file '{p}' is missing.")
    read = []
    for p in paths:
        try:
            read.append(nrrd.read(str(p)))
        except Exception as e:  # pynrrd raises NRRDError, ValueError, EOFError, zlib.error ... on damaged files
            raise read_error(f"case '{case_id}': cannot read '{p}'", e) from e
    (image, header), (label, _) = read
    if image.shape != label.shape:
        raise InvalidInputError(
            f"case '{case_id}': image and label must have the same shape, got image {tuple(image.shape)} "
            f"and label {tuple(label.shape)} in '{case_dir}'."
        )
    return image, label, _nrrd_spacing(header, paths[0])


# ---------------------------------------------------------------------------------------------
# datalist
# ---------------------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _entry(case_id: str, split: str) -> dict[str, str]:
    suffix = "Tr" if split == "train" else "Ts"
    return {
        "case_id": case_id,
        "image": f"images{suffix}/{case_id}.nii.gz",
        "label": f"labels{suffix}/{case_id}.nii.gz",
    }


def build_datalist(
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    num_labeled: int = 16,
    num_validation: int = 8,
    spacing: Sequence[float] = LA_SPACING,
    source_layout: str = "h5",
    num_test_listed: int | None = None,
) -> dict[str, Any]:
    """Build the LA datalist (paths relative to the datalist's folder).

    Args:
        train_ids: ``train.list`` ids in order.
        test_ids: ``test.list`` ids whose data is present, in order.
        num_labeled: labeled = first ``num_labeled`` training ids (16 = 20 %, 8 = 10 % of 80).
        num_validation: validation = last ``num_validation`` training ids, a monitoring list whose
            ids stay in the unlabeled pool. 0 gives an empty list.
        spacing: voxel spacing in mm.
        source_layout: ``"h5"`` or ``"raw"``.
        num_test_listed: number of ids in ``test.list`` (for the note), default ``len(test_ids)``.

    Returns:
        The datalist dict (keys ``name``, ``spacing``, ``source_layout``, ``num_labeled``,
        ``protocol_note``, ``labeled``, ``unlabeled``, ``validation``, ``test``).

    Raises:
        ValueError: ``num_labeled`` is not in ``[1, len(train_ids)]`` or ``num_validation`` is not in
            ``[0, len(train_ids)]`` (the message names both numbers).
    """
    n_train = len(train_ids)
    if not _is_int(num_labeled) or not 1 <= num_labeled <= n_train:
        raise InvalidInputError(
            f"`num_labeled` must be an integer in [1, {n_train}] (the number of training cases), got {num_labeled}."
        )
    if not _is_int(num_validation) or not 0 <= num_validation <= n_train:
        raise InvalidInputError(
            f"`num_validation` must be an integer in [0, {n_train}] (the number of training cases), "
            f"got {num_validation}."
        )
    num_labeled, num_validation = int(num_labeled), int(num_validation)
    labeled = [_entry(i, "train") for i in train_ids[:num_labeled]]
    unlabeled = [_entry(i, "train") for i in train_ids[num_labeled:]]
    validation = [_entry(i, "train") for i in train_ids[n_train - num_validation :]]
    test = [_entry(i, "test") for i in test_ids]
    n_listed = len(test_ids) if num_test_listed is None else int(num_test_listed)
    overlap = n_train - num_validation < num_labeled
    note = (
        f"Default (honest) protocol: labeled = first {num_labeled} ids of train.list, unlabeled = the "
        f"remaining {n_train - num_labeled} (their label paths are kept only for re-splitting and are "
        f"never read in training). validation = last {num_validation} ids of train.list, a monitoring "
        "list whose labels only the validation loader reads; these ids ALSO stay in the unlabeled pool, "
        "so report the final model; to select a checkpoint on them, remove them from the unlabeled pool "
        f"first. test = the {len(test_ids)} of {n_listed} test.list ids whose data is present; never "
        "tune anything on them."
    )
    if overlap:
        note += " WARNING: the validation ids overlap the labeled ids."
    return {
        "name": "LA",
        "spacing": [float(s) for s in spacing],
        "source_layout": source_layout,
        "num_labeled": num_labeled,
        "protocol_note": note,
        "labeled": labeled,
        "unlabeled": unlabeled,
        "validation": validation,
        "test": test,
    }


# ---------------------------------------------------------------------------------------------
# file helpers
# ---------------------------------------------------------------------------------------------


def _atomic_save_nifti(array: np.ndarray, spacing: Sequence[float], path: Path) -> str:
    """Write ``array`` as NIfTI with affine ``diag(spacing, 1)`` atomically; return its SHA-256."""
    img = nib.Nifti1Image(array, np.diag([float(s) for s in spacing] + [1.0]))
    img.header.set_xyzt_units("mm")
    img.header.set_data_dtype(array.dtype)
    with atomic_path(path, suffix="".join(path.suffixes)) as tmp:  # nibabel picks the format by suffix
        nib.save(img, str(tmp))
        digest = sha256_file(tmp)
    return digest


def _atomic_write_json(obj: Any, path: Path) -> str:
    """Write ``obj`` as indented JSON atomically; return the SHA-256 of the file."""
    text = json.dumps(obj, indent=2) + "\n"
    atomic_write_text(path, text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_within(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def _case_seed(seed: int, case_id: str) -> list[int]:
    return [int(seed), int.from_bytes(hashlib.sha256(case_id.encode("utf-8")).digest()[:8], "little")]


def _load_manifest(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``cases`` and ``datalists`` records of a manifest; empty when missing, unreadable or of another version."""
    if not path.is_file():
        return {}, {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        logger.warning("ignoring unreadable manifest '%s'; all cases will be rewritten", path)
        return {}, {}
    if not isinstance(data, dict) or data.get("version") != _MANIFEST_VERSION:
        return {}, {}
    cases, datalists = data.get("cases"), data.get("datalists")
    return (cases if isinstance(cases, dict) else {}), (datalists if isinstance(datalists, dict) else {})


def _is_complete(entry: dict[str, Any] | None, expected: dict[str, Any], out_dir: Path) -> bool:
    """Whether a manifest entry describes the same source and parameters, with intact output files."""
    if not entry or any(entry.get(k) != v for k, v in expected.items()):
        return False
    for key in ("image", "label"):
        f = out_dir / entry.get(key, "")
        if not f.is_file() or sha256_file(f) != entry.get(f"{key}_sha256"):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# main entry point
# ---------------------------------------------------------------------------------------------


def _read_case(
    layout: str, src: Path, case_id: str, seed: int, record: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read, check and (raw layout) preprocess one case; the raw crop is added to ``record``.

    Returns:
        ``(image, label, spacing)`` as written to the NIfTI files.

    Raises:
        OSError, ValueError, KeyError: the case cannot be used; the message names the case, its
            file and what is wrong (unreadable file, non-finite voxels, shapes, label values ...).
    """
    if layout == "h5":
        image, label = load_h5_case(src, case_id)
        spacing: tuple[float, ...] = LA_SPACING
    else:
        image, label, spacing = load_raw_case(src, case_id)
    for name, array in (("image", image), ("label", label)):
        problem = nonfinite_message(array)
        if problem is not None:
            raise InvalidInputError(f"case '{case_id}': {name} has {problem} in '{src}'; expected finite values.")
    if layout == "raw":
        record["raw_shape"] = list(image.shape)
        try:
            image, label, box = preprocess_raw_case(
                image, label, np.random.default_rng(_case_seed(seed, case_id)), return_box=True
            )
        except ValueError as e:
            raise InvalidInputError(f"case '{case_id}' ('{src}'): {e}") from e
        record["crop_box"] = [list(b) for b in box]
    return image, label, spacing


def _find_case(root: Path, layout: str, case_id: str, folders: Sequence[str]) -> Path | None:
    """The h5 file (h5 layout) or the case folder (raw layout) of ``case_id``, if present."""
    for sub in folders:
        base = root / sub if sub else root
        if layout == "h5":
            candidate = base / case_id / _H5_FILE
            if candidate.is_file():
                return candidate
        elif (base / case_id / _RAW_IMAGE).is_file():
            return base / case_id
    return None


def prepare_la(
    input_dir: PathLike,
    output_dir: PathLike,
    num_labeled: int = 16,
    num_validation: int = 8,
    seed: int = 0,
    overwrite: bool = False,
    layout: str = "auto",
    train_list: PathLike | None = None,
    test_list: PathLike | None = None,
    datalist_name: str = "datalist.json",
    progress: bool = False,
) -> dict[str, Any]:
    """Convert the LA dataset to NIfTI and write the semi-supervised datalist.

    Args:
        input_dir: dataset root in the h5 or raw layout (see the module docstring). Never written.
        output_dir: destination; must not be, contain or lie inside ``input_dir``. Created if needed.
        num_labeled: labeled = first ``num_labeled`` ids of ``train.list`` (16 = the 20 % setting,
            8 = 10 %); the rest are unlabeled.
        num_validation: validation (monitoring) list = last ``num_validation`` ids of ``train.list``;
            they also stay in the unlabeled pool.
        seed: seed of the raw-layout crop margins; case ``id`` uses ``numpy.random.default_rng([seed,
            hash(id)])``, so its output depends only on ``seed`` and the id. Unused for h5.
        overwrite: rewrite every case even when a complete earlier output exists, and replace a
            datalist that prepare_la did not write.
        layout: ``"auto"`` (see :func:`detect_layout`), ``"h5"`` or ``"raw"``.
        train_list: id list to use instead of ``<input_dir>/train.list``. For the raw layout
            without any list, all case folders (sorted) become training cases.
        test_list: id list to use instead of ``<input_dir>/test.list`` (optional).
        datalist_name: file name of the datalist in ``output_dir``.
        progress: show a progress bar of the cases on stderr (``preparing: 12/88``); log lines are then
            written above it (:func:`~sasnet_components.utils.console.log_above_bars`).

    Returns:
        The datalist written to ``output_dir / datalist_name`` (see :func:`build_datalist`).

    Raises:
        FileNotFoundError: ``input_dir`` is missing or holds neither layout; ``train.list`` is
            missing (h5 layout); a ``train.list`` case has no data (message names id and path).
        FileExistsError: ``output_dir / datalist_name`` exists, was not written by prepare_la (or
            was edited since) and ``overwrite`` is false; raised before any file is written.
        ValueError: ``output_dir`` overlaps ``input_dir``; bad ``num_labeled`` / ``num_validation``
            / ``layout``; an id in both lists; after all other cases are prepared, one or more cases
            were refused (unreadable file, non-finite voxels, image and label shapes that differ,
            h5 label values outside ``{0, 1}`` ...): the message names each case, its file and why,
            and no datalist is written.

    Example:
        >>> datalist = prepare_la("/data/LA", "data/la", num_labeled=16)  # doctest: +SKIP
        >>> len(datalist["labeled"]), len(datalist["unlabeled"])  # doctest: +SKIP
        (16, 64)
    """
    if layout not in LA_LAYOUTS:
        raise InvalidInputError(f"`layout` must be one of {list(LA_LAYOUTS)}, got {layout!r}.")
    root = Path(input_dir).expanduser()
    if not root.is_dir():
        raise MissingInputError(f"`input_dir` '{root}' does not exist or is not a directory; {_LAYOUTS_HELP}.")
    root = root.resolve()
    out = Path(output_dir).expanduser().resolve()
    if _is_within(out, root) or _is_within(root, out):
        raise InvalidInputError(
            f"`output_dir` '{out}' must not be, lie inside or contain `input_dir` '{root}'; "
            "choose an output folder outside the input dataset."
        )
    if layout == "auto":
        layout = detect_layout(root)
    logger.info("LA input '%s': %s layout", root, layout)

    # --- id lists -----------------------------------------------------------------------------
    train_path = Path(train_list) if train_list is not None else root / "train.list"
    test_path = Path(test_list) if test_list is not None else root / "test.list"
    if train_path.is_file():
        train_ids = read_id_list(train_path)
        logger.info("train list '%s': %d ids", train_path, len(train_ids))
    elif train_list is not None or layout == "h5":
        raise MissingInputError(
            f"training id list '{train_path}' does not exist; the {layout} layout needs a train.list "
            "(one case id per line) in `input_dir` or passed as `train_list`."
        )
    else:
        found: set[str] = set()
        for sub in _RAW_TRAIN_FOLDERS:
            base = root / sub if sub else root
            if base.is_dir():
                found.update(d.name for d in base.iterdir() if (d / _RAW_IMAGE).is_file())
        train_ids = sorted(found)
        logger.info(
            "no train.list in '%s' and no --train_list given: using all %d raw case folders, sorted by id, "
            "as training cases (no test cases)",
            root,
            len(train_ids),
        )
    if not train_ids:
        raise InvalidInputError(f"training id list '{train_path}' is empty.")
    if test_path.is_file():
        listed_test = read_id_list(test_path)
    elif test_list is not None:
        raise MissingInputError(f"`test_list` '{test_path}' does not exist.")
    else:
        listed_test = []
        logger.info("no test list at '%s': the test split will be empty", test_path)
    both = sorted(set(train_ids) & set(listed_test))
    if both:
        raise InvalidInputError(f"ids must not be in both the training and the test list, got {both[:5]} in both.")
    # validate the split numbers and the datalist's destination before any file is written
    build_datalist(train_ids, [], num_labeled, num_validation, source_layout=layout)
    manifest_path = out / "manifest.json"
    recorded_cases, recorded_datalists = _load_manifest(manifest_path)
    datalist_path = out / datalist_name
    if (
        not overwrite
        and datalist_path.exists()
        and (not datalist_path.is_file() or sha256_file(datalist_path) != recorded_datalists.get(datalist_name))
    ):
        raise OutputExistsError(
            f"'{datalist_path}' exists and was not written by prepare_la (its SHA-256 is not the one recorded in "
            f"'{manifest_path}': written by someone else or by an older version, or edited since); pass --overwrite "
            "(overwrite=True) to replace it (it also rewrites every case), or choose another --datalist_name or --output_dir."
        )

    # --- locate cases -------------------------------------------------------------------------
    train_folders = (H5_CASE_FOLDER, _H5_TEST_FOLDER) if layout == "h5" else _RAW_TRAIN_FOLDERS
    test_folders = train_folders + (() if layout == "h5" else _RAW_TEST_FOLDERS)
    expected_where = (
        f"{H5_CASE_FOLDER}/<id>/{_H5_FILE}" if layout == "h5" else f"<id>/{_RAW_IMAGE} (or Training Set/<id>/...)"
    )
    sources: list[tuple[str, str, Path]] = []
    for case_id in train_ids:
        src = _find_case(root, layout, case_id, train_folders)
        if src is None:
            primary = root / H5_CASE_FOLDER / case_id / _H5_FILE if layout == "h5" else root / case_id / _RAW_IMAGE
            raise MissingInputError(
                f"case '{case_id}' of the training list has no data: expected '{primary}' ({expected_where})."
            )
        sources.append((case_id, "train", src))
    present_test, missing_test = [], []
    for case_id in listed_test:
        src = _find_case(root, layout, case_id, test_folders)
        if src is None:
            missing_test.append(case_id)
        else:
            present_test.append(case_id)
            sources.append((case_id, "test", src))
    logger.info(
        "test list: %d ids, %d present, %d missing%s",
        len(listed_test),
        len(present_test),
        len(missing_test),
        " (the test split holds only the present ones)" if missing_test else "",
    )
    if layout == "raw":
        logger.info(
            "raw preprocessing: crop margins drawn from numpy Generator seeded with (seed=%d, case id): "
            "the output is reproducible for this seed",
            seed,
        )

    # --- write cases --------------------------------------------------------------------------
    for sub in ("imagesTr", "labelsTr") + (("imagesTs", "labelsTs") if present_test else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    manifest = {} if overwrite else recorded_cases
    written = skipped = 0
    spacings: dict[str, list[float]] = {}
    refused: dict[str, str] = {}

    def save_manifest() -> None:
        content = {"version": _MANIFEST_VERSION, "cases": manifest, "datalists": recorded_datalists}
        _atomic_write_json(content, manifest_path)

    if progress:
        log_above_bars()
    for case_id, split, src in tqdm(sources, desc="preparing", unit="case", leave=False, disable=not progress):
        entry = _entry(case_id, split)
        data_file = src if layout == "h5" else src / _RAW_IMAGE
        stat = data_file.stat()
        expected = {
            "split": split,
            "source": str(src),
            "source_layout": layout,
            "source_size": stat.st_size,
            "source_mtime_ns": stat.st_mtime_ns,
            "image": entry["image"],
            "label": entry["label"],
        }
        if layout == "raw":
            expected["seed"] = int(seed)
        if not overwrite and _is_complete(manifest.get(case_id), expected, out):
            skipped += 1
            spacings[case_id] = manifest[case_id]["spacing"]
            logger.debug("case %s: complete output found, skipped", case_id)
            continue
        record = dict(expected)
        try:
            image, label, spacing = _read_case(layout, src, case_id, seed, record)
        except (OSError, ValueError, KeyError) as e:
            refused[case_id] = exception_message(e)
            logger.error("case %s (%s) refused: %s", case_id, split, refused[case_id])
            continue
        record["shape"] = list(image.shape)
        record["spacing"] = [float(s) for s in spacing]
        record["image_sha256"] = _atomic_save_nifti(image, spacing, out / entry["image"])
        record["label_sha256"] = _atomic_save_nifti(label, spacing, out / entry["label"])
        manifest[case_id] = record
        spacings[case_id] = record["spacing"]
        written += 1
        save_manifest()
        logger.info("case %s (%s): wrote shape %s", case_id, split, tuple(image.shape))
    save_manifest()
    logger.info(
        "cases: %d written, %d skipped (complete output already present), %d refused", written, skipped, len(refused)
    )
    if refused:
        kept = " (the existing one is left as it was)" if datalist_path.exists() else ""
        raise InvalidInputError(
            f"{len(refused)} of {len(sources)} cases refused, {datalist_name} not written{kept}: "
            + "; ".join(message.rstrip(".") for message in refused.values())
            + ". Fix or replace these files, or remove their ids from train.list / test.list, and run again "
            "(prepared cases are kept and skipped)."
        )

    # --- datalist -----------------------------------------------------------------------------
    spacing0 = spacings[train_ids[0]]
    differing = sorted(i for i, s in spacings.items() if not np.allclose(s, spacing0))
    if differing:
        logger.warning(
            "spacing differs between cases (datalist records %s from case %s; differing: %s); each "
            "NIfTI affine holds its own case's spacing",
            spacing0,
            train_ids[0],
            differing[:5],
        )
    datalist = build_datalist(
        train_ids, present_test, num_labeled, num_validation, spacing0, layout, num_test_listed=len(listed_test)
    )
    recorded_datalists[datalist_name] = _atomic_write_json(datalist, datalist_path)
    save_manifest()
    logger.info(
        "datalist: labeled %d / unlabeled %d / validation %d (also in unlabeled) / test %d (%d test ids missing)",
        len(datalist["labeled"]),
        len(datalist["unlabeled"]),
        len(datalist["validation"]),
        len(datalist["test"]),
        len(missing_test),
    )
    logger.info("wrote '%s'; volumes in '%s' and '%s'", datalist_path, out / "imagesTr", out / "labelsTr")
    return datalist
