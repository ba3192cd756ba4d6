"""Console output of long runs: whether to show progress bars, log lines that stay above them, and the
command-line pieces the preparation scripts share."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any, Callable, Optional, TextIO, TypeVar, Union

from tqdm import tqdm

from .bundle import as_bool
from .errors import InvalidInputError, script_errors

__all__ = [
    "TqdmLoggingHandler",
    "add_preparation_options",
    "bool_option",
    "log_above_bars",
    "progress_enabled",
    "progress_option",
    "run_preparation",
]

T = TypeVar("T")
logger = logging.getLogger(__name__)


def progress_enabled(value: Union[bool, str], name: str = "progress", stream: Optional[TextIO] = None) -> bool:
    """Whether to show progress bars: ``auto`` (bars only on a terminal, as tqdm's ``disable=None``), true or false.

    Args:
        value: ``"auto"``, a bool, or ``true/false, yes/no, on/off, 1/0`` (any case, as the command line
            passes them).
        name: the option's name, for the error message.
        stream: the stream the bars are written to, whose ``isatty()`` decides ``auto``; default ``sys.stderr``
            (tqdm's default).

    Returns:
        True to show bars.

    Raises:
        ValueError: any other value.

    Example:
        >>> progress_enabled("false")
        False
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        stream = sys.stderr if stream is None else stream
        isatty = getattr(stream, "isatty", None)
        return bool(isatty is not None and isatty())
    try:
        return as_bool(value, name)
    except ValueError:
        raise InvalidInputError(f"`{name}` must be auto, true or false (also yes/no, on/off, 1/0), got {value!r}.") from None


def bool_option(value: str) -> bool:
    """A boolean as an ``argparse`` type: ``1/0, true/false, yes/no, y/n, on/off`` (any case).

    Raises:
        argparse.ArgumentTypeError: any other value (argparse reports it).
    """
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True / False), got {value!r}")


def progress_option(value: str) -> bool:
    """:func:`progress_enabled` as an ``argparse`` type, for the scripts' ``--progress auto|true|false``.

    Raises:
        argparse.ArgumentTypeError: a value :func:`progress_enabled` refuses (argparse reports it).
    """
    try:
        return progress_enabled(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def add_preparation_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options every dataset preparation script takes: ``--overwrite``, ``--datalist_name``, ``--progress``.

    Returns:
        `parser`.
    """
    parser.add_argument(
        "--overwrite",
        type=bool_option,
        nargs="?",
        const=True,
        default=False,
        help="rewrite every case, even complete ones, and replace a datalist not written here (default False)",
    )
    parser.add_argument("--datalist_name", default="datalist.json", help="datalist file name in output_dir")
    parser.add_argument(
        "--progress",
        type=progress_option,
        default="auto",
        help="progress bar of the cases on stderr: auto (only on a terminal, default), true or false",
    )
    return parser


def run_preparation(script: str, prepare: Callable[..., T], **kwargs: Any) -> T:
    """Run ``prepare(**kwargs)`` as a preparation script's ``main``: INFO log lines on stdout, a user's
    mistake ending the script with ``<script>: error: <message>`` (:func:`script_errors`), and the
    time it took logged.

    Args:
        script: the script's path (``__file__``), for the error line.
        prepare: the preparation function.
        kwargs: its arguments.

    Returns:
        What `prepare` returns (the datalist).
    """
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    start = time.perf_counter()
    with script_errors(script):
        result = prepare(**kwargs)
    logger.info("done in %.1f s", time.perf_counter() - start)
    return result


class TqdmLoggingHandler(logging.StreamHandler):
    """``logging.StreamHandler`` writing each record with ``tqdm.write``: the line goes above the progress bars.

    Without a bar on screen it writes exactly what a ``StreamHandler`` would.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def log_above_bars() -> None:
    """Make every console log handler (a ``StreamHandler`` on stdout or stderr) write through ``tqdm.write``.

    Replaces, on the root logger and every other logger, each plain ``logging.StreamHandler`` whose stream
    is ``sys.stdout`` or ``sys.stderr`` by a :class:`TqdmLoggingHandler` on the same stream with the same
    level, formatter and filters. Other handlers (files, ...) are left alone. Calling it again changes
    nothing.
    """
    loggers = [logging.getLogger()] + [
        item for item in logging.root.manager.loggerDict.values() if isinstance(item, logging.Logger)
    ]
    for log in loggers:
        for i, handler in enumerate(log.handlers):
            if type(handler) is logging.StreamHandler and handler.stream in (sys.stdout, sys.stderr):
                replacement = TqdmLoggingHandler(handler.stream)
                replacement.setLevel(handler.level)
                replacement.setFormatter(handler.formatter)
                for log_filter in handler.filters:
                    replacement.addFilter(log_filter)
                log.handlers[i] = replacement
