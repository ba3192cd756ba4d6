"""The BraTS sub-region configuration (configs/multiclass.yaml): four modalities, four classes, region metrics.

From synthetic release folders through ``scripts/prepare_brats.py``'s function (``--modalities all --label_mode
classes``) to training, evaluation on the whole tumour / tumour core / enhancing tumour regions, inference on
4-channel volumes and the TorchScript export, all through ``monai.bundle`` (CPU).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ckpt_export, run

from sasnet_components.data import prepare_brats
from tests.bundle.bundle_checks import tiny
from tests.data.test_brats import _lists, _release

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "brats" / "configs"
TRAIN, EVALUATE, INFERENCE, MULTICLASS = (str(CONFIGS / f"{n}.yaml") for n in ("train", "evaluate", "inference", "multiclass"))
PATCH = [16, 16, 16]
TINY = tiny(PATCH)
IDS = [f"BraTS19_M_{i:03d}_1" for i in range(6)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("brats_mc")
    _release(root / "release", ids=IDS)
    _lists(root / "release", train=IDS[:4], val=IDS[4:])
    datalist = prepare_brats(root / "release", root / "prepared", num_labeled=2, modalities="all", label_mode="classes")
    overrides = {
        **TINY,
        "dataset_dir": str(root / "prepared"),
        "output_dir": str(root / "runs"),
        "ckpt_dir": str(root / "models"),
        "num_labeled": 2,
        "max_iterations": 2,
        "val_interval": 2,
        "checkpoint_interval": 2,
    }
    run("training", config_file=[TRAIN, MULTICLASS], **overrides)
    return {"root": root, "datalist": datalist, "overrides": overrides}


def test_training_on_four_modalities_and_four_classes(trained):
    image = nib.load(str(trained["root"] / "prepared" / trained["datalist"]["labeled"][0]["image"]))
    assert image.shape[-1] == 4  # FLAIR, T1, T1ce, T2 stacked
    labels = np.unique(np.asarray(nib.load(str(trained["root"] / "prepared" / trained["datalist"]["labeled"][0]["label"])).dataobj))
    assert set(labels.tolist()) <= {0, 1, 2, 3} and 3 in labels  # the release's 4 is class 3
    weights = torch.load(trained["root"] / "models" / "model.pt", weights_only=True)
    first_conv = next(v for k, v in weights.items() if v.ndim == 5)
    assert first_conv.shape[1] == 4  # four input channels
    seg_heads = [v for k, v in weights.items() if k.endswith("weight") and v.ndim == 5 and v.shape[0] == 4 and v.shape[2:] == (1, 1, 1)]
    assert seg_heads  # 1x1x1 heads with four output classes
    state = torch.load(trained["root"] / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 2 and sorted(state["sar"]["memory"]) == IDS[:2]


def test_evaluation_reports_the_three_regions(trained, tmp_path):
    run("evaluating", config_file=[TRAIN, EVALUATE, MULTICLASS], **{**trained["overrides"], "eval_roi_size": PATCH, "eval_stride": [8, 8, 8]})
    report = trained["root"] / "runs" / "eval_validation"
    with open(report / "metrics_per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == IDS[4:]
    for region in ("wt", "tc", "et"):
        assert {f"dice_{region}", f"jaccard_{region}", f"hd95_{region}", f"asd_{region}", f"hd95_mm_{region}"} <= set(rows[0])
    summary = json.loads((report / "metrics_summary.json").read_text())
    assert summary["regions"] == ["wt", "tc", "et"]


def test_inference_and_export_take_four_channels(trained, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    prepared = nib.load(str(trained["root"] / "prepared" / trained["datalist"]["validation"][0]["image"]))
    nib.save(prepared, str(inputs / "case.nii.gz"))
    overrides = {**TINY, "input_dir": str(inputs), "output_dir": str(out), "ckpt_dir": str(trained["root"] / "models"), "intensity": "none"}
    run("inferring", config_file=[TRAIN, INFERENCE, MULTICLASS], **overrides)
    seg = nib.load(str(out / "case_seg.nii.gz"))
    assert seg.shape == prepared.shape[:3] and np.allclose(seg.affine, prepared.affine)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1, 2, 3}
    ts_file = tmp_path / "model.ts"
    ckpt_export("network_def", filepath=str(ts_file), ckpt_file=str(trained["root"] / "models" / "model.pt"),
                config_file=[TRAIN, MULTICLASS], **{"network_def#n_filters": 2})
    scripted = torch.jit.load(str(ts_file))
    with torch.no_grad():
        assert scripted(torch.randn(1, 4, *PATCH)).shape == (1, 4, *PATCH)
