from __future__ import annotations

from .case_progress import CaseProgressLogger
from .checkpoint import AtomicCheckpointSaver
from .progress import RunProgressBar
from .random_state import GlobalRandomState, IterationSeeding
from .run_limit import RunLimit
from .sar_fusion import SARFusion
from .segmentation_report import SegmentationReport
from .validation import ScheduledValidationHandler

__all__ = [
    "AtomicCheckpointSaver",
    "CaseProgressLogger",
    "GlobalRandomState",
    "IterationSeeding",
    "RunLimit",
    "RunProgressBar",
    "SARFusion",
    "ScheduledValidationHandler",
    "SegmentationReport",
]
