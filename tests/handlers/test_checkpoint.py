"""Tests of ``AtomicCheckpointSaver``: fixed and interval filenames, permissions, atomic replacement."""

from __future__ import annotations

import errno
import io
import os
import signal
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from sasnet_components.handlers.checkpoint import AtomicCheckpointSaver
from tests.utils.test_io import stale_and_kept_files, terminate_while_writing


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _net(value: float) -> torch.nn.Module:
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(value)
        net.bias.fill_(value)
    return net


def _engine() -> Engine:
    return Engine(lambda engine, batch: None)


def _weight(path: Path) -> float:
    state = torch.load(path, weights_only=True)
    return float(state["weight"][0, 0])


def _failing_save(obj, f, *args, **kwargs):
    """A `torch.save` that writes some bytes and then fails, as an interrupted save would."""
    if hasattr(f, "write"):
        f.write(b"partial checkpoint")
    else:
        Path(f).write_bytes(b"partial checkpoint")
    raise RuntimeError("disk full")


def test_final_checkpoint_fixed_filename(tmp_path: Path):
    net = _net(1.0)
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_final=True, final_filename="model.pt")
    engine = _engine()
    saver.attach(engine)
    engine.run([0, 1, 2], max_epochs=2)
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert torch.equal(state["weight"], net.weight.detach()) and torch.equal(state["bias"], net.bias.detach())


def test_final_checkpoint_default_filename(tmp_path: Path):
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": _net(1.0)}, save_final=True)
    engine = _engine()
    saver.attach(engine)
    engine.run([0, 1, 2], max_epochs=2)  # 6 iterations
    assert sorted(os.listdir(tmp_path)) == ["model_final_iteration=6.pt"]


def _weighted_run(tmp_path: Path, iterations: int, **kwargs) -> tuple:
    """Run `iterations` iterations (weight = iteration number) with an ``AtomicCheckpointSaver(**kwargs)`` of the model."""
    net = _net(0.0)
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, **kwargs)
    engine = _engine()
    saver.attach(engine)

    @engine.on(Events.ITERATION_STARTED)
    def _update(engine):
        with torch.no_grad():
            net.weight.fill_(float(engine.state.iteration))

    engine.run(list(range(iterations)), max_epochs=1)
    return engine, saver


def test_interval_checkpoints_keep_latest(tmp_path: Path):
    _weighted_run(tmp_path, 4, save_interval=1, epoch_level=False, n_saved=1)
    assert sorted(os.listdir(tmp_path)) == ["model_iteration=4.pt"]
    assert _weight(tmp_path / "model_iteration=4.pt") == 4.0


def test_permissions_readable_by_group_and_others(tmp_path: Path, umask_022):
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": _net(1.0)}, save_final=True, final_filename="model.pt", save_interval=1
    )
    engine = _engine()
    saver.attach(engine)
    engine.run([0], max_epochs=1)
    for name in ("model.pt", "model_epoch=1.pt"):
        mode = os.stat(tmp_path / name).st_mode
        # umask 022: rw-r--r-- (the temporary file alone would be rw-------)
        assert mode & 0o044 == 0o044, oct(mode)
        assert mode & 0o777 == 0o644, oct(mode)


def _assert_failed_save_keeps(tmp_path: Path, name: str, weight: float, monkeypatch, save_again):
    before = (tmp_path / name).read_bytes()
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_again()
    monkeypatch.undo()
    assert (tmp_path / name).read_bytes() == before
    assert _weight(tmp_path / name) == weight
    # the temporary file of the failed save is gone, nothing else is left behind
    assert sorted(os.listdir(tmp_path)) == [name]


def test_final_checkpoint_interrupted_save_keeps_previous(tmp_path: Path, monkeypatch):
    net = _net(1.0)
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_final=True, final_filename="final.pt")
    engine = _engine()
    engine.run([0], max_epochs=1)
    saver.completed(engine)
    assert _weight(tmp_path / "final.pt") == 1.0
    with torch.no_grad():
        net.weight.fill_(2.0)
    _assert_failed_save_keeps(tmp_path, "final.pt", 1.0, monkeypatch, lambda: saver.completed(engine))
    # the next successful save replaces it
    saver.completed(engine)
    assert _weight(tmp_path / "final.pt") == 2.0
    assert sorted(os.listdir(tmp_path)) == ["final.pt"]


