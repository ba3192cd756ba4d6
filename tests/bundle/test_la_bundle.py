"""Smoke tests of the LA bundle through ``monai.bundle``: train, resume and evaluate on tiny synthetic data (CPU)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow, run

from sasnet_components.data import make_synthetic_la
from sasnet_components.data.la import prepare_la

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "la" / "configs"
TRAIN = str(CONFIGS / "train.yaml")
EVALUATE = str(CONFIGS / "evaluate.yaml")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("la_bundle")
    raw = make_synthetic_la(str(root / "h5"), num_train=8, num_test=1, shape=(40, 40, 24), seed=0)
    prepare_la(str(raw), str(root / "prepared"), num_labeled=3, num_validation=2)
    return str(root / "prepared")


def _overrides(dataset_dir: str, out: Path, **extra) -> dict:
    tiny = {
        "dataset_dir": dataset_dir,
        "output_dir": str(out / "runs"),
        "ckpt_dir": str(out / "models"),
        "device": "cpu",
        "num_labeled": 3,
        "patch_size": [32, 32, 16],
        "network_def#n_filters": 2,
        "max_iterations": 4,
        "val_interval": 2,
        "checkpoint_interval": 2,
        "num_workers": 0,
        "sw_batch_size": 2,
        "log_interval": 1,
    }
    tiny.update(extra)
    return tiny


def test_train_then_evaluate(dataset_dir, tmp_path):
    # flags as the command line passes them (strings): 'false' must mean false
    run("training", config_file=TRAIN, **_overrides(dataset_dir, tmp_path, select_best="false", amp="false"))
    assert (tmp_path / "models" / "model.pt").is_file()  # the final model is the reported one
    assert not (tmp_path / "models" / "model_final.pt").exists()  # no selection by default
    state = torch.load(tmp_path / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert set(state) == {"model", "optimizer", "trainer", "sar"}
    assert state["trainer"]["iteration"] == 4
    assert state["sar"]["epoch"] == 4  # 3 labeled cases, 2 per batch: one iteration per epoch
    assert sorted(state["sar"]["memory"]) == ["SYN000", "SYN001", "SYN002"]  # only labeled cases
    assert list((tmp_path / "runs" / "tensorboard").glob("events.out.tfevents.*"))

    run(
        "evaluating",
        config_file=[TRAIN, EVALUATE],
        **_overrides(dataset_dir, tmp_path, eval_roi_size=[32, 32, 16], eval_stride=[16, 16, 8]),
    )
    with open(tmp_path / "runs" / "eval_validation" / "metrics_per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == ["SYN006", "SYN007"]  # the last 2 ids of train.list
    summary = json.loads((tmp_path / "runs" / "eval_validation" / "metrics_summary.json").read_text())
    assert summary["num_cases"] == 2 and set(summary["mean"]) >= {"dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm"}
    assert summary["sliding_window"] == {"roi_size": [32, 32, 16], "stride": [16, 16, 8], "mode": "constant"}


def test_resume_restores_iteration_and_sar_memory(dataset_dir, tmp_path):
    run("training", config_file=TRAIN, **_overrides(dataset_dir, tmp_path / "first", max_iterations=2))
    checkpoint = tmp_path / "first" / "runs" / "checkpoints" / "checkpoint_final.pt"
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["trainer"]["iteration"] == 2 and saved["sar"]["epoch"] == 2

    overrides = _overrides(dataset_dir, tmp_path / "resumed", max_iterations=4, resume_from=str(checkpoint))
    workflow = ConfigWorkflow(config_file=TRAIN, run_id="training", **overrides)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    sar = workflow.parser.get_parsed_content("sar_fusion")
    optimizer = workflow.parser.get_parsed_content("optimizer")
    seen = []

    def record(engine):  # the first iteration after loading, before it changes anything
        if not seen:
            momentum = optimizer.state_dict()["state"][0]["momentum_buffer"].clone()
            seen.append((engine.state.iteration, sar.state_dict(), momentum))

    trainer.add_event_handler(Events.ITERATION_STARTED, record)
    workflow.run()

    iteration, memory, momentum = seen[0]
    assert iteration == 3  # continues after iteration 2
    assert memory["epoch"] == 2
    assert sorted(memory["memory"]) == sorted(saved["sar"]["memory"])
    for case, values in saved["sar"]["memory"].items():
        torch.testing.assert_close(memory["memory"][case], values)
    torch.testing.assert_close(momentum, saved["optimizer"]["state"][0]["momentum_buffer"])
    final = torch.load(tmp_path / "resumed" / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 4 and final["sar"]["epoch"] == 4


def test_paper_protocol_selects_on_test_cases_and_says_so(dataset_dir, tmp_path, capsys):
    run("training", config_file=TRAIN, **_overrides(dataset_dir, tmp_path, protocol="paper", max_iterations=2))
    log = capsys.readouterr().out  # the bundle's logging.conf logs to stdout
    assert re.search(r"WARNING - protocol 'paper': validating .* on 1 TEST cases.*comparison with published numbers only", log)
    assert (tmp_path / "models" / "model.pt").is_file()  # best on the test list
    assert (tmp_path / "models" / "model_final.pt").is_file()  # the final model, kept apart


@pytest.mark.parametrize(
    "extra, error, match",
    [
        ({"num_labled": 3}, KeyError, r"'num_labled': did you mean \['num_labeled'"),
        ({"num_labeled": 99}, ValueError, r"`num_labeled` must be in \[1, 8\].*got 99"),
        ({"dataset_dir": "/nonexistent/la"}, FileNotFoundError, r"scripts/prepare_la.py"),
        (
            {"pad_to_patch": False, "patch_size": [48, 48, 16]},
            ValueError,
            r"case SYN00\d: patch size \(48, 48, 16\) does not fit in the volume of spatial shape \(40, 40, 24\)",
        ),
    ],
)
def test_bad_input_gets_a_clear_message(dataset_dir, tmp_path, extra, error, match):
    overrides = {**_overrides(dataset_dir, tmp_path), **extra}
    with pytest.raises(Exception) as info:
        run("training", config_file=TRAIN, **overrides)
    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, error) for e in chain), chain
    assert any(re.search(match, str(e)) for e in chain), [str(e) for e in chain]
