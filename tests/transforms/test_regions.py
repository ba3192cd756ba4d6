"""ClassRegionsd / class_regions: class-index maps to stacked binary region masks (BraTS WT / TC / ET)."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from sasnet_components import BRATS_REGIONS, ClassRegionsd, class_regions
from sasnet_components.utils import InvalidInputError


def test_brats_regions_of_each_class():
    m = torch.tensor([0, 1, 2, 3]).reshape(1, 1, 1, 4)
    out = class_regions(m, BRATS_REGIONS)
    assert out.shape == (3, 1, 1, 4) and out.dtype == m.dtype
    assert out.reshape(3, 4).tolist() == [[0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1]]  # wt, tc, et


def test_dictionary_transform_keeps_metadata_and_other_keys():
    label = MetaTensor(torch.tensor([3, 2, 0, 1], dtype=torch.uint8).reshape(1, 2, 2), affine=torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0])))
    pred = torch.tensor([3.0, 0.0, 0.0, 1.0]).reshape(1, 2, 2)
    t = ClassRegionsd(keys=["pred", "label"], regions={"wt": [1, 2, 3], "et": [3]})
    out = t({"pred": pred, "label": label, "case_id": "x"})
    assert t.region_names == ["wt", "et"] and out["case_id"] == "x"
    assert isinstance(out["label"], MetaTensor) and torch.equal(out["label"].affine, label.affine)
    assert out["label"].as_tensor().reshape(2, 4).tolist() == [[1, 1, 0, 1], [1, 0, 0, 0]]
    assert out["pred"].dtype == torch.float32 and out["pred"].reshape(2, 4).tolist() == [[1, 0, 0, 1], [1, 0, 0, 0]]


def test_default_regions_from_yaml_config():
    parser = ConfigParser({"t": {"_target_": "sasnet_components.ClassRegionsd", "keys": ["label"]}})
    assert parser.get_parsed_content("t").regions == {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}


def test_refusals():
    with pytest.raises(TypeError, match="non-empty dict"):
        ClassRegionsd(keys="label", regions={})
    with pytest.raises(TypeError, match="one or more class indices"):
        ClassRegionsd(keys="label", regions={"wt": 1})
    with pytest.raises(InvalidInputError, match=">= 0"):
        ClassRegionsd(keys="label", regions={"wt": [-1]})
    with pytest.raises(InvalidInputError, match=r"\(1, \*spatial\)"):
        class_regions(torch.zeros(2, 3, 3), BRATS_REGIONS)
