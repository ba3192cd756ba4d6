"""Tests of ``GlobalRandomState``: the global generators saved and restored through a weights-only checkpoint."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from sasnet_components.handlers.random_state import GlobalRandomState


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


def test_cuda_states_only_once_cuda_is_initialised():
    expected = torch.cuda.device_count() if torch.cuda.is_initialized() else 0  # 0 on a CPU machine
    assert len(GlobalRandomState().state_dict()["cuda"]) == expected


def test_missing_entry():
    state = GlobalRandomState().state_dict()
    del state["numpy"]
    with pytest.raises(KeyError, match=r"missing \['numpy'\]"):
        GlobalRandomState().load_state_dict(state)
