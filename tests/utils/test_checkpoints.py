"""Checks of a given checkpoint before any data is read: missing, unreadable, wrong kind, unfitting weights."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from sasnet_components.utils import (
    InvalidInputError,
    MissingInputError,
    check_checkpoint,
    load_checkpoint,
    weights_mismatch,
)

HINT = "Train one first."


def test_missing_folder_and_unreadable_files_name_the_option(tmp_path):
    with pytest.raises(MissingInputError, match=rf"^`inference_checkpoint` '{re.escape(str(tmp_path))}/no.pt' does not exist; expected a checkpoint file. Train one first.$"):
        load_checkpoint(tmp_path / "no.pt", "inference_checkpoint", HINT)
    with pytest.raises(InvalidInputError, match="is not a file"):
        load_checkpoint(tmp_path, "eval_checkpoint")
    with pytest.raises(InvalidInputError, match="`resume_from` is not set"):
        load_checkpoint(None, "resume_from")
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(InvalidInputError, match=r"'.*model.pt' is not a readable checkpoint \(.*\); expected a file saved"):
        load_checkpoint(garbage, "eval_checkpoint")


def test_weights_mismatch_by_hand():
    small, large = nn.Linear(2, 3), nn.Linear(2, 4)
    assert weights_mismatch(small, small.state_dict()) is None
    assert weights_mismatch(large, small.state_dict()) == (
        "'weight' has shape (3, 2) in the checkpoint and (4, 2) in the network (2 of 2 tensors differ in shape)"
    )
    assert weights_mismatch(nn.Linear(2, 3, bias=False), small.state_dict()) == (
        "1 tensors of the checkpoint are not in the network (e.g. 'bias')"
    )


def test_bare_state_dict_and_training_checkpoint(tmp_path):
    net = nn.Linear(2, 3)
    bare, full = tmp_path / "model.pt", tmp_path / "checkpoint_final.pt"
    torch.save(net.state_dict(), bare)  # what MONAI's CheckpointSaver writes for one object
    torch.save({"model": net.state_dict(), "trainer": {"iteration": 4}}, full)
    assert check_checkpoint(bare, "eval_checkpoint", net) == str(bare)
    assert check_checkpoint(full, "eval_checkpoint", net) == str(full)  # its "model" entry
    assert check_checkpoint(full, "resume_from", net, keys=["model", "trainer"]) == str(full)
    with pytest.raises(InvalidInputError, match=r"holds network weights only; expected the entries \['model', 'trainer'\]. Train"):
        check_checkpoint(bare, "resume_from", net, keys=["model", "trainer"], hint=HINT)
    with pytest.raises(InvalidInputError, match=r"^`eval_checkpoint` '.*': its weights do not fit the configured network: 'weight' has shape \(3, 2\)"):
        check_checkpoint(bare, "eval_checkpoint", nn.Linear(2, 4))
