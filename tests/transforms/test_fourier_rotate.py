"""Tests for the View Variance Enhancement transforms (paper section 3.3, Eq. 9-11)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from sasnet_components.transforms.fourier_rotate import (
    FourierRotate,
    RandFourierRotated,
    apply_view,
    fourier_rotate_plane,
)

LA_VIEWS = ((0, 1, 2), (1, 0, 2))


def _kspace_transpose(x: np.ndarray, view) -> np.ndarray:
    """Explicit Eq. 9-11 with a transposition of k-space: fftn -> transpose -> ifftn -> real part."""
    spatial = tuple(range(1, x.ndim))
    spec = np.fft.fftn(x, axes=spatial)
    spec = np.transpose(spec, (0, *(1 + p for p in view)))
    return np.real(np.fft.ifftn(spec, axes=spatial))


def _circular_flip(x: np.ndarray, axis: int) -> np.ndarray:
    """out[i] = x[(-i) mod N] along `axis`."""
    return np.roll(np.flip(x, axis), 1, axis)


# ---------------------------------------------------------------- transposition views (no FFT)


@pytest.mark.parametrize("view", list(itertools.permutations(range(3))))
def test_transposition_equals_explicit_kspace_path_3d(view):
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((2, 12, 10, 8)).astype(np.float32)  # non-cubic: all perms allowed
        fast = FourierRotate(view=view)(x)
        explicit = _kspace_transpose(x.astype(np.float64), view)
        assert isinstance(fast, np.ndarray) and fast.shape == explicit.shape
        np.testing.assert_allclose(fast, explicit, atol=1e-5, rtol=0)
        # and it is exactly the image-space transposition
        np.testing.assert_array_equal(fast, np.transpose(x, (0, *(1 + p for p in view))))


@pytest.mark.parametrize("view", [(0, 1), (1, 0)])
def test_transposition_equals_explicit_kspace_path_2d(view):
    x = np.random.default_rng(1).standard_normal((1, 12, 7))
    fast = FourierRotate(view=view)(torch.as_tensor(x))
    assert isinstance(fast, torch.Tensor) and not isinstance(fast, MetaTensor)
    np.testing.assert_allclose(fast.numpy(), _kspace_transpose(x, view), atol=1e-5, rtol=0)


def test_transposition_hand_example():
    # x[0, i, j, 0] = 10 * i + j, shape (1, 2, 3, 1); swapping the first two axes gives y[0, j, i, 0]
    x = torch.tensor([[[[0], [1], [2]], [[10], [11], [12]]]])
    y = FourierRotate(view=(1, 0, 2))(x)
    assert y.shape == (1, 3, 2, 1)
    assert y[0, :, :, 0].tolist() == [[0, 10], [1, 11], [2, 12]]


def test_labels_stay_integer_under_transposition():
    rng = np.random.default_rng(2)
    label = rng.integers(0, 3, size=(1, 12, 12, 8)).astype(np.uint8)
    out = FourierRotate(view=(2, 0, 1), discrete=True)(torch.as_tensor(label))
    assert out.dtype == torch.uint8
    np.testing.assert_array_equal(out.numpy(), np.transpose(label, (0, 3, 1, 2)))


def test_inverse_round_trip_metatensor_exact():
    affine = torch.tensor([[0.0, 2.0, 0.0, 5.0], [1.0, 0.0, 0.0, -1.0], [0.0, 0.0, 3.0, 7.0], [0.0, 0.0, 0.0, 1.0]])
    x = MetaTensor(torch.randn(1, 12, 10, 8), affine=affine)
    for view in itertools.permutations(range(3)):
        t = FourierRotate(view=view)
        y = t(x)
        assert isinstance(y, MetaTensor) and len(y.applied_operations) == 1
        assert y.applied_operations[-1]["extra_info"]["view"] == list(view)
        # every output voxel keeps its world position: affine_new @ j == affine @ x_src
        j = torch.tensor([3.0, 1.0, 2.0, 1.0], dtype=torch.float64)
        src = torch.ones(4, dtype=torch.float64)
        for k, p in enumerate(view):
            src[p] = j[k]
        assert torch.equal(y.affine @ j, x.affine.double() @ src)
        assert torch.equal(y[0, 3, 1, 2], x[0, int(src[0]), int(src[1]), int(src[2])])
        back = t.inverse(y)
        assert torch.equal(back.as_tensor(), x.as_tensor())
        assert torch.equal(back.affine, x.affine.double())
        assert len(back.applied_operations) == 0


def test_inverse_plain_arrays_uses_own_view():
    x = np.random.default_rng(3).standard_normal((1, 5, 6, 7))
    t = FourierRotate(view=(1, 2, 0))
    y = t(x)
    assert y.shape == (1, 6, 7, 5)
    np.testing.assert_array_equal(t.inverse(y), x)


def test_apply_view_helper_inverse_and_batched():
    x = torch.randn(2, 1, 4, 5, 6)
    y = apply_view(x, torch.tensor([2, 0, 1]), leading_dims=2)
    assert y.shape == (2, 1, 6, 4, 5)
    assert torch.equal(apply_view(y, (2, 0, 1), inverse=True, leading_dims=2), x)


# ---------------------------------------------------------------- angle views (k-space resampling)


def test_quarter_turn_is_transpose_plus_circular_flip():
    # F'(k_a, k_b) = F(k_b, -k_a)  =>  out[x_a, x_b] = img[x_b, (-x_a) mod N] (exact for odd N)
    x = np.random.default_rng(4).standard_normal((2, 9, 9, 4))
    out = fourier_rotate_plane(x, math.pi / 2, axes=(0, 1))
    expected = _circular_flip(np.transpose(x, (0, 2, 1, 3)), axis=1)
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)
    # the same with the image-space flip N-1-x (a plain rotation) does NOT match
    assert np.abs(out - np.flip(np.transpose(x, (0, 2, 1, 3)), axis=1)).max() > 0.1


def test_quarter_turn_hand_example_2d():
    # 3x3 plane, x[i, j] = 3 * i + j; out[a, b] = x[b, -a mod 3]:
    # row a=0 -> x[b, 0] = 0, 3, 6; a=1 -> x[b, 2] = 2, 5, 8; a=2 -> x[b, 1] = 1, 4, 7
    x = torch.arange(9.0).reshape(1, 3, 3)
    out = fourier_rotate_plane(x, math.pi / 2, axes=(0, 1))
    expected = torch.tensor([[[0.0, 3.0, 6.0], [2.0, 5.0, 8.0], [1.0, 4.0, 7.0]]])
    assert torch.allclose(out, expected, atol=1e-4)


def test_half_turn_is_circular_point_reflection():
    # F'(k) = F(-k)  =>  out[x] = img[-x mod N] in the plane
    x = np.random.default_rng(5).standard_normal((1, 7, 4, 7))
    out = fourier_rotate_plane(x, math.pi, axes=(0, 2))
    np.testing.assert_allclose(out, _circular_flip(_circular_flip(x, 1), 3), atol=1e-4, rtol=0)


def test_angle_zero_is_identity():
    x = torch.randn(1, 12, 12, 8)
    out = fourier_rotate_plane(x, 0.0, axes=(0, 1))
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.allclose(out, x, atol=1e-5)


@pytest.mark.parametrize("angle", [0.3, -1.1, 2.5])
def test_mean_intensity_preserved(angle):
    x = torch.rand(1, 12, 12, 8, dtype=torch.float64) + 2.0
    out = FourierRotate(angle=angle, axes=(0, 1))(x)
    assert abs(out.mean().item() - x.mean().item()) < 1e-5
    assert (out - x).abs().max() > 0.1  # it did change the image


def test_angle_runs_after_transposition():
    x = torch.randn(1, 9, 9, 4)
    out = FourierRotate(view=(1, 0, 2), angle=math.pi / 2, axes=(0, 1))(x)
    # transpose(transpose(x)) = x, then circular flip of axis 0 (spatial)
    expected = _circular_flip(x.numpy(), axis=1)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4, rtol=0)


def test_discrete_labels_go_through_same_view():
    rng = np.random.default_rng(6)
    label = torch.as_tensor(rng.integers(0, 3, size=(1, 9, 9, 5)), dtype=torch.int64)
    # a quarter turn maps one-hot channels exactly, so the argmax equals the exact mapping
    out = FourierRotate(angle=math.pi / 2, axes=(0, 1), discrete=True)(label)
    assert out.dtype == torch.int64
    expected = _circular_flip(np.transpose(label.numpy(), (0, 2, 1, 3)), axis=1)
    np.testing.assert_array_equal(out.numpy(), expected)
    # an arbitrary angle keeps labels integer-valued and within the input classes
    blob = torch.zeros(1, 9, 9, 5, dtype=torch.float32)
    blob[0, 2:7, 2:7, 1:4] = 2.0
    rot = FourierRotate(angle=0.4, axes=(0, 1), discrete=True)(blob)
    assert rot.dtype == torch.float32
    assert set(rot.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(rot, rot.round()) and rot.sum() > 0


def test_angle_view_not_invertible():
    x = MetaTensor(torch.randn(1, 9, 9, 4))
    t = FourierRotate(angle=0.2)
    with pytest.raises(NotImplementedError, match="not exactly invertible"):
        t.inverse(t(x))


def test_angle_2d_and_numpy_type():
    x = np.random.default_rng(7).standard_normal((1, 11, 11)).astype(np.float32)
    out = FourierRotate(angle=math.pi / 2)(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, _circular_flip(np.transpose(x, (0, 2, 1)), axis=1), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- RandFourierRotated


def _sample(shape=(1, 12, 12, 8), seed=0):
    rng = np.random.default_rng(seed)
    image = torch.as_tensor(rng.standard_normal(shape), dtype=torch.float32)
    label = torch.as_tensor(rng.integers(0, 2, size=shape), dtype=torch.uint8)
    return {"image": image, "label": label}


def test_rand_reproducible_with_seed():
    data = _sample()
    t1 = RandFourierRotated(keys=("image", "label"), views=LA_VIEWS).set_random_state(seed=42)
    t2 = RandFourierRotated(keys=("image", "label"), views=LA_VIEWS).set_random_state(seed=42)
    seq1, seq2 = [], []
    for _ in range(20):
        o1, o2 = t1(data), t2(data)
        assert torch.equal(o1["image"], o2["image"]) and torch.equal(o1["label"], o2["label"])
        seq1.append(tuple(o1["view"].tolist()))
        seq2.append(tuple(o2["view"].tolist()))
    assert seq1 == seq2 and len(set(seq1)) == 2


def test_rand_la_views_equally_likely():
    t = RandFourierRotated(keys="image", views=LA_VIEWS).set_random_state(seed=0)
    data = {"image": torch.zeros(1, 4, 4, 2)}
    counts = {v: 0 for v in LA_VIEWS}
    for _ in range(200):
        counts[tuple(t(data)["view"].tolist())] += 1
    assert all(70 <= c <= 130 for c in counts.values()), counts


def test_rand_view_probs_respected():
    t = RandFourierRotated(keys="image", views=LA_VIEWS, view_probs=(0.0, 1.0)).set_random_state(seed=0)
    data = {"image": torch.zeros(1, 4, 4, 2)}
    assert all(t(data)["view"].tolist() == [1, 0, 2] for _ in range(10))


def test_rand_recorded_view_matches_applied():
    views = ((0, 1, 2), (0, 2, 1), (2, 1, 0))  # the Pancreas/BraTS views of a cubic patch
    data = _sample(shape=(1, 8, 8, 8))
    t = RandFourierRotated(keys=("image", "label"), views=views).set_random_state(seed=3)
    seen = set()
    for _ in range(15):
        out = t(data)
        perm = out["view"].tolist()
        seen.add(tuple(perm))
        assert out["view"].dtype == torch.long and out["view_angle"].item() == 0.0
        order = (0, *(1 + p for p in perm))
        assert torch.equal(out["image"], data["image"].permute(order))
        assert torch.equal(out["label"], data["label"].permute(order))
        assert out["label"].dtype == torch.uint8
    assert seen == set(views)


def test_rand_angle_recorded_and_applied():
    data = _sample(shape=(1, 9, 9, 4))
    t = RandFourierRotated(
        keys=("image", "label"), views=LA_VIEWS, angle_prob=1.0, angle_range=0.5, discrete=(False, True)
    ).set_random_state(seed=5)
    out = t(data)
    angle = out["view_angle"].item()
    assert 0.0 < abs(angle) <= 0.5
    ref = FourierRotate(view=out["view"].tolist(), angle=angle, axes=(0, 1))(data["image"])
    assert torch.allclose(out["image"], ref, atol=1e-6)
    assert out["label"].dtype == torch.uint8 and set(out["label"].unique().tolist()) <= {0, 1}
    with pytest.raises(NotImplementedError, match="not exactly invertible"):
        t.inverse(out)


def test_rand_inverse_round_trip_metatensor():
    data = _sample(shape=(1, 12, 12, 8))
    affine = torch.diag(torch.tensor([0.625, 0.5, 2.0, 1.0]))
    data = {k: MetaTensor(v, affine=affine) for k, v in data.items()}
    t = RandFourierRotated(keys=("image", "label"), views=LA_VIEWS).set_random_state(seed=1)
    swapped = 0
    for _ in range(6):
        out = t(data)
        swapped += out["view"].tolist() == [1, 0, 2]
        back = t.inverse(out)
        for k in ("image", "label"):
            assert isinstance(back[k], MetaTensor)
            assert torch.equal(back[k].as_tensor(), data[k].as_tensor())
            assert torch.equal(back[k].affine, data[k].affine.double())
            assert len(back[k].applied_operations) == 0
        assert back["label"].dtype == torch.uint8
    assert 0 < swapped < 6  # both views were exercised
    # also through Compose.inverse
    c = Compose([RandFourierRotated(keys=("image", "label"), views=((1, 0, 2),))])
    back = c.inverse(c(data))
    assert torch.equal(back["image"].as_tensor(), data["image"].as_tensor())


def test_rand_inverse_plain_tensors_uses_recorded_view():
    data = {"image": np.random.default_rng(8).standard_normal((1, 5, 6, 7))}
    t = RandFourierRotated(keys="image", views=((2, 0, 1),))
    out = t(data)
    assert isinstance(out["image"], np.ndarray) and out["image"].shape == (1, 7, 5, 6)
    np.testing.assert_array_equal(t.inverse(out)["image"], data["image"])


def test_rand_2d():
    x = torch.randn(1, 12, 10)
    t = RandFourierRotated(keys="image", views=((0, 1), (1, 0)), view_probs=(0.0, 1.0))
    out = t({"image": x})
    assert torch.equal(out["image"][0], x[0].T)
    assert out["view"].tolist() == [1, 0]


# ---------------------------------------------------------------- errors


def test_error_messages():
    with pytest.raises(ValueError, match=r"`views` must hold permutations of range\(n\).*entry 1: \(0, 0, 2\)"):
        RandFourierRotated(keys="image", views=((0, 1, 2), (0, 0, 2)))
    with pytest.raises(ValueError, match="`views` must all permute the same number"):
        RandFourierRotated(keys="image", views=((0, 1, 2), (1, 0)))
    with pytest.raises(ValueError, match=r"`view_probs` must have one entry per view \(2\), got 3"):
        RandFourierRotated(keys="image", view_probs=(0.2, 0.3, 0.5))
    with pytest.raises(ValueError, match="`view_probs` must be non-negative and sum to 1"):
        RandFourierRotated(keys="image", view_probs=(0.2, 0.3))
    with pytest.raises(ValueError, match=r"`angle_prob` must be in \[0, 1\], got 1.5"):
        RandFourierRotated(keys="image", angle_prob=1.5)
    with pytest.raises(ValueError, match="`discrete` must be a bool or one bool per key"):
        RandFourierRotated(keys=("image", "label"), discrete=(True,))
    with pytest.raises(ValueError, match="`view_key` 'image' must differ"):
        RandFourierRotated(keys="image", view_key="image")
    with pytest.raises(ValueError, match=r"`view` must be a permutation of range\(3\).*got \(0, 1, 1\)"):
        FourierRotate(view=(0, 1, 1))
    t = RandFourierRotated(keys=("image", "label"))
    with pytest.raises(KeyError, match="Key `label` of transform `RandFourierRotated` was missing"):
        t({"image": torch.zeros(1, 4, 4, 2)})
    assert "label" not in RandFourierRotated(keys=("image", "label"), allow_missing_keys=True)(
        {"image": torch.zeros(1, 4, 4, 2)}
    )
    with pytest.raises(ValueError, match=r"`views` permute 3 spatial axes but data\['image'\] has shape \(1, 4, 4\)"):
        t({"image": torch.zeros(1, 4, 4), "label": torch.zeros(1, 4, 4)})
    with pytest.raises(ValueError, match=r"`view` \(1, 0, 2\) permutes 3 spatial axes but `img` has shape \(1, 4, 4\)"):
        FourierRotate(view=(1, 0, 2))(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="equal-sized axes.*have sizes 12 and 8"):
        RandFourierRotated(keys="image", angle_prob=0.5, angle_range=0.1, angle_axes=(0, 2))(
            {"image": torch.zeros(1, 12, 12, 8)}
        )
    with pytest.raises(ValueError, match=r"equal-sized axes: `axes` \(1, 2\).*have sizes 12 and 8"):
        fourier_rotate_plane(torch.zeros(1, 12, 12, 8), 0.3, axes=(1, 2))
    with pytest.raises(ValueError, match="`angle_axes` must be two different spatial axes"):
        RandFourierRotated(keys="image", angle_axes=(1, 1))
    with pytest.raises(ValueError, match="integer class indices"):
        fourier_rotate_plane(torch.full((1, 5, 5), 0.5), 0.3, discrete=True)
    with pytest.raises(TypeError, match="`angle` must be a number"):
        FourierRotate(angle="90")
