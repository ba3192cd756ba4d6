"""Training pool of a MONAI Label datastore: its labeled pairs plus the folder's images without a label.

MONAI Label's ``BundleTrainTask`` hands a bundle only the labeled pairs (``train#dataset#data``,
after splitting off its validation share into ``validate#dataset#data``). SASNet also needs the
unlabeled scans, which in a ``LocalDatastore`` are the images of the same studies folder that have
no label file; :func:`datastore_datalists` finds them and builds the same training pool as
:func:`sasnet_components.data.semi_supervised_datalists`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Dict, List, Optional

from sasnet_components.utils.errors import InvalidInputError, MissingInputError

__all__ = ["datastore_datalists"]

logger = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".nii.gz", ".nii")


def _case_id(path: Path, extensions: Sequence[str]) -> str:
    name = path.name
    for ext in sorted(extensions, key=len, reverse=True):
        if name.lower().endswith(ext.lower()):
            return name[: -len(ext)]
    return path.stem


def _check_items(items: Sequence[Mapping[str, Any]], name: str, keys: Sequence[str]) -> List[Dict[str, Any]]:
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidInputError(f"{name}[{i}] must be a dict with keys {list(keys)}, got {type(item).__name__}.")
        missing = [k for k in keys if k not in item]
        if missing:
            raise InvalidInputError(f"{name}[{i}] has no {missing} entry; expected keys {list(keys)}, got {sorted(item)}.")
        for k in keys:
            if not os.path.isfile(item[k]):
                raise MissingInputError(f"{name}[{i}]: {k} file {item[k]!r} does not exist.")
        out.append(dict(item))
    return out


def datastore_datalists(
    labeled: Sequence[Mapping[str, Any]],
    validation: Sequence[Mapping[str, Any]] = (),
    image_dirs: Optional[Sequence[str]] = None,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
) -> Dict[str, Any]:
    """Labeled pairs plus the unlabeled images of their folder(s), as SASNet's training pool.

    The unlabeled images are the files directly inside `image_dirs` (by default the folders of
    the labeled images, i.e. the datastore's studies folder) whose name ends with one of
    `extensions` and that are neither a labeled training image nor a validation image. Their
    labels, if any exist elsewhere, are never read. Case ids are file names without extension;
    they key the SAR memory, so they must be unique.

    Args:
        labeled: ``[{"image": path, "label": path}, ...]``, MONAI Label's ``train#dataset#data``.
        validation: MONAI Label's ``validate#dataset#data``; these images leave the unlabeled pool.
        image_dirs: folders searched for unlabeled images; ``None``: the folders of `labeled`.
        extensions: image file name endings, case-insensitive.

    Returns:
        ``{"train": labeled items then unlabeled items (each with ``"case_id"`` and ``"labeled"``),
        "labeled_indices", "unlabeled_indices", "validation", "num_labeled", "num_unlabeled"}``,
        the layout of :func:`sasnet_components.data.semi_supervised_datalists`.

    Raises:
        ValueError: no labeled pair, an item without ``image``/``label``, no unlabeled image in
            the folders, or two images with the same case id.
        FileNotFoundError: a listed file or a folder of `image_dirs` that does not exist.
    """
    if len(labeled) == 0:
        raise InvalidInputError(
            "no labeled image/label pair: SASNet training needs at least one labeled image in the datastore "
            "(MONAI Label passes them as `train#dataset#data`; check its `val_split` did not take them all)."
        )
    labeled_items = _check_items(labeled, "labeled", ("image", "label"))
    validation_items = _check_items(validation, "validation", ("image", "label"))
    dirs = [Path(p) for p in image_dirs] if image_dirs is not None else []
    if image_dirs is None:
        for item in labeled_items:
            folder = Path(item["image"]).resolve().parent
            if folder not in dirs:
                dirs.append(folder)
    for folder in dirs:
        if not folder.is_dir():
            raise MissingInputError(f"image folder {str(folder)!r} (searched for unlabeled images) does not exist.")

    taken = {Path(item["image"]).resolve() for item in labeled_items + validation_items}
    unlabeled_paths = sorted(
        path
        for folder in dirs
        for path in folder.iterdir()
        if path.is_file()
        and any(path.name.lower().endswith(ext.lower()) for ext in extensions)
        and path.resolve() not in taken
    )
    if not unlabeled_paths:
        raise InvalidInputError(
            f"no unlabeled image (names ending in {list(extensions)}, without a label) in {[str(d) for d in dirs]}: "
            "SASNet trains on labeled and unlabeled images; add unlabeled scans to the datastore."
        )

    train = [{**item, "case_id": _case_id(Path(item["image"]), extensions), "labeled": True} for item in labeled_items]
    train += [{"image": str(p), "case_id": _case_id(p, extensions), "labeled": False} for p in unlabeled_paths]
    seen: Dict[str, str] = {}
    for item in train:
        if item["case_id"] in seen:
            raise InvalidInputError(
                f"case id {item['case_id']!r} of {item['image']!r} is also the id of {seen[item['case_id']]!r}; "
                "image file names (without extension) must be unique."
            )
        seen[item["case_id"]] = item["image"]
    n_labeled = len(labeled_items)
    logger.info(
        "datastore: %d labeled, %d unlabeled training images, %d validation images.",
        n_labeled,
        len(unlabeled_paths),
        len(validation_items),
    )
    return {
        "train": train,
        "labeled_indices": list(range(n_labeled)),
        "unlabeled_indices": list(range(n_labeled, len(train))),
        "validation": validation_items,
        "num_labeled": n_labeled,
        "num_unlabeled": len(unlabeled_paths),
    }
