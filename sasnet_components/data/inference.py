"""Inference on a folder of NIfTI files: the list of cases to run, the split of the network output, the report.

Used by ``bundles/la/configs/inference.yaml``: :func:`inference_datalist` checks the output folders
and lists the readable, finite NIfTI files of a folder that have no output yet,
:class:`SplitPredictiond` turns the :class:`~sasnet_components.DualBranchUncertainty` output (mean
probability + decoders' disagreement) into a label map, a foreground probability and an
uncertainty map, and :func:`inference_report` ends the run: one summary line, or exit status 1
naming every input left without outputs.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelWriter
from monai.transforms import ClipIntensityPercentilesd, MapTransform, NormalizeIntensityd, ScaleIntensityRanged

from sasnet_components.data.checks import error_reason, nonfinite_message
from sasnet_components.utils.errors import InvalidInputError, MissingInputError, check_option
from sasnet_components.utils.io import atomic_path, check_output_folder

__all__ = [
    "AtomicNibabelWriter",
    "SplitPredictiond",
    "check_inference_folders",
    "case_id_of",
    "inference_datalist",
    "inference_report",
    "intensity_transforms",
    "output_path",
]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
OUTPUT_EXT = ".nii.gz"
INTENSITY_OPTIONS = ("none", "zscore", "window_zscore", "brain_zscore")
BRAIN_CLIP_PERCENTILE = 99.9  # upper clip of ``"brain_zscore"``: percentile of the whole volume


def intensity_transforms(
    intensity: str, window: Optional[Sequence[float]] = None, keys: KeysCollection = "image"
) -> List[MapTransform]:
    """The intensity preprocessing of an inference input, as the bundles' ``--intensity`` names it.

    - ``"none"``: nothing (inputs prepared as the training volumes were, e.g. z-scored LA volumes);
    - ``"zscore"``: z-score over the whole volume (a raw MR scan);
    - ``"window_zscore"``: clip to `window` (e.g. HU ``[-125, 275]``), scale it to [0, 1], then z-score
      over the whole volume (a raw CT scan, as the Pancreas-CT preparation does before its z-score);
    - ``"brain_zscore"``: clip at the 99.9th percentile of the whole volume, then z-score over the non-zero
      voxels, zeros staying 0 (a skull-stripped brain MR scan with a zero background, e.g. BraTS FLAIR);
      each channel on its own (the four BraTS modalities).

    Args:
        intensity: one of :data:`INTENSITY_OPTIONS`.
        window: ``[low, high]`` with low < high; used (and required) by ``"window_zscore"`` only.
        keys: the image key(s).

    Returns:
        MONAI transforms (none of them spatial: ``Invertd`` passes over them).

    Raises:
        ValueError: an unknown `intensity`, or ``"window_zscore"`` without a valid `window`.
    """
    intensity = check_option(intensity, INTENSITY_OPTIONS, "`intensity`")
    if intensity == "none":
        return []
    if intensity == "zscore":
        return [NormalizeIntensityd(keys=keys)]
    if intensity == "brain_zscore":
        return [
            ClipIntensityPercentilesd(keys=keys, lower=None, upper=BRAIN_CLIP_PERCENTILE, channel_wise=True),
            NormalizeIntensityd(keys=keys, nonzero=True, channel_wise=True),  # each modality on its own
        ]
    try:
        low, high = (float(v) for v in window)  # type: ignore[union-attr]
        valid = low < high and all(np.isfinite([low, high]))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise InvalidInputError(
            f"`intensity_window` must be [low, high] with low < high for `intensity` 'window_zscore', got {window!r}."
        )
    return [
        ScaleIntensityRanged(keys=keys, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
        NormalizeIntensityd(keys=keys),
    ]


def case_id_of(path: Union[str, os.PathLike]) -> str:
    """File name without its NIfTI suffix: ``"a/b/case1.nii.gz" -> "case1"``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def output_path(output_dir: Union[str, os.PathLike], case_id: str, postfix: str) -> Path:
    """Where MONAI's ``SaveImaged`` (``separate_folder=False``) writes case `case_id`: ``<dir>/<id>_<postfix>.nii.gz``."""
    return Path(output_dir) / f"{case_id}_{postfix}{OUTPUT_EXT}"


