"""Tests of sasnet_components.losses.plc (PLC loss, paper Eq. 15)."""

from __future__ import annotations

import math

import pytest
import torch

from sasnet_components.losses.plc import PLCLoss, sharpen


def reference_sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """The reference code's two-class sharpening, applied per channel."""
    return p ** (1 / temperature) / (p ** (1 / temperature) + (1 - p) ** (1 / temperature))


def sharpen_pair(p: float, temperature: float) -> float:
    """Plain-Python sharpening of the probability p of one of two classes."""
    a, b = p ** (1 / temperature), (1 - p) ** (1 / temperature)
    return a / (a + b)


def two_voxel(values: list[list[float]]) -> torch.Tensor:
    """(B=1, C=2, 1, 2) tensor from per-voxel class probabilities [[p0, p1], [p0, p1]]."""
    return torch.tensor(values, dtype=torch.float64).T.reshape(1, 2, 1, 2)


@pytest.mark.parametrize(
    "temperature,dtype",
    [(0.1, torch.float32), (0.5, torch.float32), (0.1, torch.float64), (1.0, torch.float64), (2.0, torch.float64)],
)
def test_sharpen_equals_reference_formula_for_two_classes(temperature, dtype):
    # (float32 with T > 1 is left out: the reference's 1 - p loses the small class probability
    # to cancellation and p^(1/T) amplifies it; ours uses the second channel directly.)
    torch.manual_seed(0)
    prob = torch.softmax(3 * torch.randn(2, 2, 5, 6, 4, dtype=dtype), dim=1)
    torch.testing.assert_close(sharpen(prob, temperature), reference_sharpen(prob, temperature), atol=1e-6, rtol=0)


def test_sharpen_multiclass_by_hand():
    # p = (0.5, 0.3, 0.2), T = 0.5: p^2 = (0.25, 0.09, 0.04), sum 0.38
    prob = torch.tensor([0.5, 0.3, 0.2]).view(1, 3, 1, 1)
    expected = torch.tensor([0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38]).view(1, 3, 1, 1)
    torch.testing.assert_close(sharpen(prob, 0.5), expected, atol=1e-6, rtol=0)
    # one-hot probabilities (zeros included) are fixed points
    onehot = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(sharpen(onehot, 0.1), onehot)


def test_one_hot_predictions_give_zero():
    label = torch.randint(0, 3, (2, 6, 5, 4), generator=torch.Generator().manual_seed(0))
    prob = torch.nn.functional.one_hot(label, 3).permute(0, 4, 1, 2, 3).float()
    assert PLCLoss()(prob, prob).item() == 0.0


def test_two_voxel_hand_value():
    # C = 2, two voxels, T = 0.1 (exponent 10):
    #   p_low  = [[0.8, 0.2], [0.4, 0.6]]  -> sharpen: 0.8 -> 0.8^10 / (0.8^10 + 0.2^10) = 0.99999905,
    #                                        0.4 -> 0.4^10 / (0.4^10 + 0.6^10) = 0.01704
    #   p_high = [[0.5, 0.5], [0.9, 0.1]]  -> sharpen: 0.5 -> 0.5, 0.9 -> 0.9999999997
    # L = mean over 4 values of (p_low - sh(p_high))^2 + mean of (p_high - sh(p_low))^2
    #   voxel 1: p_low - sh(p_high) = (0.3, -0.3); p_high - sh(p_low) = (-0.49999905, 0.49999905)
    #   voxel 2: p_low - sh(p_high) = (-0.6, 0.6); p_high - sh(p_low) = (0.88296, -0.88296)
    #   L = (0.09 + 0.09 + 0.36 + 0.36) / 4 + (0.25 + 0.25 + 0.77962 + 0.77962) / 4
    #     = 0.225 + 0.51481 = 0.73981
    t = 0.1
    p_low, p_high = [[0.8, 0.2], [0.4, 0.6]], [[0.5, 0.5], [0.9, 0.1]]
    sh_low = [[sharpen_pair(v[0], t), sharpen_pair(v[1], t)] for v in p_low]
    sh_high = [[sharpen_pair(v[0], t), sharpen_pair(v[1], t)] for v in p_high]
    low_vs_high = sum((p_low[i][k] - sh_high[i][k]) ** 2 for i in range(2) for k in range(2)) / 4
    high_vs_low = sum((p_high[i][k] - sh_low[i][k]) ** 2 for i in range(2) for k in range(2)) / 4
    expected = low_vs_high + high_vs_low
    assert sh_low[0][0] == pytest.approx(0.99999905, abs=1e-8)
    assert expected == pytest.approx(0.73981, abs=1e-5)
    loss = PLCLoss(temperature=t)(two_voxel(p_low), two_voxel(p_high))
    assert loss.item() == pytest.approx(expected, abs=1e-10)


