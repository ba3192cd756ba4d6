"""Reproducible mixed batches: a batch sampler of labeled and unlabeled samples, and seeded dataset items.

Everything random about a training batch (which cases, where the patches are cropped, which view)
is a function of the seed and the batch's position in the run, so a run resumed at any iteration
draws exactly the batches of an uninterrupted one, whatever the number of loader workers.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple, Union

import numpy as np
from monai.transforms import Randomizable
from torch.utils.data import Dataset, Sampler

from sasnet_components.utils.errors import InvalidInputError, UnknownKeyError

__all__ = ["SeededDataset", "TwoStreamBatchSampler"]


class TwoStreamBatchSampler(Sampler[List[Union[int, Tuple[int, int]]]]):
    """Batches of `labeled_batch_size` labeled and `batch_size - labeled_batch_size` unlabeled indices.

    An epoch is one pass over the labeled indices in a random order (``len(labeled) //
    labeled_batch_size`` batches, a remainder is dropped); the unlabeled indices are drawn from
    successive random permutations, as many as needed, continuing across epochs. Each batch lists
    its labeled indices first. This is the sampler of the SASNet reference code, made
    reproducible: the batches of epoch ``e`` are a function of ``(seed, e)`` only, so a resumed
    run that calls :meth:`set_epoch` (with the batches of the epoch already done, when it resumes
    inside an epoch) sees the same batches as an uninterrupted one. Each iteration over the
    sampler advances the epoch by one.

    With ``sample_seeds=True`` every entry of a batch is a pair ``(index, seed)``: the seed (in
    ``[0, 2**32)``) is a function of ``(seed, epoch, batch, position in the batch)`` and is meant
    for :class:`SeededDataset`, which seeds the random transforms of the item with it. The
    sampler's seed round-trips through :meth:`state_dict` / :meth:`load_state_dict`, so put the
    sampler in a checkpoint's ``save_dict``; its position comes from the trainer's iteration
    (``SemiSupervisedTrainer`` calls :meth:`set_epoch` when an epoch starts).

    Several processes (``num_replicas > 1``, one per GPU under ``torchrun``) share each batch of
    the plan: every process builds the same batches from the same seed and takes its own
    ``labeled_batch_size / num_replicas`` labeled and ``(batch_size - labeled_batch_size) /
    num_replicas`` unlabeled entries, with the item seeds of their places in the whole batch. The
    processes' batches are disjoint, together they are the single-process batch (the same cases,
    crops and views), and an epoch has as many iterations as in a single process. The state dict
    does not depend on the number of processes.

    Args:
        labeled_indices: dataset indices of labeled samples.
        unlabeled_indices: dataset indices of unlabeled samples (may be empty only when
            `batch_size == labeled_batch_size`).
        batch_size: total samples per batch (reference: 4).
        labeled_batch_size: labeled samples per batch (reference: 2).
        seed: base seed of the permutations and of the items' seeds (``>= 0``).
        sample_seeds: yield ``(index, seed)`` pairs instead of indices (see :class:`SeededDataset`).
        num_replicas: processes sharing each batch (>= 1); it must divide both the labeled and the
            unlabeled part of the batch.
        rank: this process's share, in ``[0, num_replicas)``.

    Raises:
        ValueError: when the batch sizes are inconsistent, there are fewer labeled indices than
            `labeled_batch_size`, unlabeled indices are needed but missing, `seed` is negative, or
            `num_replicas` does not divide the two parts of the batch (or `rank` is outside it).

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
        sample_seeds: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        self.labeled = [int(i) for i in labeled_indices]
        self.unlabeled = [int(i) for i in unlabeled_indices]
        if not 1 <= labeled_batch_size <= batch_size:
            raise InvalidInputError(
                f"`labeled_batch_size` must be in [1, batch_size={batch_size}], got {labeled_batch_size}."
            )
        if len(self.labeled) < labeled_batch_size:
            raise InvalidInputError(
                f"need at least `labeled_batch_size`={labeled_batch_size} labeled samples, got {len(self.labeled)}."
            )
        self.batch_size = batch_size
        self.labeled_batch_size = labeled_batch_size
        self.unlabeled_batch_size = batch_size - labeled_batch_size
        if self.unlabeled_batch_size > 0 and not self.unlabeled:
            raise InvalidInputError(
                f"batches take {self.unlabeled_batch_size} unlabeled samples but `unlabeled_indices` is empty."
            )
        if int(seed) < 0:
            raise InvalidInputError(f"`seed` must be >= 0, got {seed}.")
        self.seed = int(seed)
        self.sample_seeds = bool(sample_seeds)
        num_replicas, rank = int(num_replicas), int(rank)
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise InvalidInputError(
                f"`rank` must be in [0, num_replicas) with num_replicas >= 1, got rank {rank} of {num_replicas}."
            )
        if labeled_batch_size % num_replicas or self.unlabeled_batch_size % num_replicas:
            labeled = -(-labeled_batch_size // num_replicas) * num_replicas
            unlabeled = -(-self.unlabeled_batch_size // num_replicas) * num_replicas
            raise InvalidInputError(
                f"a batch of {labeled_batch_size} labeled + {self.unlabeled_batch_size} unlabeled samples cannot be "
                f"shared by {num_replicas} processes: both parts must be multiples of {num_replicas} (the batch sizes "
                f"are those of the whole batch of all processes), e.g. labeled_batch_size {labeled} and batch_size "
                f"{labeled + unlabeled}."
            )
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Produce the batches of `epoch` (0-based) on the next iteration, e.g. when resuming.

        Args:
            epoch: the epoch, 0-based.
            start: batches of that epoch already done (resuming inside it): the next iteration
                yields batches ``start, ..., len(self) - 1`` of the epoch; later ones whole epochs.

        Raises:
            ValueError: `start` outside ``[0, len(self))``.
        """
        if not 0 <= int(start) < len(self):
            raise ValueError(f"`start` must be in [0, {len(self)}) batches of an epoch, got {start}.")
        self.epoch, self.start = int(epoch), int(start)

    def state_dict(self) -> Dict[str, int]:
        """The seed and the sizes that define the batches (numbers only: loadable with ``weights_only``)."""
        return {
            "seed": self.seed,
            "num_labeled": len(self.labeled),
            "num_unlabeled": len(self.unlabeled),
            "batch_size": self.batch_size,
            "labeled_batch_size": self.labeled_batch_size,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Take the seed of a saved sampler; its sizes must equal this one's.

        Raises:
            KeyError: an entry is missing.
            ValueError: the saved pools or batch sizes differ from this sampler's (the batches would
                differ from those of the saved run).
        """
        mine = self.state_dict()
        missing = sorted(set(mine) - set(state_dict))
        if missing:
            raise UnknownKeyError(f"TwoStreamBatchSampler state_dict is missing {missing}; expected keys {sorted(mine)}.")
        differ = {k: (int(state_dict[k]), v) for k, v in mine.items() if k != "seed" and int(state_dict[k]) != v}
        if differ:
            text = ", ".join(f"{k} {saved} (saved) vs {now} (now)" for k, (saved, now) in differ.items())
            raise InvalidInputError(
                f"the checkpoint's batches were drawn with other pools or batch sizes: {text}; resume with the "
                "datalist, num_labeled, batch_size and labeled_batch_size of the saved run."
            )
        self.seed = int(state_dict["seed"])

    def _item_seed(self, epoch: int, batch: int, slot: int) -> int:
        return int(np.random.SeedSequence([self.seed, 2, epoch, batch, slot]).generate_state(1)[0])

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

    def __iter__(self) -> Iterator[List[Union[int, Tuple[int, int]]]]:
        epoch, start = self.epoch, self.start
        self.epoch, self.start = epoch + 1, 0
        order = np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.labeled))
        position = (epoch * len(self) + start) * self.unlabeled_batch_size
        unlabeled = self._unlabeled_from(position) if self.unlabeled else iter(())
        slots = self._slots()
        for b in range(start, len(self)):
            batch = [self.labeled[i] for i in order[b * self.labeled_batch_size : (b + 1) * self.labeled_batch_size]]
            batch += [next(unlabeled) for _ in range(self.unlabeled_batch_size)]
            if self.sample_seeds:
                yield [(batch[slot], self._item_seed(epoch, b, slot)) for slot in slots]
            else:
                yield [batch[slot] for slot in slots]

    def _slots(self) -> List[int]:
        """Places in the whole batch of this process's entries: its labeled ones, then its unlabeled ones."""
        labeled, unlabeled = self.labeled_batch_size // self.num_replicas, self.unlabeled_batch_size // self.num_replicas
        first = self.rank * labeled
        own = list(range(first, first + labeled))
        first = self.labeled_batch_size + self.rank * unlabeled
        return own + list(range(first, first + unlabeled))


