"""The quick LA protocol (configs/quick.yaml) through ``monai.bundle`` on synthetic data: it trains on
images resampled to 1.25 mm and evaluates on the prepared 0.625 mm label grid."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from sasnet_components import DualBranchVNet
from sasnet_components.data import make_synthetic_la
from sasnet_components.data.la import prepare_la

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "la" / "configs"
TRAIN, EVALUATE, QUICK = (str(CONFIGS / f"{name}.yaml") for name in ("train", "evaluate", "quick"))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("la_quick")
    # 64x64x32 voxels of 0.625 mm: 32x32x16 voxels at the quick protocol's 1.25 mm
    raw = make_synthetic_la(str(root / "h5"), num_train=6, num_test=1, shape=(64, 64, 32), seed=1)
    prepare_la(str(raw), str(root / "prepared"), num_labeled=2, num_validation=2)
    return str(root / "prepared")


def _overrides(dataset_dir: str, out: Path) -> dict:
    # quick.yaml as it is, but for the run's length, the width and a patch of the whole resampled volume
    return {
        "dataset_dir": dataset_dir,
        "output_dir": str(out / "runs"),
        "ckpt_dir": str(out / "models"),
        "device": "cpu",
        "amp": False,
        "num_labeled": 2,
        "patch_size": [32, 32, 16],
        "network_def#n_filters": 2,
        "max_iterations": 3,
        "checkpoint_interval": 3,
        "num_workers": 0,
    }


def test_quick_protocol_trains_on_resampled_images_and_evaluates_on_the_label_grid(dataset_dir, tmp_path):
    training = ConfigWorkflow(config_file=[TRAIN, QUICK], run_id="training", **_overrides(dataset_dir, tmp_path))
    training.initialize()
    assert training.parser.get_parsed_content("train#trainer").rampup_length == 1  # max(1, round(0.15 * 3))
    datalists = training.parser.get_parsed_content("datalists")
    # 2 labeled; of the other 4 cases, the 2 evaluated ones (SYN004, SYN005) are not in the unlabeled pool
    assert [item["case_id"] for item in datalists["train"]] == ["SYN000", "SYN001", "SYN002", "SYN003"]
    training.run()
    state = torch.load(tmp_path / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 3
    # the SAR memory covers a labeled case at 1.25 mm: half the prepared 64x64x32 voxels per axis
    assert sorted(state["sar"]["memory"]) == ["SYN000", "SYN001"]
    assert tuple(state["sar"]["memory"]["SYN000"].shape) == (3, 2, 32, 32, 16)
    assert state["settings"]["settings"]["resample_spacing"] == [1.25, 1.25, 1.25]

    evaluation = ConfigWorkflow(config_file=[TRAIN, EVALUATE, QUICK], run_id="evaluating", **_overrides(dataset_dir, tmp_path))
    evaluation.initialize()
    evaluator = evaluation.parser.get_parsed_content("validate#evaluator")
    seen = []

    def record(engine) -> None:
        (item,) = engine.state.output
        seen.append((tuple(item["image"].shape), tuple(item["pred"].shape), item["pred"].affine.clone()))

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, record)
    evaluation.run()
    labels = {case: nib.load(str(Path(dataset_dir) / "labelsTr" / f"{case}.nii.gz")) for case in ("SYN004", "SYN005")}
    assert len(seen) == 2
    for (image_shape, pred_shape, affine), label in zip(seen, labels.values()):
        assert image_shape == (1, 32, 32, 16)  # the network saw the resampled image ...
        assert pred_shape == (1, 64, 64, 32) == (1, *label.shape)  # ... its prediction is on the label grid
        np.testing.assert_allclose(affine.numpy(), label.affine, atol=1e-6)
    out = tmp_path / "runs" / "eval_validation"
    with open(out / "metrics_per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == list(labels)
    assert all([float(s) for s in r["spacing"].split()] == [0.625, 0.625, 0.625] for r in rows)  # distances in mm on the label grid
    summary = json.loads((out / "metrics_summary.json").read_text())
    assert summary["sliding_window"] == {"roi_size": [32, 32, 16], "stride": [16, 16, 4], "mode": "constant"}



def test_a_quick_model_segments_nifti_inputs_at_its_spacing_in_the_input_geometry(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    affine = np.diag([0.625, 0.625, 0.625, 1.0])
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(49, 45, 31)).astype(np.float32), affine), str(inputs / "scan.nii.gz"))
    torch.manual_seed(0)
    torch.save(DualBranchVNet(n_filters=2).state_dict(), tmp_path / "model.pt")
    config = [TRAIN, str(CONFIGS / "inference.yaml"), QUICK]
    overrides = {"input_dir": str(inputs), "output_dir": str(out), "ckpt_dir": str(tmp_path), "device": "cpu", "amp": False,
                 "network_def#n_filters": 2, "num_workers": 0}
    workflow = ConfigWorkflow(config_file=config, run_id="inferring", **overrides)
    workflow.initialize()
    assert workflow.parser.get_parsed_content("inference_spacing") == [1.25, 1.25, 1.25]  # the training spacing
    evaluator = workflow.parser.get_parsed_content("infer#evaluator")
    seen = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: seen.append(tuple(engine.state.output[0]["image"].shape)))
    workflow.run()
    # 49x45x31 voxels of 0.625 mm at 1.25 mm: the corner voxels' centres kept, (n - 1) / 2 + 1 per axis
    assert seen == [(1, 25, 23, 16)]
    seg = nib.load(str(out / "scan_seg.nii.gz"))
    assert seg.shape == (49, 45, 31)
    np.testing.assert_allclose(seg.affine, affine, atol=1e-6)
