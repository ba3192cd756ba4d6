"""scripts/device_check.sh --smoke: the GPU lease's steps, tiny, on CPU (synthetic data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _smoke(state: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SASNET_DEVICE_STATE=str(state), OUT=str(state / "out"), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "device_check.sh"), "--smoke", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=900,
    )


def test_smoke_runs_every_step_and_returns_the_model_in_chunks(tmp_path):
    state = tmp_path / "state"
    run = _smoke(state)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = state / "out"
    files = sorted(p.name for p in out.iterdir())
    # what comes back from a lease: at most 8 files
    assert len(files) <= 8 and {"device_check.log", "benchmark.json", "metrics.json", "model.pt.chunks.json"} <= set(files)
    log = (out / "device_check.log").read_text()
    # the pack travelled in several parts, each received and checked on arrival
    assert log.count("received la.part") >= 2 and "unpacked 8 of 8 cases" in log
    # the first training call stopped on its budget, the second resumed it to the end
    assert "run limit reached after 3 iterations: stopping at iteration 3 of 6" in log
    final = torch.load(state / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 6
    # the benchmark compared the fast and the research loop on the same batch: same first loss
    results = {r["name"]: r for r in json.loads((out / "benchmark.json").read_text())["results"]}
    assert set(results) == {"fast", "research", "sar_uint8"}
    assert results["fast"]["first_loss"] == results["research"]["first_loss"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["case_id"] for c in metrics["per_case"]] == ["SYN006", "SYN007"]
    # the model comes back in chunks that join, checked, into the trained file
    joined = tmp_path / "model.pt"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "device_transfer.py"), "join", str(out / "model.pt.chunks.json"),
         "--output_path", str(joined)], check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert joined.read_bytes() == (state / "models" / "model.pt").read_bytes()

    # a later call without one of the parts (the machine went cold): refused unless --subset
    for folder in (state / "pack", state / "carried"):
        (folder / "la.part02").unlink()
    shutil.rmtree(state / "data")
    run = _smoke(state)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("device_check.sh: error: parts missing: la.part02. Carry them"), last
