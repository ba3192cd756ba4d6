"""DeviceBatchLoader: the CPU loader's batches, drawn from volumes cached on the training device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader
from monai.transforms import Compose, EnsureTyped, RandFlipd

from sasnet_components import (
    DeviceBatchLoader,
    LabelPlaceholderd,
    RandCropWithLocationd,
    RandFourierRotated,
    SeededDataset,
    TwoStreamBatchSampler,
)
from sasnet_components.utils import InvalidInputError
from tests.bundle.test_la_bundle import TRAIN, _overrides

KEYS = ("image", "label", "labeled", "case_id", "crop_start", "view", "view_angle", "case_shape")


def _bundle_loader(dataset_dir: str, tmp_path: Path, device_data: bool):
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update(_overrides(dataset_dir, tmp_path, device_data=device_data, patch_size=[24, 24, 16]))
    return parser.get_parsed_content("train#data_loader")


def _assert_same_batch(cpu: dict, device: dict) -> None:
    assert set(KEYS) <= set(cpu) and set(KEYS) <= set(device)
    for key in KEYS:
        if isinstance(cpu[key], torch.Tensor):
            assert device[key].dtype == cpu[key].dtype, key
            assert torch.equal(device[key], cpu[key].as_subclass(torch.Tensor)), key
        else:
            assert list(device[key]) == list(cpu[key]), key


def test_bundle_batches_equal_the_cpu_loader(dataset_dir, tmp_path):
    # the LA bundle's two paths, from train.yaml: a DataLoader over SeededDataset(CacheDataset) and the
    # device-resident loader (device cpu here); same sampler seed, so the same batches item for item
    cpu = _bundle_loader(dataset_dir, tmp_path / "cpu", device_data=False)
    device = _bundle_loader(dataset_dir, tmp_path / "device", device_data=True)
    assert isinstance(device, DeviceBatchLoader) and isinstance(cpu, DataLoader)
    assert len(device) == len(cpu) == 1  # 3 labeled cases, 2 per batch
    seen_views, seen_starts = set(), set()
    for epoch in range(6):
        for sampler in (cpu.batch_sampler, device.batch_sampler):
            sampler.set_epoch(epoch)
        (a,), (b,) = list(cpu), list(device)
        _assert_same_batch(a, b)
        assert b["labeled"].tolist() == [True, True, False, False]
        seen_views.update(tuple(v) for v in b["view"].tolist())
        seen_starts.update(tuple(s) for s in b["crop_start"].tolist())
    # the draws vary: both views of the LA setting and several crop positions occur
    assert seen_views == {(0, 1, 2), (1, 0, 2)} and len(seen_starts) > 4


def _volume_item(case: str, shape, labeled: bool = True) -> dict:
    image = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(1, *shape)
    item = {"image": image, "case_id": case}
    if labeled:
        item["label"] = (image.long() % 2).to(torch.uint8)
    return item


def _loader(items, random_transform=None, labeled=(0, 1), unlabeled=(2,), **kwargs) -> DeviceBatchLoader:
    sampler = TwoStreamBatchSampler(labeled, unlabeled, batch_size=3, labeled_batch_size=2, seed=5, sample_seeds=True)
    if random_transform is None:
        random_transform = [
            RandCropWithLocationd(keys=["image", "label"], roi_size=[4, 4, 3]),
            RandFourierRotated(keys=["image", "label"], views=[[0, 1, 2], [1, 0, 2]], discrete=[False, True]),
            EnsureTyped(keys=["image", "label"], track_meta=False),
        ]
    return DeviceBatchLoader(items, LabelPlaceholderd(), random_transform, sampler, device="cpu", **kwargs)


def test_patches_are_the_recorded_crop_in_the_recorded_view():
    # voxel values are their flat index: a patch tells exactly where it came from
    shape = (6, 7, 5)
    items = [_volume_item("A", shape), _volume_item("B", shape), _volume_item("C", shape, labeled=False)]
    loader = _loader(items, num_classes=2)
    reference = torch.arange(6 * 7 * 5, dtype=torch.float32).reshape(1, *shape)
    for batch in loader:
        assert batch["image"].shape == (3, 1, 4, 4, 3) and batch["label"].dtype == torch.uint8
        assert sorted(batch["case_id"][:2]) == ["A", "B"] and batch["case_id"][2] == "C"
        for i in range(3):
            (x, y, z), view = batch["crop_start"][i].tolist(), batch["view"][i].tolist()
            crop = reference[:, x : x + 4, y : y + 4, z : z + 3]
            expected = crop.permute(0, *(1 + v for v in view))
            assert torch.equal(batch["image"][i], expected)
            if batch["labeled"][i]:
                assert torch.equal(batch["label"][i], (expected.long() % 2).to(torch.uint8))
            else:
                assert not batch["label"][i].any()  # the placeholder
        assert batch["case_shape"].tolist() == [list(shape)] * 3


def test_draws_follow_the_cpu_chain_seeding():
    # the CPU chain seeds Compose(deterministic + random) per item; non-random transforms draw nothing
    items = [_volume_item("A", (9, 9, 6)), _volume_item("B", (9, 9, 6)), _volume_item("C", (9, 9, 6), labeled=False)]
    loader = _loader(items)
    cpu_chain = Compose([LabelPlaceholderd(), *loader.random_transform.transforms])
    for seed in (0, 1, 2**31 + 7):
        out = SeededDataset(_Wrap(items, cpu_chain))[(1, seed)]
        start, view = loader.draw(1, seed)
        assert start == tuple(out["crop_start"].tolist()) and view == tuple(out["view"].tolist())


class _Wrap(torch.utils.data.Dataset):
    def __init__(self, items, transform):
        self.items, self.transform = items, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.transform(dict(self.items[index]))


def test_refusals():
    items = [_volume_item("A", (6, 6, 4)), _volume_item("B", (6, 6, 4)), _volume_item("C", (6, 6, 4), labeled=False)]
    crop = RandCropWithLocationd(keys=["image", "label"], roi_size=[4, 4, 3])
    with pytest.raises(InvalidInputError, match="permutation views only"):
        _loader(items, [crop, RandFourierRotated(keys=["image", "label"], angle_prob=1.0, angle_range=0.1)])
    with pytest.raises(InvalidInputError, match="RandFlipd"):
        _loader(items, [crop, RandFourierRotated(keys=["image", "label"]), RandFlipd(keys="image")])
    with pytest.raises(InvalidInputError, match="lack \\['label'\\]"):
        _loader(items, [crop, RandFourierRotated(keys=["image"])])
    with pytest.raises(InvalidInputError, match=r"case A: label values must be class indices in \[0, 1\), got values in \[0, 1\]"):
        _loader(items, num_classes=1)
    sampler = TwoStreamBatchSampler([0, 1], [2], batch_size=3, labeled_batch_size=2)
    with pytest.raises(TypeError, match="sample_seeds=True"):
        DeviceBatchLoader(items, LabelPlaceholderd(), [crop, RandFourierRotated(keys=["image", "label"])], sampler, "cpu")


def test_volumes_smaller_than_the_patch_are_refused_when_cached():
    items = [_volume_item("A", (6, 6, 4)), _volume_item("B", (3, 6, 4)), _volume_item("C", (6, 6, 4), labeled=False)]
    with pytest.raises(InvalidInputError, match=r"case B: patch size \(4, 4, 3\) does not fit in the volume of spatial shape \(3, 6, 4\)"):
        _loader(items)