def _input_problem(path: Path, check_data: bool = True, channels: int = 1) -> Optional[str]:
    """None when `path` is a readable NIfTI image of `channels` channels with finite values, else why not:
    3D (or 4D with one volume) for one channel, ``(X, Y, Z, channels)`` for several.

    With `check_data` false only the header is read (no check of truncation or of the values).
    """
    try:
        img = nib.load(str(path))
        if not check_data:
            return None
        shape = tuple(int(s) for s in img.shape)
        spatial = shape[:3] if len(shape) == 4 and shape[3] == channels else shape if channels == 1 else ()
        if len(spatial) != 3 or min(spatial) < 1:
            expected = "a 3D image" if channels == 1 else f"an image of shape (X, Y, Z, {channels}) ({channels} channels)"
            return f"expected {expected}, got shape {tuple(img.shape)}"
        if not np.all(np.isfinite(img.affine)):
            return "its affine is not finite"
        data = np.asanyarray(img.dataobj)  # a truncated .nii.gz only fails when the data are read
        if data.size != int(np.prod(shape)):
            return f"read {data.size} voxels, the header says {shape}"
    except Exception as e:  # nibabel raises many types (ImageFileError, EOFError, OSError, zlib.error, ...)
        return f"cannot read it: {error_reason(e)}"
    problem = nonfinite_message(data)
    return None if problem is None else f"{problem}; expected finite intensities"


def _nifti_inputs(input_path: Path) -> List[Path]:
    """The NIfTI files directly inside `input_path` (hidden files left out), sorted by name."""
    return sorted(
        p
        for p in input_path.iterdir()
        if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES) and not p.name.startswith(".")
    )


def check_inference_folders(
    input_dir: Union[str, os.PathLike],
    output_dir: Union[str, os.PathLike],
    outputs: Sequence[Sequence[str]] = (("", "seg"),),
) -> bool:
    """Check the input and output folders of an inference run without reading any file or creating any folder.

    Args:
        input_dir, output_dir, outputs: as :func:`inference_datalist`.

    Returns:
        True when the folders can be used.

    Raises:
        As :func:`inference_datalist`, except for the errors about the input files themselves.
    """
    if input_dir is None or output_dir is None:
        raise InvalidInputError(
            f"`input_dir` and `output_dir` are required (--input_dir DIR --output_dir OUT), "
            f"got input_dir {input_dir!r} and output_dir {output_dir!r}."
        )
    input_path = Path(input_dir).expanduser().resolve()
    output_root = Path(output_dir).expanduser().resolve()
    if not input_path.is_dir():
        raise MissingInputError(f"`input_dir` must be an existing folder of NIfTI files, got {str(input_dir)!r}.")
    if output_root == input_path or input_path in output_root.parents:
        raise InvalidInputError(
            f"`output_dir` must not be the input folder or inside it (outputs are never written into the input "
            f"folder), got output_dir {str(output_dir)!r} and input_dir {str(input_dir)!r}."
        )
    pairs = [tuple(p) for p in outputs]
    if not pairs or any(len(p) != 2 or not all(isinstance(s, str) for s in p) for p in pairs):
        raise InvalidInputError(f"`outputs` must be a non-empty list of [subfolder, postfix] string pairs, got {outputs!r}.")
    for sub, _ in pairs:
        check_output_folder(output_root / sub, "output_dir")
    return True


