from __future__ import annotations

from .checkpoint import AtomicCheckpointSaver
from .sar_fusion import SARFusion
from .segmentation_report import SegmentationReport

__all__ = ["AtomicCheckpointSaver", "SARFusion", "SegmentationReport"]
