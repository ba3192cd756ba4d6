"""Smoke tests of the Pancreas-CT bundle through ``monai.bundle`` on a tiny synthetic prepared dataset (CPU).

Train (three views of cubic patches), evaluate (96^3-style window at a stride, uniform averaging),
infer on a folder of raw "CT" NIfTI files in Hounsfield units (HU window, z-score, outputs in the
input's geometry), the TorchScript export with ``ckpt_export`` and the MONAI Label export.
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

from sasnet_components.data import make_synthetic_la
from sasnet_components.data.inference import intensity_transforms
from sasnet_components.data.la import prepare_la
from sasnet_components.utils import export_monailabel_bundle
from sasnet_components.utils.errors import InvalidInputError
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

BUNDLE = REPO / "bundles" / "pancreas"
CONFIGS = BUNDLE / "configs"
TRAIN, EVALUATE, INFERENCE = (str(CONFIGS / f"{n}.yaml") for n in ("train", "evaluate", "inference"))
METADATA = str(CONFIGS / "metadata.json")
PATCH = [32, 32, 32]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A prepared tiny dataset (7 cubic cases: 3 labeled, the last 2 of train.list the validation list) and a
    model trained on it for 4 iterations."""
    root = tmp_path_factory.mktemp("pancreas_tiny")
    raw = make_synthetic_la(str(root / "h5"), num_train=7, num_test=1, shape=(40, 40, 40), seed=1)
    prepare_la(str(raw), str(root / "prepared"), num_labeled=3, num_validation=2)
    out = root / "out"
    overrides = train_tiny(TRAIN, root / "prepared", out, PATCH)
    return {"root": root, "out": out, "overrides": overrides}


def test_training_uses_the_pancreas_settings(trained):
    out = trained["out"]
    assert (out / "models" / "model.pt").is_file()
    state = torch.load(out / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 4
    settings = state["settings"]["settings"]
    assert settings["views"] == [[0, 1, 2], [0, 2, 1], [2, 1, 0]]  # identity, swap(1, 2), swap(0, 2)
    assert settings["patch_size"] == PATCH
    assert sorted(state["sar"]["memory"]) == ["SYN000", "SYN001", "SYN002"]  # only labeled cases
    parser = ConfigParser(ConfigParser.load_config_file(TRAIN))
    assert parser["patch_size"] == [96, 96, 96] and parser["num_labeled"] == 12
    assert parser["dataset_dir"].endswith("'/../../data/pancreas'")


def test_evaluation_writes_the_report(trained):
    run(
        "evaluating",
        config_file=[TRAIN, EVALUATE],
        **{**trained["overrides"], "eval_roi_size": PATCH, "eval_stride": [16, 16, 16]},
    )
    report = trained["out"] / "runs" / "eval_validation"
    summary = json.loads((report / "metrics_summary.json").read_text())
    assert summary["num_cases"] == 2 and set(summary["mean"]) >= {"dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm"}
    assert summary["sliding_window"] == {"roi_size": PATCH, "stride": [16, 16, 16], "mode": "constant"}
    assert (report / "metrics_per_case.csv").is_file()
    defaults = ConfigParser.load_config_file(EVALUATE)
    assert defaults["eval_roi_size"] == [96, 96, 96] and defaults["eval_stride"] == [16, 16, 16]


def _write_ct(path: Path, shape, affine, seed: int = 0) -> None:
    """A raw "CT" volume in HU: air, soft tissue, bone."""
    rng = np.random.default_rng(seed)
    data = rng.choice([-1000.0, 40.0, 700.0], size=shape, p=[0.3, 0.6, 0.1]) + rng.normal(scale=20.0, size=shape)
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))