def inference_datalist(
    input_dir: Union[str, os.PathLike],
    output_dir: Union[str, os.PathLike],
    overwrite: bool = False,
    outputs: Sequence[Sequence[str]] = (("", "seg"),),
    check_data: bool = True,
    channels: int = 1,
) -> List[Dict[str, str]]:
    """List the NIfTI files (``.nii``, ``.nii.gz``) directly inside `input_dir` that are to be segmented.

    The output folders are checked first (before any file is read or model loaded). Files are
    sorted by name. A file that cannot be read or holds NaN / infinite voxels is logged (name and
    reason) and left out, so that it gets no (empty) segmentation; :func:`inference_report` names
    it again at the end of the run. A file whose outputs all exist is left out unless `overwrite`.
    Sub-folders are not searched.

    Args:
        input_dir: folder of input images.
        output_dir: folder of the outputs; must be neither `input_dir` nor inside it.
        overwrite: also list files whose outputs exist (they are written again).
        outputs: ``[subfolder, postfix]`` pairs of the outputs of a case, ``<output_dir>/<subfolder>/
            <case_id>_<postfix>.nii.gz`` (``""`` = `output_dir` itself); a case is done when all exist.
        check_data: read each image's data once to find truncated files and non-finite voxels
            (otherwise only the header; such files then fail when loaded for inference).
        channels: the network's input channels: 1 takes 3D images, more take ``(X, Y, Z, channels)``.

    Returns:
        ``[{"image": absolute path, "case_id": file name without suffix}, ...]``; ``[]`` when
        nothing is left to do (logged).

    Raises:
        FileNotFoundError: `input_dir` does not exist or is not a folder.
        NotADirectoryError: an output folder is, or lies under, an existing file.
        PermissionError: an output folder, or the folder it would be created in, is not writable.
        ValueError: `output_dir` is `input_dir` or inside it; two inputs share a case id
            (``a.nii`` and ``a.nii.gz``); `outputs` is malformed.

    Example::

        items = inference_datalist("scans", "segmentations", outputs=[["", "seg"], ["probability", "prob"]])
    """
    check_inference_folders(input_dir, output_dir, outputs)
    input_path = Path(input_dir).expanduser().resolve()
    output_root = Path(output_dir).expanduser().resolve()
    pairs = [tuple(p) for p in outputs]
    files = _nifti_inputs(input_path)
    seen: Dict[str, Path] = {}
    for path in files:
        case_id = case_id_of(path)
        if case_id in seen:
            raise InvalidInputError(
                f"two input files share the case id {case_id!r} and would write the same outputs: "
                f"{seen[case_id].name!r} and {path.name!r}; rename or move one of them."
            )
        seen[case_id] = path

    items: List[Dict[str, str]] = []
    done = refused = 0
    for path in files:
        case_id = case_id_of(path)
        if not overwrite and _has_outputs(output_root, case_id, pairs):
            done += 1
            continue
        problem = _input_problem(path, check_data, channels)
        if problem is not None:
            refused += 1
            logger.error(f"skipping input {path.name!r} ({path}): {problem}")
            continue
        items.append({"image": str(path), "case_id": case_id})
    logger.info(
        f"inference: {len(files)} NIfTI file(s) in {str(input_path)!r}: {len(items)} to segment, "
        f"{done} already done (outputs exist; --overwrite true to redo), {refused} refused (unreadable or "
        "non-finite) and skipped."
    )
    if not items:
        logger.info("inference: nothing to do.")
    return items


def _has_outputs(output_root: Path, case_id: str, outputs: Sequence[Sequence[str]]) -> bool:
    """Whether every ``[subfolder, postfix]`` output of `case_id` exists."""
    return all(output_path(output_root / sub, case_id, postfix).is_file() for sub, postfix in outputs)


