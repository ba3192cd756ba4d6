"""``scripts/compare.py`` as a user runs it (a process of its own): variants x seeds trained and evaluated through
``monai.bundle`` on a tiny synthetic dataset, tables, skipping and resuming, refused settings."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "scripts" / "compare.py")
# a 2-filter network on 32x32x16 patches; 3 iterations, an interval checkpoint at iteration 2 (one to resume from)
TINY = [
    "--device", "cpu", "--amp", "false", "--num_labeled", "3", "--patch_size", "[32,32,16]",
    "--network_def#n_filters", "2", "--max_iterations", "3", "--val_interval", "100", "--checkpoint_interval", "2",
    "--num_workers", "0", "--sw_batch_size", "2", "--eval_roi_size", "[32,32,16]", "--eval_stride", "[16,16,8]",
]  # fmt: skip
VARIANTS = ["sasnet", "short:max_iterations=1"]
CSV_HEADER = [
    "variant", "description", "overrides", "n_seeds", "seeds",
    "dice_pct_mean", "dice_pct_std", "jaccard_pct_mean", "jaccard_pct_std",
    "hd95_voxel_mean", "hd95_voxel_std", "asd_voxel_mean", "asd_voxel_std",
    "hd95_mm_mean", "hd95_mm_std", "asd_mm_mean", "asd_mm_std",
    "empty_predictions", "wall_min_mean",
]  # fmt: skip


def _load_script():
    spec = importlib.util.spec_from_file_location("compare_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compare(out: Path, dataset_dir: str, *args: str, variants=VARIANTS, extra=()) -> subprocess.CompletedProcess:
    command = [sys.executable, SCRIPT, "--output_dir", str(out), "--protocol", "full", "--seeds", "1337"]
    command += ["--variants", *variants, *args, "--", "--dataset_dir", dataset_dir, *TINY, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def _assert_refused(result: subprocess.CompletedProcess, *parts: str) -> str:
    last = result.stderr.splitlines()[-1] if result.stderr else ""
    assert result.returncode == 1, result.stdout + result.stderr
    assert last.startswith("compare.py: error: ") and all(p in last for p in parts), last
    assert "Traceback" not in result.stderr
    return last


def _commands(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("$ ")]


def _iteration(run: Path) -> int:
    state = torch.load(run / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    return state["trainer"]["iteration"]


@pytest.fixture(scope="module")
def first(dataset_dir, tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("compare") / "out"
    result = _compare(out, dataset_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


def test_runs_are_trained_evaluated_and_tabulated(first):
    out, done = first
    lines = done.stdout.splitlines()
    for step in ("training ...", "training done in ", "evaluation ...", "evaluation done in "):
        assert any(line.startswith(f"[1/2] sasnet seed 1337: {step}") for line in lines), done.stdout
        assert any(line.startswith(f"[2/2] short seed 1337: {step}") for line in lines), done.stdout
    results = {}
    for name, overrides in (("sasnet", {}), ("short", {"max_iterations": 1})):
        run = out / name / "seed1337"
        result = json.loads((run / "result.json").read_text())
        assert result["variant"] == name and result["seed"] == 1337 and result["overrides"] == overrides
        assert result["metrics"] == json.loads((run / "eval" / "metrics_summary.json").read_text())
        assert result["metrics"]["num_cases"] == 2
        assert result["train_seconds"] > 0 and result["eval_seconds"] > 0
        assert result["machine"]["cpu_count"] == os.cpu_count() and result["machine"]["device"] == "cpu"
        results[name] = result
        # training and evaluation get the run's folders, its seed and the variant's overrides, the latter last
        train, evaluate = _commands(run / "train.log"), _commands(run / "eval.log")
        assert len(train) == 1 and len(evaluate) == 1
        assert f"--output_dir {run / 'runs'} --ckpt_dir {run / 'models'} --seed 1337" in train[0]
        assert evaluate[0].endswith(f"--eval_list validation --eval_output_dir {run / 'eval'}")
        for command in train + evaluate:
            assert re.findall(r"--max_iterations (\d+)", command)[-1] == ("1" if name == "short" else "3")
    assert _iteration(out / "sasnet" / "seed1337") == 3 and _iteration(out / "short" / "seed1337") == 1

    with open(out / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == CSV_HEADER
    assert [r["variant"] for r in rows] == ["sasnet", "short"]
    assert [r["overrides"] for r in rows] == ["", "max_iterations=1"]
    for row in rows:
        result = results[row["variant"]]
        mean = result["metrics"]["mean"]
        assert row["n_seeds"] == "1" and row["seeds"] == "1337"
        assert float(row["dice_pct_mean"]) == pytest.approx(100 * mean["dice"], abs=1e-4)
        assert float(row["jaccard_pct_mean"]) == pytest.approx(100 * mean["jaccard"], abs=1e-4)
        assert float(row["hd95_voxel_mean"]) == pytest.approx(mean["hd95"], abs=1e-4)
        assert float(row["asd_mm_mean"]) == pytest.approx(mean["asd_mm"], abs=1e-4)
        assert row["dice_pct_std"] == row["hd95_voxel_std"] == ""  # one seed: no std
        wall = (result["train_seconds"] + result["eval_seconds"]) / 60
        assert float(row["wall_min_mean"]) == pytest.approx(wall, abs=1e-4)

    markdown = (out / "results.md").read_text()
    assert "protocol `full`" in markdown and "eval list `validation` (2 cases)" in markdown
    assert "Seeds: 1337" in markdown and "--dataset_dir" in markdown and "--max_iterations 3" in markdown
    assert re.search(r"Machine: .+ \(\d+ cores\), torch \S+, device cpu", markdown)
    table = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert [line.split(" | ")[0] for line in table] == ["| `sasnet`", "| `short`"]
    cells = table[1].split(" | ")
    assert cells[2] == "`max_iterations=1`" and cells[3] == "1"
    assert cells[4] == f"{100 * results['short']['metrics']['mean']['dice']:.2f}"
    assert json.loads((out / "compare.json").read_text())["made_by"] == "scripts/compare.py"


def test_a_second_invocation_skips_finished_runs(first, dataset_dir):
    out, _ = first
    results = [out / name / "seed1337" / "result.json" for name in ("sasnet", "short")]
    before = [path.stat().st_mtime_ns for path in results]
    again = _compare(out, dataset_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[1/2] sasnet seed 1337: finished before" in again.stdout and "[2/2] short seed 1337: finished before" in again.stdout
    assert again.stdout.count("skipped") == 2 and "training ..." not in again.stdout
    assert [path.stat().st_mtime_ns for path in results] == before
    assert len(_commands(out / "sasnet" / "seed1337" / "train.log")) == 1


def test_an_interrupted_run_resumes_from_its_checkpoint(first, dataset_dir, tmp_path):
    out = shutil.copytree(first[0], tmp_path / "out")
    sasnet, short = out / "sasnet" / "seed1337", out / "short" / "seed1337"
    old = json.loads((sasnet / "result.json").read_text())
    # sasnet stopped after its interval checkpoint of iteration 2; short was trained but not evaluated
    (sasnet / "result.json").unlink()
    (sasnet / "runs" / "checkpoints" / "checkpoint_final.pt").unlink()
    shutil.rmtree(sasnet / "models")
    (short / "result.json").unlink()
    short_eval = len(_commands(short / "eval.log"))

    done = _compare(out, dataset_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[1/2] sasnet seed 1337: training, resuming from checkpoint_iteration=2.pt ..." in done.stdout
    assert "[2/2] short seed 1337: training finished before" in done.stdout
    commands = _commands(sasnet / "train.log")
    checkpoint = sasnet / "runs" / "checkpoints" / "checkpoint_iteration=2.pt"
    assert len(commands) == 2 and commands[-1].endswith(f"--resume_from {checkpoint}")
    session = (sasnet / "train.log").read_text().split(commands[-1])[-1]
    assert f"Restored all variables from {checkpoint}" in session
    assert "Epoch[3] Complete" in session and "Epoch[1] Complete" not in session  # only the missing iteration
    assert _iteration(sasnet) == 3
    new = json.loads((sasnet / "result.json").read_text())
    assert new["train_sessions"] == 2 and new["train_seconds"] > old["train_seconds"]  # both sessions counted
    assert len(_commands(short / "train.log")) == 1 and len(_commands(short / "eval.log")) == short_eval + 1
    assert (short / "result.json").is_file()


def test_other_settings_than_recorded_are_refused(first, dataset_dir, tmp_path):
    out, _ = first
    refused = _compare(out, dataset_dir, variants=["sasnet", "short:max_iterations=2"])
    _assert_refused(refused, "variant 'short'", "'max_iterations=1', now 'max_iterations=2'")
    refused = _compare(out, dataset_dir, extra=["--num_workers", "1"])
    _assert_refused(refused, "other settings (extra_args: recorded", "rather than mix results")
    copy = shutil.copytree(out, tmp_path / "out")
    settings = copy / "sasnet" / "seed1337" / "settings.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "overrides": {"sar": False}}))
    _assert_refused(_compare(copy, dataset_dir), "run sasnet seed 1337", "overrides: recorded {'sar': False}, now {}")
    assert len(_commands(copy / "sasnet" / "seed1337" / "train.log")) == 1  # nothing was run


def test_unknown_variants_and_foreign_folders_are_refused(dataset_dir, tmp_path):
    last = _assert_refused(_compare(tmp_path / "out", dataset_dir, variants=["sasnett"]), "unknown variant 'sasnett'")
    assert "did you mean 'sasnet'?" in last
    assert all(f"{name} (" in last for name in _load_script().REGISTRY)
    assert not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    _assert_refused(_compare(tmp_path / "mine", dataset_dir), "exists and was not made by scripts/compare.py")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_a_failed_run_names_its_log_and_shows_its_last_lines(tmp_path):
    failed = _compare(tmp_path / "out", str(tmp_path / "nowhere"), variants=["sasnet"])
    log = tmp_path / "out" / "sasnet" / "seed1337" / "train.log"
    last = _assert_refused(failed, "training of run sasnet seed 1337 failed (exit status 1)", f"its log: '{log}'")
    assert "does not exist" in failed.stderr.split(last)[0]  # the bundle's own message, among the log's last lines
    assert "[1/1] sasnet seed 1337: training ..." in failed.stdout and "done in" not in failed.stdout
    assert json.loads((log.parent / "timing.json").read_text())["train_sessions"] == 1


def _result(seed: int, dice: float, hd95: float, hd95_mm, seconds: float) -> dict:
    mean = {"dice": dice, "jaccard": dice / (2 - dice), "hd95": hd95, "asd": hd95 / 4, "hd95_mm": hd95_mm, "asd_mm": None}
    metrics = {"num_cases": 2, "num_empty_prediction": 1 if hd95_mm is None else 0, "mean": mean}
    return {"seed": seed, "metrics": metrics, "train_seconds": seconds, "eval_seconds": 30.0}


def test_table_statistics_over_seeds():
    aggregate = _load_script().aggregate
    stats = aggregate([_result(2024, 0.90, 5.0, None, 570.0), _result(1337, 0.80, 3.0, 1.5, 450.0)])
    assert stats["n_seeds"] == 2 and stats["seeds"] == [1337, 2024]
    assert stats["dice_pct"]["mean"] == pytest.approx(85.0)
    assert stats["dice_pct"]["std"] == pytest.approx(statistics.stdev([80.0, 90.0]))  # ddof=1: 7.07
    assert stats["dice_pct"]["std"] == pytest.approx(math.sqrt(50.0))
    jaccard = [100 * 0.8 / 1.2, 100 * 0.9 / 1.1]
    assert stats["jaccard_pct"]["mean"] == pytest.approx(statistics.fmean(jaccard))
    assert stats["hd95_voxel"] == pytest.approx({"mean": 4.0, "std": math.sqrt(2.0), "n": 2})
    assert stats["asd_voxel"]["mean"] == pytest.approx(1.0)
    assert stats["hd95_mm"] == {"mean": 1.5, "std": None, "n": 1}  # only the seed with a value
    assert stats["asd_mm"] == {"mean": None, "std": None, "n": 0}
    assert stats["empty_predictions"] == 1
    assert stats["wall_min_mean"] == pytest.approx((600.0 + 480.0) / 2 / 60)
    one = aggregate([_result(1337, 0.80, 3.0, 1.5, 450.0)])
    assert one["dice_pct"] == pytest.approx({"mean": 80.0, "std": None, "n": 1})


def test_custom_variants_and_their_command_line_values():
    script = _load_script()
    assert script.parse_variant("lr2:learning_rate=0.02")[:2] == ("lr2", {"learning_rate": 0.02})
    name, overrides, description = script.parse_variant("small:patch_size=[64,64,48],sar=false,num_labeled=all")
    assert overrides == {"patch_size": [64, 64, 48], "sar": False, "num_labeled": "all"}
    assert description == "custom: patch_size=[64,64,48],sar=false,num_labeled=all"
    assert script.parse_variant("one_branch")[1] == {"low_level_branch": False, "sar": False, "plc": False}
    # tokens that monai.bundle (fire) reads back as the same values
    assert [script.bundle_token(v) for v in (False, [64, 64, 48], 0.02, "all", "1e-3")] == [
        "False", "[64, 64, 48]", "0.02", "all", "'1e-3'"
    ]  # fmt: skip
    with pytest.raises(script.CompareError, match="is set by compare.py"):
        script.parse_variant("x:seed=1")
