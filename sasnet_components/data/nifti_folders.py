"""A user's own scans: a folder of NIfTI images and a folder of labels for some of them, prepared for any bundle.

:func:`prepare_nifti_folders` matches images and labels by name (:func:`match_images_labels`),
measures the dataset's fingerprint (:func:`dataset_fingerprint`), writes the prepared files and a
datalist through the shared preparation core (:func:`~sasnet_components.data.prepare.prepare_cases`),
and next to them ``fingerprint.json`` and ``fingerprint.yaml``, the suggested override file that
any bundle's ``train.yaml`` takes::

    python -m monai.bundle run training \\
        --config_file "['bundles/la/configs/train.yaml','data/mine/fingerprint.yaml']"

The split: the images with a label are the labelled cases; a share of them (``validation_fraction``,
the last ones by name) becomes the validation list, the others the labelled training cases; the
images without a label are the unlabelled ones. The validation cases also stay in the unlabelled
pool (their labels are read by validation alone), as the bundles' honest default protocol expects.
Each prepared image is reoriented to RAS (as the bundles' inference sees scans) and keeps its voxel
size; its intensities are normalised as the fingerprint says (CT: clipped to the labelled
foreground's 0.5-99.5 percentiles, then z-scored; MR: z-scored), and the bundle resamples to the
suggested spacing while training, evaluating and inferring. Labels hold 0 and 1 (one structure).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import nibabel as nib
import numpy as np
from tqdm import tqdm

from sasnet_components.data.checks import nonfinite_message, read_error
from sasnet_components.data.fingerprint import (
    case_statistics,
    dataset_fingerprint,
    match_images_labels,
    normalise_intensities,
    suggest_overrides,
)
from sasnet_components.data.prepare import CaseData, CaseReader, CaseSource, prepare_cases, resolve_folders
from sasnet_components.utils.errors import InvalidInputError, MissingInputError
from sasnet_components.utils.io import atomic_write_text

__all__ = ["NiftiFolderReader", "load_nifti_case", "prepare_nifti_folders"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def load_nifti_case(
    case_id: str, image_path: Path, label_path: Optional[Path]
) -> Tuple[np.ndarray, Optional[np.ndarray], Tuple[float, ...], np.ndarray]:
    """Read one case reoriented to RAS (``nibabel.as_closest_canonical``): image `(X, Y, Z)` (a
    trailing axis of size 1 is dropped), label of the same shape in {0, 1} (uint8, or None), spacing
    (mm) and the RAS affine.

    Raises:
        OSError: an unreadable file (names the case and the file).
        ValueError: not 3D, label shape other than the image's, non-finite voxels, label values other
            than 0 and 1, or label and image grids that differ (affines).
    """
    arrays = []
    for what, path in (("image", image_path), ("label", label_path)):
        if path is None:
            arrays.append((None, None))
            continue
        try:
            img = nib.as_closest_canonical(nib.load(str(path)))  # RAS, as the bundles' inference sees scans
            array = np.asarray(img.dataobj)
        except Exception as e:  # nibabel raises many types for damaged files
            raise read_error(f"case '{case_id}': cannot read {what} '{path}'", e) from e
        if array.ndim == 4 and array.shape[3] == 1:
            array = array[..., 0]
        if array.ndim != 3:
            raise InvalidInputError(f"case '{case_id}': {what} '{path}' has shape {array.shape}; expected a 3D volume.")
        problem = nonfinite_message(array)
        if problem is not None:
            raise InvalidInputError(f"case '{case_id}': {what} '{path}' has {problem}; expected finite values.")
        arrays.append((array, img))
    (image, image_img), (label, label_img) = arrays
    if label is not None:
        if label.shape != image.shape:
            raise InvalidInputError(
                f"case '{case_id}': label shape {label.shape} differs from image shape {image.shape} ('{label_path}')."
            )
        if not np.allclose(label_img.affine, image_img.affine, atol=1e-3):
            raise InvalidInputError(
                f"case '{case_id}': label '{label_path}' lies on another grid than its image (affines differ); "
                "expected a label map in the image's voxels."
            )
        values = np.unique(label)
        if not set(values.tolist()) <= {0, 1}:
            raise InvalidInputError(
                f"case '{case_id}': label '{label_path}' must hold 0 (background) and 1 (the structure), as the "
                f"bundles segment one structure; got values {values[:10].tolist()}."
            )
        label = label.astype(np.uint8)
    spacing = tuple(float(z) for z in image_img.header.get_zooms()[:3])
    return image, label, spacing, np.asarray(image_img.affine, dtype=np.float64)


class NiftiFolderReader(CaseReader):
    """:class:`~sasnet_components.data.prepare.CaseReader` of a user's NIfTI folders.

    Args:
        cases: ``{case id: (image path, label path or None)}`` (see :func:`match_images_labels`).
        normalisation: the fingerprint's intensity normalisation (:func:`normalise_intensities`).
        name: the dataset's name in the datalist.
    """

    layout = "nifti"

    def __init__(
        self, cases: Dict[str, Tuple[Path, Optional[Path]]], normalisation: Dict[str, Any], name: str = "dataset"
    ) -> None:
        self.cases = dict(cases)
        self.normalisation = dict(normalisation)
        self.name = name

    @property
    def parameters(self) -> Dict[str, Any]:
        return {"normalisation": self.normalisation}

    def find_cases(self, root: Path, train_ids: Sequence[str], test_ids: Sequence[str]):
        sources = []
        for case_id in train_ids:
            if case_id not in self.cases:
                raise MissingInputError(f"case '{case_id}' has no image in '{root}'.")
            image, label = self.cases[case_id]
            sources.append(CaseSource(case_id, "train", image, stamp=(image,) if label is None else (image, label)))
        return sources, list(test_ids)

    def read_case(self, source: CaseSource) -> CaseData:
        image, label, spacing, affine = load_nifti_case(source.case_id, *self.cases[source.case_id])
        return CaseData(normalise_intensities(image, self.normalisation), label, spacing, {}, affine)


def _yaml_overrides(overrides: Dict[str, Any], fingerprint: Dict[str, Any]) -> str:
    """The override file: one key per line with a comment on where it comes from."""
    norm = fingerprint["normalisation"]
    how = (
        f"clipped to [{norm['clip'][0]:g}, {norm['clip'][1]:g}] (labelled foreground 0.5-99.5 percentiles), then z-scored"
        if norm["method"] == "clip_zscore"
        else "z-scored per volume"
    )
    lines = [
        "# Suggested by scripts/prepare_dataset.py from the dataset's fingerprint (fingerprint.json); layer it last:",
        "#   --config_file \"['bundles/<bundle>/configs/train.yaml','<this file>']\"",
        f"# {fingerprint['num_cases']} cases, {fingerprint['modality']} (guessed), median spacing "
        f"{fingerprint['median_spacing']} mm, median shape {fingerprint['median_shape']}; intensities {how} when prepared.",
        f"dataset_dir: {json.dumps(overrides['dataset_dir'])}",
        f"num_labeled: {overrides['num_labeled']}   # labelled training cases (the validation cases are not among them)",
        f"resample_spacing: {json.dumps(overrides['resample_spacing'])}   # the median spacing: training, evaluation and inference resample to it",
        f"patch_size: {json.dumps(overrides['patch_size'])}   # multiples of 16 within the median shape at that spacing",
        f"views: {json.dumps(overrides['views'])}   # the identity and the swaps of axes of equal patch side and voxel size",
        "# evaluate.yaml: windows of the patch, half a patch apart",
        f"eval_roi_size: {json.dumps(overrides['eval_roi_size'])}",
        f"eval_stride: {json.dumps(overrides['eval_stride'])}",
        "# inference.yaml on raw scans (reoriented to RAS): the intensities the prepared volumes have",
        f"intensity: {overrides['intensity']}",
        f"intensity_window: {json.dumps(overrides['intensity_window'])}",
    ]
    return "\n".join(lines) + "\n"


def prepare_nifti_folders(
    images_dir: PathLike,
    output_dir: PathLike,
    labels_dir: Optional[PathLike] = None,
    validation_fraction: float = 0.2,
    name: str = "dataset",
    overwrite: bool = False,
    progress: bool = False,
) -> Dict[str, Any]:
    """Prepare a user's NIfTI folders for the bundles, with the fingerprint and the suggested overrides.

    Args:
        images_dir: folder of NIfTI images; never written.
        output_dir: destination (must not overlap the input folders); gets ``imagesTr/``,
            ``labelsTr/``, ``datalist.json``, ``manifest.json``, ``fingerprint.json``, ``fingerprint.yaml``.
        labels_dir: folder of labels for some of the images (matched by name), or None.
        validation_fraction: share of the labelled cases in the validation list (rounded, at least 1
            when there are 2 or more labelled cases, always leaving one labelled training case).
        name: the dataset's name in the datalist.
        overwrite: rewrite every case and replace a datalist this function did not write.
        progress: progress bars on stderr.

    Returns:
        ``{"datalist", "fingerprint", "overrides"}``.

    Raises:
        FileNotFoundError: a folder that is not there.
        ValueError: no image, no labelled image, a `validation_fraction` outside [0, 1), overlapping
            folders; after all other cases are prepared, the refused cases (unreadable file, wrong
            shape, non-finite voxels, label values ...), each named.
    """
    if not 0.0 <= float(validation_fraction) < 1.0:
        raise InvalidInputError(f"`validation_fraction` must be in [0, 1), got {validation_fraction!r}.")
    root, out = resolve_folders(images_dir, output_dir, name="images")
    if labels_dir is not None:
        resolve_folders(labels_dir, output_dir, name="labels")
    cases, unmatched = match_images_labels(root, labels_dir)
    labeled = [case for case, (_, label) in cases.items() if label is not None]
    unlabeled = [case for case in cases if case not in labeled]
    if not labeled:
        raise InvalidInputError(
            f"no image of '{root}' has a label{'' if labels_dir is None else f' in {str(labels_dir)!r}'}; "
            "training needs at least one labelled case (labels are matched by file name)."
        )
    num_validation = min(len(labeled) - 1, max(1 if len(labeled) > 1 else 0, round(validation_fraction * len(labeled))))
    if validation_fraction == 0:
        num_validation = 0
    train_labeled, validation = labeled[: len(labeled) - num_validation], labeled[len(labeled) - num_validation :]
    logger.info(
        "%d images: %d labelled (%d for training, %d for validation), %d unlabelled; %d label files unmatched",
        len(cases), len(labeled), len(train_labeled), len(validation), len(unlabeled), len(unmatched),
    )

    stats = []
    for case in tqdm(cases, desc="fingerprint", unit="case", leave=False, disable=not progress):
        try:
            image, label, spacing, _ = load_nifti_case(case, *cases[case])
        except (OSError, ValueError) as e:
            logger.warning("case %s left out of the fingerprint: %s", case, e)  # the preparation refuses it, named
            continue
        stats.append(case_statistics(image, label, spacing))
    if not stats:
        raise InvalidInputError(f"no image of '{root}' could be read; see the messages above.")
    fingerprint = dataset_fingerprint(stats)
    logger.info(
        "fingerprint: %s, median spacing %s mm, median shape %s, normalisation %s",
        fingerprint["modality"], fingerprint["median_spacing"], fingerprint["median_shape"], fingerprint["normalisation"],
    )

    reader = NiftiFolderReader(cases, fingerprint["normalisation"], name=name)
    datalist = prepare_cases(
        reader,
        root,
        out,
        train_labeled + unlabeled + validation,
        [],
        num_labeled=len(train_labeled),
        num_validation=len(validation),
        overwrite=overwrite,
        progress=progress,
        program="prepare_dataset",
        train_list_name="the images (labelled first)",
        log=logger,
    )
    overrides = suggest_overrides(fingerprint, str(out), num_labeled=len(train_labeled))
    atomic_write_text(out / "fingerprint.json", json.dumps(fingerprint, indent=2) + "\n")
    atomic_write_text(out / "fingerprint.yaml", _yaml_overrides(overrides, fingerprint))
    logger.info("wrote '%s' and '%s'", out / "fingerprint.json", out / "fingerprint.yaml")
    return {"datalist": datalist, "fingerprint": fingerprint, "overrides": overrides}
