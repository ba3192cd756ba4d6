"""Smoke tests of the LA bundle through ``monai.bundle``: train, resume and evaluate on tiny synthetic data (CPU)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow, run
from monai.data import CacheDataset

import sasnet_components.data
from sasnet_components import DualBranchVNet

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "la" / "configs"
TRAIN = str(CONFIGS / "train.yaml")
EVALUATE = str(CONFIGS / "evaluate.yaml")


def _overrides(dataset_dir: str, out: Path, **extra) -> dict:
    tiny = {
        "dataset_dir": dataset_dir,
        "output_dir": str(out / "runs"),
        "ckpt_dir": str(out / "models"),
        "device": "cpu",
        "amp": False,
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


def test_train_then_evaluate(dataset_dir, tmp_path, capsys):
    # flags as the command line passes them (strings): 'false' must mean false
    run("training", config_file=TRAIN, **_overrides(dataset_dir, tmp_path, select_best="false", amp="false"))
    assert (tmp_path / "models" / "model.pt").is_file()  # the final model is the reported one
    assert not (tmp_path / "models" / "model_final.pt").exists()  # no selection by default
    state = torch.load(tmp_path / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert set(state) == {"model", "optimizer", "trainer", "sar", "best_model", "sampler", "settings", "random_state"}
    assert state["trainer"]["iteration"] == 4
    # iteration 4 is an interval iteration: checkpoint_final.pt is a hard link to that checkpoint, written
    # before EPOCH_COMPLETED rolled the SAR memory of epoch 4 (3 labeled cases, 2 per batch: one iteration per epoch)
    checkpoints = tmp_path / "runs" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint_final.pt", "checkpoint_iteration=4.pt"]
    assert (checkpoints / "checkpoint_final.pt").samefile(checkpoints / "checkpoint_iteration=4.pt")
    assert state["sar"]["epoch"] == 3
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
    log = capsys.readouterr().out
    cases = re.findall(r"evaluation - INFO - (case \d/2: SYN00\d), Dice \d\.\d{4} ", log)
    assert cases == ["case 1/2: SYN006", "case 2/2: SYN007"]  # one line per case
    summary = json.loads((tmp_path / "runs" / "eval_validation" / "metrics_summary.json").read_text())
    assert summary["num_cases"] == 2 and set(summary["mean"]) >= {"dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm"}
    assert summary["sliding_window"] == {"roi_size": [32, 32, 16], "stride": [16, 16, 8], "mode": "constant"}


def _train(dataset_dir: str, out: Path, **extra) -> tuple:
    """Run `training`; return the (iteration, loss) sequence and the final training checkpoint."""
    workflow = ConfigWorkflow(config_file=TRAIN, run_id="training", **_overrides(dataset_dir, out, **extra))
    workflow.initialize()
    losses = []
    trainer = workflow.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append((e.state.iteration, e.state.output["loss"].item())))
    workflow.run()
    return losses, torch.load(out / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)


def _assert_identical(a, b, where: str = "checkpoint") -> None:
    """Bit-for-bit equality of nested checkpoint entries (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# 4 labeled cases, 2 per batch: epochs of 2 iterations. Validation every 3 iterations, so both
# resumed runs also cross a validation, whose loader must leave the training's random streams alone.
# Checkpoints every 4 iterations: the final one of iteration 6 is written, not linked to an interval one.
RESUME = dict(num_labeled=4, max_iterations=6, val_interval=3, sw_batch_size=4, checkpoint_interval=4)


@pytest.fixture(scope="module")
def uninterrupted(dataset_dir, tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("uninterrupted")
    losses, final = _train(dataset_dir, out, **RESUME)
    return losses, final, out / "runs" / "checkpoints" / "checkpoint_iteration=4.pt"


def test_resume_at_an_epoch_boundary_is_exact(dataset_dir, uninterrupted, tmp_path):
    losses, final, boundary = uninterrupted
    saved = torch.load(boundary, weights_only=True)
    # written at the end of iteration 4, before EPOCH_COMPLETED rolled the SAR memory of epoch 2
    assert saved["trainer"]["iteration"] == 4 and saved["sar"]["epoch"] == 1
    resumed_losses, resumed = _train(dataset_dir, tmp_path, resume_from=str(boundary), **RESUME)
    assert resumed_losses == losses[4:]  # iterations 5 and 6, same losses to the last bit
    assert resumed["sar"]["epoch"] == final["sar"]["epoch"] == 3
    _assert_identical(resumed, final)  # weights, SGD momentum, SAR memory, sampler, generators, trainer


def test_resume_from_a_final_checkpoint_linked_to_the_interval_one_is_exact(dataset_dir, uninterrupted, tmp_path):
    losses, final, boundary = uninterrupted
    assert not boundary.samefile(boundary.parent / "checkpoint_final.pt")  # final at 6, interval at 4: two files
    _train(dataset_dir, tmp_path / "first", **{**RESUME, "max_iterations": 4})
    checkpoints = tmp_path / "first" / "runs" / "checkpoints"
    assert (checkpoints / "checkpoint_final.pt").samefile(checkpoints / "checkpoint_iteration=4.pt")
    resumed_losses, resumed = _train(dataset_dir, tmp_path / "resumed", resume_from=str(checkpoints / "checkpoint_final.pt"), **RESUME)
    assert resumed_losses == losses[4:]
    _assert_identical(resumed, final)


def test_checkpoints_without_sar_memory_resume_with_a_warning(dataset_dir, uninterrupted, tmp_path, capsys):
    losses, _, boundary = uninterrupted
    _, small = _train(dataset_dir, tmp_path / "first", checkpoint_sar_memory="false", **{**RESUME, "max_iterations": 4})
    full = torch.load(boundary, weights_only=True)  # the same iteration 4, with the memory
    assert small["sar"]["memory_saved"] is False and small["sar"]["memory"] == {} and small["sar"]["epoch"] == 1
    _assert_identical(small["model"], full["model"])
    # 4 labeled cases of 40x40x24 (the crop grid), 3 epochs x 2 branches, float16: 4 * 6 * 38400 * 2 bytes = 1.84 MB less
    memory_bytes = sum(m.numel() * m.element_size() for m in full["sar"]["memory"].values())
    assert memory_bytes == 4 * 6 * 40 * 40 * 24 * 2
    final = tmp_path / "first" / "runs" / "checkpoints" / "checkpoint_final.pt"
    assert boundary.stat().st_size - final.stat().st_size >= memory_bytes
    capsys.readouterr()
    resumed_losses, resumed = _train(dataset_dir, tmp_path / "resumed", resume_from=str(final), **RESUME)
    assert [i for i, _ in resumed_losses] == [5, 6] and resumed["trainer"]["iteration"] == 6
    assert "WARNING - the checkpoint holds no SAR memory" in capsys.readouterr().out


def test_resume_inside_an_epoch_is_exact_with_other_workers(dataset_dir, uninterrupted, tmp_path):
    losses, final, _ = uninterrupted
    first_losses, first = _train(dataset_dir, tmp_path / "first", **{**RESUME, "max_iterations": 3})
    assert first["trainer"]["iteration"] == 3  # stopped inside epoch 2
    assert first_losses == losses[:3]
    checkpoint = str(tmp_path / "first" / "runs" / "checkpoints" / "checkpoint_final.pt")
    # the resumed run loads with 2 worker processes: the batches do not depend on the number of workers
    resumed_losses, resumed = _train(dataset_dir, tmp_path / "resumed", resume_from=checkpoint, num_workers=2, **RESUME)
    assert resumed_losses == losses[3:]
    _assert_identical(resumed, final)


def test_resume_with_selection_keeps_the_best_model_of_the_uninterrupted_run(dataset_dir, tmp_path):
    select = {**RESUME, "select_best": True, "val_interval": 1}  # validated, and kept if better, every iteration
    losses, final = _train(dataset_dir, tmp_path / "full", **select)
    _train(dataset_dir, tmp_path / "resumed", **{**select, "max_iterations": 3})  # then resumed in the same folders
    checkpoint = shutil.copy(tmp_path / "resumed" / "runs" / "checkpoints" / "checkpoint_final.pt", tmp_path / "at_3.pt")
    resumed_losses, resumed = _train(dataset_dir, tmp_path / "resumed", resume_from=str(checkpoint), **select)
    assert resumed_losses == losses[3:]
    _assert_identical(resumed, final)  # best_model: the scores of the kept model, the best metric and its epoch
    best = [torch.load(tmp_path / run / "models" / "model.pt", weights_only=True) for run in ("full", "resumed")]
    _assert_identical(best[0], best[1], "model.pt")


def test_resume_keeps_the_checkpoint_seed(dataset_dir, uninterrupted, tmp_path, capsys):
    losses, final, boundary = uninterrupted
    # nothing to remember: a different --seed on the command line does not change a resumed run
    resumed_losses, resumed = _train(dataset_dir, tmp_path, resume_from=str(boundary), seed=7, **RESUME)
    assert resumed_losses == losses[4:]
    resumed["settings"]["settings"]["seed"] = 1337  # the only difference: the recorded command-line seed
    _assert_identical(resumed, final)
    assert "resuming with settings that differ from the checkpoint's: seed 7 (checkpoint: 1337)" in capsys.readouterr().out


def test_resume_with_other_settings_says_which(dataset_dir, uninterrupted, tmp_path, capsys):
    _, _, boundary = uninterrupted
    _train(dataset_dir, tmp_path, resume_from=str(boundary), learning_rate=0.02, alpha=0.25, **{**RESUME, "max_iterations": 5})
    assert re.search(
        r"WARNING - resuming with settings that differ from the checkpoint's: alpha 0\.25 \(checkpoint: 0\.5\); "
        r"learning_rate 0\.02 \(checkpoint: 0\.01\);",
        capsys.readouterr().out,
    )


def test_resume_with_another_labeled_count_is_refused(dataset_dir, uninterrupted, tmp_path):
    _, _, boundary = uninterrupted
    with pytest.raises(Exception) as info:
        _train(dataset_dir, tmp_path, resume_from=str(boundary), **{**RESUME, "num_labeled": 3})
    assert "resume with the num_labeled and labeled_batch_size of the saved run" in "".join(_messages(info.value))


def test_paper_protocol_selects_as_the_reference_code_and_says_so(dataset_dir, tmp_path, capsys):
    # no validation override: the protocol sets the reference code's schedule and window
    overrides = {k: v for k, v in _overrides(dataset_dir, tmp_path).items() if k != "val_interval"}
    workflow = ConfigWorkflow(config_file=TRAIN, run_id="training", **{**overrides, "protocol": "paper", "max_iterations": 100})
    workflow.initialize()
    validated = []
    trainer = workflow.parser.get_parsed_content("train#trainer")
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    evaluator.add_event_handler(Events.STARTED, lambda e: validated.append(trainer.state.iteration))
    inferer = workflow.parser.get_parsed_content("validate#inferer")
    workflow.run()

    assert validated == [100]  # every 50 iterations from iteration 100: 100, 150, ...
    # the window steps MONAI computes from the overlap: the reference code's 18/18/4, uniform weights
    assert [int(r * (1 - o)) for r, o in zip(inferer.roi_size, inferer.overlap)] == [18, 18, 4]
    assert inferer.mode == "constant"
    log = capsys.readouterr().out  # the bundle's logging.conf logs to stdout
    assert re.search(
        r"WARNING - protocol 'paper': validating every 50 iterations from iteration 100 on 1 TEST cases \(sliding window "
        r"32x32x16, stride 18/18/4, uniform weights, float32\) and keeping the best model, as the reference code did; "
        r"for comparison with published numbers only",
        log,
    )
    assert "Differs from the reference" not in log
    assert (tmp_path / "models" / "model.pt").is_file()  # best on the test list
    assert (tmp_path / "models" / "model_final.pt").is_file()  # the final model, kept apart


def test_default_protocol_logs_its_validation_plan(dataset_dir, tmp_path, capsys):
    run("training", config_file=TRAIN, **_overrides(dataset_dir, tmp_path, max_iterations=2))
    captured = capsys.readouterr()
    assert re.search(
        r"INFO - protocol 'default': validating every 2 iterations from iteration 2 on 2 validation cases \(sliding "
        r"window 32x32x16, stride 16/16/8, uniform weights, float32\); the final model is reported",
        captured.out,
    )
    # one line per validation case; `progress: auto` and stderr is not a terminal here: no bars
    assert re.findall(r"validation - INFO - (case \d/2: SYN00\d), Dice \d\.\d{4} \(\d+\.\d s\)", captured.out) == [
        "case 1/2: SYN006",
        "case 2/2: SYN007",
    ]
    assert "%|" not in captured.err and "training: [" not in captured.err


def test_progress_true_shows_bars_and_log_lines_above_them(dataset_dir, tmp_path, capsys):
    run("training", config_file=TRAIN, **_overrides(dataset_dir, tmp_path, max_iterations=2, progress="true"))
    captured = capsys.readouterr()
    assert "Loading dataset: 100%" in captured.err  # CacheDataset follows the option
    assert "training: [2/2] 100%" in captured.err and "validation: [2/2] 100%" in captured.err
    assert re.search(r"\n\S+ \S+ - validation - INFO - case 2/2: SYN007, Dice", captured.out)  # a line of its own


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"patch_size": [40, 32, 16]}, r"`patch_size` must list one size per spatial axis, each a multiple of 16"),
        ({"max_iterations": 0}, r"`max_iterations` \(training iterations\) must be an integer >= 1, got 0\."),
        ({"num_labeled": 1}, r"`num_labeled` \(1\) must be at least `labeled_batch_size` \(2\)"),
        ({"val_interval": 0, "log_interval": "often"}, r"(?s)`val_interval`.*got 0\.\n  - `log_interval`.*got 'often'\."),
        ({"alpha": 2}, r"`alpha` must be in \[0, 1\], got 2"),
        ({"views": [[0, 0, 2]]}, r"\[0, 0, 2\]"),
        ({"resample_spacing": [1.25, 1.25]}, r"`resample_spacing` must be null or one spacing in mm > 0 per spatial axis"),
        ({"resample_spacing": [1.25, 0, 1.25]}, r"`resample_spacing` .*; got \[1.25, 0, 1.25\]\."),
    ],
)
def test_settings_are_checked_before_any_data_is_read(tmp_path, extra, match):
    # the dataset folder does not exist: a settings error must come first, from `initialize`
    workflow = ConfigWorkflow(config_file=TRAIN, run_id="training", **_overrides(str(tmp_path / "absent"), tmp_path, **extra))
    with pytest.raises(Exception) as info:
        workflow.initialize()
    assert any(re.search(match, m) for m in _messages(info.value)), _messages(info.value)


