from __future__ import annotations

from .segmentation import EmptyMaskWarning, asd, dice, hd95, jaccard, region_metrics, segmentation_metrics

__all__ = ["EmptyMaskWarning", "asd", "dice", "hd95", "jaccard", "region_metrics", "segmentation_metrics"]
