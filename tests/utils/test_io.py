from __future__ import annotations

import os

import pytest

from sasnet_components.utils.io import atomic_path, atomic_write_text


def test_atomic_write_replaces_content(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temporary file left


def test_failure_keeps_previous_file_and_cleans_up(tmp_path):
    target = tmp_path / "image.nii.gz"
    target.write_text("previous")
    with pytest.raises(RuntimeError, match="writer crashed"):
        with atomic_path(target, suffix=".nii.gz") as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz")
            tmp.write_text("half written")
            raise RuntimeError("writer crashed")
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.nii.gz"]


def test_permissions_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.csv", "x")
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "a.csv").st_mode & 0o777 == 0o644