def _copy_with(dataset_dir: str, tmp_path: Path, case: str, damage) -> str:
    """A copy of the prepared dataset whose image of `case` is changed by `damage(path)`."""
    copy = tmp_path / "prepared"
    shutil.copytree(dataset_dir, copy)
    damage(copy / "imagesTr" / f"{case}.nii.gz")
    return str(copy)


def _with_nan_block(path: Path) -> None:
    image = nib.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32).copy()
    data[:2, :3, :4] = np.nan  # 24 voxels
    nib.save(nib.Nifti1Image(data, image.affine), str(path))


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header reads, the voxels end early


def test_training_refuses_a_non_finite_image_naming_the_case(dataset_dir, tmp_path):
    broken = _copy_with(dataset_dir, tmp_path, "SYN001", _with_nan_block)  # a labeled case
    with pytest.raises(Exception) as info:
        run("training", config_file=TRAIN, **_overrides(broken, tmp_path))
    expected = f"case 'SYN001': image '{broken}/imagesTr/SYN001.nii.gz' has 24 non-finite voxels (24 NaN, 0 infinite)"
    assert any(m.startswith(expected) for m in _messages(info.value)), _messages(info.value)


def test_evaluation_names_a_truncated_file(dataset_dir, tmp_path):
    broken = _copy_with(dataset_dir, tmp_path, "SYN006", _truncated)  # a validation case
    (tmp_path / "models").mkdir()
    torch.save(DualBranchVNet(n_filters=2).state_dict(), tmp_path / "models" / "model.pt")
    with pytest.raises(Exception) as info:
        run(
            "evaluating",
            config_file=[TRAIN, EVALUATE],
            **_overrides(broken, tmp_path, eval_roi_size=[32, 32, 16], eval_stride=[16, 16, 8]),
        )
    expected = f"case 'SYN006': cannot read image '{broken}/imagesTr/SYN006.nii.gz': "
    assert any(m.startswith(expected) and m.endswith("(EOFError)") for m in _messages(info.value)), _messages(info.value)


