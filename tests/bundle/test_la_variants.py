"""Baselines and ablations of the LA bundle through ``monai.bundle``: each variant trains for 2 iterations on tiny
synthetic data (CPU) and the part it switches off is checked to be off.

Synthetic pool of 8 cases: 3 labeled (SYN000-SYN002), 5 unlabeled, of which the last 2 (SYN006, SYN007) are the
validation cases. The variant names and overrides are those of the README's "Baselines and ablations" table.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow, run

import sasnet_components.engines.semi_supervised_trainer as trainer_module
from tests.bundle.test_la_bundle import _overrides as _bundle_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "la" / "configs"
TRAIN = str(CONFIGS / "train.yaml")
EVALUATE = str(CONFIGS / "evaluate.yaml")

# as the command line passes them (strings)
VARIANTS = {
    "sasnet": {},
    "supervised": {"semi_supervised": "false"},
    "fully_supervised": {"semi_supervised": "false", "num_labeled": "all"},
    "no_sar": {"sar": "false"},
    "no_src": {"src": "false"},
    "no_plc": {"plc": "false"},
    "no_view_variance": {"view_variance": "false"},
    "one_branch": {"low_level_branch": "false", "sar": "false", "plc": "false"},
}
IDENTITY = [0, 1, 2]


def _overrides(dataset_dir: str, out: Path, **extra) -> dict:
    # the tiny runs of test_la_bundle, 2 iterations long and without validation
    return _bundle_overrides(dataset_dir, out, **{"max_iterations": 2, "val_interval": 1000, **extra})


def _train(dataset_dir: str, out: Path, **extra) -> dict:
    """Train a variant; return its iterations' batches and outputs, its parsed parts and the final checkpoint."""
    workflow = ConfigWorkflow(config_file=TRAIN, run_id="training", **_overrides(dataset_dir, out, **extra))
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    iterations = []

    def record(engine):
        batch, output = engine.state.batch, engine.state.output
        iterations.append(
            {
                "labeled": [bool(f) for f in batch["labeled"]],
                "views": [[int(a) for a in v] for v in batch["view"]],
                "output": {k: float(v) for k, v in output.items() if k.startswith("loss") or k == "gamma"},
            }
        )

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    workflow.run()
    assert len(iterations) == 2
    return {
        "iterations": iterations,
        "network": workflow.parser.get_parsed_content("network"),
        "sar": workflow.parser.get_parsed_content("sar_fusion"),
        "train_items": workflow.parser.get_parsed_content("datalists")["train"],
        "checkpoint": torch.load(out / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True),
    }


@pytest.fixture(scope="module")
def sasnet(dataset_dir, tmp_path_factory) -> dict:
    return _train(dataset_dir, tmp_path_factory.mktemp("sasnet"))


def _terms(result) -> list:
    return [set(it["output"]) for it in result["iterations"]]


def test_sasnet_uses_every_part(sasnet):
    # the reference the switches are checked against: every term, the unlabeled stream, the SAR memory, both views
    assert _terms(sasnet) == [{"loss", "loss_seg", "loss_plc", "loss_src", "gamma"}] * 2
    assert [it["labeled"] for it in sasnet["iterations"]] == [[True, True, False, False]] * 2
    assert sorted(sasnet["sar"].memory) == ["SYN000", "SYN001", "SYN002"]
    assert any(v != IDENTITY for it in sasnet["iterations"] for v in it["views"])
    assert sasnet["network"].decoder_low is not None


@pytest.mark.parametrize("name", ["supervised", "fully_supervised"])
def test_supervised_only_has_no_unlabeled_stream_and_no_unlabeled_terms(dataset_dir, tmp_path, name, capsys):
    result = _train(dataset_dir, tmp_path, **VARIANTS[name])
    labeled = 6 if name == "fully_supervised" else 3  # 'all': the 8 pool cases less the 2 validation cases
    ids = [item["case_id"] for item in result["train_items"]]
    assert ids == [f"SYN00{i}" for i in range(labeled)]  # nothing unlabeled is cached or loaded
    assert [it["labeled"] for it in result["iterations"]] == [[True, True]] * 2  # labeled_batch_size samples, all labeled
    assert _terms(result) == [{"loss", "loss_seg", "gamma"}] * 2
    for it in result["iterations"]:
        assert it["output"]["loss"] == 0.5 * it["output"]["loss_seg"]  # beta * Seg
    assert result["sar"].memory == {}
    assert "training variant: supervised only (labeled cases alone; no unlabeled stream, PLC, SRC or SAR)" in capsys.readouterr().out
    settings = result["checkpoint"]["settings"]["settings"]
    assert settings["flags#semi_supervised"] is False and settings["num_labeled"] == ("all" if labeled == 6 else 3)


