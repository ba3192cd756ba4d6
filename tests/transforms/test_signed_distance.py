"""Tests of sasnet_components.transforms.signed_distance."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.segmentation import find_boundaries

import sasnet_components.transforms.signed_distance as sd_module
from sasnet_components.transforms.signed_distance import signed_distance_map

BACKENDS = ["scipy", "torch"]


def reference_sdm(masks: np.ndarray) -> np.ndarray:
    """Independent computation: the reference code's formula with SciPy and scikit-image."""
    out = np.zeros(masks.shape, dtype=np.float64)
    for b, posmask in enumerate(masks.astype(bool)):
        if posmask.any() and not posmask.all():
            posdis = ndimage.distance_transform_edt(posmask)
            negdis = ndimage.distance_transform_edt(~posmask)
            boundary = find_boundaries(posmask, mode="inner")
            sdf = (negdis - negdis.min()) / (negdis.max() - negdis.min()) - (posdis - posdis.min()) / (
                posdis.max() - posdis.min()
            )
            sdf[boundary] = 0
            out[b] = sdf
    return out


def random_blobs(rng: np.random.Generator, shape: tuple[int, ...], level: float) -> np.ndarray:
    """Irregular blobs (several components, holes, touching the edges): smoothed noise > level."""
    noise = rng.normal(size=shape)
    smooth = ndimage.gaussian_filter(noise, sigma=[0] + [1.5] * (len(shape) - 1))
    return smooth > level * smooth.std()


def random_ellipsoids(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s) for s in shape[1:]], indexing="ij")
    out = np.zeros(shape, dtype=bool)
    for b in range(shape[0]):
        centre = [rng.uniform(0.2, 0.8) * s for s in shape[1:]]
        radii = [rng.uniform(0.15, 0.45) * s for s in shape[1:]]
        out[b] = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
    return out


