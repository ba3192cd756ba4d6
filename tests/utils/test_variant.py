"""Tests of the baselines and ablations switches (``sasnet_components.utils.training_variant``)."""

from __future__ import annotations

import logging

import pytest

from sasnet_components.utils import InvalidInputError, training_variant

ALL_ON = {"semi_supervised": True, "sar": True, "plc": True, "src": True, "view_variance": True, "low_level_branch": True}


@pytest.mark.parametrize(
    "switches, expected, line",
    [
        ({}, ALL_ON, "SASNet (all parts)"),
        ({"sar": "false"}, {**ALL_ON, "sar": False}, "SASNet without SAR"),
        ({"src": False, "view_variance": "off"}, {**ALL_ON, "src": False, "view_variance": False}, "SASNet without SRC, view variance"),
        (
            {"low_level_branch": "false", "sar": "false", "plc": "no"},
            {**ALL_ON, "low_level_branch": False, "sar": False, "plc": False},
            "SASNet without SAR, PLC, low-level branch",
        ),
        # supervised only: no unlabeled terms, whatever their switches say
        (
            {"semi_supervised": "false"},
            {**ALL_ON, "semi_supervised": False, "sar": False, "plc": False, "src": False},
            "supervised only (labeled cases alone; no unlabeled stream, PLC, SRC or SAR)",
        ),
        (
            {"semi_supervised": 0, "low_level_branch": False},  # one branch needs no plc/sar switches here
            {"semi_supervised": False, "sar": False, "plc": False, "src": False, "view_variance": True, "low_level_branch": False},
            "supervised only (labeled cases alone; no unlabeled stream, PLC, SRC or SAR), without low-level branch",
        ),
    ],
)
def test_variants(switches, expected, line, caplog):
    with caplog.at_level(logging.INFO, logger="sasnet_components.utils.variant"):
        assert training_variant(**switches) == expected
    assert caplog.messages == [f"training variant: {line}"]


@pytest.mark.parametrize("switches", [{"low_level_branch": False}, {"low_level_branch": False, "plc": False}, {"low_level_branch": False, "sar": False}])
def test_one_branch_needs_plc_and_sar_off(switches):
    with pytest.raises(InvalidInputError) as info:
        training_variant(**switches)
    assert str(info.value) == "PLC/SAR need both branches; with `--low_level_branch false` also pass `--plc false --sar false`."


def test_a_switch_that_is_not_a_boolean():
    with pytest.raises(InvalidInputError, match=r"^`view_variance` must be true or false .*got 'maybe'\.$"):
        training_variant(view_variance="maybe")
