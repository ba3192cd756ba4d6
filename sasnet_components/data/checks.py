"""Checks of input volumes shared by data preparation, training and inference: non-finite voxels, read errors."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from sasnet_components.utils.errors import InputPermissionError, InvalidInputError, MissingInputError

__all__ = ["error_reason", "exception_message", "nonfinite_message", "read_error"]


def nonfinite_message(array: Any) -> Optional[str]:
    """Describe the non-finite voxels of `array`, or return None when it has none.

    Args:
        array: a numpy array or torch tensor of any shape. Integer and boolean arrays cannot hold
            NaN or infinity and always give None.

    Returns:
        None, or ``"<n> non-finite voxels (<a> NaN, <b> infinite) of <size>"`` (``voxel`` when n is 1).

    Example:
        >>> nonfinite_message(np.array([1.0, np.nan, np.inf, 2.0]))
        '2 non-finite voxels (1 NaN, 1 infinite) of 4'
    """
    values = np.asarray(array.detach().cpu() if isinstance(array, torch.Tensor) else array)
    if not np.issubdtype(values.dtype, np.inexact):
        return None
    n_nan = int(np.count_nonzero(np.isnan(values)))
    n_inf = int(np.count_nonzero(np.isinf(values)))
    total = n_nan + n_inf
    if total == 0:
        return None
    return f"{total} non-finite voxel{'s' if total > 1 else ''} ({n_nan} NaN, {n_inf} infinite) of {values.size}"


def exception_message(error: BaseException) -> str:
    """The message of `error`: ``str(error)``, except for a KeyError, whose ``str`` quotes its text.

    Example:
        >>> exception_message(KeyError("case 'a': no 'label'"))
        "case 'a': no 'label'"
    """
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def error_reason(error: BaseException) -> str:
    """The reason of a reader's exception on one line, with its type: ``"<message> (<type>)"``.

    Example:
        >>> error_reason(OSError("Expected 10 bytes, got 4 \\n - could the file be damaged?"))
        'Expected 10 bytes, got 4 - could the file be damaged? (OSError)'
    """
    reason = " ".join(exception_message(error).split()) or "no reason given"
    return f"{reason} ({type(error).__name__})"


def read_error(subject: str, error: BaseException) -> Exception:
    """An exception for a file that could not be read, naming what was read and why it failed.

    Args:
        subject: what was being read, e.g. ``"case 'LA003': cannot read image '/x/LA003.nii.gz'"``.
        error: the reader's exception.

    Returns:
        :class:`~sasnet_components.utils.errors.MissingInputError` (a ``FileNotFoundError``) or
        :class:`~sasnet_components.utils.errors.InputPermissionError` (a ``PermissionError``) when
        `error` is one of those (callers may handle them), else
        :class:`~sasnet_components.utils.errors.InvalidInputError` (a ``ValueError``); the message is ``"<subject>: <reason> (<type of error>)"`` (see
        :func:`error_reason`). Raise it ``from error``.

    Example:
        >>> read_error("cannot read '/x.nii.gz'", EOFError("stream ended"))
        InvalidInputError("cannot read '/x.nii.gz': stream ended (EOFError)")
    """
    message = f"{subject}: {error_reason(error)}"
    if isinstance(error, FileNotFoundError):
        return MissingInputError(message)
    if isinstance(error, PermissionError):
        return InputPermissionError(message)
    return InvalidInputError(message)