class SeededDataset(Dataset):
    """A dataset whose items are ``(index, seed)`` pairs: item ``index`` of `dataset`, its random
    transforms seeded with ``seed``.

    With a :class:`TwoStreamBatchSampler` (``sample_seeds=True``) as the loader's batch sampler,
    the random crop and view of every patch are a function of the run's seed and the patch's
    position in the run: the same in a resumed run as in an uninterrupted one, and the same for
    any number of loader workers. Seeding uses MONAI's ``Compose.set_random_state``, so every
    randomizable transform of the chain gets its own seed.

    Args:
        dataset: a MONAI ``Dataset`` / ``CacheDataset`` whose ``transform`` is randomizable (a ``Compose``).

    Raises:
        TypeError: `dataset` has no randomizable ``transform``.

    Example::

        sampler = TwoStreamBatchSampler(labeled, unlabeled, 4, 2, seed=1337, sample_seeds=True)
        loader = DataLoader(SeededDataset(CacheDataset(items, transform)), batch_sampler=sampler)
    """

    def __init__(self, dataset: Dataset) -> None:
        if not isinstance(getattr(dataset, "transform", None), Randomizable):
            raise TypeError(
                f"`dataset` must have a randomizable `transform` (a monai.transforms.Compose), "
                f"got {type(getattr(dataset, 'transform', None)).__name__}."
            )
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: Tuple[int, int]) -> Any:
        try:
            index, seed = (int(v) for v in item)
        except (TypeError, ValueError):
            raise TypeError(
                f"SeededDataset items are (index, seed) pairs, as TwoStreamBatchSampler(sample_seeds=True) yields; got {item!r}."
            ) from None
        self.dataset.transform.set_random_state(seed=seed)  # type: ignore[attr-defined]
        return self.dataset[index]
