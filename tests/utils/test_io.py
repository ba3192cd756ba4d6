from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from sasnet_components.utils.io import atomic_path, atomic_write_text, temporary_dir


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


def _host_field() -> str:
    """This host's name as temporary names hold it: characters other than letters, digits and ``-``
    (dots too: they separate the fields) become ``-``."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())


def _dead_pid() -> int:
    """The PID of a process that has ended (started and waited for)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _age(path: Path, seconds: float) -> None:
    """Set the modification time of `path` to `seconds` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


@contextlib.contextmanager
def stale_and_kept_files(folder: Path) -> Iterator[dict[str, bytes]]:
    """Fill `folder` with temporaries of this project that a new write must remove and with files it
    must keep; yield the kept ones (name -> content) while two of them are locked as by live writers."""
    host, dead = _host_field(), _dead_pid()
    stale = [
        f".sasnet-tmp.{host}.{dead}.image.nii.gz.abcd1234.nii.gz",  # this host, process gone, unlocked
        f".sasnet-tmp.other-host.{os.getpid()}.model.pt.abcd1234.tmp",  # another host, unlocked
    ]
    locked = {
        f".sasnet-tmp.{host}.{os.getpid()}.label.nii.gz.abcd1234.nii.gz": b"this live process",
        # the same host name, a PID this process cannot see: another container writing to a shared folder
        f".sasnet-tmp.{host}.{dead}.model.pt.ijkl9012.tmp": b"another container's live write",
    }
    kept = {
        **locked,
        f".sasnet-tmp.other-host.{dead}.model.pt.efgh5678.tmp": b"unlocked, but written a moment ago",
        "tmpabcd1234": b"ignite-like name",
        "notes.txt": b"user notes",
        ".hidden.tmp": b"user hidden file",
    }
    for name in stale:
        (folder / name).write_bytes(b"orphan")
    for name, content in kept.items():
        (folder / name).write_bytes(content)
    for name in [*stale, *locked, "tmpabcd1234", "notes.txt", ".hidden.tmp"]:
        _age(folder / name, 120)  # older than the minute a fresh temporary is left alone
    fds = [os.open(folder / name, os.O_RDONLY) for name in locked]
    try:
        for fd in fds:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the writers of these temporaries hold them
        yield kept
    finally:
        for fd in fds:
            os.close(fd)


def terminate_while_writing(script: str, folder: Path) -> subprocess.CompletedProcess:
    """Run `script` (which prints a line once its write is under way, then blocks) with `folder` as
    argument, send SIGTERM after that line, and return the ended process (exit code, output).

    Checks that a temporary file existed in `folder` while the write was blocked."""
    before = set(os.listdir(folder))
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = child.stdout.readline()
        during = set(os.listdir(folder)) - before
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert line == "writing\n", f"the child did not start its write: {line!r}, stderr: {err}"
    assert len(during) == 1, f"expected one temporary file during the write, found {during}"
    return subprocess.CompletedProcess(child.args, child.returncode, line + out, err)


_BLOCKED_WRITE = """
import sys, time
from pathlib import Path
from sasnet_components.utils.io import atomic_path

with atomic_path(Path(sys.argv[1]) / "image.nii.gz", suffix=".nii.gz") as tmp:
    tmp.write_bytes(b"half written")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_temporary_name_holds_host_pid_and_target(tmp_path):
    with atomic_path(tmp_path / "image.nii.gz", suffix=".nii.gz") as tmp:
        assert tmp.name.startswith(f".sasnet-tmp.{_host_field()}.{os.getpid()}.image.nii.gz."), tmp.name
        assert tmp.name.endswith(".nii.gz") and tmp.is_file()


def test_sigterm_during_write_removes_temporary(tmp_path):
    (tmp_path / "image.nii.gz").write_bytes(b"previous")
    result = terminate_while_writing(_BLOCKED_WRITE, tmp_path)
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["image.nii.gz"]
    assert (tmp_path / "image.nii.gz").read_bytes() == b"previous"


def test_new_write_removes_stale_temporaries_only(tmp_path):
    with stale_and_kept_files(tmp_path) as kept:
        atomic_write_text(tmp_path / "datalist.json", "{}")
    assert sorted(os.listdir(tmp_path)) == sorted([*kept, "datalist.json"])
    for name, content in kept.items():
        assert (tmp_path / name).read_bytes() == content


_BLOCKED_FOLDER = """
import sys, time
from pathlib import Path
from sasnet_components.utils.io import temporary_dir

with temporary_dir(sys.argv[1], "sasnet_la") as tmp:
    (tmp / "models").mkdir()
    (tmp / "models" / "model.ts").write_bytes(b"half written")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_temporary_dir_is_removed_after_use_on_error_and_on_sigterm(tmp_path):
    with temporary_dir(tmp_path, "sasnet_la") as tmp:
        assert tmp.is_dir() and tmp.name.startswith(f".sasnet-tmp.{_host_field()}.{os.getpid()}.sasnet_la.")
        (tmp / "configs").mkdir()
        (tmp / "configs" / "train.yaml").write_text("a: 1\n")
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError, match="export failed"):
        with temporary_dir(tmp_path, "sasnet_la") as tmp:
            (tmp / "model.ts").write_bytes(b"partial")
            raise RuntimeError("export failed")
    assert os.listdir(tmp_path) == []
    result = terminate_while_writing(_BLOCKED_FOLDER, tmp_path)
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert os.listdir(tmp_path) == []


def test_temporary_dir_removes_stale_temporary_folders_only(tmp_path):
    host, dead = _host_field(), _dead_pid()
    stale = tmp_path / f".sasnet-tmp.{host}.{dead}.sasnet_la.abcd1234"
    (stale / "models").mkdir(parents=True)
    (stale / "models" / "model.ts").write_bytes(b"orphan")
    _age(stale, 120)
    user = tmp_path / ".sasnet_la.old-abcd1234" / "sasnet_la"  # a previous export waiting between two renames
    user.mkdir(parents=True)
    (user / "notes.txt").write_text("kept")
    with temporary_dir(tmp_path, "sasnet_la"):
        pass
    assert sorted(os.listdir(tmp_path)) == [".sasnet_la.old-abcd1234"]
    assert (user / "notes.txt").read_text() == "kept"
