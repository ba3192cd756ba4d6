"""Smoke tests of the BraTS (whole tumour, FLAIR) bundle through ``monai.bundle`` on a tiny synthetic prepared dataset (CPU).

The dataset is written here in the prepared layout (``imagesTr``/``labelsTr`` NIfTI and a ``datalist.json``
whose validation list is separate from the training ids, as BraTS's 250 / 25 / 60 split). Train (three
views of cubic patches), evaluate (96^3-style window at a stride, uniform averaging), infer on a folder of
skull-stripped "FLAIR" NIfTI files (99.9th-percentile clip, z-score over the brain, outputs in the input's
geometry), the TorchScript export with ``ckpt_export`` and the MONAI Label export.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from monai.bundle import ConfigParser, run

from sasnet_components.utils import export_monailabel_bundle
from tests.bundle.bundle_checks import (
    REPO,
    assert_outputs_keep_the_geometry,
    check_torchscript_export,
    export_command,
    run_command,
    tiny,
    train_exported_bundle,
    train_tiny,
)
from tests.bundle.test_la_inference import _rotated_affine

BUNDLE = REPO / "bundles" / "brats"
CONFIGS = BUNDLE / "configs"
TRAIN, EVALUATE, INFERENCE = (str(CONFIGS / f"{n}.yaml") for n in ("train", "evaluate", "inference"))
METADATA = str(CONFIGS / "metadata.json")
PATCH = [32, 32, 32]


def _flair(shape, seed: int = 0):
    """A skull-stripped "FLAIR" volume (zero background, an ellipsoid brain, a bright tumour) and its whole-tumour mask."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    centre = rng.uniform(-0.3, 0.3, size=3).reshape(3, 1, 1, 1)
    tumour = ((grid - centre) ** 2).sum(0) < 0.12 * rng.uniform(0.6, 1.2)
    tumour &= brain
    image = np.where(brain, 300.0 + rng.normal(scale=40.0, size=shape), 0.0)
    image[tumour] += 400.0
    image[brain] = np.maximum(image[brain], 1.0)
    return image.astype(np.float32), tumour.astype(np.uint8)


