from __future__ import annotations

from .fourier_rotate import FourierRotate, RandFourierRotated, apply_view, fourier_rotate_plane
from .io import CheckedLoadImaged
from .regions import BRATS_REGIONS, ClassRegionsd, class_regions
from .semi_supervised import LabelPlaceholderd, RandCropWithLocationd
from .signed_distance import SDM_BACKENDS, signed_distance_map

__all__ = [
    "BRATS_REGIONS",
    "CheckedLoadImaged",
    "ClassRegionsd",
    "FourierRotate",
    "LabelPlaceholderd",
    "RandCropWithLocationd",
    "RandFourierRotated",
    "SDM_BACKENDS",
    "apply_view",
    "class_regions",
    "fourier_rotate_plane",
    "signed_distance_map",
]
