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
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Optional, Sequence, Type

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
    "script_errors",
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


_WORKER_TRACEBACK = "Original Traceback (most recent call last):"  # torch.utils.data's re-raise of a worker's error
_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"
_ERROR_LINE = re.compile(r"^" + re.escape(__name__) + r"\.(\w+): (.*)\Z", re.M | re.S)


def _from_worker(text: str) -> Optional[InputError]:
    """The input error in the text of an exception a DataLoader worker raised, rebuilt, or None.

    A worker process sends its exception back as text: ``torch.utils.data`` re-raises the outermost
    type (MONAI's ``RuntimeError`` of a failed transform) with the formatted traceback as its message,
    in which the chain of causes is ``<error line>, "The above exception was the direct cause ..."``,
    innermost first.
    """
    if _WORKER_TRACEBACK not in text:
        return None
    for part in reversed(text.split(_CONTEXT)[-1].split(_CAUSE)):  # outermost cause first
        match = _ERROR_LINE.search(part.strip())
        kind = _INPUT_ERRORS.get(match.group(1)) if match else None
        if kind is not None:
            return kind(match.group(2))
    return None


def find_input_error(error: Optional[BaseException]) -> Optional[InputError]:
    """The outermost :class:`InputError` among `error` and its causes (``raise ... from``), or None.

    MONAI wraps an exception raised while a config item is built or evaluated in a ``RuntimeError``
    ``from`` it; the input error is found through that chain. An exception raised while another
    was handled (its ``__context__`` only) is a fault of its own and does not count. An input error
    raised in a DataLoader worker process reaches the main process as the text of its traceback; it
    is rebuilt from that text (same class and message).
    """
    seen = set()
    chain = []
    while error is not None and id(error) not in seen:
        if isinstance(error, InputError):
            return error
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__
    for error in chain:
        found = _from_worker(str(error))
        if found is not None:
            return found
    return None


def _excepthook(kind: Type[BaseException], value: BaseException, traceback: Optional[TracebackType]) -> None:
    error = find_input_error(value)
    if error is None:
        _state["hook"](kind, value, traceback)
        return
    sys.stdout.flush()  # the run's log lines (stdout) before the message
    print(f"{_error_prefix()}: {error}", file=sys.stderr, flush=True)


def _error_prefix() -> str:
    """``error``, naming the process in a launch of several (``torchrun`` sets ``RANK`` and ``WORLD_SIZE``)."""
    world, rank = os.environ.get("WORLD_SIZE", "1"), os.environ.get("RANK", "0")
    return f"error (process {rank} of {world})" if world.isdigit() and int(world) > 1 else "error"


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _state["factory"](*args, **kwargs)
    if record.exc_info and find_input_error(record.exc_info[1]) is not None:
        record.exc_info = None  # handlers that log an exception (ignite / MONAI) show its message only
        record.exc_text = None
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format: logging reports it when a handler formats the record
        return record
    found = _from_worker(message)
    if found is not None:  # a worker's error in the message: its traceback text becomes the input error's message
        record.msg, record.args = message.split("Caught ", 1)[0] + str(found), ()
    return record


_state: dict = {}
_INPUT_ERRORS = {kind.__name__: kind for kind in (InputError, *InputError.__subclasses__())}  # to rebuild them by name


def report_input_errors() -> bool:
    """End the process on an uncaught :class:`InputError` with its message alone, as ``argparse`` does.

    Installs a ``sys.excepthook`` that, for an uncaught exception caused by an :class:`InputError`
    (see :func:`find_input_error`), prints ``error: <message>`` to stderr as the last line instead
    of the traceback (exit status 1, as for any uncaught exception); other exceptions go to the
    previous hook and keep their traceback. Log records of such an exception (ignite's and MONAI's
    handlers log the exceptions that stop an engine) keep their message and lose the traceback.
    Calling it again changes nothing. In a process of a ``torchrun`` launch of several the line reads
    ``error (process <rank> of <N>): <message>``.

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


@contextmanager
def script_errors(script: str) -> Iterator[None]:
    """End a command-line script on a user's mistake as ``argparse`` does: ``<script>: error: <message>``
    as the last line on stderr, exit status 1, no traceback.

    Catches ``OSError``, ``ValueError`` and ``KeyError`` (the built-in types of this module's errors,
    and what readers of user files raise); stdout is flushed first, so the message follows the log.

    Args:
        script: the script's path (``__file__``); its file name starts the message.

    Example::

        with script_errors(__file__):
            prepare_la(args.input_dir, args.output_dir)
    """
    try:
        yield
    except (OSError, ValueError, KeyError) as e:
        sys.stdout.flush()
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"{Path(script).name}: error: {message}", file=sys.stderr)
        raise SystemExit(1) from e
