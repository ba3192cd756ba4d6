"""Training batches drawn on the training device from volumes cached there once.

The CPU path of the LA bundle caches the deterministic transforms' output in a ``CacheDataset``
and lets ``DataLoader`` workers crop, view and collate every patch, then copies each batch to the
device. :class:`DeviceBatchLoader` keeps the cached volumes on the training device instead, and
draws every crop and view with the very transforms (and random states) the CPU path uses, so that
for a seed it yields the same batches, with the same recorded ``crop_start`` and ``view``, without
workers and without a host-to-device copy of the image data per iteration.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from monai.data import CacheDataset
from monai.transforms import Compose, EnsureTyped

from sasnet_components.data.samplers import TwoStreamBatchSampler
from sasnet_components.transforms.fourier_rotate import RandFourierRotated
from sasnet_components.transforms.semi_supervised import RandCropWithLocationd
from sasnet_components.utils.errors import InvalidInputError

__all__ = ["DeviceBatchLoader"]

logger = logging.getLogger(__name__)


class DeviceBatchLoader:
    """Mixed labeled / unlabeled training batches cropped and viewed on the training device.

    At construction every item of `data` goes once through `transform` (the deterministic chain:
    loading, channel-first, resampling, placeholder label, types, padding; MONAI's ``CacheDataset``
    runs it with `num_workers` threads) and the resulting image ``(C, *case)`` (float) and label
    ``(1, *case)`` (uint8) are kept on `device`. Iterating yields one batch per entry of
    `batch_sampler`, a :class:`TwoStreamBatchSampler` with ``sample_seeds=True``: for each
    ``(index, seed)`` the random chain `random_transform` is seeded exactly as
    :class:`SeededDataset` seeds the CPU chain (``Compose.set_random_state(seed)``), its
    :class:`RandCropWithLocationd` draws the crop start and its :class:`RandFourierRotated` the
    view, and the patch is the device volume's crop permuted by that view. The batches therefore
    equal those of ``DataLoader(SeededDataset(CacheDataset(data, transform + random_transform)),
    batch_sampler)`` for the same sampler, item for item.

    A batch holds ``image`` `(B, C, *patch)` and ``label`` `(B, 1, *patch)` on `device` (labels
    of unlabeled samples are zero placeholders), and on the host ``labeled`` `(B,)` bool,
    ``case_id`` (B strings), ``crop_start``, ``view`` and ``case_shape`` `(B, S)` int64 and
    ``view_angle`` `(B,)` float64 (always 0). Only permutation views are drawn here: a
    ``RandFourierRotated`` that can draw a k-space angle, or any other random transform, is
    refused (use the CPU path).

    Labels of labeled cases are checked once here to hold class indices in ``[0, num_classes)``
    (when `num_classes` is given), so that the training step need not check them again.

    Args:
        data: the training datalist (dicts with ``image``, optional ``label``, ``case_id``).
        transform: deterministic transforms giving ``image``, ``label``, ``labeled`` (and the
            datalist's other keys) per item, e.g. the LA bundle's ``train#deterministic_transforms``.
        random_transform: the random transforms of the CPU path, a ``Compose`` or a list of
            transforms: one ``RandCropWithLocationd``, one ``RandFourierRotated`` (views only),
            optionally ``EnsureTyped``.
        batch_sampler: a ``TwoStreamBatchSampler`` with ``sample_seeds=True``; the trainer sets its
            epoch (``set_epoch``) when an epoch starts.
        device: the training device.
        num_workers: threads that run `transform` while caching (0 or 1: one).
        progress: show a progress bar while caching.
        num_classes: check labeled cases' labels against ``[0, num_classes)``; None: no check.
        image_key, label_key, flag_key, id_key: item keys.

    Raises:
        TypeError: `batch_sampler` does not yield ``(index, seed)`` pairs.
        ValueError: a random transform the device path cannot apply, items of other channel counts or
            spatial ranks than the first, a volume smaller than the patch, or a label value outside
            ``[0, num_classes)`` (names the case).

    Example (bundle YAML)::

        train_data_loader:
          _target_: sasnet_components.DeviceBatchLoader
          data: $@datalists['train']
          transform: $Compose(@train#deterministic_transforms)
          random_transform: '@train#random_transforms'
          batch_sampler: '@train#sampler'
          device: '@device'
    """

    def __init__(
        self,
        data: Sequence[Dict[str, Any]],
        transform: Any,
        random_transform: Union[Compose, Sequence[Any]],
        batch_sampler: TwoStreamBatchSampler,
        device: Union[str, torch.device],
        num_workers: int = 0,
        progress: bool = False,
        num_classes: Optional[int] = None,
        image_key: str = "image",
        label_key: str = "label",
        flag_key: str = "labeled",
        id_key: str = "case_id",
    ) -> None:
        if not getattr(batch_sampler, "sample_seeds", False):
            raise TypeError(
                "DeviceBatchLoader needs a batch sampler that yields (index, seed) pairs: "
                "TwoStreamBatchSampler(..., sample_seeds=True)."
            )
        self.batch_sampler = batch_sampler
        self.device = torch.device(device)
        self.keys = {"image": image_key, "label": label_key, "flag": flag_key, "id": id_key}
        self.random_transform = random_transform if isinstance(random_transform, Compose) else Compose(list(random_transform))
        self.crop, self.view = self._random_parts(self.random_transform)
        for part in (self.crop, self.view):
            missing = {image_key, label_key} - {str(key) for key in part.keys}
            if missing:
                raise InvalidInputError(
                    f"{type(part).__name__} must transform the image and the label together; its keys "
                    f"{[str(key) for key in part.keys]} lack {sorted(missing)}."
                )
        self.location_key, self.shape_key = self.crop.location_key, self.crop.shape_key
        self.view_key, self.angle_key = self.view.view_key, self.view.angle_key
        self.images: List[torch.Tensor] = []
        self.labels: List[torch.Tensor] = []
        self.labeled: List[bool] = []
        self.case_ids: List[str] = []
        self._cache(data, transform, num_workers, progress, num_classes)

    @staticmethod
    def _random_parts(chain: Compose) -> Tuple[RandCropWithLocationd, RandFourierRotated]:
        crops = [t for t in chain.transforms if isinstance(t, RandCropWithLocationd)]
        views = [t for t in chain.transforms if isinstance(t, RandFourierRotated)]
        others = [
            type(t).__name__
            for t in chain.transforms
            if not isinstance(t, (RandCropWithLocationd, RandFourierRotated, EnsureTyped))
        ]
        if len(crops) != 1 or len(views) != 1 or others:
            raise InvalidInputError(
                "the device-resident batches draw one RandCropWithLocationd and one RandFourierRotated (and allow "
                f"EnsureTyped); got {[type(t).__name__ for t in chain.transforms]}. Train with `device_data: false` "
                "to run other random transforms on the CPU."
            )
        if chain.transforms.index(crops[0]) > chain.transforms.index(views[0]):
            raise InvalidInputError("the random transforms must crop (RandCropWithLocationd) before the view (RandFourierRotated).")
        view = views[0]
        if view.angle_prob > 0.0 and view.angle_range > 0.0:
            raise InvalidInputError(
                "the device-resident batches apply permutation views only; this RandFourierRotated can draw a k-space "
                f"angle (angle_prob={view.angle_prob}, angle_range={view.angle_range}): train with `device_data: false`."
            )
        return crops[0], view

    def _cache(self, data, transform, num_workers: int, progress: bool, num_classes: Optional[int]) -> None:
        k = self.keys
        dataset = CacheDataset(list(data), transform=transform, cache_rate=1.0, num_workers=max(1, num_workers), progress=progress)
        roi, channels = self.crop.roi_size, None
        for i in range(len(dataset)):
            item = dataset[i]
            case = str(item.get(k["id"], f"item {i}"))
            image = torch.as_tensor(item[k["image"]]).as_subclass(torch.Tensor)
            label = torch.as_tensor(item[k["label"]]).as_subclass(torch.Tensor)
            labeled = bool(torch.as_tensor(item[k["flag"]]))
            channels = image.shape[0] if channels is None else channels
            if image.ndim - 1 != len(roi) or image.shape[0] != channels or label.shape != (1, *image.shape[1:]):
                raise InvalidInputError(
                    f"case {case}: expected an image ({channels}, *spatial) with {len(roi)} spatial dims and a label "
                    f"(1, *spatial) of the same spatial shape, got image {tuple(image.shape)} and label {tuple(label.shape)}."
                )
            shape = tuple(image.shape[1:])
            if any(r > s for r, s in zip(roi, shape)):
                raise InvalidInputError(
                    f"case {case}: patch size {roi} does not fit in the volume of spatial shape {shape}; "
                    "use a smaller patch or pad the volume to at least the patch size first."
                )
            if labeled and num_classes is not None:
                low, high = int(label.min()), int(label.max())
                if low < 0 or high >= num_classes:
                    raise InvalidInputError(
                        f"case {case}: label values must be class indices in [0, {num_classes}), got values in [{low}, {high}]."
                    )
            self.images.append(image.to(self.device))
            self.labels.append(label.to(self.device))
            self.labeled.append(labeled)
            self.case_ids.append(case)
        dataset._cache = []  # the host copies are no longer needed
        if self.images:
            nbytes = sum(t.numel() * t.element_size() for t in self.images + self.labels)
            logger.info("device-resident training data: %d cases, %.1f MB on %s", len(self.images), nbytes / 2**20, self.device)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def draw(self, index: int, seed: int) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        """Crop start and view of item `index` seeded with `seed`, as the CPU chain draws them.

        Returns:
            ``(crop_start, view)``: `S` ints each, in case and patch axis order.
        """
        self.random_transform.set_random_state(seed=int(seed))
        self.crop.randomize(tuple(self.images[index].shape[1:]))
        self.view.randomize()
        return self.crop.start, self.view.view

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        k = self.keys
        roi = self.crop.roi_size
        for batch in self.batch_sampler:
            images, labels, starts, views, shapes = [], [], [], [], []
            for index, seed in batch:
                start, view = self.draw(index, seed)
                shape = tuple(self.images[index].shape[1:])
                region = (slice(None), *(slice(s, s + r) for s, r in zip(start, roi)))
                order = (0, *(1 + p for p in view))
                images.append(self.images[index][region].permute(order))
                labels.append(self.labels[index][region].permute(order))
                starts.append(start)
                views.append(view)
                shapes.append(shape)
            indices = [index for index, _ in batch]
            yield {
                k["image"]: torch.stack(images),
                k["label"]: torch.stack(labels),
                k["flag"]: torch.tensor([self.labeled[i] for i in indices]),
                k["id"]: [self.case_ids[i] for i in indices],
                self.location_key: torch.tensor(starts, dtype=torch.long),
                self.view_key: torch.tensor(views, dtype=torch.long),
                self.angle_key: torch.zeros(len(indices), dtype=torch.float64),
                self.shape_key: torch.tensor(shapes, dtype=torch.long),
            }
