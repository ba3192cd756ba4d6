"""scripts/prepare_dataset.py: a user's NIfTI folders prepared, fingerprinted and trained on through a bundle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from monai.bundle import ConfigWorkflow

from sasnet_components.data import make_synthetic_nifti

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "prepare_dataset.py"
TRAIN = str(REPO / "bundles" / "la" / "configs" / "train.yaml")


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args), "--progress", "false"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def mine(tmp_path_factory) -> Path:
    # 8 images of 32x32x16 at 1 x 1 x 2 mm, labels for the first 5
    return make_synthetic_nifti(str(tmp_path_factory.mktemp("mine") / "raw"), num_cases=8, num_labeled=5, shape=(32, 32, 16))


def test_prepares_splits_fingerprints_and_trains(mine, tmp_path):
    out = tmp_path / "prepared"
    run = _run("--images", mine / "images", "--labels", mine / "labels", "--output_dir", out)
    assert run.returncode == 0, run.stderr
    datalist = json.loads((out / "datalist.json").read_text())
    # 5 labelled: 1 (20 %) for validation, the last by name; 4 for training; 3 unlabelled without a label entry
    assert [c["case_id"] for c in datalist["labeled"]] == ["CASE000", "CASE001", "CASE002", "CASE003"]
    assert [c["case_id"] for c in datalist["validation"]] == ["CASE004"]
    assert [c["case_id"] for c in datalist["unlabeled"]] == ["CASE005", "CASE006", "CASE007", "CASE004"]
    assert all("label" not in c for c in datalist["unlabeled"][:3]) and "label" in datalist["validation"][0]
    # each prepared image keeps its affine; MR-like whole numbers are z-scored
    prepared = nib.load(str(out / "imagesTr" / "CASE006.nii.gz"))
    raw = nib.load(str(mine / "images" / "CASE006.nii.gz"))
    assert np.allclose(prepared.affine, raw.affine) and prepared.shape == raw.shape
    values = np.asarray(prepared.dataobj)
    assert abs(values.mean()) < 1e-4 and abs(values.std() - 1) < 1e-3
    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint["modality"] == "MR" and fingerprint["median_spacing"] == [1.0, 1.0, 2.0]
    assert fingerprint["median_shape"] == [32, 32, 16] and fingerprint["normalisation"] == {"method": "zscore"}
    overrides = yaml.safe_load((out / "fingerprint.yaml").read_text())
    assert overrides == {
        "dataset_dir": str(out.resolve()),
        "num_labeled": 4,
        "resample_spacing": [1.0, 1.0, 2.0],
        "patch_size": [32, 32, 16],
        "views": [[0, 1, 2], [1, 0, 2]],
        "eval_roi_size": [32, 32, 16],
        "eval_stride": [16, 16, 8],
        "intensity": "zscore",
        "intensity_window": None,
    }
    # any bundle's train.yaml takes the file: two iterations of the LA bundle on these cases
    workflow = ConfigWorkflow(
        config_file=[TRAIN, str(out / "fingerprint.yaml")], run_id="training", device="cpu", amp=False,
        output_dir=str(tmp_path / "runs"), ckpt_dir=str(tmp_path / "models"), max_iterations=2, val_interval=2,
        checkpoint_interval=2, num_workers=0, sw_batch_size=2, **{"network_def#n_filters": 2},
    )
    workflow.initialize()
    workflow.run()
    state = torch.load(tmp_path / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 2 and sorted(state["sar"]["memory"]) == ["CASE000", "CASE001", "CASE002", "CASE003"]
    # a second run skips every case
    again = _run("--images", mine / "images", "--labels", mine / "labels", "--output_dir", out)
    assert again.returncode == 0 and "0 written, 8 skipped" in again.stdout


def test_bad_inputs_end_with_their_message(mine, tmp_path):
    run = _run("--images", tmp_path / "nowhere", "--output_dir", tmp_path / "out")
    assert run.returncode == 1 and run.stderr.strip().splitlines()[-1].startswith("prepare_dataset.py: error: `images`")
    run = _run("--images", mine / "images", "--output_dir", tmp_path / "out")
    assert run.returncode == 1 and "has a label" in run.stderr.strip().splitlines()[-1]
    # a label of another shape is refused naming the case; a label without image is reported
    labels = tmp_path / "labels"
    labels.mkdir()
    for path in (mine / "labels").iterdir():
        (labels / path.name).write_bytes(path.read_bytes())
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(labels / "CASE001.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(labels / "OTHER.nii.gz"))
    run = _run("--images", mine / "images", "--labels", labels, "--output_dir", tmp_path / "out")
    assert run.returncode == 1
    assert "1 label file(s) match no image and are not used: ['OTHER']" in run.stdout
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("prepare_dataset.py: error: 1 of 8 cases refused") and "CASE001" in last and "differs from image shape" in last
