"""A small synthetic Left-Atrium-like dataset, generated locally for demos and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["make_synthetic_la", "make_synthetic_nifti"]


def _case(rng: np.random.Generator, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One volume: a bright lobed blob (the 'atrium') in textured background, z-scored."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    size = np.asarray(shape, dtype=np.float32)
    label = np.zeros(shape, dtype=bool)
    centre = size * rng.uniform(0.4, 0.6, 3)
    for lobe in range(3):  # a main body and two smaller lobes
        radii = size * (rng.uniform(0.14, 0.22, 3) if lobe == 0 else rng.uniform(0.07, 0.12, 3))
        offset = 0 if lobe == 0 else rng.uniform(-0.15, 0.15, 3) * size
        c = (centre + offset)[:, None, None, None]
        label |= (((grid - c) / radii[:, None, None, None]) ** 2).sum(0) <= 1.0
    image = rng.normal(0.0, 0.35, shape).astype(np.float32)
    image += 0.3 * np.sin(grid[0] / 5.0 + rng.uniform(0, 6)) * np.cos(grid[1] / 7.0)  # background texture
    image[label] += 1.2 + 0.2 * rng.standard_normal(int(label.sum()))
    image = (image - image.mean()) / image.std()
    return image.astype(np.float32), label.astype(np.uint8)


def make_synthetic_la(
    output_dir: str, num_train: int = 12, num_test: int = 2, shape: Sequence[int] = (64, 64, 32), seed: int = 0
) -> Path:
    """Write a synthetic dataset in the community LA layout (h5 files and split lists).

    Layout: ``<output_dir>/2018LA_Seg_Training Set/<id>/mri_norm2.h5`` with datasets ``image``
    (float32, z-scored) and ``label`` (uint8 in {0, 1}), ``train.list`` and ``test.list``. Each
    case is a bright lobed blob in a textured background, so a network learns it in a few
    hundred iterations. Used by the demo (``scripts/demo.sh``) and the bundle tests.

    Args:
        output_dir: folder to create (may exist; existing cases are overwritten).
        num_train: number of cases in ``train.list``.
        num_test: number of cases in ``test.list``.
        shape: spatial shape of every volume.
        seed: random seed; the same seed gives the same files.

    Returns:
        The dataset root.
    """
    import h5py

    root = Path(output_dir)
    cases = root / "2018LA_Seg_Training Set"
    rng = np.random.default_rng(seed)
    ids = [f"SYN{i:03d}" for i in range(num_train + num_test)]
    for case_id in ids:
        image, label = _case(rng, shape)
        (cases / case_id).mkdir(parents=True, exist_ok=True)
        with h5py.File(cases / case_id / "mri_norm2.h5", "w") as f:
            f.create_dataset("image", data=image)
            f.create_dataset("label", data=label)
    (root / "train.list").write_text("\n".join(ids[:num_train]) + "\n")
    (root / "test.list").write_text("\n".join(ids[num_train:]) + "\n")
    return root


def make_synthetic_nifti(
    output_dir: str,
    num_cases: int = 12,
    num_labeled: int = 6,
    shape: Sequence[int] = (64, 64, 32),
    spacing: Sequence[float] = (1.0, 1.0, 2.0),
    seed: int = 0,
) -> Path:
    """Write a synthetic dataset as a user holds one: a folder of NIfTI images, labels for some.

    Layout: ``<output_dir>/images/<id>.nii.gz`` (MR-like whole numbers in [0, 1000], int16) for
    ``num_cases`` cases ``CASE000 ...``, ``<output_dir>/labels/<id>.nii.gz`` (uint8 {0, 1}) for the
    first ``num_labeled`` of them; affine ``diag(spacing)``. The blobs are those of
    :func:`make_synthetic_la`. Used by the README's walk-through of ``scripts/prepare_dataset.py``.

    Returns:
        The dataset root.
    """
    import nibabel as nib

    if not 0 <= num_labeled <= num_cases:
        raise ValueError(f"`num_labeled` must be in [0, num_cases={num_cases}], got {num_labeled}.")
    root = Path(output_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    if num_labeled:
        (root / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.diag([*[float(s) for s in spacing], 1.0])
    for i in range(num_cases):
        image, label = _case(rng, shape)
        scaled = np.clip(np.round(300.0 + 150.0 * image), 0, 1000).astype(np.int16)
        nib.save(nib.Nifti1Image(scaled, affine), str(root / "images" / f"CASE{i:03d}.nii.gz"))
        if i < num_labeled:
            nib.save(nib.Nifti1Image(label, affine), str(root / "labels" / f"CASE{i:03d}.nii.gz"))
    return root
