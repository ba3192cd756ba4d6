"""BraTS 2019: reading and preprocessing of one case, discovery of the cases, and dataset preparation.

Two input layouts are accepted:

``"release"`` (the official training release, NIfTI, co-registered, 1 mm isotropic)::

    <root>/HGG/<id>/<id>_flair.nii.gz + <id>_seg.nii.gz   (grade folder HGG / LGG, any name)
    <root>/<id>/<id>_flair.nii.gz + <id>_seg.nii.gz       (without the grade level)
    with modalities="all" also <id>_t1.nii.gz, <id>_t1ce.nii.gz, <id>_t2.nii.gz  (".nii" too)

``"h5"`` (community files, already preprocessed FLAIR)::

    <root>/data/<id>.h5   (or <root>/<id>.h5), keys "image" (float, preprocessed FLAIR) and "label"

Case ids are those of the literature's lists, e.g. ``BraTS19_TCIA02_370_1``.

Preprocessing of a release case (:func:`preprocess_brats`, the public preprocessing of this
literature): crop to the bounding box of the non-zero voxels of the FLAIR (``modalities="all"``:
the union of the boxes of the four modalities, the same crop for all); per modality, clip at the
99.9th percentile of the cropped volume (zeros included; an upper clip) and z-score over its brain
voxels (non-zero voxels of the cropped volume): the brain has mean 0 and standard deviation 1, the
background stays 0. Label: ``label_mode="whole"``: whole tumour ``seg > 0`` (uint8 {0, 1});
``"classes"``: the exclusive classes {0, 1, 2, 4} mapped to {0, 1, 2, 3}. ``modalities="flair"``
gives an ``(X, Y, Z)`` float32 image (the paper), ``"all"`` an ``(X, Y, Z, 4)`` image stacking
flair, t1, t1ce, t2 in this order.

Voxel size: the release is 1 mm isotropic, so nothing is resampled; a NIfTI file whose voxel size
is not 1 mm (within 1e-3 mm) is refused (resample it to 1 mm first). Arrays are kept in the
stored axis order; the output NIfTI affine is ``diag(1, 1, 1, 1)``, as for the community h5 files;
the manifest records the crop box (``crop_box``, in the source voxel grid) and ``source_shape``,
and ``label_voxels_cut`` (with a warning) when tumour voxels lie outside the box.

The h5 layout holds only the preprocessed FLAIR and the label: it is written unchanged (label
``> 0``) and supports only ``modalities="flair"`` and ``label_mode="whole"``.

Split: the literature's lists ship with the package (``sasnet_components/data/splits/
brats2019_{train,val,test}.txt``: 250, 25 and 60 ids) and are used when the input has no
``train.txt``. The validation ids form a list of their own in this split (not carved from the
training list): :func:`prepare_brats` passes the training ids followed by the validation ids to the
preparation core with ``num_validation = len(validation ids)``, so the datalist's ``validation``
list is exactly the validation ids; like every validation list of the honest default protocol
they also sit in the unlabeled pool (after the unlabeled training cases). The labeled cases are the
first ``num_labeled`` ids of the training list (25 = 10 %, 50 = 20 % of the 250).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from sasnet_components.data.checks import nonfinite_message, read_error
from sasnet_components.data.prepare import (
    CaseData,
    CaseReader,
    CaseSource,
    check_finite,
    prepare_cases,
    read_h5_pair,
    read_id_list,
    resolve_folders,
)
from sasnet_components.utils.errors import InvalidInputError, MissingInputError

__all__ = [
    "BRATS_SPACING",
    "BRATS_CLIP_PERCENTILE",
    "BRATS_MODALITIES",
    "BRATS_LABEL_VALUES",
    "BRATS_LAYOUTS",
    "brats_crop_box",
    "preprocess_brats",
    "brats_label",
    "detect_brats_layout",
    "load_brats_release_case",
    "load_brats_h5",
    "BratsReader",
    "prepare_brats",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Voxel spacing (mm) of the release and of the prepared volumes.
BRATS_SPACING: tuple[float, float, float] = (1.0, 1.0, 1.0)
#: Upper clip of each modality: this percentile of the cropped volume (zeros included).
BRATS_CLIP_PERCENTILE = 99.9
#: Modalities in stacking order for ``modalities="all"``.
BRATS_MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
#: Values of the release's ``seg`` files, mapped to 0, 1, 2, 3 by ``label_mode="classes"``.
BRATS_LABEL_VALUES: tuple[int, ...] = (0, 1, 2, 4)
#: Accepted values of ``layout`` for :func:`prepare_brats`.
BRATS_LAYOUTS: tuple[str, ...] = ("auto", "release", "h5")
#: The literature's split lists shipped in ``sasnet_components/data/splits/`` (250, 25, 60 ids).
BRATS_TRAIN_LIST = "brats2019_train.txt"
BRATS_VAL_LIST = "brats2019_val.txt"
BRATS_TEST_LIST = "brats2019_test.txt"

_MODALITY_CHOICES = ("flair", "all")
_LABEL_MODES = ("whole", "classes")
_H5_FOLDER = "data"
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_SPACING_TOLERANCE = 1e-3
_LAYOUTS_HELP = (
    "expected the BraTS release '<root>/HGG/<id>/<id>_flair.nii.gz' + '<id>_seg.nii.gz' (grade folder "
    "HGG / LGG, or '<root>/<id>/...'), or community h5 files '<root>/data/<id>.h5' (or '<root>/<id>.h5')"
)


# ---------------------------------------------------------------------------------------------
# preprocessing (pure functions)
# ---------------------------------------------------------------------------------------------


def brats_crop_box(volumes: Sequence[np.ndarray]) -> tuple[tuple[int, int], ...]:
    """Bounding box of the voxels that are non-zero in any of ``volumes`` (same shape).

    Returns:
        ``((x0, x1), (y0, y1), (z0, z1))``, half-open.

    Raises:
        ValueError: every voxel is zero.
    """
    mask = np.zeros(np.shape(volumes[0]), dtype=bool)
    for volume in volumes:
        mask |= np.asarray(volume) != 0
    if not mask.any():
        raise InvalidInputError("the image has no non-zero voxel (no brain to crop to).")
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _normalise(volume: np.ndarray, percentile: float) -> np.ndarray:
    """Clip at ``percentile`` of ``volume`` (zeros included), then z-score over the non-zero voxels (background 0)."""
    volume = np.asarray(volume, dtype=np.float64)
    brain = volume != 0
    if not brain.any():
        raise InvalidInputError("a modality has no non-zero voxel inside the crop box.")
    clipped = np.minimum(volume, np.percentile(volume, percentile))
    values = clipped[brain]
    std = values.std()
    if not std > 0:
        raise InvalidInputError("a modality is constant over its non-zero voxels (standard deviation 0).")
    out = np.zeros(volume.shape, dtype=np.float32)
    out[brain] = ((values - values.mean()) / std).astype(np.float32)
    return out


def brats_label(seg: np.ndarray, label_mode: str = "whole") -> np.ndarray:
    """The training label of a ``seg`` volume: ``"whole"``: ``seg > 0``; ``"classes"``: {0, 1, 2, 4} -> {0, 1, 2, 3}.

    Raises:
        ValueError: bad ``label_mode`` or values outside {0, 1, 2, 4}.
    """
    if label_mode not in _LABEL_MODES:
        raise InvalidInputError(f"`label_mode` must be one of {list(_LABEL_MODES)}, got {label_mode!r}.")
    seg = np.asarray(seg)
    values = np.unique(seg)
    bad = [v for v in values.tolist() if v not in BRATS_LABEL_VALUES]
    if bad:
        raise InvalidInputError(f"label values must be in {{0, 1, 2, 4}}, got {bad[:10]}.")
    if label_mode == "whole":
        return (seg > 0).astype(np.uint8)
    out = np.zeros(seg.shape, dtype=np.uint8)
    for new, old in enumerate(BRATS_LABEL_VALUES):
        out[seg == old] = new
    return out


def preprocess_brats(
    volumes: Sequence[np.ndarray],
    seg: Optional[np.ndarray],
    label_mode: str = "whole",
    percentile: float = BRATS_CLIP_PERCENTILE,
) -> tuple[np.ndarray, Optional[np.ndarray], tuple[tuple[int, int], ...]]:
    """Crop, clip and z-score one case (see the module docstring).

    Args:
        volumes: the modalities, same ``(X, Y, Z)`` shape; one gives an ``(X, Y, Z)`` image, several
            an ``(X, Y, Z, C)`` image in the given order.
        seg: the ``seg`` volume ({0, 1, 2, 4}) or None.
        label_mode: ``"whole"`` or ``"classes"`` (:func:`brats_label`).
        percentile: upper clip percentile of each cropped modality.

    Returns:
        ``(image, label, box)``: float32 image, uint8 label (or None), crop box (half-open, per axis).
    """
    box = brats_crop_box(volumes)
    region = tuple(slice(lo, hi) for lo, hi in box)
    names = list(BRATS_MODALITIES) if len(volumes) == len(BRATS_MODALITIES) else ["flair"]
    channels = []
    for i, volume in enumerate(volumes):
        try:
            channels.append(_normalise(np.asarray(volume)[region], percentile))
        except ValueError as e:
            which = names[i] if len(names) == len(volumes) else f"modality {i}"
            raise InvalidInputError(f"{which}: {e}") from e
    image = channels[0] if len(channels) == 1 else np.stack(channels, axis=-1)
    # the label values are checked on the whole volume, the box is that of the image
    label = None if seg is None else brats_label(seg, label_mode)[region]
    return image, label, box


# ---------------------------------------------------------------------------------------------
# layouts and readers
# ---------------------------------------------------------------------------------------------


def _nifti_file(folder: Path, case_id: str, key: str) -> Optional[Path]:
    for suffix in _NIFTI_SUFFIXES:
        path = folder / f"{case_id}_{key}{suffix}"
        if path.is_file():
            return path
    return None


def _subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _h5_candidates(root: Path, case_id: str) -> list[Path]:
    return [root / _H5_FOLDER / f"{case_id}.h5", root / f"{case_id}.h5"]


def detect_brats_layout(root: PathLike) -> str:
    """``"h5"`` when ``<root>/data`` or ``<root>`` holds ``*.h5`` files, else ``"release"`` when a case
    folder (``<id>/<id>_flair.nii[.gz]`` at depth 1 or 2) is found.

    Raises:
        FileNotFoundError: neither layout is found.
    """
    root = Path(root)
    for folder in (root / _H5_FOLDER, root):
        if folder.is_dir() and any(p.suffix == ".h5" and p.is_file() for p in folder.iterdir()):
            return "h5"
    for folder in _subfolders(root):
        for case in [folder] + _subfolders(folder):
            if _nifti_file(case, case.name, "flair") is not None or _nifti_file(case, case.name, "seg") is not None:
                return "release"
    raise MissingInputError(f"no BraTS case found in '{root}'; {_LAYOUTS_HELP}.")


def _load_nifti(path: Path, case_id: str, what: str) -> np.ndarray:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
        zooms = [float(z) for z in img.header.get_zooms()[:3]]
    except Exception as e:  # nibabel raises several types for damaged files
        raise read_error(f"case '{case_id}': cannot read {what} '{path}'", e) from e
    if data.ndim != 3:
        raise InvalidInputError(f"case '{case_id}': {what} '{path}' must be 3D, got shape {tuple(data.shape)}.")
    if len(zooms) != 3 or not np.allclose(zooms, BRATS_SPACING, atol=_SPACING_TOLERANCE):
        raise InvalidInputError(
            f"case '{case_id}': {what} '{path}' has voxel size {zooms} mm, expected 1 mm isotropic (the BraTS "
            "release); resample it to 1 mm first."
        )
    problem = nonfinite_message(data)
    if problem is not None:
        raise InvalidInputError(f"case '{case_id}': {what} has {problem} in '{path}'; expected finite values.")
    return data


def load_brats_release_case(
    folder: PathLike, case_id: str, modalities: str = "flair"
) -> tuple[list[np.ndarray], np.ndarray]:
    """Read the modalities and the ``seg`` file of one release case folder.

    Returns:
        ``(volumes, seg)``: the FLAIR alone, or flair, t1, t1ce, t2 (``modalities="all"``), and ``seg``.

    Raises:
        FileNotFoundError: a modality or the seg file is missing (named with the expected path).
        ValueError: unreadable file, not 3D, not 1 mm, non-finite voxels, shapes that differ.
    """
    folder = Path(folder)
    keys = BRATS_MODALITIES if modalities == "all" else ("flair",)
    arrays: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    for key in keys + ("seg",):
        path = _nifti_file(folder, case_id, key)
        if path is None:
            what = "label file" if key == "seg" else f"modality '{key}'"
            raise MissingInputError(
                f"case '{case_id}': {what} is missing: expected '{folder / f'{case_id}_{key}.nii.gz'}'."
            )
        paths[key] = path
        arrays[key] = _load_nifti(path, case_id, "label" if key == "seg" else key)
    shape = arrays[keys[0]].shape
    for key in keys[1:] + ("seg",):
        if arrays[key].shape != shape:
            raise InvalidInputError(
                f"case '{case_id}': '{paths[key].name}' has shape {tuple(arrays[key].shape)}, '{paths[keys[0]].name}' "
                f"{tuple(shape)}: the modalities and the label must have the same shape (in '{folder}')."
            )
    return [arrays[k] for k in keys], arrays["seg"]


def load_brats_h5(path: PathLike, case_id: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Read one community h5 file: float32 ``image`` (preprocessed FLAIR) and uint8 whole-tumour ``label`` (``> 0``).

    Raises:
        FileNotFoundError: the file does not exist.
        KeyError: ``image`` or ``label`` is missing.
        ValueError: unreadable file, not 3D, shapes differ, non-finite voxels, label values outside {0, 1, 2, 4}.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"case '{case_id}': h5 file '{path}' does not exist.")
    image, label = read_h5_pair(path, case_id)
    if image.ndim != 3 or image.shape != label.shape:
        raise InvalidInputError(
            f"case '{case_id}': image and label must be 3D of the same shape, got image {tuple(image.shape)} and "
            f"label {tuple(label.shape)} in '{path}'."
        )
    check_finite(case_id, path, image=image, label=label)
    try:
        label = brats_label(label, "whole")
    except ValueError as e:
        raise InvalidInputError(f"case '{case_id}': {e} ('{path}')") from e
    return image.astype(np.float32, copy=False), label


def _split_path(name: str) -> Path:
    return Path(__file__).resolve().parent / "splits" / name


class BratsReader(CaseReader):
    """Reader of one BraTS 2019 layout for :func:`~sasnet_components.data.prepare.prepare_cases`.

    Args:
        layout: ``"release"`` (NIfTI case folders, preprocessed by :func:`preprocess_brats`) or
            ``"h5"`` (community files written unchanged; only ``"flair"`` / ``"whole"``).
        modalities: ``"flair"`` or ``"all"``.
        label_mode: ``"whole"`` or ``"classes"``.

    A release case is stamped by the files it reads (present ones among the modalities and the seg
    file); its manifest record holds ``source_shape`` and ``crop_box``. ``parameters`` records
    ``modalities`` and ``label_mode`` (and ``clip_percentile`` for the release).
    """

    name = "BraTS2019"

    def __init__(self, layout: str, modalities: str = "flair", label_mode: str = "whole") -> None:
        if layout not in ("release", "h5"):
            raise InvalidInputError(f"`layout` must be 'release' or 'h5', got {layout!r}.")
        if modalities not in _MODALITY_CHOICES:
            raise InvalidInputError(f"`modalities` must be one of {list(_MODALITY_CHOICES)}, got {modalities!r}.")
        if label_mode not in _LABEL_MODES:
            raise InvalidInputError(f"`label_mode` must be one of {list(_LABEL_MODES)}, got {label_mode!r}.")
        if layout == "h5" and (modalities, label_mode) != ("flair", "whole"):
            raise InvalidInputError(
                f"the h5 layout holds only the preprocessed FLAIR and the whole-tumour label: it supports "
                f"modalities='flair' and label_mode='whole' only, got modalities={modalities!r}, "
                f"label_mode={label_mode!r}; use the release (NIfTI) files for the others."
            )
        self.layout, self.modalities, self.label_mode = layout, modalities, label_mode
        #: ids of the validation list (set by :func:`prepare_brats`), named as such in messages
        self.validation_ids: frozenset[str] = frozenset()

    @property
    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {"modalities": self.modalities, "label_mode": self.label_mode}
        if self.layout == "release":
            params["clip_percentile"] = BRATS_CLIP_PERCENTILE
        return params

    def default_ids(self, root: Path) -> tuple[list[str], list[str]]:
        """The literature's training + validation ids (275) and test ids (60) shipped with the package."""
        train = read_id_list(_split_path(BRATS_TRAIN_LIST)) + read_id_list(_split_path(BRATS_VAL_LIST))
        return train, read_id_list(_split_path(BRATS_TEST_LIST))

    def _locate(self, root: Path, case_id: str) -> tuple[Optional[Path], str]:
        """``(path or None, expected-where text)`` of one case."""
        if self.layout == "h5":
            candidates = _h5_candidates(root, case_id)
            found = [p for p in candidates if p.is_file()]
            return (found[0] if found else None), " or ".join(f"'{p}'" for p in candidates)
        folders = [p for p in [root / case_id] + [g / case_id for g in _subfolders(root)] if p.is_dir()]
        if len(folders) > 1:
            raise InvalidInputError(f"case '{case_id}' has several folders: {[str(p) for p in folders]}; keep one.")
        expected = f"'{root / 'HGG' / case_id / (case_id + '_flair.nii.gz')}' (grade folder HGG / LGG, or none)"
        return (folders[0] if folders else None), expected

    def find_cases(
        self, root: Path, train_ids: Sequence[str], test_ids: Sequence[str]
    ) -> tuple[list[CaseSource], list[str]]:
        sources: list[CaseSource] = []
        missing_test: list[str] = []
        keys = (BRATS_MODALITIES if self.modalities == "all" else ("flair",)) + ("seg",)
        for split, ids in (("train", train_ids), ("test", test_ids)):
            for case_id in ids:
                path, expected = self._locate(root, case_id)
                if path is None:
                    if split == "test":
                        missing_test.append(case_id)
                        continue
                    which = "validation" if case_id in self.validation_ids else "training"
                    raise MissingInputError(f"case '{case_id}' of the {which} list has no data: expected {expected}.")
                if self.layout == "h5":
                    sources.append(CaseSource(case_id, split, path))
                    continue
                stamp = tuple(f for f in (_nifti_file(path, case_id, k) for k in keys) if f is not None)
                sources.append(CaseSource(case_id, split, path, stamp=stamp or (path,)))
        return sources, missing_test

    def read_case(self, source: CaseSource) -> CaseData:
        case_id = source.case_id
        if self.layout == "h5":
            image, label = load_brats_h5(source.path, case_id)
            return CaseData(image, label, BRATS_SPACING)
        volumes, seg = load_brats_release_case(source.path, case_id, self.modalities)
        try:
            image, label, box = preprocess_brats(volumes, seg, self.label_mode)
        except ValueError as e:
            raise InvalidInputError(f"case '{case_id}' ('{source.path}'): {e}") from e
        extra = {"source_shape": list(volumes[0].shape), "crop_box": [list(b) for b in box]}
        outside = int(np.count_nonzero(seg)) - int(np.count_nonzero(label))
        if outside:  # tumour voxels where every modality is zero: cut by the crop
            logger.warning(
                "case %s: %d label voxels lie outside the non-zero box of the image and are cut", case_id, outside
            )
            extra["label_voxels_cut"] = outside
        return CaseData(image, label, BRATS_SPACING, extra)


