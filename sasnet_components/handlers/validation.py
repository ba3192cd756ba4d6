"""Validation during training on an iteration schedule with a first iteration."""

from __future__ import annotations

from typing import Optional

from ignite.engine import Engine, Events
from monai.engines import Evaluator
from monai.handlers import ValidationHandler

from sasnet_components.utils.errors import InvalidInputError

__all__ = ["ScheduledValidationHandler"]


class ScheduledValidationHandler(ValidationHandler):
    """MONAI's ``ValidationHandler`` at iteration level: at iteration `start`, then every `interval` iterations.

    The SASNet reference code validates every 50 iterations from iteration 100 (``start=100,
    interval=50``); ``start=interval`` (the default) is MONAI's ``ValidationHandler(interval,
    epoch_level=False)``.

    Args:
        interval: iterations between two validations (>= 1).
        validator: the evaluator to run (or ``set_validator`` before training).
        start: iteration of the first validation (>= 1); default `interval`.

    Raises:
        ValueError: `interval` or `start` below 1.
    """

    def __init__(self, interval: int, validator: Optional[Evaluator] = None, start: Optional[int] = None) -> None:
        super().__init__(interval=int(interval), validator=validator, epoch_level=False)
        self.start = self.interval if start is None else int(start)
        if self.interval < 1 or self.start < 1:
            raise InvalidInputError(f"validation needs `interval` >= 1 and `start` >= 1, got interval={interval}, start={start}.")

    def due(self, engine: Engine, iteration: int) -> bool:
        """Whether `iteration` (1-based) is one of the schedule's."""
        return iteration >= self.start and (iteration - self.start) % self.interval == 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=self.due), self)
