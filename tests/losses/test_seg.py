"""Tests of sasnet_components.losses.seg (supervised loss, paper Eq. 12-14)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sasnet_components.losses.seg import SegLoss

LN3 = math.log(3.0)


def two_voxel_case():
    """B=1, C=2, spatial (1, 2). Low branch: softmax fg prob 3/4 and 1/4; high branch: 1/2, 1/2."""
    logits_low = torch.tensor([[0.0, LN3], [LN3, 0.0]]).T.reshape(1, 2, 1, 2)  # voxel logits (0, ln3), (ln3, 0)
    logits_high = torch.zeros(1, 2, 1, 2)
    label = torch.tensor([1, 0]).view(1, 1, 1, 2)
    return logits_low, logits_high, label


def reference_binary_dice_loss(prob_fg: torch.Tensor, target: torch.Tensor, ep: float = 1e-8) -> torch.Tensor:
    """The reference code's foreground Dice, pooled over everything it is given."""
    intersection = 2 * torch.sum(prob_fg * target) + ep
    union = torch.sum(prob_fg) + torch.sum(target) + ep
    return 1 - intersection / union


def test_dice_mode_two_voxel_hand_value():
    # low: p_fg = (3/4, 1/4), y = (1, 0): 1 - (2 * 3/4) / (1 + 1) = 0.25
    # high: p_fg = (1/2, 1/2): 1 - (2 * 1/2) / (1 + 1) = 0.5           -> total 0.75
    loss = SegLoss(mode="dice")(*two_voxel_case())
    assert loss.item() == pytest.approx(0.75, abs=1e-7)


def test_dice_ce_mode_two_voxel_hand_value():
    # low: CE = -(ln 3/4 + ln 3/4) / 2 = 0.287682, Dice = 1 - (1.5 + 1e-5) / (2 + 1e-5) = 0.2500006
    # high: CE = ln 2 = 0.693147, Dice = 1 - (1 + 1e-5) / (2 + 1e-5) = 0.4999975  -> total 1.730826
    expected = -math.log(0.75) + 1 - (1.5 + 1e-5) / (2 + 1e-5) + math.log(2) + 1 - (1 + 1e-5) / (2 + 1e-5)
    assert expected == pytest.approx(1.730826, abs=1e-6)
    loss = SegLoss(mode="dice_ce")(*two_voxel_case())
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_dice_is_pooled_over_the_batch():
    # sample 0: as above (p_fg 3/4, 1/4; y 1, 0); sample 1: p_fg 1/2, 1/2, empty label.
    # pooled: 1 - 2 * 0.75 / ((0.75 + 0.25 + 0.5 + 0.5) + 1) = 1 - 1.5 / 3 = 0.5 per branch
    # (a per-sample mean would give (0.25 + 1) / 2 = 0.625)
    logits_low, _, label = two_voxel_case()
    logits = torch.cat([logits_low, torch.zeros(1, 2, 1, 2)])
    labels = torch.cat([label, torch.zeros_like(label)])
    assert SegLoss(mode="dice")(logits, logits, labels).item() == pytest.approx(1.0, abs=1e-6)


def test_dice_mode_multiclass_averages_classes():
    # C = 3, two voxels, all logits 0 -> p = 1/3 everywhere; y = (1, 2).
    # class 1: 1 - (2/3) / (2/3 + 1) = 0.6, class 2: 0.6 -> mean 0.6, two branches -> 1.2
    # with background: class 0 has y = 0: 1 - 1e-8 / (2/3 + 1e-8) ~ 1 -> mean 2.2 / 3, x2 = 1.46667
    logits = torch.zeros(1, 3, 1, 2)
    label = torch.tensor([1, 2]).view(1, 1, 1, 2)
    assert SegLoss(mode="dice")(logits, logits, label).item() == pytest.approx(1.2, abs=1e-6)
    assert SegLoss(mode="dice", include_background=True)(logits, logits, label).item() == pytest.approx(
        2 * 2.2 / 3, abs=1e-6
    )


def test_dice_mode_matches_reference_code():
    torch.manual_seed(0)
    logits_low, logits_high = torch.randn(2, 2, 6, 5, 4), torch.randn(2, 2, 6, 5, 4)
    label = (torch.rand(2, 1, 6, 5, 4) > 0.6).long()
    expected = sum(
        reference_binary_dice_loss(torch.softmax(z, 1)[:, 1], (label[:, 0] == 1).float())
        for z in (logits_low, logits_high)
    )
    torch.testing.assert_close(SegLoss(mode="dice")(logits_low, logits_high, label), expected)