def _resolve_list(
    given: Optional[PathLike], root: Path, name: str, shipped: str, use_shipped: bool
) -> tuple[list[str], str]:
    """Ids and display name of one list: given, else ``<root>/<name>``, else the shipped list (when allowed)."""
    if given is not None:
        return read_id_list(given), Path(given).name
    if (root / name).is_file():
        return read_id_list(root / name), name
    if use_shipped:
        return read_id_list(_split_path(shipped)), shipped
    return [], name


def prepare_brats(
    input_dir: PathLike,
    output_dir: PathLike,
    num_labeled: int = 50,
    modalities: str = "flair",
    label_mode: str = "whole",
    overwrite: bool = False,
    layout: str = "auto",
    train_list: Optional[PathLike] = None,
    val_list: Optional[PathLike] = None,
    test_list: Optional[PathLike] = None,
    datalist_name: str = "datalist.json",
    progress: bool = False,
) -> dict[str, Any]:
    """Prepare BraTS 2019 (NIfTI volumes, manifest, semi-supervised datalist) with the shared core.

    Lists: each of ``train_list`` / ``val_list`` / ``test_list``, else ``<input_dir>/train.txt`` /
    ``val.txt`` / ``test.txt``; when there is no training list at all, the literature's lists
    shipped with the package (250 / 25 / 60 ids) are used for the missing ones. A validation or
    test list missing while the training list is the user's gives an empty list.

    Datalist: labeled = first ``num_labeled`` training ids; unlabeled = the other training ids
    followed by the validation ids; validation = the validation ids (monitoring list, also in the
    unlabeled pool); test = the present test ids.

    Args:
        input_dir: dataset root in the release or h5 layout (module docstring). Never written.
        output_dir: destination; must not be, contain or lie inside ``input_dir``.
        num_labeled: labeled cases, in ``[1, len(training ids)]`` (50 = 20 %, 25 = 10 % of 250).
        modalities: ``"flair"`` (paper, ``(X, Y, Z)``) or ``"all"`` (``(X, Y, Z, 4)``: flair, t1, t1ce, t2).
        label_mode: ``"whole"`` (``seg > 0``) or ``"classes"`` ({0, 1, 2, 4} -> {0, 1, 2, 3}).
        overwrite: rewrite every case and replace a datalist not written here.
        layout: ``"auto"`` (:func:`detect_brats_layout`), ``"release"`` or ``"h5"``.
        train_list, val_list, test_list: id lists (one id per line).
        datalist_name: file name of the datalist in ``output_dir``.
        progress: progress bar of the cases on stderr.

    Returns:
        The datalist written to ``output_dir / datalist_name``.

    Raises:
        FileNotFoundError: ``input_dir`` missing or holding neither layout; a given list missing; a
            training or validation id without data.
        FileExistsError: the datalist exists and was not written here, without ``overwrite``.
        ValueError: bad arguments (h5 with ``"all"`` / ``"classes"``); lists overlapping; cases refused
            (missing modality, label values outside {0, 1, 2, 4}, shapes that differ, non-finite
            voxels, unreadable file, not 1 mm): the message names each case; no datalist is written.
    """
    if layout not in BRATS_LAYOUTS:
        raise InvalidInputError(f"`layout` must be one of {list(BRATS_LAYOUTS)}, got {layout!r}.")
    root, _ = resolve_folders(input_dir, output_dir, _LAYOUTS_HELP)
    if layout == "auto":
        layout = detect_brats_layout(root)
    reader = BratsReader(layout, modalities, label_mode)
    logger.info("BraTS 2019 input '%s': %s layout, modalities %s, label %s", root, layout, modalities, label_mode)

    shipped = train_list is None and not (root / "train.txt").is_file()
    train_ids, train_name = _resolve_list(train_list, root, "train.txt", BRATS_TRAIN_LIST, shipped)
    val_ids, val_name = _resolve_list(val_list, root, "val.txt", BRATS_VAL_LIST, shipped)
    test_ids, test_name = _resolve_list(test_list, root, "test.txt", BRATS_TEST_LIST, shipped)
    if shipped:
        logger.info("no train.txt in '%s' and no --train_list given: using the lists shipped with the package", root)
    if not train_ids:
        raise InvalidInputError(f"the training id list {train_name} is empty.")
    both = sorted(set(train_ids) & set(val_ids))
    if both:
        raise InvalidInputError(
            f"ids must not be in both {train_name} and {val_name} (the validation list is separate), got {both[:5]}."
        )
    if not isinstance(num_labeled, (int, np.integer)) or isinstance(num_labeled, bool):
        raise InvalidInputError(f"`num_labeled` must be an integer, got {num_labeled!r}.")
    if not 1 <= num_labeled <= len(train_ids):
        raise InvalidInputError(
            f"`num_labeled` must be in [1, {len(train_ids)}] (the ids of {train_name}), got {num_labeled}."
        )
    reader.validation_ids = frozenset(val_ids)
    return prepare_cases(
        reader,
        root,
        output_dir,
        train_ids + val_ids,
        test_ids,
        int(num_labeled),
        len(val_ids),
        overwrite=overwrite,
        datalist_name=datalist_name,
        progress=progress,
        program="prepare_brats",
        train_list_name=f"{train_name} + {val_name}" if val_ids else train_name,
        test_list_name=test_name,
        log=logger,
    )
