"""What the bundles share is written once: the LA, Pancreas-CT and BraTS configs differ only in dataset-specific values.

Every bundle's ``train.yaml``, ``multi_gpu_train.yaml``, ``evaluate.yaml`` and ``inference.yaml`` is read as plain YAML (nothing
instantiated, no expression evaluated) and compared item by item with the LA bundle's, nested items and
list entries included. Only the items of :data:`DATASET_SPECIFIC` may differ, and each of them must differ
between at least two bundles (else it belongs to the shared part). A shared value changed in one bundle
alone fails here: change it in all of them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
REFERENCE = "la"  # every other bundle is compared with this one
OTHERS = ("pancreas", "brats")

# file -> items (``a#b#0``) whose values are the dataset's: data paths, patch, views, split, spacing, windows
DATASET_SPECIFIC = {
    "train.yaml": {
        "num_labeled",  # LA 16 of 80, Pancreas-CT 12 of 62, BraTS 50 of 250 (20 %)
        "patch_size",  # 112x112x80 / 96^3 / 96^3
        "views",  # in-plane swap / identity, swap(1, 2), swap(0, 2) (Pancreas-CT, BraTS)
        "val_stride",  # 'paper' protocol validation stride: 18/18/4 / 16 / 16
        "dataset_dir",  # data/la / data/pancreas / data/brats
        "model_checkpoint_hint",  # names the bundle's folder
    },
    "evaluate.yaml": {
        "eval_roi_size",  # the paper's sliding window of each dataset (BraTS: the reference's 96^3 setting)
        "eval_stride",
    },
    "multi_gpu_train.yaml": set(),  # the layer for several GPUs holds nothing of a dataset
    "inference.yaml": {
        "inference_spacing",  # training spacing: 0.625 mm / 1 mm / 1 mm
        "intensity",  # prepared MR volumes / raw CT in HU / skull-stripped FLAIR (brain z-score)
        "intensity_window",  # none / HU [-125, 275] / none
    },
}


def _flatten(value: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"a#b#0": leaf}`` for every leaf of nested mappings and lists (an empty mapping or list is a leaf)."""
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and value and not all(not isinstance(v, (dict, list)) for v in value):
        items = enumerate(value)
    else:
        return {prefix: value}
    flat: Dict[str, Any] = {}
    for key, sub in items:
        flat.update(_flatten(sub, f"{prefix}#{key}" if prefix else str(key)))
    return flat


def _load(bundle: str, name: str) -> Dict[str, Any]:
    return yaml.safe_load((BUNDLES / bundle / "configs" / name).read_text())


def config_differences(first: Dict[str, Any], second: Dict[str, Any], allowed: set) -> List[str]:
    """What differs between two configs outside `allowed` (items and everything under them)."""

    def free(key: str) -> bool:
        return any(key == a or key.startswith(a + "#") for a in allowed)

    a, b = _flatten(first), _flatten(second)
    problems = [f"{k!r} only in the first config" for k in sorted(set(a) - set(b)) if not free(k)]
    problems += [f"{k!r} only in the second config" for k in sorted(set(b) - set(a)) if not free(k)]
    problems += [f"{k!r}: {a[k]!r} != {b[k]!r}" for k in sorted(set(a) & set(b)) if not free(k) and a[k] != b[k]]
    return problems


@pytest.mark.parametrize("other", OTHERS)
@pytest.mark.parametrize("name", sorted(DATASET_SPECIFIC))
def test_bundle_configs_differ_only_in_dataset_values(name, other):
    reference, config = _load(REFERENCE, name), _load(other, name)
    assert set(reference) == set(config), f"bundles/{REFERENCE} and bundles/{other} define the same keys"
    differences = config_differences(reference, config, DATASET_SPECIFIC[name])
    assert differences == [], f"{name}: shared values differ between bundles/{REFERENCE} and bundles/{other}: {differences}"


@pytest.mark.parametrize("name", sorted(DATASET_SPECIFIC))
def test_every_allowed_key_is_dataset_specific(name):
    configs = {bundle: _load(bundle, name) for bundle in (REFERENCE, *OTHERS)}
    for key in sorted(DATASET_SPECIFIC[name]):  # the allow-list stays minimal: every entry differs somewhere
        values = [yaml.safe_dump(c[key]) for c in configs.values() if key in c]
        assert len(values) == len(configs), f"{name}: {key!r} missing from a bundle"
        assert len(set(values)) > 1, f"{name}: {key!r} is the same in every bundle; it is shared"


def test_a_shared_value_changed_in_one_bundle_is_caught():
    la = _load("la", "train.yaml")
    for key, value in (("learning_rate", 0.1), ("train#trainer#beta", 0.4), ("train#random_transforms#1#discrete", [True, True])):
        pancreas = copy.deepcopy(_load("pancreas", "train.yaml"))
        *path, last = key.split("#")
        node = pancreas
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value
        assert config_differences(la, pancreas, DATASET_SPECIFIC["train.yaml"]) != [], key
    extra = {**_load("pancreas", "evaluate.yaml"), "eval_new_option": 1}
    assert config_differences(_load("la", "evaluate.yaml"), extra, DATASET_SPECIFIC["evaluate.yaml"]) == [
        "'eval_new_option' only in the second config"
    ]