def test_key_metric_fixed_filename_interrupted_save_keeps_previous(tmp_path: Path, monkeypatch):
    net = _net(1.0)
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True, key_metric_name="dice", key_metric_filename="best.pt"
    )
    engine = _engine()
    engine.run([0], max_epochs=1)
    engine.state.metrics = {"dice": 0.5}
    saver.metrics_completed(engine)
    assert _weight(tmp_path / "best.pt") == 1.0
    with torch.no_grad():
        net.weight.fill_(2.0)
    engine.state.metrics = {"dice": 0.6}  # a new best: saved over best.pt
    _assert_failed_save_keeps(tmp_path, "best.pt", 1.0, monkeypatch, lambda: saver.metrics_completed(engine))
    engine.state.metrics = {"dice": 0.7}
    saver.metrics_completed(engine)
    assert _weight(tmp_path / "best.pt") == 2.0
    assert sorted(os.listdir(tmp_path)) == ["best.pt"]


def _validation_with_scores(net: torch.nn.Module, tmp_path: Path, scores, state=None) -> tuple:
    """An evaluator-like engine whose key-metric saver sees `scores`, one per run; the net's weight is set to each score."""
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True, key_metric_name="dice", key_metric_filename="best.pt"
    )
    engine = _engine()
    engine.state.best_metric, engine.state.best_metric_epoch = -1, -1  # as MONAI's evaluators start
    current = []

    @engine.on(Events.EPOCH_COMPLETED)  # before the saver's handler, as the metrics of an evaluator
    def _score(e):
        e.state.metrics = {"dice": current[-1]}
        if current[-1] > e.state.best_metric:
            e.state.best_metric, e.state.best_metric_epoch = current[-1], e.state.epoch

    saver.attach(engine)
    if state is not None:
        saver.load_state_dict(state)
    for score in scores:
        current.append(score)
        with torch.no_grad():
            net.weight.fill_(score)
        engine.run([0], max_epochs=1)
    return saver, engine


def test_key_metric_state_keeps_the_best_model_across_a_resume(tmp_path: Path):
    net = _net(0.0)
    before, engine = _validation_with_scores(net, tmp_path, [0.8])
    state = before.state_dict()
    # ignite names the file by its score; the saver writes it under the fixed name best.pt
    assert state == {"key_metric": {"_saved": [(0.8, "model_key_metric=0.8000.pt")]}, "best_metric": 0.8, "best_metric_epoch": 1}
    buffer = io.BytesIO()
    torch.save(state, buffer)  # as a training checkpoint holds it
    buffer.seek(0)
    resumed, engine = _validation_with_scores(net, tmp_path, [0.5, 0.6], torch.load(buffer, weights_only=True))
    assert _weight(tmp_path / "best.pt") == pytest.approx(0.8)  # 0.5 and 0.6 are worse: not saved
    assert (engine.state.best_metric, engine.state.best_metric_epoch) == (0.8, 1)
    _validation_with_scores(net, tmp_path, [0.9], resumed.state_dict())
    assert _weight(tmp_path / "best.pt") == pytest.approx(0.9)


def test_saver_without_key_metric_has_no_state(tmp_path: Path):
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": _net(1.0)}, save_final=True)
    assert saver.state_dict() == {}


def test_interval_interrupted_save_keeps_previous(tmp_path: Path, monkeypatch):
    net = _net(1.0)
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_interval=1, epoch_level=False, n_saved=1)
    engine = _engine()
    engine.run([0], max_epochs=1)  # iteration 1
    saver.interval_completed(engine)
    assert sorted(os.listdir(tmp_path)) == ["model_iteration=1.pt"]
    engine.state.iteration = 2
    _assert_failed_save_keeps(tmp_path, "model_iteration=1.pt", 1.0, monkeypatch, lambda: saver.interval_completed(engine))
    # the next successful save writes the new file and removes the old one
    with torch.no_grad():
        net.weight.fill_(3.0)
    engine.state.iteration = 3
    saver.interval_completed(engine)
    assert sorted(os.listdir(tmp_path)) == ["model_iteration=3.pt"]
    assert _weight(tmp_path / "model_iteration=3.pt") == 3.0


def test_failed_move_leaves_no_temporary(tmp_path: Path):
    (tmp_path / "model.pt").mkdir()  # the final name is taken by a folder: os.replace fails
    (tmp_path / "model.pt" / "keep.txt").write_text("user file")
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": _net(1.0)}, save_final=True, final_filename="model.pt")
    engine = _engine()
    engine.run([0], max_epochs=1)
    with pytest.raises(IsADirectoryError):
        saver.completed(engine)
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
    assert (tmp_path / "model.pt" / "keep.txt").read_text() == "user file"


