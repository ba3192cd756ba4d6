"""Report how closely sasnet_components.metrics.segmentation agrees with medpy.metric.binary.

For ``n`` seeded random 3D mask pairs (correlated smoothed-noise blobs; half of them fill the
volume and touch its edges, half are confined to an interior box) this prints, per metric, the
maximum relative difference ``|ours - medpy| / |medpy|`` against ``medpy.metric.binary``
(``dc``, ``jc``, ``hd95``, ``asd``), in voxel units and with an anisotropic spacing, for both the
standalone functions and :func:`segmentation_metrics`, plus the wall time of each side.

Usage (from the repository root)::

    python scripts/check_metrics_vs_medpy.py             # n=20, seed=0
    python scripts/check_metrics_vs_medpy.py --n 50 --seed 3
"""

from __future__ import annotations

import time

import fire
import numpy as np
from medpy.metric import binary as medpy_binary
from scipy.ndimage import gaussian_filter

from sasnet_components.metrics.segmentation import asd, dice, hd95, jaccard, segmentation_metrics

__all__ = ["compare", "main"]


def _random_pair(rng: np.random.Generator, shape: tuple[int, ...], interior: bool) -> tuple[np.ndarray, np.ndarray]:
    base = gaussian_filter(rng.standard_normal(shape), sigma=3.0)
    noise = gaussian_filter(rng.standard_normal(shape), sigma=2.0)
    base /= base.std()
    noise /= noise.std()
    gt = base > 0.3
    pred = (base + 0.6 * noise) > 0.3
    if interior:
        box = tuple(slice(s // 5, s - s // 5) for s in shape)
        gt_keep = np.zeros(shape, dtype=bool)
        gt_keep[box] = True
        pred_keep = np.zeros(shape, dtype=bool)
        pred_keep[tuple(slice(b.start + 2, b.stop + 2) for b in box)] = True
        gt &= gt_keep
        pred &= pred_keep
    return pred, gt


def _rel(ours: float, ref: float) -> float:
    if ours == ref:
        return 0.0
    return abs(ours - ref) / max(abs(ref), 1e-12)


def compare(n: int = 20, seed: int = 0, shape: tuple[int, int, int] = (40, 36, 30),
            spacing: tuple[float, float, float] = (0.625, 0.625, 2.5)) -> dict[str, float]:
    """Print and return the max relative difference per metric against medpy.

    Args:
        n: number of random mask pairs.
        seed: seed of the numpy random generator.
        shape: volume shape ``(H, W, D)``.
        spacing: anisotropic voxel spacing in mm used for the ``*_mm`` comparisons.

    Returns:
        Mapping ``"<metric>"`` -> maximum relative difference over the ``n`` pairs.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    worst: dict[str, float] = {}
    t_ours = t_medpy = 0.0
    used = 0
    for i in range(n):
        pred, gt = _random_pair(rng, shape, interior=bool(i % 2))
        if not (pred.any() and gt.any()):
            continue
        used += 1
        t0 = time.perf_counter()
        ref = {
            "dice": medpy_binary.dc(pred, gt),
            "jaccard": medpy_binary.jc(pred, gt),
            "hd95": medpy_binary.hd95(pred, gt),
            "asd": medpy_binary.asd(pred, gt),
            "hd95_mm": medpy_binary.hd95(pred, gt, voxelspacing=spacing),
            "asd_mm": medpy_binary.asd(pred, gt, voxelspacing=spacing),
        }
        t1 = time.perf_counter()
        combined = segmentation_metrics(pred, gt, spacing=spacing)
        t2 = time.perf_counter()
        t_medpy += t1 - t0
        t_ours += t2 - t1
        standalone = {
            "dice": dice(pred, gt),
            "jaccard": jaccard(pred, gt),
            "hd95": hd95(pred, gt),
            "asd": asd(pred, gt),
            "hd95_mm": hd95(pred, gt, spacing=spacing),
            "asd_mm": asd(pred, gt, spacing=spacing),
        }
        for key, ref_value in ref.items():
            for prefix, ours in (("", standalone), ("segmentation_metrics.", combined)):
                name = prefix + key
                worst[name] = max(worst.get(name, 0.0), _rel(float(ours[key]), float(ref_value)))

    print(f"max relative difference vs medpy.metric.binary over {used} random pairs "
          f"(shape {shape}, seed {seed}, spacing for *_mm {spacing}):")
    for name, value in worst.items():
        print(f"  {name:<34s} {value:.3e}")
    print(f"time: medpy (6 calls) {t_medpy:.3f} s, segmentation_metrics {t_ours:.3f} s")
    return worst


def main(n: int = 20, seed: int = 0, shape: tuple[int, int, int] = (40, 36, 30),
         spacing: tuple[float, float, float] = (0.625, 0.625, 2.5)) -> None:
    """Command-line entry point: run :func:`compare` and print its table (arguments as there)."""
    compare(n=n, seed=seed, shape=shape, spacing=spacing)


if __name__ == "__main__":
    fire.Fire(main)