def test_inference_on_raw_ct_keeps_the_input_geometry(trained, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    _write_ct(inputs / "rotated.nii.gz", (37, 29, 13), _rotated_affine())
    _write_ct(inputs / "plain.nii", (20, 21, 22), np.eye(4), seed=1)
    overrides = {
        **tiny(PATCH),
        "input_dir": str(inputs),
        "output_dir": str(out),
        "ckpt_dir": str(trained["out"] / "models"),
        "inference_spacing": [1.5, 1.5, 1.5],  # keeps it fast; resampling and its inverse still happen
        "save_probability": True,
    }
    run("inferring", config_file=[TRAIN, INFERENCE], **overrides)
    assert_outputs_keep_the_geometry(inputs, out, {"rotated.nii.gz": "rotated", "plain.nii": "plain"})
    defaults = ConfigParser.load_config_file(INFERENCE)
    assert defaults["intensity"] == "window_zscore" and defaults["intensity_window"] == [-125, 275]


def test_intensity_window_then_zscore():
    hu = torch.tensor([[[[-1000.0, -125.0, 75.0, 275.0, 3000.0]]]])
    (out,) = (t["image"] for t in [_apply(intensity_transforms("window_zscore", [-125, 275]), hu)])
    scaled = torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0])  # clipped to the window, scaled to [0, 1] ...
    expected = (scaled - scaled.mean()) / scaled.std(unbiased=False)  # ... then z-scored
    torch.testing.assert_close(out.flatten(), expected)
    assert intensity_transforms("none") == []
    for intensity, window, message in (
        ("window_zscore", None, r"`intensity_window` must be \[low, high\] with low < high"),
        ("window_zscore", [275, -125], r"`intensity_window` must be \[low, high\]"),
        ("hu", None, r"`intensity` must be one of"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            intensity_transforms(intensity, window)


def _apply(transforms, image: torch.Tensor) -> dict:
    data = {"image": image}
    for t in transforms:
        data = t(data)
    return data


def test_torchscript_export_with_ckpt_export(trained, tmp_path):
    embedded = check_torchscript_export(TRAIN, METADATA, trained["out"] / "models" / "model.pt", tmp_path / "model.ts", PATCH)
    assert embedded["name"] == "SASNet Pancreas-CT segmentation"


def test_monailabel_export_windows_hounsfield_units(trained, tmp_path):
    ckpt = trained["out"] / "models" / "model.pt"
    bundle = export_monailabel_bundle(BUNDLE, ckpt, tmp_path / "sasnet_pancreas", **{"network_def#n_filters": 2, "patch_size": PATCH})
    infer = yaml.safe_load((bundle / "configs" / "inference.yaml").read_text())
    assert infer["patch_size"] == PATCH and infer["inference_spacing"] == [1.0, 1.0, 1.0]
    assert infer["intensity_window"] == [-125, 275] and infer["network_def"]["n_filters"] == 2
    targets = [t["_target_"] for t in infer["preprocessing"]["transforms"]]
    assert targets.index("ScaleIntensityRanged") + 1 == targets.index("NormalizeIntensityd")
    assert not [t for t in targets if "sasnet" in t]
    train = yaml.safe_load((bundle / "configs" / "train.yaml").read_text())
    assert train["intensity_window"] == [-125, 275] and train["patch_size"] == PATCH
    assert [t["_target_"] for t in train["intensity_transforms"]][-2:] == ["ScaleIntensityRanged", "NormalizeIntensityd"]
    labels = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert labels == {"0": "background", "1": "pancreas"}

    # the exported inference config, as MONAI Label runs it: model.ts, MONAI transforms only, input geometry kept
    image = tmp_path / "scan.nii.gz"
    _write_ct(image, (30, 26, 18), _rotated_affine())
    parser = ConfigParser(infer)
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    parser["inference_spacing"] = [1.5, 1.5, 1.5]
    data = parser.get_parsed_content("preprocessing")({"image": str(image)})
    assert abs(float(data["image"].mean())) < 1e-3 and abs(float(data["image"].std()) - 1.0) < 1e-2  # windowed, z-scored
    network = torch.jit.load(str(bundle / "models" / "model.ts"))
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], network)[0]
    label = parser.get_parsed_content("postprocessing")(data)["pred"]
    assert tuple(label.shape[1:]) == nib.load(str(image)).shape

    # the exported training config with the keys MONAI Label's BundleTrainTask sets: 2 labeled CT pairs,
    # 1 unlabeled scan of the same folder, HU window and z-score on both streams
    studies = tmp_path / "studies"
    (studies / "labels").mkdir(parents=True)
    pairs = []
    for i in range(3):
        _write_ct(studies / f"ct{i}.nii.gz", (34, 34, 34), np.diag([1.2, 1.2, 1.2, 1.0]), seed=i)
        if i < 2:
            mask = np.zeros((34, 34, 34), np.uint8)
            mask[10:22, 12:24, 8:20] = 1
            nib.save(nib.Nifti1Image(mask, np.diag([1.2, 1.2, 1.2, 1.0])), str(studies / "labels" / f"ct{i}.nii.gz"))
            pairs.append({"image": str(studies / f"ct{i}.nii.gz"), "label": str(studies / "labels" / f"ct{i}.nii.gz")})
    train_exported_bundle(bundle, pairs)


def test_export_script_takes_the_bundle(trained, tmp_path):
    app = tmp_path / "app"
    command = export_command("bundles/pancreas", trained["out"] / "models" / "model.pt", app, PATCH)
    done = run_command(command)
    assert done.returncode == 0, done.stderr[-3000:]
    bundle = app / "model" / "sasnet_pancreas"  # the name follows the bundle
    assert (bundle / "models" / "model.ts").is_file()
    assert yaml.safe_load((bundle / "configs" / "inference.yaml").read_text())["intensity_window"] == [-125, 275]
    # a checkpoint that does not fit names the Pancreas bundle's way to get one
    wrong = run_command(command[:-4] + ["--app_dir", str(tmp_path / "other")])
    last = wrong.stderr.strip().splitlines()[-1]
    assert wrong.returncode == 2 and "its weights do not fit the configured network" in last and "bundles/pancreas" in last
    assert not (tmp_path / "other").exists()
