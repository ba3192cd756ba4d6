"""A user's own NIfTI folders: matching images with labels, the dataset's fingerprint and the bundle
settings it suggests.

The fingerprint summarises what a bundle needs to know about a dataset before training: the median
voxel spacing and volume shape, the intensities (percentiles over the labelled foreground, or over
whole volumes when nothing is labelled), a guess of the modality (CT or MR) and the intensity
normalisation that goes with it. :func:`suggest_overrides` turns it into values of a bundle's
``train.yaml`` (target spacing, a patch size divisible by 16 that fits the median shape, views)
that any bundle takes as a further config file::

    python -m monai.bundle run training --config_file "['bundles/la/configs/train.yaml','data/mine/fingerprint.yaml']"
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from sasnet_components.utils.errors import InvalidInputError, MissingInputError, NotAFolderError

__all__ = [
    "LABEL_SUFFIXES",
    "case_statistics",
    "dataset_fingerprint",
    "match_images_labels",
    "normalise_intensities",
    "suggest_overrides",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Label file names may add one of these to the image's name (``case01_seg.nii.gz`` labels ``case01.nii.gz``).
LABEL_SUFFIXES = ("", "_label", "_labels", "_seg", "_mask", "_gt")
_NIFTI = (".nii.gz", ".nii")
_SAMPLES_PER_CASE = 20000  # voxels kept per case for the intensity percentiles
_CT_MIN_HU = -500.0  # air (-1000 HU) in a CT; MR intensities are not negative that far
_PERCENTILES = (0.5, 50.0, 99.5)


def _nifti_name(path: Path) -> Optional[str]:
    """The name of a NIfTI file without its extension, or None for another file."""
    for ext in _NIFTI:
        if path.name.endswith(ext) and len(path.name) > len(ext):
            return path.name[: -len(ext)]
    return None


def _nifti_files(folder: Path, what: str) -> Dict[str, Path]:
    if not folder.exists():
        raise MissingInputError(f"{what} folder '{folder}' does not exist; expected a folder of NIfTI files (.nii, .nii.gz).")
    if not folder.is_dir():
        raise NotAFolderError(f"{what} '{folder}' is not a folder; expected a folder of NIfTI files (.nii, .nii.gz).")
    files: Dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = _nifti_name(path)
        if name is None or not path.is_file():
            continue
        if name in files:
            raise InvalidInputError(f"{what} folder '{folder}' holds two files named {name!r}: '{files[name].name}' and '{path.name}'.")
        files[name] = path
    return files


def match_images_labels(
    images_dir: PathLike, labels_dir: Optional[PathLike] = None
) -> Tuple[Dict[str, Tuple[Path, Optional[Path]]], List[str]]:
    """Pair every NIfTI image of `images_dir` with its label in `labels_dir`, by name.

    A label belongs to the image of the same name, or of its name without one of
    :data:`LABEL_SUFFIXES` (``case01_seg.nii.gz`` labels ``case01.nii.gz``). When both folders are
    the same, a label needs a suffix, and the label files are not images.

    Args:
        images_dir: folder of NIfTI images (``.nii`` / ``.nii.gz``); other files are ignored.
        labels_dir: folder of label maps for some of the images; None: no labels.

    Returns:
        ``(cases, unmatched)``: ``{case id: (image path, label path or None)}`` sorted by id (the
        case id is the image's file name without extension), and the label names that match no
        image (reported, not used).

    Raises:
        FileNotFoundError: a folder that is not there.
        ValueError: no image in `images_dir`; two files of one name; a label that two images claim.
    """
    images = _nifti_files(Path(images_dir), "`images`")
    labels = _nifti_files(Path(labels_dir), "`labels`") if labels_dir is not None else {}
    same_folder = labels_dir is not None and Path(labels_dir).resolve() == Path(images_dir).resolve()
    suffixes = [s for s in LABEL_SUFFIXES if s or not same_folder]  # in one folder a file never labels itself
    if same_folder:  # the label files of that folder are not images
        owned = {n for n in labels for s in suffixes if n.endswith(s) and n[: len(n) - len(s)] in images}
        images = {n: p for n, p in images.items() if n not in owned}
        labels = {n: p for n, p in labels.items() if n in owned}
    if not images:
        raise InvalidInputError(f"`images` folder '{images_dir}' holds no NIfTI image (.nii, .nii.gz).")
    cases: Dict[str, Tuple[Path, Optional[Path]]] = {case: (path, None) for case, path in images.items()}
    unmatched = []
    for name, path in labels.items():
        owners = [name[: len(name) - len(s)] for s in suffixes if name.endswith(s) and name[: len(name) - len(s)] in images]
        if not owners:
            unmatched.append(name)
            continue
        case = owners[0]
        if cases[case][1] is not None:
            raise InvalidInputError(f"image {case!r} has two labels: '{cases[case][1].name}' and '{path.name}'.")
        cases[case] = (cases[case][0], path)
    if unmatched:
        logger.warning("%d label file(s) match no image and are not used: %s", len(unmatched), unmatched[:10])
    return dict(sorted(cases.items())), unmatched


def case_statistics(
    image: np.ndarray, label: Optional[np.ndarray], spacing: Sequence[float], seed: int = 0
) -> Dict[str, Any]:
    """What the fingerprint needs of one case.

    Args:
        image: the volume `(X, Y, Z)`, any real dtype, finite.
        label: its label map of the same shape (foreground > 0), or None.
        spacing: voxel size in mm, one per axis.
        seed: seed of the voxel sample kept for the percentiles.

    Returns:
        ``{"shape", "spacing", "min", "max", "integer", "foreground", "samples"}``: the samples are
        up to 20,000 intensities drawn from the foreground (labelled cases with foreground) or from
        the whole volume, for :func:`dataset_fingerprint`.
    """
    values = np.asarray(image)
    fg = None if label is None else np.asarray(label) > 0
    pool = values[fg] if fg is not None and fg.any() else values.reshape(-1)
    rng = np.random.default_rng(seed)
    samples = pool if pool.size <= _SAMPLES_PER_CASE else rng.choice(pool, _SAMPLES_PER_CASE, replace=False)
    return {
        "shape": [int(s) for s in values.shape],
        "spacing": [float(s) for s in spacing],
        "min": float(values.min()),
        "max": float(values.max()),
        "integer": bool(np.all(np.mod(values.reshape(-1)[:: max(1, values.size // 100000)], 1) == 0)),
        "foreground": fg is not None and bool(fg.any()),
        "samples": np.asarray(samples, dtype=np.float64),
    }


def dataset_fingerprint(cases: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The dataset's fingerprint from the :func:`case_statistics` of its cases.

    Returns:
        ``{"num_cases", "num_labeled", "median_spacing", "same_spacing", "median_shape", "median_shape_at_median_spacing",
        "intensity": {"p0.5", "p50", "p99.5", "mean", "std", "from"}, "modality",
        "normalisation"}``. The modality is ``"CT"`` when every volume holds whole numbers and
        reaches below -500 (air is -1000 HU), else ``"MR"``. Normalisation: CT clips to the
        foreground's 0.5 and 99.5 percentiles then z-scores each volume; MR z-scores each volume.

    Raises:
        ValueError: no cases.
    """
    if not cases:
        raise InvalidInputError("a fingerprint needs at least one case.")
    spacing = np.median([c["spacing"] for c in cases], axis=0)
    shapes = np.array([c["shape"] for c in cases], dtype=np.float64)
    physical = shapes * np.array([c["spacing"] for c in cases])
    labelled = [c for c in cases if c["foreground"]]
    samples = np.concatenate([c["samples"] for c in (labelled or cases)])  # the foreground when there is one
    low, mid, high = (float(v) for v in np.percentile(samples, _PERCENTILES))
    ct = all(c["integer"] for c in cases) and min(c["min"] for c in cases) < _CT_MIN_HU
    normalisation = (
        {"method": "clip_zscore", "clip": [low, high]} if ct else {"method": "zscore"}
    )
    return {
        "num_cases": len(cases),
        "num_labeled": sum(1 for c in cases if c["foreground"]),
        "median_spacing": [round(float(s), 4) for s in spacing],
        "same_spacing": bool(np.allclose([c["spacing"] for c in cases], spacing, atol=1e-3)),
        "median_shape": [int(round(s)) for s in np.median(shapes, axis=0)],
        "median_shape_at_median_spacing": [int(round(s)) for s in np.median(physical, axis=0) / spacing],
        "intensity": {
            "p0.5": low,
            "p50": mid,
            "p99.5": high,
            "mean": float(samples.mean()),
            "std": float(samples.std()),
            "from": "labelled foreground" if labelled else "whole volumes",
        },
        "modality": "CT" if ct else "MR",
        "normalisation": normalisation,
    }


def normalise_intensities(image: np.ndarray, normalisation: Dict[str, Any]) -> np.ndarray:
    """Apply the fingerprint's normalisation to one volume: clip (CT) then z-score; float32.

    A constant volume becomes all zeros.
    """
    values = np.asarray(image, dtype=np.float64)
    if normalisation.get("method") == "clip_zscore":
        low, high = normalisation["clip"]
        values = np.clip(values, low, high)
    elif normalisation.get("method") != "zscore":
        raise InvalidInputError(f"unknown normalisation {normalisation!r}; expected method 'zscore' or 'clip_zscore'.")
    std = values.std()
    return ((values - values.mean()) / std if std > 0 else np.zeros_like(values)).astype(np.float32)


def _patch_size(shape: Sequence[int], divisor: int, max_voxels: int, max_side: int) -> List[int]:
    """Per axis the largest multiple of `divisor` within the shape (at least `divisor`, at most
    `max_side`), then the largest axis reduced by `divisor` until the patch holds at most `max_voxels`."""
    patch = [min(max_side, max(divisor, (int(s) // divisor) * divisor)) for s in shape]
    while int(np.prod(patch)) > max_voxels and max(patch) > divisor:
        axis = int(np.argmax(patch))
        patch[axis] -= divisor
    return patch


def suggest_overrides(
    fingerprint: Dict[str, Any],
    dataset_dir: str,
    num_labeled: int,
    divisor: int = 16,
    max_voxels: int = 112 * 112 * 80,
    max_side: int = 128,
) -> Dict[str, Any]:
    """Bundle ``train.yaml`` values that fit the dataset.

    Args:
        fingerprint: from :func:`dataset_fingerprint`.
        dataset_dir: the prepared dataset's folder (``dataset_dir`` of the bundle).
        num_labeled: labelled training cases of its datalist (``num_labeled`` of the bundle).
        divisor: the network's size divisor (``DualBranchVNet.size_divisor``: 16).
        max_voxels: largest patch (LA's 112x112x80 by default: what the paper's batch of 4 fits on one GPU).
        max_side: largest patch side.

    Returns:
        ``{"dataset_dir", "num_labeled", "resample_spacing", "patch_size", "views", "eval_roi_size",
        "eval_stride", "intensity", "intensity_window"}``: ``resample_spacing`` is the median spacing
        (the prepared files keep each case's own; training, evaluation and inference resample to it);
        ``patch_size`` per axis the largest multiple of `divisor` within the median shape at that
        spacing (at least `divisor`); ``views`` the identity and the swaps of two axes with the same
        patch side and voxel size; evaluation windows of the patch at half its size as stride; the
        inference intensity pipeline of raw scans that gives the prepared intensities (CT:
        ``window_zscore`` over the clip window, which is the clip then the z-score; MR: ``zscore``).
    """
    patch = _patch_size(fingerprint["median_shape_at_median_spacing"], divisor, max_voxels, max_side)
    spacing = list(fingerprint["median_spacing"])
    # a view swaps two axes: only axes of the same patch side and the same voxel size
    swappable = [(a, b) for a, b in ((0, 1), (1, 2), (0, 2)) if patch[a] == patch[b] and abs(spacing[a] - spacing[b]) < 1e-3]
    views = [[0, 1, 2]]
    for a, b in swappable:
        view = [0, 1, 2]
        view[a], view[b] = b, a
        views.append(view)
    norm = fingerprint["normalisation"]
    ct = norm["method"] == "clip_zscore"
    return {
        "dataset_dir": str(dataset_dir),
        "num_labeled": int(num_labeled),
        "resample_spacing": spacing,
        "patch_size": patch,
        "views": views,
        "eval_roi_size": patch,
        "eval_stride": [p // 2 for p in patch],
        "intensity": "window_zscore" if ct else "zscore",
        "intensity_window": list(norm["clip"]) if ct else None,
    }