_BLOCKED_SAVE = """
import sys, time
from pathlib import Path
import torch
from ignite.engine import Engine
from sasnet_components.handlers.checkpoint import AtomicCheckpointSaver

def blocked_save(obj, f, *args, **kwargs):
    if hasattr(f, "write"):
        f.write(b"partial checkpoint")
        f.flush()
    else:
        Path(f).write_bytes(b"partial checkpoint")
    print("writing", flush=True)
    time.sleep(60)

torch.save = blocked_save
saver = AtomicCheckpointSaver(sys.argv[1], {"model": torch.nn.Linear(2, 1)}, save_final=True, final_filename="model.pt")
engine = Engine(lambda engine, batch: None)
engine.run([0], max_epochs=1)
saver.completed(engine)
"""


def test_sigterm_during_save_removes_temporary(tmp_path: Path):
    (tmp_path / "model.pt").write_bytes(b"previous checkpoint")
    result = terminate_while_writing(_BLOCKED_SAVE, tmp_path)
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
    assert (tmp_path / "model.pt").read_bytes() == b"previous checkpoint"


def test_first_save_removes_stale_temporaries_only(tmp_path: Path):
    with stale_and_kept_files(tmp_path) as kept:
        saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": _net(1.0)}, save_final=True, final_filename="model.pt")
        engine = _engine()
        saver.attach(engine)
        engine.run([0, 1], max_epochs=1)
    assert sorted(os.listdir(tmp_path)) == sorted([*kept, "model.pt"])
    for name, content in kept.items():
        assert (tmp_path / name).read_bytes() == content
    assert _weight(tmp_path / "model.pt") == 1.0


def _linking_run(tmp_path: Path, iterations: int, **kwargs) -> tuple:
    """Run `iterations` iterations (weight = iteration number) with final.pt and interval checkpoints every 2."""
    return _weighted_run(
        tmp_path, iterations, save_final=True, final_filename="final.pt", save_interval=2, epoch_level=False, n_saved=1,
        **kwargs,
    )


def test_final_checkpoint_at_an_interval_iteration_links_to_it(tmp_path: Path):
    engine, _ = _linking_run(tmp_path, 4, link_final=True)  # interval checkpoints at 2 and 4, final at 4
    assert sorted(os.listdir(tmp_path)) == ["final.pt", "model_iteration=4.pt"]
    assert os.path.samefile(tmp_path / "final.pt", tmp_path / "model_iteration=4.pt")  # one copy of the data
    assert _weight(tmp_path / "final.pt") == 4.0

    # training on: the interval checkpoint of iteration 6 removes model_iteration=4.pt, not the final's data
    seen = {}
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=6), lambda e: seen.update(names=sorted(os.listdir(tmp_path)), final=_weight(tmp_path / "final.pt"))
    )
    engine.run(list(range(4)), max_epochs=2)
    assert seen == {"names": ["final.pt", "model_iteration=6.pt"], "final": 4.0}
    assert sorted(os.listdir(tmp_path)) == ["final.pt", "model_iteration=8.pt"]
    assert os.path.samefile(tmp_path / "final.pt", tmp_path / "model_iteration=8.pt")
    assert _weight(tmp_path / "final.pt") == 8.0


def test_final_checkpoint_off_the_interval_is_its_own_file(tmp_path: Path):
    _linking_run(tmp_path, 5, link_final=True)  # interval checkpoint at 4, final at 5
    assert sorted(os.listdir(tmp_path)) == ["final.pt", "model_iteration=4.pt"]
    assert not os.path.samefile(tmp_path / "final.pt", tmp_path / "model_iteration=4.pt")
    assert (_weight(tmp_path / "final.pt"), _weight(tmp_path / "model_iteration=4.pt")) == (5.0, 4.0)


def test_final_checkpoint_is_written_without_link_final_or_hard_links(tmp_path: Path, monkeypatch):
    _linking_run(tmp_path / "default", 4)
    assert not os.path.samefile(tmp_path / "default" / "final.pt", tmp_path / "default" / "model_iteration=4.pt")

    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)  # a file system without hard links
    _linking_run(tmp_path / "no_links", 4, link_final=True)
    assert sorted(os.listdir(tmp_path / "no_links")) == ["final.pt", "model_iteration=4.pt"]  # no temporary left
    assert not os.path.samefile(tmp_path / "no_links" / "final.pt", tmp_path / "no_links" / "model_iteration=4.pt")
    assert _weight(tmp_path / "no_links" / "final.pt") == 4.0
