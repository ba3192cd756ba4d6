from __future__ import annotations

from .fourier_rotate import FourierRotate, RandFourierRotated, apply_view, fourier_rotate_plane
from .io import CheckedLoadImaged
from .semi_supervised import LabelPlaceholderd, RandCropWithLocationd
from .signed_distance import SDM_BACKENDS, signed_distance_map

__all__ = [
    "CheckedLoadImaged",
    "FourierRotate",
    "LabelPlaceholderd",
    "RandCropWithLocationd",
    "RandFourierRotated",
    "SDM_BACKENDS",
    "apply_view",
    "fourier_rotate_plane",
    "signed_distance_map",
]
