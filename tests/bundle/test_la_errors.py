"""The LA bundle's commands as a user runs them (``python -m monai.bundle run ...`` in a process of its own):
a mistake in the input ends the run with its message as the last line of stderr, no traceback, exit status 1."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from sasnet_components import DualBranchVNet
from sasnet_components.data import make_synthetic_la
from sasnet_components.data.la import prepare_la

ROOT = Path(__file__).resolve().parents[2]
TRAIN = "bundles/la/configs/train.yaml"
EVALUATE = f"['{TRAIN}','bundles/la/configs/evaluate.yaml']"
INFER = f"['{TRAIN}','bundles/la/configs/inference.yaml']"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A prepared tiny dataset, a folder with one NIfTI scan, and a model.pt of a 2-filter network."""
    root = tmp_path_factory.mktemp("la_errors")
    raw = make_synthetic_la(str(root / "h5"), num_train=6, num_test=1, shape=(40, 40, 24), seed=0)
    prepare_la(str(raw), str(root / "prepared"), num_labeled=3, num_validation=2)
    (root / "scans").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(root / "scans" / "a.nii.gz"))
    torch.save(DualBranchVNet(n_filters=2).state_dict(), root / "model.pt")
    return root


def _bundle(run_id: str, config_file: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config_file, "--device", "cpu", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _assert_ends_with(result: subprocess.CompletedProcess, *parts: str) -> str:
    last = result.stderr.splitlines()[-1] if result.stderr else ""
    assert result.returncode == 1, result.stderr[-3000:]
    assert last.startswith("error: ") and all(p in last for p in parts), last
    assert "Traceback" not in result.stderr + result.stdout
    return last


def test_missing_dataset(work):
    result = _bundle("training", TRAIN, "--dataset_dir", str(work / "nowhere"))
    _assert_ends_with(result, f"datalist '{work / 'nowhere' / 'datalist.json'}' does not exist", "scripts/prepare_la.py")


def test_misspelled_option(work):
    result = _bundle("training", TRAIN, "--dataset_dir", str(work / "prepared"), "--max_iteration", "5")
    _assert_ends_with(result, "unknown config key(s) ['max_iteration']", "did you mean ['max_iterations']?")


def test_out_of_range_values(work):
    result = _bundle("training", TRAIN, "--dataset_dir", str(work / "prepared"), "--alpha", "2")
    assert _assert_ends_with(result) == "error: `alpha` must be in [0, 1], got 2."
    result = _bundle("training", TRAIN, "--dataset_dir", str(work / "prepared"), "--max_iterations", "0")
    assert result.stderr.splitlines()[-2:] == [
        "error: invalid training settings:",
        "  - `max_iterations` (training iterations) must be an integer >= 1, got 0.",
    ]
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout


def test_resume_from_a_model_file(work):
    result = _bundle("training", TRAIN, "--dataset_dir", str(work / "prepared"), "--resume_from", str(work / "model.pt"))
    _assert_ends_with(result, "`resume_from`", "holds network weights only", "checkpoints/checkpoint_*.pt")


def test_missing_checkpoint_is_found_before_any_input_is_read(work, tmp_path):
    result = _bundle("inferring", INFER, "--input_dir", str(work / "scans"), "--output_dir", str(tmp_path / "out"),
                     "--inference_checkpoint", str(work / "no" / "model.pt"))
    _assert_ends_with(result, f"`inference_checkpoint` '{work / 'no' / 'model.pt'}' does not exist", "demo_output/models/model.pt")
    assert "NIfTI file(s)" not in result.stdout  # the input folder was not listed yet
    assert not (tmp_path / "out").exists()


def test_checkpoint_of_another_network(work):
    result = _bundle("evaluating", EVALUATE, "--dataset_dir", str(work / "prepared"), "--eval_checkpoint", str(work / "model.pt"))
    _assert_ends_with(
        result,
        "its weights do not fit the configured network: 'encoder.levels.0.convs.0.conv.weight' has shape (2, 1, 3, 3, 3) "
        "in the checkpoint and (16, 1, 3, 3, 3) in the network",
        "--network_def#n_filters",
    )


def test_unusable_output_folder(work, tmp_path):
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file")
    result = _bundle("inferring", INFER, "--input_dir", str(work / "scans"), "--output_dir", str(blocker / "seg"),
                     "--inference_checkpoint", str(work / "model.pt"), "--network_def#n_filters", "2")
    _assert_ends_with(result, f"output folder '{blocker / 'seg'}' cannot be used: '{blocker}' is a file")


def test_unusable_training_output_folder_is_found_before_any_data_is_read(work, tmp_path):
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file")
    result = _bundle("training", TRAIN, "--dataset_dir", str(work / "prepared"), "--ckpt_dir", str(blocker / "models"))
    _assert_ends_with(result, f"output folder '{blocker / 'models'}' cannot be used: '{blocker}' is a file", "--ckpt_dir")
    assert "protocol 'default'" not in result.stdout  # the datalist was not read


def test_bad_volume_read_by_a_loader_worker(work, tmp_path):
    broken = tmp_path / "prepared"
    shutil.copytree(work / "prepared", broken)
    path = broken / "imagesTr" / "SYN004.nii.gz"  # a validation case (the last 2 ids of train.list)
    image = nib.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32).copy()
    data[:2, :3, :4] = np.nan  # 24 voxels
    nib.save(nib.Nifti1Image(data, image.affine), str(path))
    result = _bundle("evaluating", EVALUATE, "--dataset_dir", str(broken), "--eval_checkpoint", str(work / "model.pt"),
                     "--network_def#n_filters", "2", "--eval_roi_size", "[32,32,16]", "--eval_stride", "[16,16,8]",
                     "--num_workers", "1", "--output_dir", str(tmp_path / "runs"))
    last = _assert_ends_with(result, f"case 'SYN004': image '{path}' has 24 non-finite voxels (24 NaN, 0 infinite)")
    assert last.endswith("expected finite intensities.")
