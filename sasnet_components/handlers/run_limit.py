"""Stop a training run after a wall time or a number of iterations, so that a later run resumes it."""

from __future__ import annotations

import logging
import time
from typing import Optional

import ignite.distributed as idist
from ignite.engine import Engine, Events

from sasnet_components.utils.distributed import is_distributed
from sasnet_components.utils.errors import InvalidInputError

__all__ = ["RunLimit"]

logger = logging.getLogger(__name__)


class RunLimit:
    """Terminate the engine once this run has lasted `seconds` or done `iterations` iterations.

    Both count from the run's first iteration (after ``Events.STARTED``, so after a checkpoint loader
    restored the iteration), so a resumed run gets its own budget. The check runs after each
    iteration; the engine then completes normally, so handlers attached to ``Events.COMPLETED``
    (the final checkpoint of ``AtomicCheckpointSaver``) save the state of the last iteration, and a
    run resumed from that checkpoint continues exactly. Unlike ignite's
    ``TimeLimit`` it has an ``attach`` (MONAI workflows attach their handlers) and an iteration budget.

    With several processes (a ``torch.distributed`` process group), rank 0's clock decides for all:
    its decision is broadcast after every iteration (a collective only when `seconds` is set), so
    every process stops at the same iteration and none waits for the others in a collective.

    Args:
        seconds: wall-time budget of the run (> 0), None for none.
        iterations: iterations of the run (>= 1), None for none.

    Raises:
        ValueError: a budget that is not positive.

    Example (bundle YAML)::

        - _target_: sasnet_components.RunLimit
          seconds: 420
    """

    def __init__(self, seconds: Optional[float] = None, iterations: Optional[int] = None) -> None:
        if seconds is not None and (isinstance(seconds, bool) or not float(seconds) > 0):
            raise InvalidInputError(f"`seconds` must be a positive number of seconds or None, got {seconds!r}.")
        if iterations is not None and (isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1):
            raise InvalidInputError(f"`iterations` must be a positive integer or None, got {iterations!r}.")
        self.seconds = None if seconds is None else float(seconds)
        self.iterations = None if iterations is None else int(iterations)
        self._start_time = 0.0
        self._start_iteration: Optional[int] = None

    def attach(self, engine: Engine) -> None:
        """Start the budget when `engine` starts a run; check it after every iteration."""
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_STARTED, self.iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.__call__)

    def started(self, engine: Engine) -> None:
        self._start_iteration = None  # set at the first iteration: a checkpoint may be loaded at STARTED after this

    def iteration_started(self, engine: Engine) -> None:
        if self._start_iteration is None:
            self._start_time = time.perf_counter()
            self._start_iteration = engine.state.iteration - 1

    def __call__(self, engine: Engine) -> None:
        done = engine.state.iteration - self._start_iteration
        elapsed = time.perf_counter() - self._start_time
        reason = None
        if self.iterations is not None and done >= self.iterations:
            reason = f"{done} iterations"
        elif self.seconds is not None and self._time_is_up(elapsed):
            reason = f"{elapsed:.0f} s"
        if reason is None:
            return
        total = getattr(engine, "max_iterations", None) or engine.state.epoch_length * engine.state.max_epochs
        if engine.state.iteration < total:
            logger.info(
                "run limit reached after %s: stopping at iteration %d of %d; a run resumed from the final checkpoint "
                "continues it",
                reason,
                engine.state.iteration,
                total,
            )
            engine.terminate()

    def _time_is_up(self, elapsed: float) -> bool:
        """Whether the time budget is spent: by this process's clock, or by rank 0's for every process."""
        up = elapsed >= self.seconds
        if is_distributed():
            up = bool(idist.broadcast(int(up), src=0))
        return up
