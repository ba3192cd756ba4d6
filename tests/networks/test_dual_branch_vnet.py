from __future__ import annotations

import io

import pytest
import torch

from sasnet_components.networks.dual_branch_vnet import (
    DualBranchOutput,
    DualBranchUncertainty,
    DualBranchVNet,
    decoder_disagreement,
)


def _conv(c_in: int, c_out: int, k: int, dims: int = 3) -> int:
    return c_in * c_out * k**dims + c_out  # weights + bias


def _conv_bn(c_in: int, c_out: int, k: int) -> int:
    return _conv(c_in, c_out, k) + 2 * c_out  # + BatchNorm affine


def _expected_parameter_count(n: int = 16, in_ch: int = 1, out_ch: int = 2) -> int:
    """Layer-by-layer count of the architecture described in the paper (section 3.1)."""
    w = [n, 2 * n, 4 * n, 8 * n, 16 * n]
    stages = [1, 2, 3, 3, 3]
    encoder = 0
    for level in range(5):
        c_in = in_ch if level == 0 else w[level]
        encoder += _conv_bn(c_in, w[level], 3) + (stages[level] - 1) * _conv_bn(w[level], w[level], 3)
        if level < 4:
            encoder += _conv_bn(w[level], w[level + 1], 2)  # stride-2 downsampling
    convs = sum(stages[level] * _conv_bn(w[level], w[level], 3) for level in range(4))
    ups_low = sum(_conv_bn(w[level + 1], w[level], 2) for level in range(3))  # 4->3, 3->2, 2->1
    heads = 2 * _conv(n, out_ch, 1)
    low = convs + ups_low + heads
    high = low + _conv_bn(w[4], w[3], 2)  # the extra up-step 5->4
    return encoder + low + high


def test_parameter_count_matches_paper():
    net = DualBranchVNet(spatial_dims=3, in_channels=1, out_channels=2, n_filters=16, norm="batch", dropout=0.5)
    count = sum(p.numel() for p in net.parameters())
    assert count == _expected_parameter_count() == 11_258_376
    assert abs(count - 11.26e6) / 11.26e6 < 0.005


def test_every_parameter_is_used():
    net = DualBranchVNet(n_filters=4).train()
    out = net(torch.randn(2, 1, 16, 16, 16))
    sum(t.sum() for t in out).backward()
    unused = [name for name, p in net.named_parameters() if p.grad is None]
    assert unused == []


