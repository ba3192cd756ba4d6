"""Every SASNet part with more than two classes, on hand-made volumes with hand-checked numbers."""

from __future__ import annotations

import math

import pytest
import torch
from monai.transforms import EnsureTyped

from sasnet_components import (
    DeviceBatchLoader,
    LabelPlaceholderd,
    RandCropWithLocationd,
    RandFourierRotated,
    TwoStreamBatchSampler,
)
from sasnet_components.engines.semi_supervised_trainer import SemiSupervisedTrainer
from sasnet_components.handlers.sar_fusion import SARFusion
from sasnet_components.losses.plc import PLCLoss, sharpen
from sasnet_components.losses.seg import SegLoss
from sasnet_components.losses.src import SRCLoss, ensemble_to_sdm
from sasnet_components.networks.dual_branch_vnet import DualBranchVNet
from sasnet_components.transforms.signed_distance import signed_distance_map
from sasnet_components.utils import InvalidInputError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------- SAR, C = 4
def test_sar_confidence_is_the_probability_of_the_true_class_with_four_classes():
    # two voxels (1, 4, 1, 1, 2); voxel 0 is class 2, voxel 1 class 3
    low = torch.tensor([[0.1, 0.7], [0.2, 0.1], [0.3, 0.1], [0.4, 0.1]]).reshape(1, 4, 1, 1, 2)
    high = torch.tensor([[0.25, 0.1], [0.25, 0.1], [0.25, 0.1], [0.25, 0.7]]).reshape(1, 4, 1, 1, 2)
    label = torch.tensor([2, 3]).reshape(1, 1, 1, 1, 2)
    sar = SARFusion(alpha=0.5, dtype="float32")
    common = dict(labeled=[True], label=label, case_ids=["a"], crop_starts=[[0, 0, 0]], views=[[0, 1, 2]])
    fused = sar.fuse(low, high, case_shapes=[[1, 1, 2]], **common)
    # fresh memory 0.5 for both branches: softmax(1.25 * low + 1.25 * high)
    assert torch.allclose(fused, torch.softmax(1.25 * (low + high), dim=1))
    current = sar.memory["a"][0]  # paper mode: (3 epochs, 2 branches, *case); slot 0 = this epoch
    assert current[0].reshape(-1).tolist() == pytest.approx([0.3, 0.1])  # low: p_low[2] at voxel 0, p_low[3] at voxel 1
    assert current[1].reshape(-1).tolist() == pytest.approx([0.25, 0.7])  # high
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        sar.fuse(low, high, case_shapes=[[1, 1, 2]], **{**common, "label": torch.full_like(label, 4)})
    # two epochs later the weights are those confidences: (1 + 0.5 * c) * p per branch
    sar.epoch_completed()
    sar.epoch_completed()
    fused = sar.fuse(low, high, case_shapes=[[1, 1, 2]], update=False, **common)
    w_low = torch.tensor([0.3, 0.1]).reshape(1, 1, 1, 1, 2)
    w_high = torch.tensor([0.25, 0.7]).reshape(1, 1, 1, 1, 2)
    assert torch.allclose(fused, torch.softmax((1 + 0.5 * w_low) * low + (1 + 0.5 * w_high) * high, dim=1))


# ---------------------------------------------------------------------- SRC, C = 3
def _three_class_boxes():
    label = torch.zeros(8, 8, 8, dtype=torch.long)
    label[1:3, 1:4, 1:3] = 1
    label[5:7, 4:7, 3:6] = 2
    prob = torch.nn.functional.one_hot(label, 3).permute(3, 0, 1, 2)[None].float() * 0.7 + 0.1  # argmax = label
    return label, prob