def inference_report(
    input_dir: Union[str, os.PathLike],
    output_dir: Union[str, os.PathLike],
    outputs: Sequence[Sequence[str]] = (("", "seg"),),
    channels: int = 1,
) -> str:
    """End an inference run: check that every NIfTI input of `input_dir` has all its outputs.

    Called as the last step of ``inferring`` in ``bundles/la/configs/inference.yaml``. It looks at
    the files on disk, so it reports what the run left, whatever happened during it.

    Args:
        input_dir: folder of input images (as for :func:`inference_datalist`).
        output_dir: folder of the outputs.
        outputs: ``[subfolder, postfix]`` pairs of the outputs of a case (as for :func:`inference_datalist`).
        channels: the network's input channels (as for :func:`inference_datalist`).

    Returns:
        ``"inference: <n> of <n> inputs segmented, outputs in <output_dir>"``, also printed.

    Raises:
        SystemExit: some inputs have no outputs. Its message, which Python prints as the last line
            of a ``python -m monai.bundle run`` (exit status 1), names each such input, its path and
            why (unreadable, non-finite voxels, ...): ``inference: 1 of 2 inputs not segmented (no
            output written for them): 'a.nii.gz' (/x/a.nii.gz): 8 non-finite voxels (8 NaN, 0
            infinite) of 4000; expected finite intensities. ...``
    """
    input_path = Path(input_dir).expanduser().resolve()
    output_root = Path(output_dir).expanduser().resolve()
    pairs = [tuple(p) for p in outputs]
    files = _nifti_inputs(input_path)
    missing = [p for p in files if not _has_outputs(output_root, case_id_of(p), pairs)]
    if missing:
        reasons = [f"{p.name!r} ({p}): {_input_problem(p, channels=channels) or 'no output written'}" for p in missing]
        raise SystemExit(
            f"inference: {len(missing)} of {len(files)} inputs not segmented (no output written for them): "
            + "; ".join(reasons)
            + ". Fix or remove these files and run again (inputs with outputs are skipped)."
        )
    summary = f"inference: {len(files)} of {len(files)} inputs segmented, outputs in {output_dir}"
    print(summary)
    return summary


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` that writes each file atomically (:func:`sasnet_components.utils.io.atomic_path`).

    A run stopped while it saves leaves no partial file under the final name, so a re-run does not
    take a truncated output for a finished case, and ``--overwrite true`` keeps the previous output
    until the new one is complete. Use it as ``SaveImaged(writer=AtomicNibabelWriter)``.
    """

    def write(self, filename: Union[str, os.PathLike], verbose: bool = False, **obj_kwargs) -> None:
        """Write to a temporary file next to `filename` (same suffixes, so nibabel picks the same format), then move it over."""
        path = Path(filename)
        with atomic_path(path, suffix="".join(path.suffixes[-2:])) as tmp:
            super().write(tmp, verbose=verbose, **obj_kwargs)


def _with_meta(tensor: torch.Tensor, like: torch.Tensor) -> MetaTensor:
    """`tensor` as a MetaTensor carrying a copy of the metadata (affine, file name, ...) of `like`."""
    meta = copy.deepcopy(like.meta) if isinstance(like, MetaTensor) else {}
    affine = like.affine.clone() if isinstance(like, MetaTensor) else None
    out = MetaTensor(torch.as_tensor(tensor).detach().clone(), meta=meta)
    if affine is not None:
        out.affine = affine
    return out


class SplitPredictiond(MapTransform):
    """Split a :class:`~sasnet_components.DualBranchUncertainty` output into label, probability and uncertainty.

    The input, `(num_classes + 1, *spatial)`, holds the mean softmax probability in channels
    ``[:num_classes]`` and the decoders' disagreement in the last channel. Applied after the
    output has been resampled back to the input image's space (``Invertd``), so that the label is
    the argmax of the resampled probabilities.

    Args:
        keys: the prediction key (one).
        num_classes: number of classes of the network (background included), >= 2.
        label_key: where the label map `(1, *spatial)` (uint8, argmax over classes) goes.
        probability_key: where the foreground probability `(num_classes - 1, *spatial)` in [0, 1] goes.
        uncertainty_key: where the disagreement `(1, *spatial)` in [0, 1] goes.

    Raises:
        ValueError: invalid `num_classes`, or a prediction whose channel count is not `num_classes + 1`.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        num_classes: int = 2,
        label_key: str = "label",
        probability_key: str = "probability",
        uncertainty_key: str = "uncertainty",
    ) -> None:
        super().__init__(keys)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise InvalidInputError(f"`num_classes` must be an integer >= 2, got {num_classes!r}.")
        self.num_classes = num_classes
        self.label_key = label_key
        self.probability_key = probability_key
        self.uncertainty_key = uncertainty_key

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            if pred.ndim < 2 or pred.shape[0] != self.num_classes + 1:
                raise ValueError(
                    f"`{key}` must have shape ({self.num_classes + 1}, *spatial) (num_classes probabilities + 1 "
                    f"disagreement channel), got shape {tuple(pred.shape)}."
                )
            values = torch.as_tensor(pred).float()
            prob = values[: self.num_classes]
            d[self.label_key] = _with_meta(torch.argmax(prob, dim=0, keepdim=True).to(torch.uint8), pred)
            d[self.probability_key] = _with_meta(prob[1:].clamp(0.0, 1.0), pred)
            d[self.uncertainty_key] = _with_meta(values[self.num_classes :].clamp(0.0, 1.0), pred)
        return d