# (seed, kind, batch shape, threshold level for blobs); 2D and 3D, anisotropic, small
RANDOM_CASES = [
    (0, "blobs", (2, 17, 23), 0.0),
    (1, "blobs", (3, 31, 12), 0.7),
    (2, "blobs", (2, 9, 10, 11), 0.0),
    (3, "blobs", (2, 14, 6, 19), -0.5),
    (4, "blobs", (1, 5, 24, 13), 1.0),
    (5, "ellipsoids", (3, 20, 20), None),
    (6, "ellipsoids", (2, 12, 16, 10), None),
    (7, "ellipsoids", (2, 25, 9, 7), None),
    (8, "blobs", (2, 3, 40, 8), 0.3),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_values_line_inside(backend):
    # mask 0 0 0 1 1 1 1 1 0 along the last axis of a (1, 1, 9) volume.
    # posdis (fg to nearest bg) at 3..7: 1 2 3 2 1, max 3; negdis (bg to nearest fg) at 0, 1, 2, 8:
    # 3 2 1 1, max 3. sdm = negdis/3 - posdis/3, inner boundary (indices 3 and 7) set to 0.
    mask = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 0]).view(1, 1, 1, 9)
    expected = torch.tensor([1, 2 / 3, 1 / 3, 0, -2 / 3, -1, -2 / 3, 0, 1 / 3]).view(1, 1, 1, 9)
    torch.testing.assert_close(signed_distance_map(mask, backend=backend), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_values_touching_array_edge(backend):
    # mask 1 1 1 0 0 0 0 0 0: the array edge is not background, so index 0 is not a boundary
    # voxel and its inside distance is 3 (to index 3). posdis = 3 2 1, negdis at 3..8 = 1..6.
    mask = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool).view(1, 1, 1, 9)
    expected = torch.tensor([-1, -2 / 3, 0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1]).view(1, 1, 1, 9)
    torch.testing.assert_close(signed_distance_map(mask, backend=backend), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_values_square_2d(backend):
    # 3x3 square in a 5x5 image: centre posdis 2 (max), the other 8 fg voxels are the boundary (0).
    # Background ring: edge voxels are 1 from the square, the 4 corners sqrt(2) (max) -> +1.
    mask = torch.zeros(1, 5, 5, dtype=torch.uint8)
    mask[0, 1:4, 1:4] = 1
    r = 1 / math.sqrt(2)
    expected = torch.tensor(
        [
            [1, r, r, r, 1],
            [r, 0, 0, 0, r],
            [r, 0, -1, 0, r],
            [r, 0, 0, 0, r],
            [1, r, r, r, 1],
        ]
    ).unsqueeze(0)
    torch.testing.assert_close(signed_distance_map(mask, backend=backend), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ball(backend):
    # ball of radius 2 (offsets with |o|^2 <= 4) centred in a 7x7x7 grid.
    grid = np.stack(np.meshgrid(*[np.arange(7) - 3] * 3, indexing="ij"))
    ball = torch.from_numpy((grid**2).sum(0) <= 4).unsqueeze(0)
    sdm = signed_distance_map(ball, backend=backend)[0]
    # Inside: the nearest background offset to the centre has |o|^2 = 5 -> posdis max sqrt(5);
    # the centre's face neighbours reach (2, 1, 0)-type offsets at sqrt(2).
    # Outside: the corners are farthest, sqrt(12) from the fg voxel (-1, -1, -1) -> +1;
    # voxel (3, 3, 6) is 1 from the fg voxel (3, 3, 5) -> 1 / sqrt(12).
    assert sdm[3, 3, 3].item() == pytest.approx(-1.0, abs=1e-6)
    assert sdm[0, 0, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert sdm[6, 6, 6].item() == pytest.approx(1.0, abs=1e-6)
    assert sdm[4, 3, 3].item() == pytest.approx(-math.sqrt(2) / math.sqrt(5), abs=1e-6)
    assert sdm[3, 3, 6].item() == pytest.approx(1 / math.sqrt(12), abs=1e-6)
    # (3, 3, 5) is a boundary voxel (face neighbour (3, 3, 6) is background): 0.
    assert sdm[3, 3, 5].item() == 0.0
    assert sdm.min().item() == pytest.approx(-1.0, abs=1e-6) and sdm.max().item() == pytest.approx(1.0, abs=1e-6)
    # zeros exactly on the 6-connected inner boundary, negative inside, positive outside
    boundary = torch.from_numpy(find_boundaries(ball[0].numpy(), mode="inner"))
    assert torch.equal(sdm == 0, boundary)
    assert bool((sdm[ball[0] & ~boundary] < 0).all()) and bool((sdm[~ball[0]] > 0).all())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed,kind,shape,level", RANDOM_CASES)
def test_matches_reference_on_random_masks(backend, seed, kind, shape, level):
    rng = np.random.default_rng(seed)
    masks = random_blobs(rng, shape, level) if kind == "blobs" else random_ellipsoids(rng, shape)
    expected = reference_sdm(masks)
    out = signed_distance_map(torch.from_numpy(masks), backend=backend)
    assert out.dtype == torch.float32 and out.shape == masks.shape
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6, rtol=0)
    # the boundary zeros are exactly skimage's inner boundaries
    for b in range(shape[0]):
        if masks[b].any() and not masks[b].all():
            np.testing.assert_array_equal(out[b].numpy() == 0, find_boundaries(masks[b], mode="inner"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_full_masks_give_zeros(backend):
    masks = torch.zeros(4, 6, 7, 5, dtype=torch.bool)
    masks[1] = True  # full: decided to be all zeros (the reference would give a [-1, 0] ramp)
    masks[2, 2:4, 3:5, 1:4] = True  # regular sample, must be unaffected by its neighbours
    masks[3] = True
    masks[3, 0, 0, 0] = False  # a single background voxel: not full any more
    out = signed_distance_map(masks, backend=backend)
    assert torch.equal(out[0], torch.zeros(6, 7, 5))
    assert torch.equal(out[1], torch.zeros(6, 7, 5))
    np.testing.assert_allclose(out[2:].numpy(), reference_sdm(masks[2:].numpy()), atol=1e-6, rtol=0)
    assert out[3, 0, 0, 0].item() == pytest.approx(1.0) and out[3].min().item() == pytest.approx(-1.0)


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float32, torch.float64])
def test_dtypes_device_and_no_grad(backend, dtype):
    mask = torch.zeros(2, 8, 9, 7, dtype=dtype)
    mask[0, 2:6, 3:7, 2:5] = 1
    mask[1, :3, :, :] = 1
    if dtype.is_floating_point:
        mask.requires_grad_(True)
    out = signed_distance_map(mask, backend=backend)
    assert out.dtype == torch.float32
    assert out.device == mask.device
    assert not out.requires_grad
    np.testing.assert_allclose(out.numpy(), reference_sdm(mask.detach().numpy() > 0), atol=1e-6, rtol=0)


def test_backends_agree_on_atrium_sized_patch():
    rng = np.random.default_rng(1)
    masks = torch.from_numpy(random_ellipsoids(rng, (2, 40, 36, 24)))
    torch.testing.assert_close(
        signed_distance_map(masks, "torch"), signed_distance_map(masks, "scipy"), atol=1e-6, rtol=0
    )


def test_empty_batch():
    out = signed_distance_map(torch.zeros(0, 4, 5, dtype=torch.bool), backend="scipy")
    assert out.shape == (0, 4, 5) and out.dtype == torch.float32


@pytest.mark.parametrize("budget", [1, 50, 10**9])
def test_torch_squared_edt_is_exact_for_any_chunking(monkeypatch, budget):
    monkeypatch.setattr(sd_module, "_CHUNK_ELEMENTS_CPU", budget)
    rng = np.random.default_rng(7)
    features = rng.random((3, 6, 11, 5)) > 0.93
    features[2] = False
    features[2, 5, 0, 4] = True  # a single feature voxel: most lines have none
    out = sd_module._squared_edt_torch(torch.from_numpy(features))
    expected = np.stack([ndimage.distance_transform_edt(~f) ** 2 for f in features])
    np.testing.assert_array_equal(out.numpy(), expected.astype(np.float32))


def test_errors():
    with pytest.raises(ValueError, match=r"`mask` must have shape \(B, \*spatial\).*got shape \(4, 5\)"):
        signed_distance_map(torch.zeros(4, 5))
    with pytest.raises(ValueError, match=r"`mask` must be binary.*unexpected values \[0.5, 2.0\]"):
        signed_distance_map(torch.tensor([[[0.0, 0.5], [1.0, 2.0]]]))
    with pytest.raises(ValueError, match=r"unexpected values \[-1\]"):
        signed_distance_map(torch.tensor([[[0, -1], [1, 1]]]))
    with pytest.raises(ValueError, match=r"`backend` must be one of \('auto', 'scipy', 'torch', 'cupy'\), got 'cuda'"):
        signed_distance_map(torch.zeros(1, 4, 4), backend="cuda")
    with pytest.raises(TypeError, match="`mask` must be a torch.Tensor, got ndarray"):
        signed_distance_map(np.zeros((1, 4, 4)))


# ---------------------------------------------------------------------- CuPy backend


def _scipy_edt(array: np.ndarray, float64_distances: bool = False) -> np.ndarray:
    """A stand-in for ``cupyx.scipy.ndimage.distance_transform_edt`` on NumPy arrays (CPU)."""
    assert array.dtype == np.uint8 and array.ndim in (2, 3) and float64_distances  # one sample, 0/1 codes
    return ndimage.distance_transform_edt(array)


@pytest.mark.parametrize("seed, kind, shape, level", RANDOM_CASES)
def test_cupy_path_logic_with_scipy_edt_on_cpu(seed, kind, shape, level):
    """The CuPy backend's code around the transform (per-sample calls, DLPack hand-over, normalisation,
    inner boundary, empty and full samples) run with NumPy arrays and SciPy's transform."""
    rng = np.random.default_rng(seed)
    masks = random_blobs(rng, shape, level) if kind == "blobs" else random_ellipsoids(rng, shape)
    masks = np.concatenate([masks, np.zeros_like(masks[:1]), np.ones_like(masks[:1])])  # + empty, full
    out = sd_module._sdm_from_edt(torch.from_numpy(masks), _scipy_edt, np.from_dlpack)
    assert out.dtype == torch.float32 and out.shape == masks.shape
    np.testing.assert_allclose(out.numpy(), reference_sdm(masks), atol=1e-6, rtol=0)
    assert not out[-2:].any()


def _fake_cupyx(monkeypatch) -> None:
    ndimage_module = types.ModuleType("cupyx.scipy.ndimage")
    ndimage_module.distance_transform_edt = _scipy_edt
    monkeypatch.setitem(sys.modules, "cupyx", types.ModuleType("cupyx"))
    monkeypatch.setitem(sys.modules, "cupyx.scipy", types.ModuleType("cupyx.scipy"))
    monkeypatch.setitem(sys.modules, "cupyx.scipy.ndimage", ndimage_module)


def test_cupy_backend_errors(monkeypatch):
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    monkeypatch.setitem(sys.modules, "cupyx", None)  # CuPy not installed
    with pytest.raises(ImportError, match=r"backend 'cupy' needs CuPy >= 13.*pip install cupy-cuda12x or cupy-cuda13x"):
        signed_distance_map(mask, backend="cupy")
    _fake_cupyx(monkeypatch)
    with pytest.raises(ValueError, match=r"backend 'cupy' needs a CUDA tensor, got a mask on cpu; use backend 'scipy'"):
        signed_distance_map(mask, backend="cupy")
    with pytest.raises(ValueError, match=r"supports masks \(B, H, W\) or \(B, H, W, D\).*got shape \(1, 2, 2, 2, 2\)"):
        signed_distance_map(torch.zeros(1, 2, 2, 2, 2, dtype=torch.bool), backend="cupy")


@pytest.mark.cuda  # and CuPy: run by scripts/device_check.sh
@pytest.mark.parametrize("seed, kind, shape, level", RANDOM_CASES)
def test_cupy_matches_scipy_and_torch_on_cuda(seed, kind, shape, level):
    rng = np.random.default_rng(seed)
    masks = random_blobs(rng, shape, level) if kind == "blobs" else random_ellipsoids(rng, shape)
    masks = np.concatenate([masks, np.zeros_like(masks[:1]), np.ones_like(masks[:1])])  # + empty, full
    cuda = torch.from_numpy(masks).cuda()
    out = signed_distance_map(cuda, backend="cupy")
    assert out.device == cuda.device and out.dtype == torch.float32
    np.testing.assert_allclose(out.cpu().numpy(), reference_sdm(masks), atol=1e-6, rtol=0)
    torch.testing.assert_close(out, signed_distance_map(cuda, backend="torch"), atol=1e-6, rtol=0)


@pytest.mark.cuda
def test_torch_backend_does_not_synchronise_on_cuda():
    masks = torch.from_numpy(random_ellipsoids(np.random.default_rng(0), (2, 20, 18, 16))).cuda()
    signed_distance_map(masks, backend="torch")  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        signed_distance_map(masks, backend="torch")
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_ensemble_to_sdm_passes_the_cupy_backend_through(monkeypatch):
    from sasnet_components.losses.src import ensemble_to_sdm

    prob = torch.softmax(torch.randn(2, 2, 6, 5, 4), dim=1)
    _fake_cupyx(monkeypatch)
    with pytest.raises(ValueError, match=r"backend 'cupy' needs a CUDA tensor, got a mask on cpu"):
        ensemble_to_sdm(prob, backend="cupy")
