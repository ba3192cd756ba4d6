"""Errors in what a user gave (an option, a file, a folder, the data in a file), and their report.

Every check of the package raises one of the classes below. Each is also the built-in exception
that callers expect (``InvalidInputError`` is a ``ValueError``, ``MissingInputError`` a
``FileNotFoundError``, ...), so code that catches those keeps working; the common base
:class:`InputError` tells a mistake in the input apart from a fault of the program.

:func:`report_input_errors` (the first item of a bundle's ``initialize``) makes a run that stops
on an input error end like ``argparse`` does: the message that says what was wrong and what was
expected is the last line printed, on stderr, without a traceback, and the exit status is 1. Any
other exception still shows its traceback.
"""

from __future__ import annotations

import difflib
import logging
import sys
from types import TracebackType
from typing import Any, Optional, Sequence, Type

__all__ = [
    "InputError",
    "InputPermissionError",
    "InputTypeError",
    "InvalidInputError",
    "MissingInputError",
    "NotAFolderError",
    "OutputExistsError",
    "UnknownKeyError",
    "check_option",
    "find_input_error",
    "report_input_errors",
]


class InputError(Exception):
    """Base of the errors in the user's input; its message names what was wrong and what was expected."""


class InvalidInputError(InputError, ValueError):
    """A value that is out of range, of the wrong shape or otherwise not what was expected."""


class InputTypeError(InputError, TypeError):
    """A value of the wrong type."""


class UnknownKeyError(InputError, KeyError):
    """A key (config option, dictionary entry) that is unknown or missing."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as text
        return str(self.args[0]) if self.args else ""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder that does not exist."""


class NotAFolderError(InputError, NotADirectoryError):
    """A path that should be a folder but is (or lies under) a file."""


class InputPermissionError(InputError, PermissionError):
    """A file or folder that cannot be read or written."""


class OutputExistsError(InputError, FileExistsError):
    """An output that exists and is not to be replaced."""


def check_option(value: Any, options: Sequence[Any], name: str) -> Any:
    """Return `value` if it is one of `options`, else raise naming the option and the close matches.

    Args:
        value: the value given.
        options: the accepted values.
        name: what the value is, for the message, e.g. ``"`sar_mode`"``.

    Raises:
        InvalidInputError: e.g. ``"`sar_mode` must be one of ['paper', 'running'], got 'papr' (did you mean 'paper'?)."``

    Example:
        >>> check_option("paper", ("paper", "running"), "`sar_mode`")
        'paper'
    """
    if value in options:
        return value
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise InvalidInputError(f"{name} must be one of {list(options)}, got {value!r}{hint}.")


def find_input_error(error: Optional[BaseException]) -> Optional[InputError]:
    """The outermost :class:`InputError` among `error` and its causes (``raise ... from``), or None.

    MONAI wraps an exception raised while a config item is built or evaluated in a ``RuntimeError``
    ``from`` it; the input error is found through that chain. An exception raised while another
    was handled (its ``__context__`` only) is a fault of its own and does not count.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputError):
            return error
        seen.add(id(error))
        error = error.__cause__
    return None


def _excepthook(kind: Type[BaseException], value: BaseException, traceback: Optional[TracebackType]) -> None:
    error = find_input_error(value)
    if error is None:
        _state["hook"](kind, value, traceback)
        return
    sys.stdout.flush()  # the run's log lines (stdout) before the message
    print(f"error: {error}", file=sys.stderr, flush=True)


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _state["factory"](*args, **kwargs)
    if record.exc_info and find_input_error(record.exc_info[1]) is not None:
        record.exc_info = None  # handlers that log an exception (ignite / MONAI) show its message only
        record.exc_text = None
    return record


_state: dict = {}


def report_input_errors() -> bool:
    """End the process on an uncaught :class:`InputError` with its message alone, as ``argparse`` does.

    Installs a ``sys.excepthook`` that, for an uncaught exception caused by an :class:`InputError`
    (see :func:`find_input_error`), prints ``error: <message>`` to stderr as the last line instead
    of the traceback (exit status 1, as for any uncaught exception); other exceptions go to the
    previous hook and keep their traceback. Log records of such an exception (ignite's and MONAI's
    handlers log the exceptions that stop an engine) keep their message and lose the traceback.
    Calling it again changes nothing.

    Wire it as the first item of a bundle's ``initialize``:
    ``- $sasnet_components.utils.report_input_errors()``.

    Returns:
        True.
    """
    if sys.excepthook is not _excepthook:
        _state["hook"] = sys.excepthook
        sys.excepthook = _excepthook
    if logging.getLogRecordFactory() is not _record_factory:
        _state["factory"] = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_record_factory)
    return True
