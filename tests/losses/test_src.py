"""Tests of sasnet_components.losses.src (SRC loss, paper Eq. 16, and its SDM target)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.segmentation import find_boundaries

from sasnet_components.losses.src import SRCLoss, ensemble_to_sdm


def reference_sdm(posmask: np.ndarray) -> np.ndarray:
    """Independent SDM of one non-empty, non-full mask (reference formula)."""
    posdis = ndimage.distance_transform_edt(posmask)
    negdis = ndimage.distance_transform_edt(~posmask)
    sdf = negdis / negdis.max() - posdis / posdis.max()
    sdf[find_boundaries(posmask, mode="inner")] = 0
    return sdf


def test_regression_equal_to_target_gives_zero():
    torch.manual_seed(0)
    sdm = torch.rand(2, 1, 4, 5, 6) * 2 - 1
    reg = torch.cat([torch.randn(2, 1, 4, 5, 6), sdm], dim=1)  # background channel arbitrary
    assert SRCLoss()(reg, reg.clone(), sdm).item() == 0.0


def test_two_voxel_hand_value():
    # C = 2, two voxels; background channel (9) is ignored.
    # reg_low fg = (0.5, -0.5), reg_high fg = (0, 1), sdm = (1, -1)
    # mse_low = (0.5^2 + 0.5^2) / 2 = 0.25, mse_high = (1^2 + 2^2) / 2 = 2.5 -> L = 2.75
    reg_low = torch.tensor([[9.0, 9.0], [0.5, -0.5]]).view(1, 2, 1, 2)
    reg_high = torch.tensor([[9.0, 9.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    sdm = torch.tensor([1.0, -1.0]).view(1, 1, 1, 2)
    loss = SRCLoss()
    assert loss(reg_low, reg_high, sdm).item() == pytest.approx(2.75)
    # (B, *spatial) target accepted for C = 2
    assert loss(reg_low, reg_high, sdm[:, 0]).item() == pytest.approx(2.75)


def test_multiclass_target_per_foreground_class():
    # C = 3, one voxel: fg regressions (0.2, -0.4) low, (0, 0) high; sdm (0.2, 0.6)
    # mse_low = (0 + 1.0^2) / 2 = 0.5, mse_high = (0.04 + 0.36) / 2 = 0.2 -> L = 0.7
    reg_low = torch.tensor([5.0, 0.2, -0.4]).view(1, 3, 1, 1)
    reg_high = torch.tensor([5.0, 0.0, 0.0]).view(1, 3, 1, 1)
    sdm = torch.tensor([0.2, 0.6]).view(1, 2, 1, 1)
    assert SRCLoss()(reg_low, reg_high, sdm).item() == pytest.approx(0.7)


def test_gradients_reach_regression_maps_not_target():
    torch.manual_seed(1)
    reg_low = torch.tanh(torch.randn(2, 2, 3, 4, 5)).requires_grad_(True)
    reg_high = torch.tanh(torch.randn(2, 2, 3, 4, 5)).requires_grad_(True)
    sdm = (torch.rand(2, 1, 3, 4, 5) * 2 - 1).requires_grad_(True)
    SRCLoss()(reg_low, reg_high, sdm).backward()
    assert sdm.grad is None
    # d/dreg_low[:, 1] = 2 (reg_low[:, 1] - sdm) / N with N = 2 * 1 * 3 * 4 * 5; background: 0
    n = sdm.numel()
    torch.testing.assert_close(reg_low.grad[:, 1:], 2 * (reg_low[:, 1:] - sdm).detach() / n)
    torch.testing.assert_close(reg_high.grad[:, 1:], 2 * (reg_high[:, 1:] - sdm).detach() / n)
    assert torch.equal(reg_low.grad[:, 0], torch.zeros(2, 3, 4, 5))


def test_ensemble_to_sdm_two_classes_by_hand():
    # foreground probability 0.1 0.2 0.5 0.9 0.6 0.7 0.8 0.51 0.3 -> mask (> 0.5, 0.5 excluded)
    # 0 0 0 1 1 1 1 1 0: sdm = 1, 2/3, 1/3, 0, -2/3, -1, -2/3, 0, 1/3 (see test_signed_distance)
    fg = torch.tensor([0.1, 0.2, 0.5, 0.9, 0.6, 0.7, 0.8, 0.51, 0.3]).view(1, 1, 1, 9)
    prob = torch.cat([1 - fg, fg], dim=1).requires_grad_(True)
    out = ensemble_to_sdm(prob)
    expected = torch.tensor([1, 2 / 3, 1 / 3, 0, -2 / 3, -1, -2 / 3, 0, 1 / 3]).view(1, 1, 1, 9)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert out.shape == (1, 1, 1, 9) and out.dtype == torch.float32 and not out.requires_grad


@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_ensemble_to_sdm_multiclass(backend):
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(ndimage.gaussian_filter(rng.normal(size=(2, 3, 10, 12, 9)), sigma=(0, 0, 2, 2, 2)))
    prob = torch.softmax(logits * 50, dim=1)
    out = ensemble_to_sdm(prob, backend=backend)
    assert out.shape == (2, 2, 10, 12, 9) and out.dtype == torch.float32
    label = prob.argmax(1).numpy()
    for b in range(2):
        for c in (1, 2):
            mask = label[b] == c
            assert mask.any() and not mask.all()
            np.testing.assert_allclose(out[b, c - 1].numpy(), reference_sdm(mask), atol=1e-6, rtol=0)


def test_ensemble_to_sdm_feeds_src_loss():
    torch.manual_seed(3)
    prob = torch.softmax(torch.randn(2, 2, 6, 7, 8), dim=1)
    sdm = ensemble_to_sdm(prob)
    reg = torch.cat([torch.zeros_like(sdm), sdm], dim=1)
    assert SRCLoss()(reg, reg, sdm).item() == 0.0


def test_errors():
    loss = SRCLoss()
    reg = torch.zeros(2, 2, 4, 4)
    with pytest.raises(ValueError, match=r"`reg_low` and `reg_high` must have the same shape"):
        loss(reg, torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"C >= 2 channels, got \(2, 1, 4, 4\)"):
        loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.zeros(2, 0, 4, 4))
    with pytest.raises(ValueError, match=r"`target_sdm` must have shape \(B, C - 1, \*spatial\) = \(2, 1, 4, 4\)"):
        loss(reg, reg, torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match=r"= \(2, 2, 4, 4\) for regression maps of shape \(2, 3, 4, 4\), got \(2, 4"):
        loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(TypeError, match="`target_sdm` must be a torch.Tensor"):
        loss(reg, reg, np.zeros((2, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"`ensemble_prob` must have shape \(B, C, \*spatial\).*got shape \(2, 2, 4\)"):
        ensemble_to_sdm(torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match="`backend` must be one of"):
        ensemble_to_sdm(torch.zeros(1, 2, 4, 4), backend="gpu")


def test_one_branch_keeps_the_high_level_term_only():
    # the example above without its low-level branch: mse_high = (1^2 + 2^2) / 2 = 2.5
    reg_high = torch.tensor([[9.0, 9.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    sdm = torch.tensor([1.0, -1.0]).view(1, 1, 1, 2)
    assert SRCLoss()(None, reg_high, sdm).item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match=r"`target_sdm` must have shape"):
        SRCLoss()(None, reg_high, sdm[..., :1])
