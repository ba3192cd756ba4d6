"""Dictionary transforms that prepare mixed labeled / unlabeled samples for SASNet training.

Default collation needs the same keys in every item of a batch, and the SAR memory needs to know
where each patch came from. :class:`LabelPlaceholderd` gives unlabeled items a placeholder label
and a ``labeled`` flag (their label files are never read); :class:`RandCropWithLocationd` crops a
random patch and records its start and the shape of the grid it was drawn from.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, SpatialCrop
from monai.utils import convert_to_tensor

from sasnet_components.utils.errors import InvalidInputError

__all__ = ["LabelPlaceholderd", "RandCropWithLocationd"]


def _case_name(data: Mapping[Hashable, Any], id_key: str) -> str:
    return str(data.get(id_key, "<unnamed case>"))


class LabelPlaceholderd(MapTransform):
    """Mark a sample labeled or unlabeled; give an unlabeled sample a zero placeholder label.

    Apply after loading (``LoadImaged(keys=[image, label], allow_missing_keys=True)``) and
    ``EnsureChannelFirstd``. A sample that has `label_key` is labeled: its label must have the
    image's spatial shape. A sample without it gets ``zeros((1, *spatial), uint8)`` and
    ``labeled = False``; nothing reads that placeholder (losses and the SAR memory use the flag).

    Args:
        image_key: key of the channel-first image `(C, *spatial)`.
        label_key: key of the channel-first label `(1, *spatial)`, absent for unlabeled samples.
        flag_key: key that receives the flag, a bool tensor of shape `()`.
        id_key: key of the case identifier, used in error messages.

    Raises:
        KeyError: the image is missing.
        ValueError: a label whose spatial shape differs from the image's (names the case).
    """

    def __init__(self, image_key: str = "image", label_key: str = "label", flag_key: str = "labeled", id_key: str = "case_id") -> None:
        super().__init__(keys=[image_key])
        self.image_key, self.label_key, self.flag_key, self.id_key = image_key, label_key, flag_key, id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.image_key not in d:
            raise KeyError(f"key {self.image_key!r} (image) is missing from the sample; available keys: {sorted(map(str, d))}.")
        image = d[self.image_key]
        labeled = d.get(self.label_key) is not None
        if labeled:
            label = d[self.label_key]
            if tuple(label.shape[1:]) != tuple(image.shape[1:]):
                raise InvalidInputError(
                    f"case {_case_name(d, self.id_key)}: label spatial shape {tuple(label.shape[1:])} differs from "
                    f"image spatial shape {tuple(image.shape[1:])}."
                )
        else:
            d[self.label_key] = torch.zeros((1, *image.shape[1:]), dtype=torch.uint8)
        d[self.flag_key] = torch.tensor(labeled)
        return d


class RandCropWithLocationd(Randomizable, MapTransform):
    """Random spatial crop of `roi_size` that records where it was taken.

    All keys are cropped at the same start, drawn uniformly from every valid position. The start
    and the spatial shape of the input (the grid the crop is drawn from, padding included) are
    stored under `location_key` and `shape_key` as int64 tensors of shape `(S,)`, so that per-case
    state such as the SAR confidence memory can map patch voxels back to the case.

    Args:
        keys: keys of channel-first arrays `(C, *spatial)` of equal spatial shape.
        roi_size: spatial size of the patch.
        location_key: key receiving the crop start.
        shape_key: key receiving the input's spatial shape.
        id_key: key of the case identifier, used in error messages.
        allow_missing_keys: skip missing keys instead of raising.

    Raises:
        ValueError: keys with different spatial shapes, or a patch larger than the input (pad the
            input to at least `roi_size` first, e.g. ``SpatialPadd``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        roi_size: Sequence[int],
        location_key: str = "crop_start",
        shape_key: str = "case_shape",
        id_key: str = "case_id",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.roi_size = tuple(int(r) for r in roi_size)
        if any(r < 1 for r in self.roi_size):
            raise InvalidInputError(f"`roi_size` must hold positive sizes, got {tuple(roi_size)}.")
        self.location_key, self.shape_key, self.id_key = location_key, shape_key, id_key
        self._start: tuple[int, ...] = ()

    @property
    def start(self) -> tuple[int, ...]:
        """The crop start drawn by the last :meth:`randomize`, `S` ints."""
        return self._start

    def randomize(self, shape: Sequence[int]) -> None:
        """Draw a crop start uniformly from every position where `roi_size` fits in `shape`."""
        self._start = tuple(int(self.R.randint(0, s - r + 1)) for s, r in zip(shape, self.roi_size))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        shapes = {str(k): tuple(d[k].shape[1:]) for k in keys}
        shape = shapes[str(keys[0])]
        if len(set(shapes.values())) > 1:
            raise InvalidInputError(f"case {_case_name(d, self.id_key)}: spatial shapes differ between keys: {shapes}.")
        if len(shape) != len(self.roi_size) or any(r > s for r, s in zip(self.roi_size, shape)):
            raise InvalidInputError(
                f"case {_case_name(d, self.id_key)}: patch size {self.roi_size} does not fit in the volume of spatial "
                f"shape {shape}; use a smaller patch or pad the volume to at least the patch size first."
            )
        self.randomize(shape)
        crop = SpatialCrop(roi_start=self._start, roi_end=[s + r for s, r in zip(self._start, self.roi_size)])
        for key in keys:
            d[key] = crop(convert_to_tensor(d[key], track_meta=True))
        d[self.location_key] = torch.tensor(self._start, dtype=torch.long)
        d[self.shape_key] = torch.tensor(shape, dtype=torch.long)
        return d
