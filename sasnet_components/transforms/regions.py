"""Evaluation regions built from class-index maps (e.g. the BraTS whole tumour, tumour core, enhancing tumour).

A region is a union of classes. :class:`ClassRegionsd` turns a class-index map ``(1, *spatial)``
(a prediction after argmax, or a label) into stacked binary region masks ``(R, *spatial)``, which
:class:`~sasnet_components.handlers.segmentation_report.SegmentationReport` scores per region
(``region_names``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from sasnet_components.utils.errors import InputTypeError, InvalidInputError

__all__ = ["BRATS_REGIONS", "ClassRegionsd", "class_regions"]

#: BraTS evaluation regions on labels mapped to 0 background, 1 necrotic core, 2 oedema,
#: 3 enhancing tumour (the original label 4 mapped to 3): whole tumour, tumour core, enhancing tumour
BRATS_REGIONS: dict[str, tuple[int, ...]] = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}


def _check_regions(regions: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    if not isinstance(regions, Mapping) or not regions:
        raise InputTypeError(f"`regions` must be a non-empty dict of region name -> class indices, got {regions!r}.")
    checked: dict[str, tuple[int, ...]] = {}
    for name, classes in regions.items():
        if not isinstance(name, str) or not name:
            raise InputTypeError(f"region names must be non-empty strings, got {name!r}.")
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
            raise InputTypeError(f"region {name!r} must list one or more class indices, got {classes!r}.")
        values = []
        for c in classes:
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise InvalidInputError(f"region {name!r}: class indices must be integers >= 0, got {classes!r}.")
            values.append(int(c))
        checked[name] = tuple(values)
    return checked


def class_regions(class_map: torch.Tensor, regions: Mapping[str, Sequence[int]]) -> torch.Tensor:
    """Stacked binary masks of the regions of a class-index map.

    Args:
        class_map: class indices ``(1, *spatial)`` (any integer, bool or whole-number float dtype).
        regions: region name -> class indices; region ``r`` is ``isin(class_map, regions[r])``.

    Returns:
        ``(R, *spatial)`` tensor of the dtype of ``class_map`` (bool stays bool) with values in
        {0, 1}, the regions in the order of ``regions``; a MetaTensor input gives a MetaTensor with
        its metadata.

    Raises:
        TypeError: ``class_map`` is not a tensor, or ``regions`` is malformed.
        ValueError: ``class_map`` does not have one channel, or a class index is negative.

    Example:
        >>> m = torch.tensor([[0, 1, 2, 3]])
        >>> class_regions(m, {"wt": [1, 2, 3], "tc": [1, 3], "et": [3]}).tolist()
        [[0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1]]
    """
    checked = _check_regions(regions)
    if not isinstance(class_map, torch.Tensor):
        raise InputTypeError(f"`class_map` must be a torch.Tensor, got {type(class_map).__name__}.")
    if class_map.ndim < 2 or class_map.shape[0] != 1:
        raise InvalidInputError(
            f"`class_map` must have shape (1, *spatial) (class indices, e.g. after argmax), got {tuple(class_map.shape)}."
        )
    plain = class_map.as_tensor() if isinstance(class_map, MetaTensor) else class_map
    masks = [
        torch.isin(plain[0], torch.tensor(classes, dtype=plain.dtype, device=plain.device)) for classes in checked.values()
    ]
    out = torch.stack(masks).to(plain.dtype)
    if isinstance(class_map, MetaTensor):
        out = MetaTensor(out, meta=class_map.meta, applied_operations=class_map.applied_operations)
    return out


class ClassRegionsd(MapTransform):
    """Replace class-index maps ``(1, *spatial)`` with stacked binary region masks ``(R, *spatial)``.

    For each key, region ``r`` (in the order of ``regions``) is the union of its classes, e.g. with
    the default BraTS regions (:data:`BRATS_REGIONS`, labels 0..3 after the 4 -> 3 mapping):
    channel 0 whole tumour (1, 2, 3), channel 1 tumour core (1, 3), channel 2 enhancing tumour (3).
    Regions may overlap. Apply it to the prediction after argmax and to the label, then score with
    ``SegmentationReport(region_names=list(regions))``.

    Args:
        keys: keys of the class-index maps.
        regions: region name -> class indices (YAML: ``{wt: [1, 2, 3], tc: [1, 3], et: [3]}``);
            None: :data:`BRATS_REGIONS`.
        allow_missing_keys: skip missing keys instead of raising.

    Raises:
        TypeError: ``regions`` is not a non-empty dict of names to lists of class indices.
        ValueError: a class index is negative; (when called) a map does not have one channel.

    Example (bundle YAML)::

        - _target_: sasnet_components.ClassRegionsd
          keys: [pred, label]
          regions: {wt: [1, 2, 3], tc: [1, 3], et: [3]}
    """

    def __init__(
        self,
        keys: KeysCollection,
        regions: Mapping[str, Sequence[int]] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.regions = _check_regions(BRATS_REGIONS if regions is None else regions)

    @property
    def region_names(self) -> list[str]:
        """Region names in channel order."""
        return list(self.regions)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = class_regions(torch.as_tensor(d[key]) if not isinstance(d[key], torch.Tensor) else d[key], self.regions)
        return d