def test_ensemble_sdm_is_one_map_per_foreground_class():
    label, prob = _three_class_boxes()
    sdm = ensemble_to_sdm(prob, backend="scipy")
    assert sdm.shape == (1, 2, 8, 8, 8)
    for c in (1, 2):
        expected = signed_distance_map((label == c)[None], backend="scipy")[0]
        assert torch.equal(sdm[0, c - 1], expected)
    # inside each box the map is negative, on its inner boundary 0, elsewhere positive
    assert sdm[0, 0][label == 2].gt(0).all() and sdm[0, 1][label == 1].gt(0).all()


def test_src_loss_compares_each_foreground_class_with_its_map():
    label, prob = _three_class_boxes()
    sdm = ensemble_to_sdm(prob, backend="scipy")
    reg = torch.zeros(1, 3, 8, 8, 8)
    reg[:, 0] = 0.9  # background channel: not supervised
    reg[:, 1:] = sdm
    assert SRCLoss()(reg, reg, sdm).item() == 0.0
    off = reg.clone()
    off[:, 1] += 0.5  # class 1 off by 0.5 everywhere, class 2 exact: mean over both maps 0.25 / 2
    assert SRCLoss()(off, reg, sdm).item() == pytest.approx(0.125)
    assert SRCLoss()(off, off, sdm).item() == pytest.approx(0.25)
    assert SRCLoss()(None, off, sdm).item() == pytest.approx(0.125)
    with pytest.raises(ValueError, match="C - 1"):
        SRCLoss()(reg, reg, sdm[:, :1])


# ---------------------------------------------------------------------- PLC, C = 3
def test_sharpen_three_classes_by_hand():
    p = torch.tensor([0.5, 0.3, 0.2]).reshape(1, 3, 1, 1)
    # T = 0.5: squares 0.25, 0.09, 0.04, sum 0.38
    assert sharpen(p, 0.5).reshape(-1).tolist() == pytest.approx([0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38], rel=1e-6)
    assert torch.allclose(sharpen(p, 1.0), p)
    # two classes: the binary formula p^(1/T) / (p^(1/T) + (1 - p)^(1/T))
    q = torch.tensor([0.3, 0.7]).reshape(1, 2, 1, 1)
    fg = 0.7**10 / (0.7**10 + 0.3**10)
    assert sharpen(q, 0.1).reshape(-1).tolist() == pytest.approx([1 - fg, fg], rel=1e-5)


def test_plc_loss_three_classes_by_hand():
    p_low = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1, 1)  # one-hot: sharpening keeps it
    p_high = torch.tensor([0.5, 0.3, 0.2]).reshape(1, 3, 1, 1, 1)
    s = [25 / 38, 9 / 38, 4 / 38]  # sharpen(p_high, 0.5)
    term_low = ((1 - s[0]) ** 2 + s[1] ** 2 + s[2] ** 2) / 3  # mean((p_low - sharpen(p_high))^2)
    term_high = (0.5**2 + 0.3**2 + 0.2**2) / 3  # mean((p_high - p_low)^2)
    assert PLCLoss(temperature=0.5)(p_low, p_high).item() == pytest.approx(term_low + term_high, rel=1e-5)


# ---------------------------------------------------------------------- SegLoss, C = 4
def test_seg_loss_four_classes_by_hand():
    label = torch.tensor([0, 1, 2, 3]).reshape(1, 1, 1, 1, 4)
    logits = torch.zeros(1, 4, 1, 1, 4)  # p = 1/4 everywhere
    # per branch: CE = log 4; Dice of each foreground class (one voxel each) = 2 * 1/4 / (4 * 1/4 + 1) = 1/4
    per_branch = math.log(4) + (1 - 0.25)
    assert SegLoss(mode="dice_ce")(logits, logits, label).item() == pytest.approx(2 * per_branch, rel=1e-5)
    assert SegLoss(mode="dice")(None, logits, label).item() == pytest.approx(0.75, rel=1e-6)
    exact = torch.nn.functional.one_hot(label[:, 0], 4).permute(0, 4, 1, 2, 3).float() * 40.0
    assert SegLoss(mode="dice_ce")(exact, exact, label).item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        SegLoss()(logits, logits, label + 1)


