"""Benchmark of ``signed_distance_map`` against the reference code's per-volume SciPy loop.

Times, on a batch of random left-atrium-like masks (a large ellipsoid with a few smaller
ellipsoidal lobes, in a 112 x 112 x 80 patch by default):

(a) the reference-style loop (``compute_sdf``: NumPy loop over the batch, two
    ``distance_transform_edt`` and ``skimage.segmentation.find_boundaries`` per volume),
(b) ``signed_distance_map(..., backend="scipy")`` on CPU,
(c) ``signed_distance_map(..., backend="torch")`` on CPU,
(d) ``signed_distance_map(..., backend="torch")`` on CUDA, when a GPU is available,
(e) ``signed_distance_map(..., backend="cupy")`` on CUDA, when a GPU and CuPy (>= 13, with
    ``cupyx.scipy.ndimage``) are available,

and prints the median seconds per batch, the speed-ups over (a) and the largest absolute
difference from (a); with (e) also the largest absolute differences of the CuPy backend from
the torch backend on CUDA and from the SciPy backend. Methods that cannot run are reported as
skipped, with the reason.

Usage:
    python scripts/benchmark_sdm.py --batch 4 --shape 112 112 80 --repeats 5 --seed 0
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from typing import Callable

import numpy as np
import torch
from scipy import ndimage
from skimage import segmentation

from sasnet_components.transforms.signed_distance import signed_distance_map

__all__ = ["reference_compute_sdf", "random_atrium_masks", "main"]


def reference_compute_sdf(img_gt: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    """The reference code's SDM: a plain NumPy loop over the batch (float64 output)."""
    img_gt = img_gt.astype(np.uint8)
    normalized_sdf = np.zeros(out_shape)
    for b in range(out_shape[0]):
        posmask = img_gt[b].astype(bool)
        if posmask.any():
            negmask = ~posmask
            posdis = ndimage.distance_transform_edt(posmask)
            negdis = ndimage.distance_transform_edt(negmask)
            boundary = segmentation.find_boundaries(posmask, mode="inner").astype(np.uint8)
            sdf = (negdis - np.min(negdis)) / (np.max(negdis) - np.min(negdis) + 1e-9) - (
                posdis - np.min(posdis)
            ) / (np.max(posdis) - np.min(posdis) + 1e-9)
            sdf[boundary == 1] = 0
            normalized_sdf[b] = sdf
    return normalized_sdf


def random_atrium_masks(batch: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Bool masks ``(batch, *shape)``: one large ellipsoid body plus 2-4 smaller lobes each."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    size = np.asarray(shape, dtype=np.float32)
    masks = np.zeros((batch, *shape), dtype=bool)
    for b in range(batch):
        centre = rng.uniform(0.4, 0.6, len(shape)) * size
        radii = rng.uniform(0.25, 0.35, len(shape)) * size
        parts = [(centre, radii)]
        for _ in range(rng.integers(2, 5)):
            direction = rng.normal(size=len(shape))
            direction /= np.linalg.norm(direction)
            parts.append((centre + direction * radii * 1.1, radii * rng.uniform(0.2, 0.4)))
        for c, r in parts:
            masks[b] |= sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) < 1.0
    return torch.from_numpy(masks)


def _median_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up (thread pool, allocator, CUDA kernels)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print a table and return the median seconds per method."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4, help="masks per batch (default 4)")
    parser.add_argument("--shape", type=int, nargs="+", default=[112, 112, 80], help="spatial shape")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random masks (default 0)")
    args = parser.parse_args(argv)

    masks = random_atrium_masks(args.batch, tuple(args.shape), args.seed)
    fraction = masks.float().mean().item()
    print(
        f"masks: batch {args.batch}, shape {tuple(args.shape)}, foreground {100 * fraction:.1f} %, "
        f"repeats {args.repeats}, torch threads {torch.get_num_threads()}"
    )

    def cpu_sync() -> None:
        return None

    def reference() -> torch.Tensor:
        # the reference converts the batch to NumPy and back, as its training loop does
        out = reference_compute_sdf(masks.numpy(), tuple(masks.shape))
        return torch.from_numpy(out).float()

    methods: dict[str, tuple[Callable[[], torch.Tensor], Callable[[], None]]] = {
        "(a) reference loop (numpy/scipy/skimage)": (reference, cpu_sync),
        "(b) ours, backend scipy (CPU)": (lambda: signed_distance_map(masks, "scipy"), cpu_sync),
        "(c) ours, backend torch (CPU)": (lambda: signed_distance_map(masks, "torch"), cpu_sync),
    }
    if torch.cuda.is_available():
        masks_cuda = masks.cuda()
        methods["(d) ours, backend torch (CUDA)"] = (
            lambda: signed_distance_map(masks_cuda, "torch"),
            torch.cuda.synchronize,
        )
    else:
        print("(d) ours, backend torch (CUDA): skipped, no CUDA device")
    cupy_missing = _cupy_missing()
    if torch.cuda.is_available() and cupy_missing is None:
        methods["(e) ours, backend cupy (CUDA)"] = (
            lambda: signed_distance_map(masks_cuda, "cupy"),
            torch.cuda.synchronize,
        )
    else:
        reasons = ([] if torch.cuda.is_available() else ["no CUDA device"]) + ([cupy_missing] if cupy_missing else [])
        print(f"(e) ours, backend cupy (CUDA): skipped, {' and '.join(reasons)}")

    expected = reference()
    results: dict[str, float] = {}
    for name, (fn, sync) in methods.items():
        seconds = _median_seconds(fn, args.repeats, sync)
        diff = (fn().cpu() - expected).abs().max().item()
        results[name] = seconds
        speedup = results["(a) reference loop (numpy/scipy/skimage)"] / seconds
        print(f"{name:44s} median {seconds:8.4f} s   speed-up vs (a) {speedup:6.2f}x   max |diff| {diff:.2e}")
    if "(e) ours, backend cupy (CUDA)" in methods:
        cupy_out = signed_distance_map(masks_cuda, "cupy")
        vs_torch = (cupy_out - signed_distance_map(masks_cuda, "torch")).abs().max().item()
        vs_scipy = (cupy_out.cpu() - signed_distance_map(masks, "scipy")).abs().max().item()
        print(f"max |cupy - torch| (CUDA) {vs_torch:.2e}   max |cupy - scipy| {vs_scipy:.2e}")
    return results


def _cupy_missing() -> str | None:
    """Why the CuPy backend cannot be imported, or ``None`` when it can."""
    try:
        importlib.import_module("cupyx.scipy.ndimage")
    except ImportError as error:
        return f"no CuPy with cupyx.scipy.ndimage ({error})"
    return None


if __name__ == "__main__":
    main()
