"""Batch sampler that mixes labeled and unlabeled samples of one dataset in every batch."""

from __future__ import annotations

from typing import Iterator, List, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["TwoStreamBatchSampler"]


class TwoStreamBatchSampler(Sampler[List[int]]):
    """Batches of `labeled_batch_size` labeled and `batch_size - labeled_batch_size` unlabeled indices.

    An epoch is one pass over the labeled indices in a random order (``len(labeled) //
    labeled_batch_size`` batches, a remainder is dropped); the unlabeled indices are drawn from
    successive random permutations, as many as needed, continuing across epochs. Each batch lists
    its labeled indices first. This is the sampler of the SASNet reference code, made
    reproducible: the batches of epoch ``e`` are a function of ``(seed, e)`` only, so a resumed
    run that calls :meth:`set_epoch` sees the same batches as an uninterrupted one. Each
    iteration over the sampler advances the epoch by one.

    Args:
        labeled_indices: dataset indices of labeled samples.
        unlabeled_indices: dataset indices of unlabeled samples (may be empty only when
            `batch_size == labeled_batch_size`).
        batch_size: total samples per batch (reference: 4).
        labeled_batch_size: labeled samples per batch (reference: 2).
        seed: base seed of the permutations.

    Raises:
        ValueError: when the batch sizes are inconsistent, there are fewer labeled indices than
            `labeled_batch_size`, or unlabeled indices are needed but missing.

    Example::

        sampler = TwoStreamBatchSampler(range(16), range(16, 80), batch_size=4, labeled_batch_size=2)
        loader = DataLoader(dataset, batch_sampler=sampler)   # 8 batches per epoch
    """

    def __init__(
        self,
        labeled_indices: Sequence[int],
        unlabeled_indices: Sequence[int],
        batch_size: int = 4,
        labeled_batch_size: int = 2,
        seed: int = 0,
    ) -> None:
        self.labeled = [int(i) for i in labeled_indices]
        self.unlabeled = [int(i) for i in unlabeled_indices]
        if not 1 <= labeled_batch_size <= batch_size:
            raise ValueError(
                f"`labeled_batch_size` must be in [1, batch_size={batch_size}], got {labeled_batch_size}."
            )
        if len(self.labeled) < labeled_batch_size:
            raise ValueError(
                f"need at least `labeled_batch_size`={labeled_batch_size} labeled samples, got {len(self.labeled)}."
            )
        self.batch_size = batch_size
        self.labeled_batch_size = labeled_batch_size
        self.unlabeled_batch_size = batch_size - labeled_batch_size
        if self.unlabeled_batch_size > 0 and not self.unlabeled:
            raise ValueError(
                f"batches take {self.unlabeled_batch_size} unlabeled samples but `unlabeled_indices` is empty."
            )
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Produce the batches of `epoch` (0-based) on the next iteration, e.g. when resuming."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labeled) // self.labeled_batch_size

    def _unlabeled_from(self, position: int) -> Iterator[int]:
        """The unlabeled stream (successive seeded permutations) from `position` on."""
        count = len(self.unlabeled)
        round_, offset = divmod(position, count)
        while True:
            order = np.random.default_rng([self.seed, 1, round_]).permutation(count)
            yield from (self.unlabeled[i] for i in order[offset:])
            round_, offset = round_ + 1, 0

    def __iter__(self) -> Iterator[List[int]]:
        epoch = self.epoch
        self.epoch += 1
        order = np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.labeled))
        unlabeled = self._unlabeled_from(epoch * len(self) * self.unlabeled_batch_size) if self.unlabeled else iter(())
        for b in range(len(self)):
            batch = [self.labeled[i] for i in order[b * self.labeled_batch_size : (b + 1) * self.labeled_batch_size]]
            yield batch + [next(unlabeled) for _ in range(self.unlabeled_batch_size)]