def _record_caches(monkeypatch) -> list:
    """The number of cases each ``CacheDataset`` built from now on caches, in order of construction."""
    cached, init = [], CacheDataset.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        cached.append(self.cache_num)

    monkeypatch.setattr(CacheDataset, "__init__", recording_init)
    return cached


@pytest.mark.parametrize("val_interval, cached", [(4, [8, 2]), (5, [8, 0])])
def test_training_caches_the_validation_data_only_when_it_validates(dataset_dir, tmp_path, monkeypatch, val_interval, cached):
    recorded = _record_caches(monkeypatch)
    workflow = ConfigWorkflow(config_file=TRAIN, run_id="training", **_overrides(dataset_dir, tmp_path, val_interval=val_interval))
    workflow.initialize()
    workflow.parser.get_parsed_content("train#trainer")  # with its datasets and validator, as `training` builds it
    # the training pool (3 labeled, 5 unlabeled), then the 2 validation cases: none when the first validation
    # would come after the last iteration (4)
    assert recorded == cached


def test_evaluation_reads_no_training_data(dataset_dir, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("evaluating built training data")

    monkeypatch.setattr(CacheDataset, "__init__", refuse)
    monkeypatch.setattr(sasnet_components.data, "semi_supervised_datalists", refuse)
    (tmp_path / "models").mkdir()
    torch.save(DualBranchVNet(n_filters=2).state_dict(), tmp_path / "models" / "model.pt")
    run(
        "evaluating",
        config_file=[TRAIN, EVALUATE],
        **_overrides(dataset_dir, tmp_path, eval_roi_size=[32, 32, 16], eval_stride=[16, 16, 8]),
    )
    assert (tmp_path / "runs" / "eval_validation" / "metrics_summary.json").is_file()


@pytest.mark.parametrize(
    "extra, error, match",
    [
        ({"num_labled": 3}, KeyError, r"'num_labled': did you mean \['num_labeled'"),
        ({"num_labeled": 99}, ValueError, r"`num_labeled` must be in \[1, 8\].*got 99"),
        ({"dataset_dir": "/nonexistent/la"}, FileNotFoundError, r"scripts/prepare_la.py"),
        ({"progress": "sometimes"}, ValueError, r"`progress` must be auto, true or false .*got 'sometimes'"),
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
    chain = _chain(info.value)
    assert any(isinstance(e, error) for e in chain), chain
    assert any(re.search(match, str(e)) for e in chain), [str(e) for e in chain]


def _chain(exc: BaseException) -> list:
    """An exception and its causes / contexts."""
    chain = []
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _messages(exc: BaseException) -> list:
    return [str(e) for e in _chain(exc)]