def test_temperature_one_is_twice_the_mse():
    # T = 1: sharpen is the identity, L = mse(a, b) + mse(b, a) = 2 * mse(a, b)
    a, b = two_voxel([[0.8, 0.2], [0.4, 0.6]]), two_voxel([[0.5, 0.5], [0.9, 0.1]])
    # differences 0.3, 0.3, 0.5, 0.5 -> mse = (0.09 * 2 + 0.25 * 2) / 4 = 0.17
    assert PLCLoss(temperature=1.0)(a, b).item() == pytest.approx(0.34, abs=1e-12)


def test_gradient_through_target_by_default_and_detached_option():
    torch.manual_seed(1)
    logits_low, logits_high = torch.randn(2, 2, 4, 3, 5), torch.randn(2, 2, 4, 3, 5)
    grads = {}
    for detach in (False, True):
        p_low = torch.softmax(logits_low, 1).requires_grad_(True)
        p_high = torch.softmax(logits_high, 1).requires_grad_(True)
        PLCLoss(detach_target=detach)(p_low, p_high).backward()
        assert p_low.grad.abs().sum() > 0 and p_high.grad.abs().sum() > 0
        grads[detach] = (p_low.grad, p_high.grad, p_low.detach(), p_high.detach())
    # detached target: d/dp_low of mean((p_low - sh(p_high))^2) = 2 (p_low - sh(p_high)) / N only
    g_low, _, p_low, p_high = grads[True]
    torch.testing.assert_close(g_low, 2 * (p_low - sharpen(p_high, 0.1)) / p_low.numel())
    # default: the target path adds a gradient, so the two differ
    assert not torch.allclose(grads[False][0], grads[True][0])
    assert not torch.allclose(grads[False][1], grads[True][1])


def test_gradient_wrt_logits_equals_reference_formula():
    # Through softmax the per-channel reference sharpening and ours give the same loss and grads.
    torch.manual_seed(2)
    logits = [torch.randn(2, 2, 3, 4, 5, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    ours = PLCLoss(0.1)(*(torch.softmax(z, 1) for z in logits))
    g_ours = torch.autograd.grad(ours, logits)
    p = [torch.softmax(z, 1) for z in logits]
    ref = ((p[0] - reference_sharpen(p[1], 0.1)) ** 2).mean() + ((p[1] - reference_sharpen(p[0], 0.1)) ** 2).mean()
    g_ref = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-6)


def test_no_nan_with_exact_zeros():
    p_low = two_voxel([[1.0, 0.0], [0.3, 0.7]]).requires_grad_(True)
    p_high = two_voxel([[0.0, 1.0], [0.6, 0.4]]).requires_grad_(True)
    loss = PLCLoss()(p_low, p_high)
    loss.backward()
    assert math.isfinite(loss.item())
    assert torch.isfinite(p_low.grad).all() and torch.isfinite(p_high.grad).all()


def test_errors():
    with pytest.raises(ValueError, match="`temperature` must be a positive finite number, got 0"):
        PLCLoss(temperature=0)
    with pytest.raises(ValueError, match="`temperature` must be a positive finite number, got -0.5"):
        PLCLoss(temperature=-0.5)
    with pytest.raises(TypeError, match="`temperature` must be a positive number, got str"):
        PLCLoss(temperature="0.1")
    loss = PLCLoss()
    with pytest.raises(ValueError, match=r"must have the same shape .* got \(1, 2, 4, 4\) and \(1, 2, 4, 5\)"):
        loss(torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 5))
    with pytest.raises(ValueError, match=r"at least 3 dims and C >= 2 channels, got \(2, 2\)"):
        loss(torch.rand(2, 2), torch.rand(2, 2))
    with pytest.raises(ValueError, match=r"C >= 2 channels, got \(2, 1, 4, 4\)"):
        loss(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
    with pytest.raises(TypeError, match="`prob_high` must be a torch.Tensor, got list"):
        loss(torch.rand(1, 2, 3), [0.5])
