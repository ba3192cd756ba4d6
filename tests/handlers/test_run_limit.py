"""RunLimit: a run stops after its wall time or its iterations, counted from its own start."""

from __future__ import annotations

import time

import pytest
from ignite.engine import Engine, Events

from sasnet_components import RunLimit


def _engine(step_seconds: float = 0.0) -> Engine:
    engine = Engine(lambda e, batch: time.sleep(step_seconds))
    return engine


def test_iteration_budget_counts_from_the_start_of_each_run():
    engine = _engine()
    RunLimit(iterations=3).attach(engine)
    completed = []
    engine.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.iteration))
    engine.run(range(5), max_epochs=2)  # 10 iterations available
    assert engine.state.iteration == 3 and completed == [3]  # COMPLETED fires: final checkpoints are written
    engine.run(range(5), max_epochs=2)  # continues from iteration 3 with a new budget of 3
    assert engine.state.iteration == 6 and completed == [3, 6]


def test_budget_counts_from_a_state_restored_when_the_run_starts():
    # a checkpoint loader attached after the limit restores the iteration at STARTED, after the limit's handler
    engine = _engine()
    RunLimit(iterations=3).attach(engine)
    engine.run(range(5), max_epochs=2)
    saved = engine.state_dict()
    resumed = _engine()
    RunLimit(iterations=3).attach(resumed)
    resumed.add_event_handler(Events.STARTED, lambda e: e.load_state_dict(saved))
    resumed.run(range(5), max_epochs=2)
    assert resumed.state.iteration == 6  # iterations 4, 5, 6


def test_time_budget_stops_a_slow_run():
    engine = _engine(step_seconds=0.02)
    RunLimit(seconds=0.1).attach(engine)
    engine.run(range(100))
    # at least 0.1 s of 0.02 s steps (5 iterations), far fewer than the 100 available
    assert 5 <= engine.state.iteration < 50


def test_no_stop_at_the_last_iteration_and_no_log(caplog):
    engine = _engine()
    RunLimit(iterations=4).attach(engine)
    with caplog.at_level("INFO"):
        engine.run(range(4))
    assert engine.state.iteration == 4 and "run limit reached" not in caplog.text


@pytest.mark.parametrize("kwargs", [{"seconds": 0}, {"seconds": -1.0}, {"iterations": 0}, {"iterations": 2.5}, {"iterations": True}])
def test_budgets_must_be_positive(kwargs):
    with pytest.raises(ValueError, match="must be a positive"):
        RunLimit(**kwargs)
