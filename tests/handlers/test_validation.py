"""Tests of ``ScheduledValidationHandler``: the iterations at which it runs the validator."""

from __future__ import annotations

import pytest
from ignite.engine import Engine

from sasnet_components.handlers.validation import ScheduledValidationHandler


class _Validator:
    """Stands for an evaluator: records the trainer iteration of each run."""

    def __init__(self, trainer: Engine) -> None:
        self.trainer, self.iterations = trainer, []

    def run(self, epoch: int) -> None:
        self.iterations.append(self.trainer.state.iteration)


def _validated(iterations: int, **kwargs) -> list:
    trainer = Engine(lambda engine, batch: None)
    handler = ScheduledValidationHandler(**kwargs)
    handler.validator = _Validator(trainer)
    handler.attach(trainer)
    trainer.run(range(10), max_epochs=iterations // 10)
    return handler.validator.iterations


def test_reference_schedule_every_50_from_100():
    assert _validated(260, interval=50, start=100) == [100, 150, 200, 250]


def test_default_start_is_the_interval():
    assert _validated(60, interval=20) == [20, 40, 60]


def test_start_between_intervals():
    assert _validated(40, interval=15, start=7) == [7, 22, 37]


@pytest.mark.parametrize("kwargs", [{"interval": 0}, {"interval": 5, "start": 0}])
def test_invalid_schedule(kwargs):
    with pytest.raises(ValueError, match=r"validation needs `interval` >= 1 and `start` >= 1"):
        ScheduledValidationHandler(**kwargs)
