"""Baselines and ablations of SASNet as configuration switches (paper Tables 4-6)."""

from __future__ import annotations

import logging
from typing import Any, Dict

from .bundle import as_bool
from .errors import InvalidInputError

__all__ = ["VARIANT_SWITCHES", "describe_variant", "training_variant"]

logger = logging.getLogger(__name__)

VARIANT_SWITCHES = ("semi_supervised", "sar", "plc", "src", "view_variance", "low_level_branch")

_PARTS = {"sar": "SAR", "plc": "PLC", "src": "SRC", "view_variance": "view variance", "low_level_branch": "low-level branch"}


def training_variant(
    semi_supervised: Any = True,
    sar: Any = True,
    plc: Any = True,
    src: Any = True,
    view_variance: Any = True,
    low_level_branch: Any = True,
) -> Dict[str, bool]:
    """The parts of SASNet a training run uses, from the bundle's switches; logs which variant runs.

    Each switch is a boolean or its command-line spelling (see :func:`as_bool`). ``semi_supervised``
    false is the supervised-only baseline: the labeled cases alone, no unlabeled stream, so PLC, SRC
    and SAR (which need the two branches' predictions on all samples, or the unlabeled stream) are
    turned off whatever their switches say.

    Args:
        semi_supervised: train on labeled and unlabeled cases (SASNet); false: labeled cases alone.
        sar: SAR fusion of the two branches; false: the ensemble is their plain mean (Table 6 "w/o SAR").
        plc: the PLC term (Tables 4, 5).
        src: the SRC term and its signed distance map (Table 6 "w/o SDM"; Tables 4, 5).
        view_variance: random views (axis permutations) of the training patches; false: the
            identity view only (Table 5).
        low_level_branch: build the low-level decoder; false: one branch, the high-level decoder
            only (Tables 4, 6 "w/o low-level"); needs `sar` and `plc` false.

    Returns:
        ``{"semi_supervised", "sar", "plc", "src", "view_variance", "low_level_branch"}`` as bools,
        after the rule above.

    Raises:
        InvalidInputError: a switch that is not a boolean, or `low_level_branch` false with `plc`
            or `sar` true (for a semi-supervised run).
    """
    given = {
        "semi_supervised": semi_supervised,
        "sar": sar,
        "plc": plc,
        "src": src,
        "view_variance": view_variance,
        "low_level_branch": low_level_branch,
    }
    variant = {name: as_bool(value, name) for name, value in given.items()}
    if not variant["semi_supervised"]:
        variant.update(sar=False, plc=False, src=False)
    elif not variant["low_level_branch"] and (variant["plc"] or variant["sar"]):
        raise InvalidInputError(
            "PLC/SAR need both branches; with `--low_level_branch false` also pass `--plc false --sar false`."
        )
    logger.info("training variant: %s", describe_variant(variant))
    return variant


def describe_variant(variant: Dict[str, bool]) -> str:
    """A short description of a :func:`training_variant` result, e.g. ``"SASNet without SAR"``."""
    if not variant["semi_supervised"]:
        text = "supervised only (labeled cases alone; no unlabeled stream, PLC, SRC or SAR)"
        extra = [_PARTS[k] for k in ("view_variance", "low_level_branch") if not variant[k]]
        return text + (f", without {' and '.join(extra)}" if extra else "")
    off = [_PARTS[k] for k in ("sar", "plc", "src", "view_variance", "low_level_branch") if not variant[k]]
    return "SASNet (all parts)" if not off else "SASNet without " + ", ".join(off)
