"""Tests of ``AtomicNibabelWriter``: the same file as MONAI's NibabelWriter, nothing partial left on a failure."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import NibabelWriter

from sasnet_components.data.inference import AtomicNibabelWriter, intensity_transforms

AFFINE = np.diag([0.5, 0.75, 2.0, 1.0])


def _write(writer_cls, path: Path, value: float) -> None:
    writer = writer_cls(output_dtype=np.float32)
    writer.set_data_array(torch.full((1, 4, 3, 2), value), channel_dim=0)
    writer.set_metadata({"affine": AFFINE, "original_affine": AFFINE}, resample=False)
    writer.write(path)


def test_writes_what_nibabel_writer_writes(tmp_path: Path):
    _write(NibabelWriter, tmp_path / "plain.nii.gz", 3.0)
    _write(AtomicNibabelWriter, tmp_path / "atomic.nii.gz", 3.0)
    plain, atomic = nib.load(str(tmp_path / "plain.nii.gz")), nib.load(str(tmp_path / "atomic.nii.gz"))
    np.testing.assert_array_equal(atomic.get_fdata(), plain.get_fdata())
    np.testing.assert_array_equal(atomic.affine, plain.affine)
    assert atomic.shape == (4, 3, 2) and sorted(p.name for p in tmp_path.iterdir()) == ["atomic.nii.gz", "plain.nii.gz"]


def test_failed_write_keeps_the_previous_file_and_leaves_nothing(tmp_path: Path, monkeypatch):
    target = tmp_path / "case_seg.nii.gz"
    _write(AtomicNibabelWriter, target, 1.0)

    def interrupted(img, filename):  # writes part of the file, then stops
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(nib, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _write(AtomicNibabelWriter, target, 2.0)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["case_seg.nii.gz"]  # no temporary
    assert float(nib.load(str(target)).get_fdata().max()) == 1.0  # the previous output, whole


def test_brain_zscore_clips_then_normalises_the_brain_only():
    rng = np.random.default_rng(0)
    brain = rng.normal(100.0, 10.0, size=2000).astype(np.float32)
    brain[0] = 1e5  # one hot voxel: clipped at the volume's 99.9th percentile
    volume = np.concatenate([np.zeros(1000, np.float32), brain])
    data = {"image": torch.from_numpy(volume).reshape(1, 30, 10, 10)}
    for t in intensity_transforms("brain_zscore"):
        data = t(data)
    out = torch.as_tensor(data["image"]).flatten().numpy()
    assert (out[:1000] == 0).all()  # background stays 0
    clipped = np.minimum(volume, np.percentile(volume, 99.9))[1000:]
    np.testing.assert_allclose(out[1000:], (clipped - clipped.mean()) / clipped.std(), rtol=1e-4, atol=1e-4)
    assert abs(out[1000:].mean()) < 1e-4 and abs(out[1000:].std() - 1.0) < 1e-3
    assert out.max() < 10.0  # the hot voxel no longer dominates
    # the other options are unchanged
    assert intensity_transforms("none") == [] and len(intensity_transforms("zscore")) == 1


def test_inputs_of_a_multi_channel_network(tmp_path):
    from sasnet_components.data.inference import _input_problem

    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 4), np.float32), np.eye(4)), str(tmp_path / "four.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), str(tmp_path / "three.nii.gz"))
    assert _input_problem(tmp_path / "four.nii.gz", channels=4) is None
    assert _input_problem(tmp_path / "three.nii.gz") is None
    assert _input_problem(tmp_path / "three.nii.gz", channels=4) == (
        "expected an image of shape (X, Y, Z, 4) (4 channels), got shape (4, 5, 6)"
    )
    assert _input_problem(tmp_path / "four.nii.gz") == "expected a 3D image, got shape (4, 5, 6, 4)"
