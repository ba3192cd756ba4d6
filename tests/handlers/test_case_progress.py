from __future__ import annotations

import logging
import re

import torch
from ignite.engine import Engine

from sasnet_components import CaseProgressLogger


def _mask(*values: int) -> torch.Tensor:
    """Class indices of 4 voxels, shape (1, 4, 1, 1)."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, 4, 1, 1)


def _one_hot(*values: int) -> torch.Tensor:
    """The same as 2-channel one-hot, shape (2, 4, 1, 1)."""
    fg = _mask(*values)
    return torch.cat([1 - fg, fg])


# Dice by hand: LA001 2*2/(2+2) = 1; LA002 2*1/(2+1) = 0.6667; LA003 2*0/(1+1) = 0
CASES = [
    ("LA001", _mask(1, 1, 0, 0), _mask(1, 1, 0, 0)),
    ("LA002", _one_hot(1, 1, 0, 0), _mask(1, 0, 0, 0)),
    ("LA003", _mask(0, 0, 0, 1), _one_hot(1, 0, 0, 0)),
]


def _run(handler: CaseProgressLogger, batches) -> None:
    engine = Engine(lambda engine, batch: [{"pred": p, "label": l} for p, l in zip(batch["pred"], batch["label"])])
    handler.attach(engine)
    engine.run(batches, max_epochs=1)


def _messages(caplog, name: str) -> list:
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_one_line_per_case_with_its_dice(caplog):
    batches = [{"case_id": [i], "pred": [p], "label": [l]} for i, p, l in CASES]
    with caplog.at_level(logging.INFO, logger="validation"):
        _run(CaseProgressLogger(label_key="label", name="validation"), batches)
    lines = _messages(caplog, "validation")
    assert len(lines) == 3
    expected_lines = ("case 1/3: LA001, Dice 1.0000", "case 2/3: LA002, Dice 0.6667", "case 3/3: LA003, Dice 0.0000")
    for line, expected in zip(lines, expected_lines):
        assert re.fullmatch(re.escape(expected) + r" \(\d+\.\d s\)", line), line


def test_without_label_key_no_dice_and_cases_counted_within_batches(caplog):
    batches = [
        {"case_id": ["a", "b"], "pred": [CASES[0][1], CASES[1][1]], "label": [CASES[0][2], CASES[1][2]]},
        {"case_id": ["c"], "pred": [CASES[2][1]], "label": [CASES[2][2]]},
    ]
    with caplog.at_level(logging.INFO, logger="inference"):
        _run(CaseProgressLogger(total=3, name="inference"), batches)
    lines = [line.split(" (")[0] for line in _messages(caplog, "inference")]
    assert lines == ["case 1/3: a", "case 2/3: b", "case 3/3: c"]


def test_counts_restart_with_each_run(caplog):
    handler = CaseProgressLogger(label_key="label")
    batches = [{"case_id": [i], "pred": [p], "label": [l]} for i, p, l in CASES[:2]]
    with caplog.at_level(logging.INFO, logger="sasnet_components.cases"):
        _run(handler, batches)
        _run(handler, batches)
    lines = [line.split(",")[0] for line in _messages(caplog, "sasnet_components.cases")]
    assert lines == ["case 1/2: LA001", "case 2/2: LA002"] * 2


def test_both_masks_empty_gives_nan(caplog):
    batches = [{"case_id": ["empty"], "pred": [_mask(0, 0, 0, 0)], "label": [_mask(0, 0, 0, 0)]}]
    with caplog.at_level(logging.INFO, logger="sasnet_components.cases"):
        _run(CaseProgressLogger(label_key="label"), batches)
    assert _messages(caplog, "sasnet_components.cases")[0].startswith("case 1/1: empty, Dice nan (")
