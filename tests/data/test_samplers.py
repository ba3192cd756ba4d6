"""Tests of ``TwoStreamBatchSampler`` (labeled + unlabeled indices in every batch)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import Dataset
from monai.transforms import Compose, Randomizable, Transform
from monai.utils import MAX_SEED
from torch.utils.data import DataLoader

from sasnet_components.data.samplers import SeededDataset, TwoStreamBatchSampler

LABELED = list(range(8))  # dataset indices 0..7
UNLABELED = [100, 101, 102, 103]


def _sampler(seed: int = 0, labeled=LABELED, unlabeled=UNLABELED, batch_size: int = 4, labeled_batch_size: int = 2, **kwargs):
    return TwoStreamBatchSampler(
        labeled, unlabeled, batch_size=batch_size, labeled_batch_size=labeled_batch_size, seed=seed, **kwargs
    )


def _unlabeled_stream(epochs):
    """The unlabeled part of every batch of the given epochs, concatenated in order."""
    return [i for batches in epochs for batch in batches for i in batch[2:]]


def test_batch_composition_labeled_first():
    batches = list(_sampler())
    # 8 labeled, 2 per batch -> 4 batches of 2 labeled + 2 unlabeled
    assert len(batches) == 4
    for batch in batches:
        assert len(batch) == 4
        assert all(i in LABELED for i in batch[:2])
        assert all(i in UNLABELED for i in batch[2:])


def test_len_drops_the_labeled_remainder():
    sampler = _sampler(labeled=list(range(5)), unlabeled=[10, 11, 12], batch_size=3, labeled_batch_size=2)
    # 5 labeled // 2 per batch = 2 batches; one labeled index is left out of the epoch
    assert len(sampler) == 2
    batches = list(sampler)
    assert len(batches) == 2
    labeled_seen = [i for b in batches for i in b[:2]]
    assert len(labeled_seen) == 4 and len(set(labeled_seen)) == 4
    assert all(len(b) == 3 and b[2] in (10, 11, 12) for b in batches)


@pytest.mark.parametrize("epochs", [1, 3])
def test_each_labeled_index_at_most_once_per_epoch(epochs):
    sampler = _sampler()
    for _ in range(epochs):
        labeled_seen = [i for batch in sampler for i in batch[:2]]
        # 8 labeled, all used: each exactly once
        assert sorted(labeled_seen) == LABELED


def test_unlabeled_stream_is_full_permutations_even_split():
    sampler = _sampler()
    epochs = [list(sampler) for _ in range(3)]
    stream = _unlabeled_stream(epochs)
    # 4 batches x 2 unlabeled = 8 draws per epoch, 3 epochs = 24 draws = 6 permutations of 4 indices:
    # each unlabeled index appears 24 / 4 = 6 times, and every aligned block of 4 is a permutation
    assert len(stream) == 24
    assert Counter(stream) == {i: 6 for i in UNLABELED}
    for start in range(0, 24, 4):
        assert sorted(stream[start : start + 4]) == UNLABELED
    # within one epoch too: 8 draws = 2 permutations -> each index twice
    assert Counter(_unlabeled_stream(epochs[:1])) == {i: 2 for i in UNLABELED}


def test_unlabeled_stream_continues_across_epochs():
    # 3 unlabeled indices, 8 draws per epoch: epochs split the permutations (8 = 2 * 3 + 2), so only
    # the concatenated stream of 3 epochs (24 draws = 8 permutations) is made of whole permutations
    unlabeled = [50, 51, 52]
    sampler = _sampler(unlabeled=unlabeled)
    stream = _unlabeled_stream([list(sampler) for _ in range(3)])
    assert len(stream) == 24
    for start in range(0, 24, 3):
        assert sorted(stream[start : start + 3]) == unlabeled
    assert Counter(stream) == {i: 8 for i in unlabeled}


def test_same_seed_same_batches():
    a, b = _sampler(seed=7), _sampler(seed=7)
    assert [list(a) for _ in range(3)] == [list(b) for _ in range(3)]


def test_different_seeds_differ():
    assert list(_sampler(seed=0)) != list(_sampler(seed=1))


def test_iteration_advances_the_epoch():
    sampler = _sampler()
    first, second = list(sampler), list(sampler)
    assert sampler.epoch == 2
    assert first != second
    # two epochs use different labeled orders but the same labeled set
    assert sorted(i for b in first for i in b[:2]) == sorted(i for b in second for i in b[:2])


@pytest.mark.parametrize("epoch", [0, 1, 2, 5])
def test_set_epoch_reproduces_an_uninterrupted_run(epoch):
    uninterrupted = _sampler(seed=3, unlabeled=[50, 51, 52])
    for _ in range(epoch):
        list(uninterrupted)
    expected = list(uninterrupted)

    resumed = _sampler(seed=3, unlabeled=[50, 51, 52])
    resumed.set_epoch(epoch)
    assert list(resumed) == expected
    assert resumed.epoch == epoch + 1


def test_dataloader_batch_sampler():
    dataset = torch.arange(200) * 10  # item i is 10 * i
    sampler = _sampler(seed=5)
    loader = DataLoader(dataset, batch_sampler=sampler)
    assert len(loader) == 4
    reference = _sampler(seed=5)
    for _ in range(2):  # two epochs through the loader
        expected = list(reference)
        got = [batch.tolist() for batch in loader]
        assert got == [[10 * i for i in b] for b in expected]


def test_only_labeled_batches_without_unlabeled_indices():
    sampler = _sampler(unlabeled=[], batch_size=2, labeled_batch_size=2)
    batches = list(sampler)
    assert len(batches) == 4
    assert sorted(i for b in batches for i in b) == LABELED


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=4, labeled_batch_size=0), r"`labeled_batch_size` must be in \[1, batch_size=4\], got 0"),
        (dict(batch_size=4, labeled_batch_size=5), r"`labeled_batch_size` must be in \[1, batch_size=4\], got 5"),
        (dict(labeled=[1], batch_size=4, labeled_batch_size=2), r"need at least `labeled_batch_size`=2 labeled samples, got 1"),
        (dict(unlabeled=[], batch_size=4, labeled_batch_size=2), r"batches take 2 unlabeled samples but `unlabeled_indices` is empty"),
        (dict(seed=-1), r"`seed` must be >= 0, got -1"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _sampler(**kwargs)


# ---------------------------------------------------------------------- resuming inside an epoch, item seeds
@pytest.mark.parametrize("epoch, start", [(0, 1), (0, 3), (2, 2)])
def test_set_epoch_with_start_yields_the_rest_of_that_epoch(epoch, start):
    uninterrupted = _sampler(seed=3, unlabeled=[50, 51, 52])
    epochs = [list(uninterrupted) for _ in range(epoch + 2)]

    resumed = _sampler(seed=3, unlabeled=[50, 51, 52])
    resumed.set_epoch(epoch, start=start)
    assert list(resumed) == epochs[epoch][start:]  # the batches not done yet, unlabeled stream included
    assert list(resumed) == epochs[epoch + 1]  # then whole epochs again


def test_set_epoch_start_out_of_range():
    with pytest.raises(ValueError, match=r"`start` must be in \[0, 4\) batches of an epoch, got 4"):
        _sampler().set_epoch(0, start=4)


def test_sample_seeds_pair_every_index_with_a_seed_of_its_position():
    plain = list(_sampler(seed=9))
    seeded = list(_sampler(seed=9, sample_seeds=True))
    assert [[i for i, _ in batch] for batch in seeded] == plain  # same indices
    seeds = [s for batch in seeded for _, s in batch]
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
    assert len(set(seeds)) == len(seeds)  # 16 positions, 16 different seeds
    resumed = _sampler(seed=9, sample_seeds=True)
    resumed.set_epoch(0, start=2)
    assert list(resumed) == seeded[2:]  # a seed belongs to a position, not to a draw count
    assert list(_sampler(seed=10, sample_seeds=True)) != seeded


# ---------------------------------------------------------------------- several processes
@pytest.mark.parametrize("sample_seeds", [False, True])
def test_processes_take_disjoint_shares_of_the_single_process_batches(sample_seeds):
    sizes = dict(seed=4, batch_size=8, labeled_batch_size=4, sample_seeds=sample_seeds)
    whole = _sampler(**sizes)
    shares = [_sampler(**sizes, num_replicas=2, rank=r) for r in (0, 1)]
    assert [len(s) for s in shares] == [len(whole)] * 2 == [2, 2]  # as many iterations per epoch
    for _ in range(3):  # epochs
        for batch, first, second in zip(whole, *shares):
            # labeled slots 0-1 | 2-3, unlabeled slots 4-5 | 6-7, each with the item seed of its slot
            assert first == batch[0:2] + batch[4:6] and second == batch[2:4] + batch[6:8]


def test_a_resumed_share_continues_its_process_batches():
    uninterrupted = _sampler(seed=5, num_replicas=2, rank=1, sample_seeds=True)
    epochs = [list(uninterrupted) for _ in range(2)]
    resumed = _sampler(seed=5, num_replicas=2, rank=1, sample_seeds=True)
    resumed.set_epoch(1, start=3)
    assert list(resumed) == epochs[1][3:]
    assert _sampler(num_replicas=2, rank=1).state_dict() == _sampler().state_dict()  # no trace of the processes


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_replicas=4), r"2 labeled \+ 2 unlabeled samples cannot be shared by 4 processes.*labeled_batch_size 4 and "
         r"batch_size 8"),
        (dict(batch_size=3, num_replicas=2), r"2 labeled \+ 1 unlabeled samples cannot be shared by 2 processes.*"
         r"labeled_batch_size 2 and batch_size 4"),
        (dict(num_replicas=2, rank=2), r"`rank` must be in \[0, num_replicas\).*got rank 2 of 2"),
        (dict(num_replicas=0), r"`rank` must be in \[0, num_replicas\).*got rank 0 of 0"),
    ],
)
def test_shares_that_do_not_divide_the_batch_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _sampler(**kwargs)


def test_state_dict_restores_the_seed_and_checks_the_pools():
    saved = _sampler(seed=21).state_dict()
    assert saved == {"seed": 21, "num_labeled": 8, "num_unlabeled": 4, "batch_size": 4, "labeled_batch_size": 2}
    restored = _sampler(seed=0)
    restored.load_state_dict(saved)
    assert list(restored) == list(_sampler(seed=21))
    with pytest.raises(ValueError, match=r"num_unlabeled 4 \(saved\) vs 3 \(now\)"):
        _sampler(unlabeled=[50, 51, 52]).load_state_dict(saved)
    with pytest.raises(KeyError, match=r"missing \['seed'\]"):
        _sampler().load_state_dict({k: v for k, v in saved.items() if k != "seed"})


class _RandomOffset(Randomizable, Transform):
    def randomize(self, data=None) -> None:
        self.offset = int(self.R.randint(0, 1000))

    def __call__(self, data):
        self.randomize()
        return data + self.offset


def test_seeded_dataset_items_depend_on_their_seed_only():
    dataset = Dataset([0, 10, 20], transform=Compose([_RandomOffset()]))
    seeded = SeededDataset(dataset)
    assert len(seeded) == 3
    first = [seeded[(i, s)] for i, s in [(0, 5), (1, 6), (2, 5)]]
    again = [seeded[(i, s)] for i, s in [(2, 5), (1, 6), (0, 5)]][::-1]  # another order of draws
    assert first == again
    assert first[2] - first[0] == 20  # same seed, same offset
    # MONAI's Compose.set_random_state(5) seeds its transform with the first uint32 of RandomState(5)
    offset = np.random.RandomState(np.random.RandomState(5).randint(MAX_SEED, dtype="uint32")).randint(0, 1000)
    assert first[0] == offset


def test_seeded_dataset_in_a_loader_with_workers():
    dataset = SeededDataset(Dataset(list(range(200)), transform=Compose([_RandomOffset()])))

    def epoch(num_workers: int) -> list:
        loader = DataLoader(dataset, batch_sampler=_sampler(seed=4, sample_seeds=True), num_workers=num_workers)
        return [batch.tolist() for batch in loader]

    assert epoch(0) == epoch(2)


def test_seeded_dataset_errors():
    with pytest.raises(TypeError, match="randomizable `transform`"):
        SeededDataset(torch.arange(4))
    with pytest.raises(TypeError, match=r"items are \(index, seed\) pairs.*got 3"):
        SeededDataset(Dataset([1, 2], transform=Compose([_RandomOffset()])))[3]
