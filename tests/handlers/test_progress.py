from __future__ import annotations

import io
import logging
import sys

import pytest
from ignite.engine import Engine, Events

from sasnet_components import RunProgressBar, TqdmLoggingHandler, log_above_bars, progress_enabled


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "value, stream, expected",
    [
        ("auto", _Terminal(), True),
        ("auto", io.StringIO(), False),  # not a terminal: no bars (tqdm's disable=None)
        ("AUTO", _Terminal(), True),
        ("true", io.StringIO(), True),
        ("false", _Terminal(), False),
        (True, io.StringIO(), True),
        ("off", _Terminal(), False),
    ],
)
def test_progress_enabled(value, stream, expected):
    assert progress_enabled(value, stream=stream) is expected


def test_progress_enabled_names_the_accepted_values():
    with pytest.raises(ValueError, match=r"`progress` must be auto, true or false .*got 'sometimes'"):
        progress_enabled("sometimes")


def _engine() -> Engine:
    return Engine(lambda engine, batch: batch)


def test_bar_counts_the_iterations_of_the_whole_run():
    out = io.StringIO()
    engine = _engine()
    seen = []
    RunProgressBar(desc="training", file=out, persist=True, mininterval=0).attach(engine)
    engine.add_event_handler(Events.EPOCH_STARTED(once=1), lambda e: seen.append(out.getvalue()))
    engine.run([0, 1, 2], max_epochs=2)  # epochs of 3 iterations: one bar of 6, not two of 3
    assert "training: [0/6]" in seen[0]  # shown from the start, before the first iteration ends
    text = out.getvalue()
    assert "training: [6/6] 100%" in text and "[3/3]" not in text and "Epoch" not in text


def test_bar_total_and_postfix_from_arguments():
    out = io.StringIO()
    engine = _engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=4), lambda e: e.terminate())
    bar = RunProgressBar(desc="training", total=4, output_transform=lambda x: {"loss": 0.5}, file=out, mininterval=0)
    bar.attach(engine)
    engine.run([0, 1, 2], max_epochs=2)
    assert "training: [4/4] 100%" in out.getvalue() and "loss=0.5" in out.getvalue()


def test_bar_reads_the_output_every_output_interval_iterations():
    out = io.StringIO()
    engine = _engine()
    read = []
    transform = lambda output: read.append(output) or {"loss": len(read)}  # noqa: E731
    RunProgressBar(desc="training", output_transform=transform, output_interval=2, file=out, mininterval=0).attach(engine)
    engine.run([0, 1, 2], max_epochs=2)
    assert len(read) == 3  # iterations 2, 4, 6 of 6
    text = out.getvalue()
    assert "training: [6/6]" in text and "loss=3" in text and "loss=1" in text
    with pytest.raises(ValueError, match="`output_interval` must be a positive integer, got 0"):
        RunProgressBar(output_interval=0)


def test_bar_of_a_resumed_run_starts_at_its_iteration():
    out = io.StringIO()
    engine = _engine()
    RunProgressBar(desc="training", file=out, mininterval=0).attach(engine)
    engine.load_state_dict({"iteration": 3, "epoch_length": 3, "max_epochs": 2})
    engine.run([0, 1, 2])
    text = out.getvalue()
    assert "training: [3/6]" in text and "training: [6/6]" in text and "[1/6]" not in text


def test_bar_of_an_evaluator_run_per_epoch_counts_its_cases():
    # MONAI evaluators run one more epoch each time they are called: the bar counts that epoch's cases
    out = io.StringIO()
    engine = _engine()
    RunProgressBar(desc="validation", file=out, mininterval=0).attach(engine)
    for epoch in (1, 2):
        engine.state.max_epochs, engine.state.epoch, engine.state.iteration = epoch, epoch - 1, 0
        engine.run([0, 1])
    text = out.getvalue()
    assert text.count("validation: [2/2] 100%") >= 2 and "/4]" not in text


def test_log_above_bars_replaces_console_handlers_only(capsys):
    log = logging.getLogger("test_progress.console")
    console, other = logging.StreamHandler(sys.stdout), logging.StreamHandler(io.StringIO())
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    console.setLevel(logging.WARNING)
    log.handlers = [console, other]
    try:
        log_above_bars()
        log_above_bars()  # twice changes nothing
        replaced, kept = log.handlers
        assert type(replaced) is TqdmLoggingHandler and replaced.stream is sys.stdout
        assert replaced.level == logging.WARNING and replaced.formatter is console.formatter
        assert kept is other
        log.warning("case 1/2: LA001")
        assert capsys.readouterr().out == "WARNING case 1/2: LA001\n"  # the line a StreamHandler writes
    finally:
        log.handlers = []
