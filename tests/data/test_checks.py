"""Tests of the input checks shared by preparation, training and inference (``sasnet_components.data.checks``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sasnet_components.data.checks import error_reason, exception_message, nonfinite_message, read_error
from sasnet_components.utils import InputPermissionError, InvalidInputError, MissingInputError


def test_nonfinite_message_counts_by_hand():
    values = np.array([1.0, np.nan, np.inf, -np.inf, 2.0], dtype=np.float32)
    assert nonfinite_message(values) == "3 non-finite voxels (1 NaN, 2 infinite) of 5"
    assert nonfinite_message(torch.tensor([[0.0, float("nan")], [1.0, 2.0]])) == "1 non-finite voxel (1 NaN, 0 infinite) of 4"
    assert nonfinite_message(np.array([1.0, 2.0], dtype=">f4")) is None  # big-endian, as some NIfTI / nrrd files
    assert nonfinite_message(np.arange(6, dtype=np.uint8)) is None  # integers cannot be NaN


@pytest.mark.parametrize(
    "error, kind",
    [
        (EOFError("stream ended"), InvalidInputError),  # a ValueError
        (FileNotFoundError("no file"), MissingInputError),  # a FileNotFoundError
        (PermissionError("denied"), InputPermissionError),  # a PermissionError
        (OSError("bad\n  signature"), InvalidInputError),  # reasons are put on one line
    ],
)
def test_read_error_names_subject_reason_and_type(error, kind):
    made = read_error("case 'a': cannot read image '/x.nii.gz'", error)
    assert type(made) is kind
    reason = " ".join(str(error).split())
    assert str(made) == f"case 'a': cannot read image '/x.nii.gz': {reason} ({type(error).__name__})"


def test_messages_of_key_errors_are_not_quoted():
    assert exception_message(KeyError("no 'label'")) == "no 'label'"
    assert exception_message(ValueError("bad")) == "bad"
    assert error_reason(KeyError("no 'label'")) == "no 'label' (KeyError)"
    assert error_reason(OSError()) == "no reason given (OSError)"
