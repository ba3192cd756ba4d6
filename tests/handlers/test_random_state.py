"""Tests of ``GlobalRandomState`` (the global generators saved and restored through a weights-only checkpoint)
and ``IterationSeeding`` (seeded at every iteration)."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from sasnet_components.handlers.random_state import GlobalRandomState, IterationSeeding


def _draws() -> tuple:
    """One draw from each global generator, including NumPy's cached Gaussian and Python's gauss()."""
    return (
        torch.rand(3).tolist(),
        torch.nn.functional.dropout(torch.ones(8), 0.5).tolist(),
        np.random.rand(2).tolist(),
        float(np.random.standard_normal()),
        random.random(),
        random.gauss(0.0, 1.0),
    )


def test_round_trip_through_a_weights_only_checkpoint():
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    np.random.standard_normal(), random.gauss(0.0, 1.0)  # leave a cached Gaussian in both states
    buffer = io.BytesIO()
    torch.save({"random_state": GlobalRandomState().state_dict()}, buffer)
    expected = _draws()

    torch.manual_seed(0), np.random.seed(0), random.seed(0)  # something else happened meanwhile
    assert _draws() != expected
    buffer.seek(0)
    GlobalRandomState().load_state_dict(torch.load(buffer, weights_only=True)["random_state"])
    assert _draws() == expected


class _FakeCuda:
    """Stands for two CUDA devices' generators (the CPU machines of CI have none)."""

    def __init__(self, devices: int = 2, initialized: bool = True) -> None:
        self.devices, self.initialized, self.restored = devices, initialized, None

    def install(self, monkeypatch) -> "_FakeCuda":
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: self.initialized)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: self.devices > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.devices)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.full((16,), d, dtype=torch.uint8) for d in range(self.devices)])
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: setattr(self, "restored", states))
        return self


def test_cuda_generators_saved_once_initialised_and_restored_on_as_many_devices(monkeypatch):
    _FakeCuda(initialized=False).install(monkeypatch)
    assert GlobalRandomState().state_dict()["cuda"] == []  # saving does not initialise CUDA
    _FakeCuda().install(monkeypatch)
    state = GlobalRandomState().state_dict()
    assert [int(s[0]) for s in state["cuda"]] == [0, 1]
    fake = _FakeCuda().install(monkeypatch)
    GlobalRandomState().load_state_dict(state)
    assert [int(s[0]) for s in fake.restored] == [0, 1]


def test_cuda_generators_of_another_device_count_are_not_restored_and_said_so(monkeypatch, caplog):
    _FakeCuda().install(monkeypatch)
    state = GlobalRandomState().state_dict()
    fake = _FakeCuda(devices=1).install(monkeypatch)
    with caplog.at_level("WARNING", logger="sasnet_components.handlers.random_state"):
        GlobalRandomState().load_state_dict(state)
    assert fake.restored is None
    assert "the CUDA generators of 2 device(s), this process has 1: they are not restored" in caplog.text


def test_missing_entry():
    state = GlobalRandomState().state_dict()
    del state["numpy"]
    with pytest.raises(KeyError, match=r"missing \['numpy'\]"):
        GlobalRandomState().load_state_dict(state)


def test_iteration_seeding_draws_are_a_function_of_seed_rank_and_iteration():
    seeding = IterationSeeding(seed=7)
    draws = {}
    engine = Engine(lambda e, batch: draws.setdefault(e.state.iteration, _draws()))
    seeding.attach(engine)
    seeding.attach(engine)  # once
    torch.manual_seed(0)
    engine.run(range(3), max_epochs=1)
    torch_seed, numpy_seed, python_seed = seeding.seeds(rank=0, iteration=2)  # one process: rank 0
    torch.manual_seed(torch_seed), np.random.seed(numpy_seed), random.seed(python_seed)
    assert draws[2] == _draws()  # iteration 2 drew from its own seeds, whatever came before
    assert draws[1] != draws[2]
    resumed = {}
    engine = Engine(lambda e, batch: resumed.setdefault(e.state.iteration, _draws()))
    IterationSeeding(seed=7).attach(engine)
    engine.load_state_dict({"iteration": 1, "epoch_length": 3, "max_epochs": 1})
    torch.manual_seed(123)  # other generator states before the resumed run: no effect
    engine.run(range(3))
    assert resumed == {2: draws[2], 3: draws[3]}
    assert seeding.seeds(1, 2) != seeding.seeds(0, 2) != IterationSeeding(8).seeds(0, 2)  # per process, per seed


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_iteration_seeding_needs_a_non_negative_integer(seed):
    with pytest.raises(ValueError, match=r"`seed` must be an integer >= 0"):
        IterationSeeding(seed)