def test_dice_ce_matches_independent_formula_multiclass():
    torch.manual_seed(1)
    logits_low, logits_high = torch.randn(3, 4, 5, 6, 3), torch.randn(3, 4, 5, 6, 3)
    label = torch.randint(0, 4, (3, 1, 5, 6, 3))

    def branch(z):
        ce = F.cross_entropy(z, label[:, 0])
        p = torch.softmax(z, 1)
        y = F.one_hot(label[:, 0], 4).permute(0, 4, 1, 2, 3).float()
        dims = (0, 2, 3, 4)
        dice = 1 - (2 * (p * y).sum(dims) + 1e-5) / (p.sum(dims) + y.sum(dims) + 1e-5)
        return ce + dice[1:].mean()

    expected = branch(logits_low) + branch(logits_high)
    torch.testing.assert_close(SegLoss()(logits_low, logits_high, label), expected)


def test_perfect_prediction_is_near_zero():
    label = torch.tensor([[0, 1], [1, 1]]).view(1, 1, 2, 2)
    logits = torch.cat([(label == 0).float(), (label == 1).float()], dim=1) * 50
    assert SegLoss(mode="dice")(logits, logits, label).item() == pytest.approx(0.0, abs=1e-6)
    assert SegLoss(mode="dice_ce")(logits, logits, label).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("mode", ["dice_ce", "dice"])
def test_gradients_reach_both_branches(mode):
    torch.manual_seed(2)
    logits_low = torch.randn(2, 2, 4, 4, 4, requires_grad=True)
    logits_high = torch.randn(2, 2, 4, 4, 4, requires_grad=True)
    label = torch.randint(0, 2, (2, 1, 4, 4, 4))
    SegLoss(mode=mode)(logits_low, logits_high, label).backward()
    assert logits_low.grad.abs().sum() > 0 and logits_high.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.float32, torch.bool])
def test_label_dtypes(dtype):
    logits_low, logits_high, label = two_voxel_case()
    assert SegLoss(mode="dice")(logits_low, logits_high, label.to(dtype)).item() == pytest.approx(0.75, abs=1e-7)


@pytest.mark.parametrize("mode", ["dice_ce", "dice"])
def test_no_labeled_sample_gives_zero(mode):
    logits = torch.randn(0, 2, 4, 4, requires_grad=True)
    loss = SegLoss(mode=mode)(logits, logits, torch.zeros(0, 1, 4, 4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0


def test_errors():
    with pytest.raises(ValueError, match=r"`mode` must be one of \('dice_ce', 'dice'\), got 'ce'"):
        SegLoss(mode="ce")
    with pytest.raises(ValueError, match="`smooth_nr` must be >= 0, got -1.0"):
        SegLoss(smooth_nr=-1.0)
    loss = SegLoss()
    logits = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match=r"out-of-range values \[2\]"):
        loss(logits, logits, torch.tensor([[[[0, 1, 2], [0, 0, 0], [1, 1, 2]]]]))
    with pytest.raises(ValueError, match=r"integer class indices in \[0, 2\) .* values \[-1.0, 0.5\]"):
        loss(logits, logits, torch.tensor([[[[0.0, 0.5, -1.0], [0, 0, 0], [1, 1, 1]]]]))
    with pytest.raises(ValueError, match=r"`label` must have shape \(B, 1, \*spatial\) = \(1, 1, 3, 3\)"):
        loss(logits, logits, torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`logits_low` and `logits_high` must have the same shape"):
        loss(logits, torch.zeros(1, 3, 3, 3), torch.zeros(1, 1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"C >= 2 channels, got \(1, 1, 3, 3\)"):
        loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="`label` must be a torch.Tensor, got list"):
        loss(logits, logits, [0, 1])


@pytest.mark.parametrize("mode", ["dice_ce", "dice"])
def test_one_branch_is_the_high_level_term(mode):
    g = torch.Generator().manual_seed(0)
    low, high = torch.randn(2, 2, 4, 4, 4, generator=g), torch.randn(2, 2, 4, 4, 4, generator=g)
    label = torch.randint(0, 2, (2, 1, 4, 4, 4), generator=g)
    loss = SegLoss(mode)
    one = loss(None, high, label)
    # the two-branch loss is the sum of the branch terms; with a low-level branch equal to the high one, twice this
    assert one.item() == pytest.approx(loss(high, high, label).item() / 2, rel=1e-6)
    assert loss(low, high, label).item() == pytest.approx(one.item() + loss(None, low, label).item(), rel=1e-6)
    assert loss(None, high[:0], label[:0]).item() == 0.0  # no labeled sample
    with pytest.raises(ValueError, match=r"`label` must have shape"):
        loss(None, high, label[:1])
