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

Everything but the LA layouts (finding the cases, reading one case) is the shared preparation
core :mod:`sasnet_components.data.prepare`; :class:`LAReader` is the LA reader plugged into it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from sasnet_components.data.checks import read_error
from sasnet_components.data.prepare import (
    CaseData,
    CaseReader,
    CaseSource,
)
from sasnet_components.data.prepare import build_datalist as core_build_datalist
from sasnet_components.data.prepare import (
    check_finite,
    prepare_cases,
    read_h5_pair,
    read_id_list,
    read_id_lists,
    resolve_folders,
)
from sasnet_components.utils.errors import InvalidInputError, MissingInputError

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
    "LAReader",
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
    image, label = read_h5_pair(path, case_id)
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


def build_datalist(
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    num_labeled: int = 16,
    num_validation: int = 8,
    spacing: Sequence[float] = LA_SPACING,
    source_layout: str = "h5",
    num_test_listed: int | None = None,
) -> dict[str, Any]:
    """Build the LA datalist (paths relative to the datalist's folder): :func:`prepare.build_datalist
    <sasnet_components.data.prepare.build_datalist>` with ``name="LA"``.

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
    return core_build_datalist(
        train_ids, test_ids, num_labeled, num_validation, spacing, source_layout, num_test_listed, name="LA"
    )


# ---------------------------------------------------------------------------------------------
# reader for the preparation core
# ---------------------------------------------------------------------------------------------


def _case_seed(seed: int, case_id: str) -> list[int]:
    return [int(seed), int.from_bytes(hashlib.sha256(case_id.encode("utf-8")).digest()[:8], "little")]


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


class LAReader(CaseReader):
    """Reader of one LA layout for :func:`~sasnet_components.data.prepare.prepare_cases`.

    Args:
        layout: ``"h5"`` (cases written unchanged, spacing :data:`LA_SPACING`) or ``"raw"``
            (:func:`preprocess_raw_case` with seeded crop margins, spacing from the nrrd header).
        seed: seed of the raw crop margins, recorded per case for the raw layout.
    """

    name = "LA"

    def __init__(self, layout: str, seed: int = 0) -> None:
        if layout not in ("h5", "raw"):
            raise InvalidInputError(f"`layout` must be 'h5' or 'raw', got {layout!r}.")
        self.layout = layout
        self.seed = int(seed)

    @property
    def parameters(self) -> dict[str, Any]:
        return {"seed": self.seed} if self.layout == "raw" else {}

    def default_ids(self, root: Path) -> tuple[list[str], list[str]]:
        """Raw layout: all case folders, sorted, as training cases and no test case."""
        if self.layout == "h5":
            return super().default_ids(root)
        found: set[str] = set()
        for sub in _RAW_TRAIN_FOLDERS:
            base = root / sub if sub else root
            if base.is_dir():
                found.update(d.name for d in base.iterdir() if (d / _RAW_IMAGE).is_file())
        return sorted(found), []

    def find_cases(
        self, root: Path, train_ids: Sequence[str], test_ids: Sequence[str]
    ) -> tuple[list[CaseSource], list[str]]:
        h5 = self.layout == "h5"
        train_folders = (H5_CASE_FOLDER, _H5_TEST_FOLDER) if h5 else _RAW_TRAIN_FOLDERS
        test_folders = train_folders + (() if h5 else _RAW_TEST_FOLDERS)
        expected_where = f"{H5_CASE_FOLDER}/<id>/{_H5_FILE}" if h5 else f"<id>/{_RAW_IMAGE} (or Training Set/<id>/...)"
        sources: list[CaseSource] = []
        for case_id in train_ids:
            src = _find_case(root, self.layout, case_id, train_folders)
            if src is None:
                primary = root / H5_CASE_FOLDER / case_id / _H5_FILE if h5 else root / case_id / _RAW_IMAGE
                raise MissingInputError(
                    f"case '{case_id}' of the training list has no data: expected '{primary}' ({expected_where})."
                )
            sources.append(self._source(case_id, "train", src))
        missing_test = []
        for case_id in test_ids:
            src = _find_case(root, self.layout, case_id, test_folders)
            if src is None:
                missing_test.append(case_id)
            else:
                sources.append(self._source(case_id, "test", src))
        return sources, missing_test

    def _source(self, case_id: str, split: str, src: Path) -> CaseSource:
        # the raw case is stamped by its image file only, as before the preparation core
        return CaseSource(case_id, split, src, stamp=(src,) if self.layout == "h5" else (src / _RAW_IMAGE,))

    def read_case(self, source: CaseSource) -> CaseData:
        """Read, check and (raw layout) preprocess one case; the raw shape and crop box go to the manifest."""
        case_id, src = source.case_id, source.path
        if self.layout == "h5":
            image, label = load_h5_case(src, case_id)
            return CaseData(image, label, LA_SPACING)
        image, label, spacing = load_raw_case(src, case_id)
        check_finite(case_id, src, image=image, label=label)
        extra: dict[str, Any] = {"raw_shape": list(image.shape)}
        try:
            image, label, box = preprocess_raw_case(
                image, label, np.random.default_rng(_case_seed(self.seed, case_id)), return_box=True
            )
        except ValueError as e:
            raise InvalidInputError(f"case '{case_id}' ('{src}'): {e}") from e
        extra["crop_box"] = [list(b) for b in box]
        return CaseData(image, label, spacing, extra)


# ---------------------------------------------------------------------------------------------
# main entry point
# ---------------------------------------------------------------------------------------------


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
    root, _ = resolve_folders(input_dir, output_dir, _LAYOUTS_HELP)
    if layout == "auto":
        layout = detect_layout(root)
    logger.info("LA input '%s': %s layout", root, layout)
    reader = LAReader(layout, seed)

    train_ids, listed_test = read_id_lists(reader, root, train_list, test_list, log=logger)
    if layout == "raw":
        logger.info(
            "raw preprocessing: crop margins drawn from numpy Generator seeded with (seed=%d, case id): "
            "the output is reproducible for this seed",
            seed,
        )
    return prepare_cases(
        reader,
        root,
        output_dir,
        train_ids,
        listed_test,
        num_labeled,
        num_validation,
        overwrite=overwrite,
        datalist_name=datalist_name,
        progress=progress,
        program="prepare_la",
        log=logger,
    )
