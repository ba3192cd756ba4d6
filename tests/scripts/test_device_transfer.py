"""Tests of scripts/device_transfer.py: its commands and its error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.test_pack import _grid_dataset

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "device_transfer.py"
def _run(args: list) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT)] + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return _grid_dataset(tmp_path_factory.mktemp("script") / "prepared", shape=(6, 5, 4))


def test_pack_unpack_split_join(prepared, tmp_path):
    args = ["--dataset_dir", prepared, "--output_dir", tmp_path / "pack", "--part_size_mib", "0.002"]
    run = _run(["pack", *args])
    assert run.returncode == 0, run.stderr
    manifest = json.loads((tmp_path / "pack" / "la.manifest.json").read_text())
    assert len(manifest["parts"]) > 1
    parts = [tmp_path / "pack" / p["file"] for p in manifest["parts"]]
    run = _run(["unpack", tmp_path / "pack" / "la.manifest.json", *parts, "--output_dir", tmp_path / "out", "--gzip"])
    assert run.returncode == 0, run.stderr
    assert "unpacked 9 of 9 cases" in run.stdout
    assert json.loads((tmp_path / "out" / "datalist.json").read_text()) == manifest["datalist"]
    run = _run(["split", tmp_path / "pack" / "la.part01", "--output_dir", tmp_path / "chunks", "--chunk_mib=0.0005"])
    assert run.returncode == 0, run.stderr
    run = _run(["join", tmp_path / "chunks" / "la.part01.chunks.json", "--output_path", tmp_path / "joined"])
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "joined").read_bytes() == parts[0].read_bytes()


def test_fire_command_line(prepared, tmp_path):
    run = _run(["pack", "--dataset_dir", prepared, "--output_dir", tmp_path / "pack"])
    assert run.returncode == 0, run.stderr
    run = _run(["unpack", tmp_path / "pack", "--output_dir", tmp_path / "out"])
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "imagesTr" / "C00.nii").is_file()


def test_errors_end_with_the_message(prepared, tmp_path):
    (tmp_path / "pack").mkdir()
    run = _run(["unpack", tmp_path / "pack", "--output_dir", tmp_path / "out"])
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("device_transfer.py: error: no pack manifest"), run.stderr
    assert "Traceback" not in run.stderr
    run = _run(["join", tmp_path / "missing.chunks.json", "--output_path", tmp_path / "x"])
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("device_transfer.py: error: chunk manifest")


def test_split_join_of_a_model(tmp_path):
    (tmp_path / "model.pt").write_bytes(os.urandom(3000))
    args = [tmp_path / "model.pt", "--output_dir", tmp_path / "c", "--chunk_mib", "0.001"]
    run = _run(["split", *args])
    assert run.returncode == 0, run.stderr
    assert len(list((tmp_path / "c").glob("model.pt.chunk0*"))) == 3
    run = _run(["join", tmp_path / "c" / "model.pt.chunks.json", "--output_path", tmp_path / "j"])
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "j").read_bytes() == (tmp_path / "model.pt").read_bytes()
