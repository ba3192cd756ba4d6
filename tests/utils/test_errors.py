"""Input errors: their classes, how they are found in MONAI's exception chains, and their one-line report."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sasnet_components.utils import (
    InputError,
    InvalidInputError,
    MissingInputError,
    UnknownKeyError,
    check_option,
    find_input_error,
)


def test_input_errors_are_the_builtin_exceptions_callers_catch():
    assert isinstance(InvalidInputError("x"), ValueError) and isinstance(InvalidInputError("x"), InputError)
    assert isinstance(MissingInputError("x"), FileNotFoundError)
    assert str(UnknownKeyError("no key 'a'")) == "no key 'a'"  # not quoted, as a KeyError's str would be
    with pytest.raises(KeyError):
        raise UnknownKeyError("no key 'a'")


def test_check_option_names_the_option_and_the_close_match():
    assert check_option("paper", ("paper", "running"), "`sar_mode`") == "paper"
    with pytest.raises(InvalidInputError) as info:
        check_option("papr", ("paper", "running"), "`sar_mode`")
    assert str(info.value) == "`sar_mode` must be one of ['paper', 'running'], got 'papr' (did you mean 'paper'?)."


def _monai_like_chain() -> RuntimeError:
    """The exception MONAI raises when a config expression fails: a RuntimeError ``from`` the cause."""
    try:
        try:
            raise InvalidInputError("`alpha` must be in [0, 1], got 2.")
        except InvalidInputError as e:
            raise RuntimeError("Failed to instantiate SARFusion") from e
    except RuntimeError as e:
        try:
            raise RuntimeError("Failed to evaluate ConfigExpression") from e
        except RuntimeError as outer:
            return outer


def test_find_input_error_follows_causes_only():
    found = find_input_error(_monai_like_chain())
    assert isinstance(found, InvalidInputError) and str(found) == "`alpha` must be in [0, 1], got 2."
    assert find_input_error(RuntimeError("a bug")) is None
    try:  # a fault raised while an input error was handled (context, not cause) is a fault of its own
        try:
            raise InvalidInputError("bad")
        except InvalidInputError:
            raise RuntimeError("bug in the handler")
    except RuntimeError as e:
        assert e.__context__ is not None and find_input_error(e) is None


def _run(code: str) -> subprocess.CompletedProcess:
    script = "import logging, sys\nfrom sasnet_components.utils import InvalidInputError, report_input_errors\n" + code
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_an_uncaught_input_error_ends_with_its_message_and_no_traceback():
    result = _run(
        "report_input_errors(); report_input_errors()\n"  # a second call changes nothing
        "logging.basicConfig(stream=sys.stdout)\n"
        "try:\n"
        "    raise InvalidInputError('`patch_size` must be a multiple of 16, got [50]; expected e.g. [112, 112, 80].')\n"
        "except InvalidInputError as e:\n"
        "    logging.getLogger('engine').exception('Exception: %s', e)\n"  # as MONAI's StatsHandler logs it
        "    raise RuntimeError('Failed to evaluate ConfigExpression') from e\n"
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "error: `patch_size` must be a multiple of 16, got [50]; expected e.g. [112, 112, 80]."
    assert "Traceback" not in result.stderr + result.stdout
    assert "ERROR:engine:Exception: `patch_size` must be a multiple of 16" in result.stdout  # the log line stays


def test_other_errors_keep_their_traceback():
    result = _run("report_input_errors()\nlogging.basicConfig(stream=sys.stdout)\n"
                  "try:\n    1 / 0\nexcept ZeroDivisionError:\n    logging.getLogger('engine').exception('failed')\n    raise\n")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and result.stderr.splitlines()[-1] == "ZeroDivisionError: division by zero"
    assert "Traceback (most recent call last)" in result.stdout  # the logged one too


def _reraised_from_a_worker(make_error) -> RuntimeError:
    """The exception ``torch.utils.data`` raises in the main process for one a worker raised (its traceback as text)."""
    from torch._utils import ExceptionWrapper  # what DataLoader workers send back

    try:
        make_error()
    except Exception:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    try:
        wrapped.reraise()
    except RuntimeError as e:
        return e


def _transform_failed(error: Exception) -> None:
    try:
        raise error
    except Exception as e:
        raise RuntimeError("applying transform <CheckedLoadImaged>") from e  # as MONAI's apply_transform


def test_an_input_error_raised_in_a_worker_is_rebuilt_from_its_traceback():
    message = "case 'LA003': image '/d/LA003.nii.gz' has 24 non-finite voxels (24 NaN, 0 infinite) of 4000;\nexpected finite intensities."
    reraised = _reraised_from_a_worker(lambda: _transform_failed(InvalidInputError(message)))
    assert type(reraised) is RuntimeError and "Original Traceback" in str(reraised)
    outer = RuntimeError("Failed to evaluate ConfigExpression")
    outer.__cause__ = reraised
    found = find_input_error(outer)
    assert type(found) is InvalidInputError and str(found) == message
    missing = _reraised_from_a_worker(lambda: _transform_failed(UnknownKeyError("case 'a': no 'label'")))
    assert str(find_input_error(missing)) == "case 'a': no 'label'"
    # a worker's own fault, and one raised while an input error was handled, keep their traceback
    assert find_input_error(_reraised_from_a_worker(lambda: _transform_failed(ZeroDivisionError("x")))) is None

    def fault_while_handling():
        try:
            raise InvalidInputError("bad")
        except InvalidInputError:
            raise RuntimeError("bug in the handler")

    assert find_input_error(_reraised_from_a_worker(fault_while_handling)) is None


def test_a_malformed_log_call_is_reported_by_logging_not_raised():
    result = _run("report_input_errors()\nlogging.basicConfig(stream=sys.stdout)\n"
                  "logging.getLogger('x').warning('%d items', 'abc')\nprint('still running')\n")
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "still running"
    assert "--- Logging error ---" in result.stderr  # logging's own report of the bad call


def test_script_errors_end_with_the_message(capsys):
    from sasnet_components.utils.errors import script_errors

    with pytest.raises(SystemExit) as stop:
        with script_errors("/x/scripts/tool.py"):
            raise KeyError("case 'a': no 'label'")
    assert stop.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "tool.py: error: case 'a': no 'label'"
    with pytest.raises(RuntimeError):  # a fault of the program keeps its traceback
        with script_errors("tool.py"):
            raise RuntimeError("bug")
