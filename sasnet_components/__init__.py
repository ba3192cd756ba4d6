"""SASNet components for MONAI: network, view transforms, SAR fusion handler, losses and metrics.

Paper: "Scale-aware Adaptive Supervised Network with Limited Medical Annotations". Every public
name is importable from the package root, e.g. ``sasnet_components.DualBranchVNet`` in bundle
YAML as ``_target_: sasnet_components.DualBranchVNet``.
"""

from __future__ import annotations

from .data import (
    DeviceBatchLoader,
    SeededDataset,
    SplitPredictiond,
    TwoStreamBatchSampler,
    datastore_datalists,
    evaluation_datalist,
    inference_datalist,
    make_synthetic_la,
    overlap_for_stride,
    paper_window_positions,
    semi_supervised_datalists,
)
from .engines import SemiSupervisedTrainer, sigmoid_rampup
from .handlers import (
    AtomicCheckpointSaver,
    CaseProgressLogger,
    GlobalRandomState,
    IterationSeeding,
    RunLimit,
    RunProgressBar,
    SARFusion,
    ScheduledValidationHandler,
    SegmentationReport,
)
from .losses import SEG_LOSS_MODES, PLCLoss, SegLoss, SRCLoss, ensemble_to_sdm, sharpen
from .metrics import EmptyMaskWarning, asd, dice, hd95, jaccard, region_metrics, segmentation_metrics
from .networks import DualBranchOutput, DualBranchUncertainty, DualBranchVNet, decoder_disagreement
from .transforms import (
    BRATS_REGIONS,
    SDM_BACKENDS,
    CheckedLoadImaged,
    ClassRegionsd,
    FourierRotate,
    LabelPlaceholderd,
    RandCropWithLocationd,
    RandFourierRotated,
    apply_view,
    class_regions,
    fourier_rotate_plane,
    signed_distance_map,
)
from .utils.console import TqdmLoggingHandler, log_above_bars, progress_enabled

__version__ = "0.1.0"

__all__ = [
    "AtomicCheckpointSaver",
    "CaseProgressLogger",
    "BRATS_REGIONS",
    "CheckedLoadImaged",
    "ClassRegionsd",
    "DeviceBatchLoader",
    "GlobalRandomState",
    "IterationSeeding",
    "SeededDataset",
    "SplitPredictiond",
    "LabelPlaceholderd",
    "RandCropWithLocationd",
    "RunLimit",
    "RunProgressBar",
    "ScheduledValidationHandler",
    "SegmentationReport",
    "SemiSupervisedTrainer",
    "TqdmLoggingHandler",
    "TwoStreamBatchSampler",
    "datastore_datalists",
    "evaluation_datalist",
    "inference_datalist",
    "make_synthetic_la",
    "overlap_for_stride",
    "paper_window_positions",
    "progress_enabled",
    "semi_supervised_datalists",
    "sigmoid_rampup",
    "DualBranchOutput",
    "DualBranchUncertainty",
    "DualBranchVNet",
    "EmptyMaskWarning",
    "FourierRotate",
    "PLCLoss",
    "RandFourierRotated",
    "SARFusion",
    "SDM_BACKENDS",
    "SEG_LOSS_MODES",
    "SRCLoss",
    "SegLoss",
    "apply_view",
    "asd",
    "class_regions",
    "decoder_disagreement",
    "dice",
    "ensemble_to_sdm",
    "fourier_rotate_plane",
    "hd95",
    "jaccard",
    "log_above_bars",
    "region_metrics",
    "segmentation_metrics",
    "sharpen",
    "signed_distance_map",
]