# ---------------------------------------------------------------------- trainer, C = 4
def test_trainer_one_iteration_four_channels_four_classes():
    size = 16
    g = torch.Generator().manual_seed(0)
    label = torch.zeros(4, 1, size, size, size, dtype=torch.uint8)
    label[:, :, 2:8, 2:8, 2:8] = 1
    label[:, :, 9:14, 2:8, 2:8] = 2
    label[:, :, 4:12, 9:14, 8:14] = 3
    label[2:] = 0  # unlabeled placeholders
    batch = {
        "image": torch.rand(4, 4, size, size, size, generator=g) + label.float(),
        "label": label,
        "labeled": torch.tensor([True, True, False, False]),
        "case_id": ["a", "b", "u1", "u2"],
        "crop_start": torch.zeros(4, 3, dtype=torch.long),
        "view": torch.tensor([[0, 1, 2]] * 4),
        "case_shape": torch.full((4, 3), size, dtype=torch.long),
    }
    torch.manual_seed(0)
    net = DualBranchVNet(in_channels=4, out_channels=4, n_filters=2)
    sar = SARFusion()
    trainer = SemiSupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[batch],
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
        sar_fusion=sar,
        rampup_interval=1,
        rampup_length=4,
        epoch_length=1,
        decollate=False,
    )
    trainer.run()
    output = trainer.state.output
    losses = {k: float(torch.as_tensor(v).detach()) for k, v in output.items() if "loss" in k}
    assert losses and all(math.isfinite(v) for v in losses.values())
    assert set(sar.memory) == {"a", "b"} and sar.memory["a"].shape == (3, 2, size, size, size)


# ---------------------------------------------------------------------- DeviceBatchLoader, 4-channel images
def _item(case, shape, labeled=True):
    n = int(torch.tensor(shape).prod())
    base = torch.arange(n, dtype=torch.float32).reshape(1, *shape)
    item = {"image": torch.cat([base + 1000 * c for c in range(4)]), "case_id": case}  # channel c = index + 1000 c
    if labeled:
        item["label"] = (base.long() % 4).to(torch.uint8)
    return item


def _device_loader(items, **kwargs):
    sampler = TwoStreamBatchSampler([0, 1], [2], batch_size=3, labeled_batch_size=2, seed=5, sample_seeds=True)
    random_transform = [
        RandCropWithLocationd(keys=["image", "label"], roi_size=[4, 4, 3]),
        RandFourierRotated(keys=["image", "label"], views=[[0, 1, 2], [1, 0, 2]], discrete=[False, True]),
        EnsureTyped(keys=["image", "label"], track_meta=False),
    ]
    return DeviceBatchLoader(items, LabelPlaceholderd(), random_transform, sampler, device="cpu", **kwargs)


def test_device_loader_four_channel_images_and_four_classes():
    shape = (6, 7, 5)
    items = [_item("A", shape), _item("B", shape), _item("C", shape, labeled=False)]
    loader = _device_loader(items, num_classes=4)
    reference = _item("R", shape)["image"]
    for batch in loader:
        assert batch["image"].shape == (3, 4, 4, 4, 3) and batch["label"].shape == (3, 1, 4, 4, 3)
        for i in range(3):
            (x, y, z), view = batch["crop_start"][i].tolist(), batch["view"][i].tolist()
            crop = reference[:, x : x + 4, y : y + 4, z : z + 3].permute(0, *(1 + v for v in view))
            assert torch.equal(batch["image"][i], crop)  # all four channels, same crop and view
            if batch["labeled"][i]:
                assert torch.equal(batch["label"][i], (crop[:1].long() % 4).to(torch.uint8))
                assert int(batch["label"][i].max()) <= 3
    with pytest.raises(InvalidInputError, match=r"case A: label values must be class indices in \[0, 3\), got values in \[0, 3\]"):
        _device_loader(items, num_classes=3)
