from __future__ import annotations

from .brats import prepare_brats
from .datalist import PROTOCOLS, evaluation_datalist, semi_supervised_datalists
from .datastore import datastore_datalists
from .device_loader import DeviceBatchLoader
from .inference import SplitPredictiond, inference_datalist
from .nifti_folders import prepare_nifti_folders
from .pack import decode_image, encode_image, join_file, pack_dataset, split_file, unpack_dataset
from .pancreas import prepare_pancreas
from .samplers import SeededDataset, TwoStreamBatchSampler
from .sliding_window import overlap_for_stride, paper_window_positions
from .synthetic import make_synthetic_la, make_synthetic_nifti

__all__ = [
    "DeviceBatchLoader",
    "PROTOCOLS",
    "SeededDataset",
    "SplitPredictiond",
    "TwoStreamBatchSampler",
    "datastore_datalists",
    "decode_image",
    "encode_image",
    "evaluation_datalist",
    "inference_datalist",
    "join_file",
    "make_synthetic_la",
    "make_synthetic_nifti",
    "overlap_for_stride",
    "pack_dataset",
    "paper_window_positions",
    "prepare_brats",
    "prepare_nifti_folders",
    "prepare_pancreas",
    "semi_supervised_datalists",
    "split_file",
    "unpack_dataset",
]