def _prepared(root: Path) -> Path:
    """imagesTr/labelsTr + datalist.json: 3 labeled, 3 unlabeled, 2 validation (ids of their own), 1 test."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    items = []
    for i in range(9):
        case = f"BraTS19_SYN_{i:03d}"
        image, label = _flair((40, 40, 40), seed=i)
        image = np.where(image > 0, (image - image[image > 0].mean()) / image[image > 0].std(), 0.0).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(root / "imagesTr" / f"{case}.nii.gz"))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(root / "labelsTr" / f"{case}.nii.gz"))
        items.append({"case_id": case, "image": f"imagesTr/{case}.nii.gz", "label": f"labelsTr/{case}.nii.gz"})
    datalist = {
        "name": "BraTS2019",
        "num_labeled": 3,
        "labeled": items[:3],
        "unlabeled": items[3:6],
        "validation": items[6:8],
        "test": items[8:],
    }
    (root / "datalist.json").write_text(json.dumps(datalist, indent=2))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """The tiny prepared dataset and a model trained on it for 4 iterations."""
    root = tmp_path_factory.mktemp("brats_tiny")
    prepared = _prepared(root / "prepared")
    out = root / "out"
    overrides = train_tiny(TRAIN, prepared, out, PATCH)
    return {"root": root, "out": out, "overrides": overrides}


def test_training_uses_the_brats_settings(trained):
    out = trained["out"]
    assert (out / "models" / "model.pt").is_file()
    state = torch.load(out / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 4
    settings = state["settings"]["settings"]
    assert settings["views"] == [[0, 1, 2], [0, 2, 1], [2, 1, 0]]  # identity, swap(1, 2), swap(0, 2)
    assert settings["patch_size"] == PATCH
    assert sorted(state["sar"]["memory"]) == [f"BraTS19_SYN_{i:03d}" for i in range(3)]  # only labeled cases
    parser = ConfigParser(ConfigParser.load_config_file(TRAIN))
    assert parser["patch_size"] == [96, 96, 96] and parser["num_labeled"] == 50
    assert parser["num_classes"] == 2 and parser["network_def"]["in_channels"] == 1  # FLAIR -> whole tumour
    assert parser["dataset_dir"].endswith("'/../../data/brats'")


def test_evaluation_writes_the_report(trained):
    run(
        "evaluating",
        config_file=[TRAIN, EVALUATE],
        **{**trained["overrides"], "eval_roi_size": PATCH, "eval_stride": [16, 16, 16]},
    )
    report = trained["out"] / "runs" / "eval_validation"
    summary = json.loads((report / "metrics_summary.json").read_text())
    assert summary["num_cases"] == 2 and set(summary["mean"]) >= {"dice", "jaccard", "hd95", "asd"}
    assert summary["sliding_window"] == {"roi_size": PATCH, "stride": [16, 16, 16], "mode": "constant"}
    defaults = ConfigParser.load_config_file(EVALUATE)
    assert defaults["eval_roi_size"] == [96, 96, 96] and defaults["eval_stride"] == [16, 16, 16]


def _write_flair(path: Path, shape, affine, seed: int = 0) -> None:
    nib.save(nib.Nifti1Image(_flair(shape, seed)[0], affine), str(path))


def test_inference_on_flair_keeps_the_input_geometry(trained, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    _write_flair(inputs / "rotated_flair.nii.gz", (37, 29, 23), _rotated_affine())
    _write_flair(inputs / "plain.nii", (20, 21, 22), np.eye(4), seed=1)
    overrides = {
        **tiny(PATCH),
        "input_dir": str(inputs),
        "output_dir": str(out),
        "ckpt_dir": str(trained["out"] / "models"),
        "inference_spacing": [1.5, 1.5, 1.5],  # keeps it fast; resampling and its inverse still happen
        "save_probability": True,
    }
    run("inferring", config_file=[TRAIN, INFERENCE], **overrides)
    assert_outputs_keep_the_geometry(inputs, out, {"rotated_flair.nii.gz": "rotated_flair", "plain.nii": "plain"})
    defaults = ConfigParser.load_config_file(INFERENCE)
    assert defaults["intensity"] == "brain_zscore" and defaults["intensity_window"] is None


def test_torchscript_export_with_ckpt_export(trained, tmp_path):
    embedded = check_torchscript_export(TRAIN, METADATA, trained["out"] / "models" / "model.pt", tmp_path / "model.ts", PATCH)
    assert embedded["name"] == "SASNet BraTS whole-tumour segmentation"


def test_monailabel_export_normalises_the_brain(trained, tmp_path):
    ckpt = trained["out"] / "models" / "model.pt"
    bundle = export_monailabel_bundle(BUNDLE, ckpt, tmp_path / "sasnet_brats", **{"network_def#n_filters": 2, "patch_size": PATCH})
    infer = yaml.safe_load((bundle / "configs" / "inference.yaml").read_text())
    assert infer["patch_size"] == PATCH and infer["inference_spacing"] == [1.0, 1.0, 1.0]
    assert "intensity_window" not in infer and infer["network_def"]["n_filters"] == 2
    targets = [t["_target_"] for t in infer["preprocessing"]["transforms"]]
    assert targets.index("ClipIntensityPercentilesd") + 1 == targets.index("NormalizeIntensityd")
    assert not [t for t in targets if "sasnet" in t]
    train = yaml.safe_load((bundle / "configs" / "train.yaml").read_text())
    assert [t["_target_"] for t in train["intensity_transforms"]][-2:] == ["ClipIntensityPercentilesd", "NormalizeIntensityd"]
    labels = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert labels == {"0": "background", "1": "whole tumour"}

    # the exported inference config, as MONAI Label runs it: model.ts, MONAI transforms only, input geometry kept
    image = tmp_path / "flair.nii.gz"
    _write_flair(image, (30, 26, 18), _rotated_affine())
    parser = ConfigParser(infer)
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    parser["inference_spacing"] = [1.5, 1.5, 1.5]
    data = parser.get_parsed_content("preprocessing")({"image": str(image)})
    brain = data["image"][data["image"] != 0]
    assert abs(float(brain.mean())) < 1e-3 and abs(float(brain.std()) - 1.0) < 1e-2  # z-scored over the brain
    network = torch.jit.load(str(bundle / "models" / "model.ts"))
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], network)[0]
    label = parser.get_parsed_content("postprocessing")(data)["pred"]
    assert tuple(label.shape[1:]) == nib.load(str(image)).shape

    # the exported training config with the keys MONAI Label's BundleTrainTask sets: 2 labeled FLAIR pairs,
    # 1 unlabeled scan of the same folder, clip and brain z-score on both streams
    studies = tmp_path / "studies"
    (studies / "labels").mkdir(parents=True)
    pairs = []
    for i in range(3):
        flair, mask = _flair((34, 34, 34), seed=i)
        nib.save(nib.Nifti1Image(flair, np.eye(4)), str(studies / f"flair{i}.nii.gz"))
        if i < 2:
            nib.save(nib.Nifti1Image(mask, np.eye(4)), str(studies / "labels" / f"flair{i}.nii.gz"))
            pairs.append({"image": str(studies / f"flair{i}.nii.gz"), "label": str(studies / "labels" / f"flair{i}.nii.gz")})
    train_exported_bundle(bundle, pairs)


def test_export_script_takes_the_bundle(trained, tmp_path):
    app = tmp_path / "app"
    done = run_command(export_command("bundles/brats", trained["out"] / "models" / "model.pt", app, PATCH))
    assert done.returncode == 0, done.stderr[-3000:]
    bundle = app / "model" / "sasnet_brats"  # the name follows the bundle
    assert (bundle / "models" / "model.ts").is_file()


def test_the_bundle_holds_the_same_files_as_pancreas_and_multiclass_yaml():
    def files(bundle: Path) -> set:
        return {  # the shipped files: trained weights and run outputs left out
            str(p.relative_to(bundle))
            for p in bundle.rglob("*")
            if p.is_file() and p.suffix not in (".pt", ".ts") and "runs" not in p.parts
        }

    # plus the sub-region configuration, BraTS's own
    assert files(BUNDLE) == files(REPO / "bundles" / "pancreas") | {"configs/multiclass.yaml"}
    metadata = json.loads((CONFIGS / "metadata.json").read_text())
    assert metadata["network_data_format"]["inputs"]["image"]["num_channels"] == 1
    assert metadata["network_data_format"]["outputs"]["pred"]["num_channels"] == 2