def test_no_sar_leaves_the_memory_empty(dataset_dir, tmp_path):
    result = _train(dataset_dir, tmp_path, **VARIANTS["no_sar"])
    assert result["sar"].enabled is False and result["sar"].memory == {}
    assert result["checkpoint"]["sar"]["memory"] == {} and result["checkpoint"]["sar"]["enabled"] is False
    assert result["checkpoint"]["settings"]["settings"]["flags#sar"] is False  # compared on resume
    assert _terms(result) == [{"loss", "loss_seg", "loss_plc", "loss_src", "gamma"}] * 2


def test_no_plc_drops_the_term(dataset_dir, tmp_path):
    result = _train(dataset_dir, tmp_path, **VARIANTS["no_plc"])
    assert _terms(result) == [{"loss", "loss_seg", "loss_src", "gamma"}] * 2
    out = result["iterations"][0]["output"]
    assert out["loss"] == pytest.approx(0.5 * out["loss_seg"] + out["gamma"] * out["loss_src"], rel=1e-6)
    assert sorted(result["sar"].memory) == ["SYN000", "SYN001", "SYN002"]  # SAR still on


def test_no_src_computes_no_distance_map(dataset_dir, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a signed distance map was computed")

    monkeypatch.setattr(trainer_module, "ensemble_to_sdm", refuse)
    result = _train(dataset_dir, tmp_path, **VARIANTS["no_src"])
    assert _terms(result) == [{"loss", "loss_seg", "loss_plc", "gamma"}] * 2
    out = result["iterations"][1]["output"]
    assert out["loss"] == pytest.approx(0.5 * out["loss_seg"] + out["gamma"] * out["loss_plc"], rel=1e-6)


def test_no_view_variance_keeps_the_identity_view(dataset_dir, tmp_path):
    result = _train(dataset_dir, tmp_path, **VARIANTS["no_view_variance"])
    assert [it["views"] for it in result["iterations"]] == [[IDENTITY] * 4] * 2


def test_one_branch_trains_and_evaluates_without_a_low_level_decoder(dataset_dir, sasnet, tmp_path):
    result = _train(dataset_dir, tmp_path, **VARIANTS["one_branch"])
    network = result["network"]
    assert network.decoder_low is None and not any(n.startswith("decoder_low") for n, _ in network.named_parameters())
    two_branches = sum(p.numel() for p in sasnet["network"].parameters())
    low = sum(p.numel() for p in sasnet["network"].decoder_low.parameters())
    assert sum(p.numel() for p in network.parameters()) == two_branches - low
    assert _terms(result) == [{"loss", "loss_seg", "loss_src", "gamma"}] * 2
    assert result["sar"].memory == {}
    model = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert model and not any(k.startswith("decoder_low") for k in model)

    # evaluation builds the network from the same switches
    run(
        "evaluating",
        config_file=[TRAIN, EVALUATE],
        **_overrides(dataset_dir, tmp_path, eval_roi_size=[32, 32, 16], eval_stride=[16, 16, 8], **VARIANTS["one_branch"]),
    )
    with open(tmp_path / "runs" / "eval_validation" / "metrics_per_case.csv") as f:
        assert [r["case_id"] for r in csv.DictReader(f)] == ["SYN006", "SYN007"]


def test_one_branch_with_plc_and_sar_left_on_is_refused_before_any_data_is_read(tmp_path):
    workflow = ConfigWorkflow(
        config_file=TRAIN, run_id="training", **_overrides(str(tmp_path / "absent"), tmp_path, low_level_branch="false")
    )
    with pytest.raises(Exception) as info:
        workflow.initialize()
    messages, exc = [], info.value
    while exc is not None:  # monai.bundle wraps the error of a config expression
        messages.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    expected = "PLC/SAR need both branches; with `--low_level_branch false` also pass `--plc false --sar false`."
    assert expected in messages, messages
