from __future__ import annotations

from .checkpoint import AtomicCheckpointSaver
from .random_state import GlobalRandomState
from .sar_fusion import SARFusion
from .segmentation_report import SegmentationReport
from .validation import ScheduledValidationHandler

__all__ = ["AtomicCheckpointSaver", "GlobalRandomState", "SARFusion", "ScheduledValidationHandler", "SegmentationReport"]
