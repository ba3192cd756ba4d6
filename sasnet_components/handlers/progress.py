"""Progress bars of long runs: ignite's ``ProgressBar`` over a whole run, with log lines above it.

The bundle configs read their ``progress`` option with
:func:`sasnet_components.utils.console.progress_enabled` (``auto``: bars only when stderr is a
terminal) and attach :class:`RunProgressBar` to the trainer and the evaluators when it is on. While a
bar is shown, log lines are written through ``tqdm.write``
(:func:`sasnet_components.utils.console.log_above_bars`), so that each stays on a line of its own above the bars.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from ignite.engine import Engine, Events
from ignite.handlers.base_logger import BaseLogger
from ignite.handlers.tqdm_logger import ProgressBar, _OutputHandler

from sasnet_components.utils.console import log_above_bars
from sasnet_components.utils.errors import InvalidInputError

__all__ = ["RunProgressBar"]


class _RunOutputHandler(_OutputHandler):
    """ignite's progress-bar output handler counting the iterations of a whole run, `total` of them."""

    total: Optional[int] = None
    output_interval: int = 1

    def _setup_output_metrics_state_attrs(self, engine: Engine, *args: Any, **kwargs: Any) -> Any:
        """The shown values, read every `output_interval` iterations (the bar keeps the last ones in between)."""
        if self.output_interval > 1 and engine.state.iteration % self.output_interval:
            return {}
        return super()._setup_output_metrics_state_attrs(engine, *args, **kwargs)

    def get_max_number_events(self, event_name: Any, engine: Engine) -> Optional[int]:  # type: ignore[override]
        if event_name in (Events.ITERATION_STARTED, Events.ITERATION_COMPLETED):
            return self.total
        return 1  # the closing event (COMPLETED) happens once: no "[epoch/max_epochs]" in the description


class RunProgressBar(ProgressBar):
    """ignite's ``ProgressBar`` over the iterations of a whole run, with log lines above it.

    ignite's bar restarts at every epoch; the SASNet trainer has epochs of a few iterations (one pass
    over the labeled cases), so this bar counts the run's iterations instead: ``training: [1234/40000]``,
    and an evaluator's cases: ``validation: [3/8]``. It is shown from the start of the run's first epoch,
    so also while the first case is processed, and closes when the run completes (``persist`` keeps it
    on screen). From the run's start, console log lines are written through ``tqdm.write``
    (:func:`log_above_bars`). A resumed training starts the bar at the resumed iteration.

    Attach it only when bars are wanted (bundle configs: ``_disabled_: $not @progress_flag``).

    Args:
        desc: text in front of the bar, e.g. ``"training"``.
        total: iterations of the run (pass the trainer's ``max_iterations``, which can end it inside an
            epoch); default: the engine's iteration at the start of the run plus the iterations of the
            epochs left (``max_epochs``, ``epoch_length``).
        output_transform: maps ``engine.state.output`` to a number or a ``{name: number}`` dict shown
            after the bar, e.g. ``sasnet_components.utils.training_stats``.
        metric_names: names of ``engine.state.metrics`` shown after the bar, or ``"all"``.
        output_interval: read `output_transform` and the metrics every that many iterations (a GPU
            value read on the host waits for the GPU: pass the trainer's log interval).
        persist: keep the bar on screen when the run completes.
        tqdm_kwargs: further arguments of ``tqdm.tqdm`` (``file``, ``ncols``, ``mininterval``, ...).

    Example (bundle YAML)::

        - _target_: sasnet_components.RunProgressBar
          _disabled_: $not @progress_flag
          desc: training
          total: '@max_iterations'
          output_transform: "$lambda output: sasnet_components.utils.training_stats(output)['loss']"
    """

    def __init__(
        self,
        desc: str = "",
        total: Optional[int] = None,
        output_transform: Optional[Callable] = None,
        metric_names: Optional[Union[str, list]] = None,
        output_interval: int = 1,
        persist: bool = False,
        **tqdm_kwargs: Any,
    ) -> None:
        if desc:
            tqdm_kwargs["desc"] = f"{desc}: "  # as the description the output handler sets
        super().__init__(persist=persist, **tqdm_kwargs)
        if total is not None and (isinstance(total, bool) or int(total) != total or total < 1):
            raise InvalidInputError(f"`total` must be a positive integer or None, got {total!r}.")
        self.total = None if total is None else int(total)
        if isinstance(output_interval, bool) or int(output_interval) != output_interval or output_interval < 1:
            raise InvalidInputError(f"`output_interval` must be a positive integer, got {output_interval!r}.")
        self._output_handler = _RunOutputHandler(
            desc, metric_names, output_transform, closing_event_name=Events.COMPLETED
        )
        self._output_handler.output_interval = int(output_interval)

    def attach(self, engine: Engine) -> None:  # type: ignore[override]
        """Open the bar at the run's first epoch, advance it at each iteration, close it when the run completes."""
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_STARTED, self.open)
        BaseLogger.attach(self, engine, self._output_handler, Events.ITERATION_COMPLETED)
        engine.add_event_handler(Events.COMPLETED, self._close)

    def started(self, engine: Engine) -> None:
        """Set the bar's total for this run and write console log lines above bars (:func:`log_above_bars`).

        Without `total`: the iteration the run starts from plus the iterations of its remaining epochs
        (a resumed training, or a MONAI evaluator run for one more epoch, count right).
        """
        self._close(engine)  # a bar left by a run that stopped on an error
        state = engine.state
        total = self.total
        if total is None and state.epoch_length is not None and state.max_epochs is not None:
            total = state.iteration + (state.max_epochs - state.epoch) * state.epoch_length
        self._output_handler.total = total
        log_above_bars()

    def open(self, engine: Engine) -> None:
        """Show the bar from the start of the run's first epoch, at the iteration it starts from (resumed runs)."""
        if self.pbar is None:
            self.pbar = self.pbar_cls(
                total=self._output_handler.total,
                initial=engine.state.iteration,
                leave=self.persist,
                bar_format=self.bar_format,
                **self.tqdm_kwargs,
            )
