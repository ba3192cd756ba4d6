from __future__ import annotations

from .datastore import datastore_datalists
from .datalist import PROTOCOLS, evaluation_datalist, semi_supervised_datalists
from .inference import SplitPredictiond, inference_datalist
from .samplers import SeededDataset, TwoStreamBatchSampler
from .sliding_window import overlap_for_stride, paper_window_positions
from .synthetic import make_synthetic_la

__all__ = [
    "PROTOCOLS",
    "SeededDataset",
    "SplitPredictiond",
    "TwoStreamBatchSampler",
    "datastore_datalists",
    "evaluation_datalist",
    "inference_datalist",
    "make_synthetic_la",
    "overlap_for_stride",
    "paper_window_positions",
    "semi_supervised_datalists",
]