@pytest.mark.parametrize(
    "args, shape",
    [
        ({"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "n_filters": 4}, (2, 1, 32, 16, 48)),
        ({"spatial_dims": 3, "in_channels": 2, "out_channels": 3, "n_filters": 4, "norm": "instance"}, (1, 2, 32, 32, 32)),
        ({"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "n_filters": 4}, (2, 1, 32, 48)),
    ],
)
def test_train_and_eval_outputs(args, shape):
    net = DualBranchVNet(**args)
    x = torch.randn(*shape)
    out = net.train()(x)
    assert isinstance(out, DualBranchOutput)
    expected = (shape[0], args["out_channels"], *shape[2:])
    for name in DualBranchOutput._fields:
        assert getattr(out, name).shape == expected
    assert out.reg_low.abs().max() <= 1 and out.reg_high.abs().max() <= 1  # tanh range

    net.eval()
    with torch.no_grad():
        prob = net(x)
        branches = net.forward_branches(x)
    assert prob.shape == expected
    torch.testing.assert_close(prob.sum(dim=1), torch.ones(expected[:1] + expected[2:]))
    mean = 0.5 * (torch.softmax(branches.seg_low, 1) + torch.softmax(branches.seg_high, 1))
    torch.testing.assert_close(prob, mean)


def test_low_decoder_never_sees_level_five():
    # train mode (batch statistics) and no dropout: an untrained eval-mode net attenuates deep signals
    net = DualBranchVNet(n_filters=4, dropout=0.0).train()
    x = torch.randn(2, 1, 32, 32, 32)
    features = net.encoder(x)
    seg_low, reg_low = net.decoder_low(features)
    features[-1] = torch.randn_like(features[-1])  # change only the deepest features
    seg_low2, reg_low2 = net.decoder_low(features)
    seg_high, _ = net.decoder_high(net.encoder(x))
    seg_high2, _ = net.decoder_high(features)
    torch.testing.assert_close(seg_low, seg_low2)
    torch.testing.assert_close(reg_low, reg_low2)
    assert not torch.allclose(seg_high, seg_high2)


def test_torchscript_eval_matches_eager():
    net = DualBranchVNet(n_filters=4).eval()
    x = torch.randn(1, 1, 16, 32, 16)
    scripted = torch.jit.script(net)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=1e-6)


def test_uncertainty_wrapper():
    net = DualBranchVNet(n_filters=4, out_channels=3).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        out = DualBranchUncertainty(net)(x)
        low, high = net.branch_probabilities(x)
    assert out.shape == (1, 4, 16, 16, 16)
    torch.testing.assert_close(out[:, :3], net(x))
    torch.testing.assert_close(out[:, 3:], 0.5 * (low - high).abs().sum(1, keepdim=True))
    assert torch.jit.script(DualBranchUncertainty(net))(x).shape == (1, 4, 16, 16, 16)


def test_decoder_disagreement_hand_values():
    # voxel 0: identical distributions -> 0; voxel 1: opposite one-hot -> 1;
    # voxel 2: (0.7, 0.3) vs (0.4, 0.6) -> 0.5 * (0.3 + 0.3) = 0.3
    low = torch.tensor([[0.5, 1.0, 0.7], [0.5, 0.0, 0.3]]).reshape(1, 2, 3)
    high = torch.tensor([[0.5, 0.0, 0.4], [0.5, 1.0, 0.6]]).reshape(1, 2, 3)
    torch.testing.assert_close(decoder_disagreement(low, high), torch.tensor([[[0.0, 1.0, 0.3]]]))


def test_dropout_only_in_training():
    net = DualBranchVNet(n_filters=4, dropout=0.5).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x))
        net.train()
        a, b = net.forward_branches(x).seg_high, net.forward_branches(x).seg_high
    assert not torch.allclose(a, b)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((1, 1, 30, 32, 16), r"divisible by 16.*\(30, 32, 16\)"),
        ((1, 2, 32, 32, 16), r"1 channel\(s\).*\(1, 2, 32, 32, 16\)"),
        ((1, 32, 32, 16), r"3 spatial dims, got shape \(1, 32, 32, 16\)"),
    ],
)
def test_bad_input_raises(shape, match):
    net = DualBranchVNet(n_filters=4)
    with pytest.raises(ValueError, match=match):
        net(torch.randn(*shape))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"spatial_dims": 1}, ValueError, "spatial_dims` must be 2 or 3, got 1"),
        ({"out_channels": 1}, ValueError, "out_channels` must be an integer >= 2, got 1"),
        ({"dropout": 1.0}, ValueError, r"dropout` must be in \[0, 1\), got 1.0"),
        ({"norm": "unknown_norm"}, ValueError, "Unsupported option 'UNKNOWN_NORM'"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        DualBranchVNet(**kwargs)


def test_uncertainty_wrapper_needs_dual_branch_network():
    with pytest.raises(TypeError, match="must be a DualBranchVNet, got Linear"):
        DualBranchUncertainty(torch.nn.Linear(2, 2))


def test_one_branch_has_no_low_level_decoder():
    two, one = DualBranchVNet(n_filters=4), DualBranchVNet(n_filters=4, low_level_branch=False)
    assert one.decoder_low is None
    assert not [name for name, _ in one.named_parameters() if name.startswith("decoder_low")]
    low = sum(p.numel() for p in two.decoder_low.parameters())
    assert sum(p.numel() for p in one.parameters()) == sum(p.numel() for p in two.parameters()) - low
    # the paper's layer count without the low-level decoder: encoder + high-level decoder
    full = _expected_parameter_count()
    assert sum(p.numel() for p in DualBranchVNet(low_level_branch=False).parameters()) == full - sum(
        p.numel() for p in DualBranchVNet().decoder_low.parameters()
    )


def test_one_branch_outputs():
    torch.manual_seed(0)
    net = DualBranchVNet(n_filters=2, low_level_branch=False)
    x = torch.randn(2, 1, 16, 16, 16)
    out = net.train()(x)
    assert out.seg_low is None and out.reg_low is None
    assert tuple(out.seg_high.shape) == tuple(out.reg_high.shape) == (2, 2, 16, 16, 16)
    net.eval()
    with torch.no_grad():
        seg_high, _ = net.decoder_high(net.encoder(x))
        expected = torch.softmax(seg_high, dim=1)
        assert torch.equal(net(x), expected)  # eval: the high-level decoder's softmax
        prob_low, prob_high = net.branch_probabilities(x)
        assert torch.equal(prob_low, expected) and torch.equal(prob_high, expected)
        both = DualBranchUncertainty(net)(x)
        assert torch.equal(both[:, :2], expected) and torch.equal(both[:, 2:], torch.zeros(2, 1, 16, 16, 16))


@pytest.mark.parametrize("low_level_branch", [True, False])
def test_scripted_network_matches_eager(low_level_branch):
    torch.manual_seed(0)
    net = DualBranchVNet(n_filters=2, low_level_branch=low_level_branch).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        assert torch.equal(torch.jit.load(buffer)(x), scripted(x))  # saved and loaded
        assert torch.jit.script(DualBranchUncertainty(net))(x).shape == (1, 3, 16, 16, 16)


def test_low_level_branch_must_be_a_bool():
    with pytest.raises(ValueError, match=r"`low_level_branch` must be True or False, got 'no'"):
        DualBranchVNet(low_level_branch="no")
