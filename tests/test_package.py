"""Package-level behaviour: public names, docstrings, and instantiation from MONAI bundle configs."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

import sasnet_components


@pytest.mark.parametrize("name", sasnet_components.__all__)
def test_public_names_are_documented(name):
    obj = getattr(sasnet_components, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert len(inspect.getdoc(obj) or "") > 40, f"{name} needs a docstring"


def test_components_instantiate_from_bundle_config():
    config = {
        "network_def": {
            "_target_": "sasnet_components.DualBranchVNet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 2,
            "n_filters": 4,
            "norm": "batch",
            "dropout": 0.5,
        },
        "uncertainty": {"_target_": "sasnet_components.DualBranchUncertainty", "network": "@network_def"},
        "view": {
            "_target_": "sasnet_components.RandFourierRotated",
            "keys": ["image", "label"],
            "views": [[0, 1, 2], [1, 0, 2]],
        },
        "sar": {"_target_": "sasnet_components.SARFusion", "alpha": 0.5, "mode": "running"},
        "seg_loss": {"_target_": "sasnet_components.SegLoss", "mode": "dice"},
        "plc_loss": {"_target_": "sasnet_components.PLCLoss", "temperature": 0.1},
        "src_loss": {"_target_": "sasnet_components.SRCLoss"},
    }
    parser = ConfigParser(config)
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, sasnet_components.DualBranchVNet)
    assert parser.get_parsed_content("uncertainty").network is net
    assert parser.get_parsed_content("view").views == ((0, 1, 2), (1, 0, 2))
    assert parser.get_parsed_content("sar").mode == "running"
    assert parser.get_parsed_content("seg_loss").mode == "dice"
    assert parser.get_parsed_content("plc_loss").temperature == 0.1
    assert isinstance(parser.get_parsed_content("src_loss"), torch.nn.Module)


def test_unknown_option_in_config_names_the_choices():
    parser = ConfigParser({"sar": {"_target_": "sasnet_components.SARFusion", "mode": "averaged"}})
    with pytest.raises(RuntimeError) as err:
        parser.get_parsed_content("sar")
    assert str(err.value.__cause__) == "SARFusion's `mode` must be one of ['paper', 'running'], got 'averaged'."


def test_package_import_leaves_monai_label_out():
    # MONAI Label is optional and only the exported app imports it; the bundle commands import the package
    root = str(Path(sasnet_components.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    code = "import sys, sasnet_components.utils; print(sorted(m for m in sys.modules if m.split('.')[0] == 'monailabel'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
