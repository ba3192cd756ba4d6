"""Multi-process training of the LA bundle: 2 gloo processes on CPU through ``torchrun`` and ``monai.bundle``.

``configs/multi_gpu_train.yaml`` layered over ``train.yaml``, as on N GPUs, with tiny synthetic data.
A probe handler (``rank_probe.py``, layered as a third config) writes what each process trained on and
ended with, since the checkpoints hold rank 0's state alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import ConfigWorkflow

from tests.bundle.test_la_bundle import TRAIN, _assert_identical, _overrides

REPO = Path(__file__).resolve().parents[2]
MULTI_GPU = str(REPO / "bundles" / "la" / "configs" / "multi_gpu_train.yaml")
# 4 labeled cases, 2 per batch (1 per process): epochs of 2 iterations; validation at 3 and 6 on the
# 2 validation cases (one per process); a checkpoint at 4 to resume from, the final one at 6
SETTINGS = dict(num_labeled=4, max_iterations=6, val_interval=3, checkpoint_interval=4, sw_batch_size=4)


def _torchrun(dataset_dir: str, out: Path, *, probe: bool = True, fail_at=None, **extra) -> subprocess.CompletedProcess:
    """`training` on 2 processes (gloo, CPU: no GPU visible) with the tiny settings; the probe writes
    ``out/ranks/rank<r>.pt`` (and fails on purpose at ``fail_at = [rank, iteration]``)."""
    configs = [TRAIN, MULTI_GPU]
    if probe:
        layer = out / "probe.yaml"
        out.mkdir(parents=True, exist_ok=True)
        handler = {"_target_": "tests.bundle.rank_probe.RankProbe", "folder": str(out / "ranks"), "fail_at": fail_at}
        handler.update(network="@network", sar_fusion="@sar_fusion", evaluator="@validate#evaluator")
        layer.write_text(yaml.safe_dump({"+train#handlers": [handler]}))
        configs.append(str(layer))
    overrides = _overrides(dataset_dir, out, **{**SETTINGS, **extra})
    del overrides["device"]  # each process's own: the CPU here
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "monai.bundle", "run", "training", "--config_file", json.dumps(configs)]
    for key, value in overrides.items():
        command += [f"--{key}", json.dumps(value) if isinstance(value, (list, bool)) else str(value)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def two_processes(dataset_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two_processes")
    done = _torchrun(dataset_dir, out)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def _ranks(out: Path) -> list:
    return [torch.load(out / "ranks" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_both_processes_end_with_the_same_network_and_sar_memory(two_processes):
    first, second = _ranks(two_processes)
    _assert_identical(first["network"], second["network"], "network")  # weights and batch-norm statistics
    _assert_identical(first["sar"], second["sar"], "sar")
    assert sorted(first["sar"]["memory"]) == ["SYN000", "SYN001", "SYN002", "SYN003"]  # the 4 labeled cases
    # the processes wrote different cases and each holds the other's: the memory left 0.5 where crops were written
    for case, memory in first["sar"]["memory"].items():
        assert (memory[0] != 0.5).any(), case  # current epoch's slot (paper mode)
    # rank 0 wrote the checkpoints: the network and the memory once, as both processes hold them
    final = torch.load(two_processes / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 6
    assert final["settings"]["settings"]["processes"] == 2  # a resume on another number is logged as such
    _assert_identical(final["model"], first["network"], "checkpoint model")
    _assert_identical(final["sar"]["memory"], first["sar"]["memory"], "checkpoint sar")
    model = torch.load(two_processes / "models" / "model.pt", weights_only=True)
    _assert_identical(model, first["network"], "model.pt")
    assert sorted(p.name for p in (two_processes / "runs" / "checkpoints").iterdir()) == [
        "checkpoint_final.pt",
        "checkpoint_iteration=4.pt",
    ]


def test_the_processes_take_disjoint_shares_of_the_single_process_batches(dataset_dir, two_processes, tmp_path):
    # the batches of a single process with the same seed: cases, crops and views
    workflow = ConfigWorkflow(config_file=TRAIN, run_id="training", **_overrides(dataset_dir, tmp_path, **SETTINGS))
    workflow.initialize()
    sampler = workflow.parser.get_parsed_content("train#sampler")
    loader = workflow.parser.get_parsed_content("train#data_loader")
    single = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        single += [
            list(zip(b["case_id"], b["crop_start"].tolist(), b["view"].tolist())) for b in loader
        ]
    assert len(single) == 6
    first, second = _ranks(two_processes)
    for iteration, (mine, theirs, whole) in enumerate(zip(first["batches"], second["batches"], single), start=1):
        assert mine["iteration"] == theirs["iteration"] == iteration
        shares = [list(zip(p["case_id"], p["crop_start"], p["view"])) for p in (mine, theirs)]
        # 1 labeled + 1 unlabeled each: labeled slots 0 | 1, unlabeled slots 2 | 3 of the whole batch
        assert shares == [[whole[0], whole[2]], [whole[1], whole[3]]], iteration
        assert mine["generator"] != theirs["generator"], iteration  # each process draws its own dropout masks
    labeled = {"SYN000", "SYN001", "SYN002", "SYN003"}
    for epoch in range(3):  # every epoch covers each labeled case once, across the two processes
        done = slice(2 * epoch, 2 * epoch + 2)
        seen = [p["case_id"][0] for p in first["batches"][done] + second["batches"][done]]
        assert sorted(seen) == sorted(labeled), epoch


def test_validation_is_shared_and_its_metric_is_that_of_the_whole_list(dataset_dir, two_processes, tmp_path):
    first, second = _ranks(two_processes)
    assert [v["cases"] for v in first["validations"]] == [v["cases"] for v in second["validations"]] == [1, 1]
    for mine, theirs in zip(first["validations"], second["validations"]):  # at iterations 3 and 6
        assert mine["metrics"] == theirs["metrics"]  # gathered: the same value on every process
    # one process validating both cases with the final weights (those of the validation at iteration 6)
    workflow = ConfigWorkflow(config_file=TRAIN, run_id="training", **_overrides(dataset_dir, tmp_path, **SETTINGS))
    workflow.initialize()
    workflow.parser.get_parsed_content("network").load_state_dict(first["network"])
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    assert evaluator.state.epoch_length == 2
    whole = evaluator.state.metrics["val_mean_dice"]
    assert first["validations"][-1]["metrics"]["val_mean_dice"] == pytest.approx(whole, abs=1e-6)


def test_a_resumed_two_process_run_continues_exactly(dataset_dir, two_processes, tmp_path):
    boundary = two_processes / "runs" / "checkpoints" / "checkpoint_iteration=4.pt"
    done = _torchrun(dataset_dir, tmp_path, resume_from=str(boundary))
    assert done.returncode == 0, done.stderr[-4000:]
    final = torch.load(two_processes / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    resumed = torch.load(tmp_path / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    _assert_identical(resumed, final)  # weights, SGD momentum, SAR memory, sampler, generators, trainer
    for rank, (whole, second_half) in enumerate(zip(_ranks(two_processes), _ranks(tmp_path))):
        _assert_identical(second_half["network"], whole["network"], f"rank {rank} network")
        assert second_half["batches"] == whole["batches"][4:]  # iterations 5 and 6


def test_a_failing_process_ends_the_run_with_its_error(dataset_dir, tmp_path):
    # SYN007 is the second validation case, process 1's share alone once validation cases leave the unlabeled pool
    data = tmp_path / "data"
    shutil.copytree(dataset_dir, data)
    (data / "imagesTr" / "SYN007.nii.gz").write_bytes(b"not a NIfTI file")
    done = _torchrun(str(data), tmp_path / "out", probe=False, validation_unlabeled=False)
    assert done.returncode != 0
    assert "error (process 1 of 2):" in done.stderr and "SYN007" in done.stderr, done.stderr[-4000:]
    assert not (tmp_path / "out" / "models" / "model.pt").exists()


def test_a_process_failing_during_training_ends_the_run(dataset_dir, tmp_path):
    # process 0 is waiting for process 1 in a collective of iteration 2 when process 1 fails
    started = time.monotonic()
    done = _torchrun(dataset_dir, tmp_path, fail_at=[1, 2])
    assert done.returncode != 0
    assert "rank probe: process 1 fails at iteration 2" in done.stderr, done.stderr[-4000:]
    assert time.monotonic() - started < 120  # torchrun stopped process 0 rather than leaving it waiting
    assert not (tmp_path / "ranks").exists()  # neither process completed


def test_the_multi_gpu_layer_initializes_as_train_yaml_does_plus_the_process_group():
    train = yaml.safe_load(Path(TRAIN).read_text())["initialize"]
    multi = yaml.safe_load(Path(MULTI_GPU).read_text())["initialize"]
    single = "$sasnet_components.utils.check_single_process()"
    join = "$sasnet_components.utils.init_process_group(@device)"
    assert single in train and join in multi
    assert [join if item == single else item for item in train] == multi
