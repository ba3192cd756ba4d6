"""Checks that every dataset bundle's smoke tests run the same way (Pancreas-CT, BraTS): a tiny training,
outputs in the input's geometry, the TorchScript export, the exported MONAI Label training and the export script.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser, ckpt_export, run, verify_net_in_out

REPO = Path(__file__).resolve().parents[2]


def tiny(patch: Sequence[int]) -> dict:
    """Overrides of a tiny CPU run: 2 filters, no AMP, no loader workers, patches of `patch`."""
    return {"device": "cpu", "amp": False, "patch_size": list(patch), "network_def#n_filters": 2, "num_workers": 0, "sw_batch_size": 2}


def train_tiny(train: str, dataset_dir: Path, out: Path, patch: Sequence[int]) -> dict:
    """Train `train` for 4 iterations on a prepared dataset with 3 labeled cases (validation at 2, the final
    checkpoint at 4) into `out`; return the overrides."""
    overrides = {
        **tiny(patch),
        "dataset_dir": str(dataset_dir),
        "output_dir": str(out / "runs"),
        "ckpt_dir": str(out / "models"),
        "num_labeled": 3,
        "max_iterations": 4,
        "val_interval": 2,
        "checkpoint_interval": 4,
        "log_interval": 1,
    }
    run("training", config_file=train, **overrides)
    return overrides


def assert_outputs_keep_the_geometry(inputs: Path, out: Path, cases: Dict[str, str]) -> None:
    """Each input file (name -> case) has a 0/1 label and a probability map in its shape and affine."""
    for name, case in cases.items():
        image = nib.load(str(inputs / name))
        for written in (nib.load(str(out / f"{case}_seg.nii.gz")), nib.load(str(out / "probability" / f"{case}_prob.nii.gz"))):
            assert written.shape == image.shape
            np.testing.assert_allclose(written.affine, image.affine, atol=1e-5)
        assert set(np.unique(np.asarray(nib.load(str(out / f"{case}_seg.nii.gz")).dataobj))) <= {0, 1}


def check_torchscript_export(train: str, metadata: str, ckpt: Path, ts_file: Path, patch: Sequence[int]) -> dict:
    """``ckpt_export`` of `ckpt` to `ts_file`: the scripted network equals the eager one (1e-5) and
    ``verify_net_in_out`` accepts the metadata's input and output; return the embedded metadata."""
    ckpt_export(
        "network_def", filepath=str(ts_file), ckpt_file=str(ckpt), meta_file=metadata, config_file=train,
        **{"network_def#n_filters": 2},
    )  # fmt: skip
    extra = {"metadata.json": ""}
    scripted = torch.jit.load(str(ts_file), _extra_files=extra)
    net = ConfigParser(ConfigParser.load_config_file(train))
    net["network_def#n_filters"] = 2
    eager = net.get_parsed_content("network_def")
    eager.load_state_dict(torch.load(ckpt, weights_only=True))
    x = torch.randn(1, 1, *patch)
    with torch.no_grad():
        assert (scripted(x) - eager.eval()(x)).abs().max().item() <= 1e-5
    # the metadata's (1, 1, 96, 96, 96) float32 input -> 2 float32 channels
    verify_net_in_out("network_def", meta_file=metadata, config_file=train, device="cpu", **{"network_def#n_filters": 2})
    return json.loads(extra["metadata.json"])


def train_exported_bundle(bundle: Path, pairs: List[dict]) -> None:
    """Run an exported MONAI Label bundle's training with the keys MONAI Label's BundleTrainTask sets: one
    epoch over the labeled `pairs` and the unlabeled scans of their folder, no validation (2 iterations)."""
    run(
        "run",
        config_file=str(bundle / "configs" / "train.yaml"),
        **{
            "bundle_root": str(bundle), "device": "cpu", "amp": False, "num_workers": 0,
            "train#trainer#max_epochs": 1, "train#dataset#data": pairs, "validate#dataset#data": [],
            "batch_size": 2, "labeled_batch_size": 1,
        },
    )  # fmt: skip
    state = torch.load(bundle / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 2 and (bundle / "models" / "model.pt").is_file()


def export_command(bundle: str, ckpt: Path, app: Path, patch: Sequence[int]) -> List[str]:
    """``scripts/export_monailabel.py`` for `bundle` (``bundles/<name>``) and a tiny network's checkpoint."""
    script = str(REPO / "scripts" / "export_monailabel.py")
    return [sys.executable, script, "--bundle", bundle, "--checkpoint", str(ckpt), "--app_dir", str(app),
            "--network_def#n_filters", "2", "--patch_size", json.dumps(list(patch)).replace(" ", "")]  # fmt: skip


def run_command(command: List[str]) -> subprocess.CompletedProcess:
    """`command` from the repository root."""
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=str(REPO))
