"""The LA bundle's device-resident training path (run on CPU here): the same run as the CPU loader's,
and a run stopped by its budget that resumes exactly."""

from __future__ import annotations

import shutil

import pytest

from tests.bundle.test_la_bundle import RESUME, _assert_identical, _train


@pytest.fixture(scope="module")
def uninterrupted(dataset_dir, tmp_path_factory) -> tuple:
    """Losses and final checkpoint of a run whose batches come from the DataLoader (CPU path)."""
    return _train(dataset_dir, tmp_path_factory.mktemp("cpu_loader"), device_data=False, **RESUME)


def test_device_resident_training_equals_the_cpu_loader_run(dataset_dir, uninterrupted, tmp_path):
    losses, final = uninterrupted
    device_losses, device_final = _train(dataset_dir, tmp_path, device_data=True, **RESUME)
    assert device_losses == losses  # every iteration's loss, to the last bit
    _assert_identical(device_final, final)  # weights, SGD momentum, SAR memory, sampler, generators, trainer


def test_a_run_stopped_by_its_budget_resumes_exactly(dataset_dir, uninterrupted, tmp_path, capsys):
    losses, final = uninterrupted
    first_losses, first = _train(dataset_dir, tmp_path / "first", device_data="true", iterations_this_run=3, **RESUME)
    assert first_losses == losses[:3] and first["trainer"]["iteration"] == 3
    log = capsys.readouterr().out
    assert "run limit reached after 3 iterations: stopping at iteration 3 of 6; a run resumed from" in log
    # each resumed run has its own budget, counted from the iteration it resumes at
    checkpoint = shutil.copy(tmp_path / "first" / "runs" / "checkpoints" / "checkpoint_final.pt", tmp_path / "at_3.pt")
    second_losses, second = _train(
        dataset_dir, tmp_path / "first", device_data=True, resume_from=str(checkpoint), iterations_this_run=2, **RESUME
    )
    assert second_losses == losses[3:5] and second["trainer"]["iteration"] == 5
    checkpoint = shutil.copy(tmp_path / "first" / "runs" / "checkpoints" / "checkpoint_final.pt", tmp_path / "at_5.pt")
    resumed_losses, resumed = _train(dataset_dir, tmp_path / "first", device_data=True, resume_from=str(checkpoint), **RESUME)
    assert resumed_losses == losses[5:]
    _assert_identical(resumed, final)
