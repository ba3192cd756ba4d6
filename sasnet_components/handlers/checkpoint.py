"""Checkpoint saver that writes every file atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from ignite.engine import Engine
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from sasnet_components.utils.io import atomic_path

__all__ = ["AtomicCheckpointSaver"]


class _AtomicDiskSaver(DiskSaver):
    """ignite ``DiskSaver`` that writes through :func:`sasnet_components.utils.io.atomic_path`
    (temporary file + ``os.replace``, the usual ``rw-r--r--`` permissions, no temporary file left
    behind on an error or SIGTERM, stale ones of interrupted runs removed), with an optional fixed
    filename.

    ignite's ``Checkpoint`` (and MONAI's final checkpoint) remove the file to be superseded *before*
    writing the new one; here removals are deferred until the next write has succeeded, and a file
    that the write replaces (a fixed filename) is not removed at all, so a failed write leaves the
    previous checkpoint in place.
    """

    def __init__(self, dirname: str, filename: Optional[str] = None) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False)
        self.filename = filename
        self._pending_removal: List[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Optional[Mapping] = None) -> None:
        filename = self.filename or filename
        super().__call__(checkpoint, filename, metadata)
        pending, self._pending_removal = self._pending_removal, []
        for old in pending:
            if old != filename and os.path.exists(os.path.join(self.dirname, old)):
                super().remove(old)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        """ignite's hook that writes `checkpoint` to `path` with `func` (``torch.save``) on the saving rank."""
        with atomic_path(path) as tmp:
            func(checkpoint, tmp, **self.kwargs)

    def remove(self, filename: str) -> None:
        self._pending_removal.append(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` whose final, interval and key-metric checkpoints are written atomically.

    A crash or interruption while saving leaves the previous file intact: the checkpoint is
    written to a temporary file in the same folder and moved over the target with ``os.replace``.
    The temporary file is removed when the save fails or the process gets SIGTERM; those left by
    runs killed outright (SIGKILL) are removed by the first save of a later run into the folder,
    see :func:`sasnet_components.utils.io.atomic_path`.
    Takes exactly the arguments of ``monai.handlers.CheckpointSaver``.

    A key-metric saver (the best model on validation) has a state: the scores of the files it
    keeps and, once attached, the best metric and its epoch of its engine. Put the saver in a
    training checkpoint's ``save_dict``: a resumed run then replaces the best model only with a
    better one, as the uninterrupted run would (a new saver would replace it at the first validation).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for attr in ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint"):
            checkpoint = getattr(self, attr, None)
            if checkpoint is not None:  # keep the fixed filename of MONAI's saver, if any
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, getattr(checkpoint.save_handler, "filename", None))
        self._engine: Optional[Engine] = None

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        self._engine = engine

    def state_dict(self) -> Dict[str, Any]:
        """The key-metric tracking: ``{"key_metric": ignite's (score, filename) list, "best_metric",
        "best_metric_epoch"}`` (the last two once attached); empty without a key-metric checkpoint."""
        if self._key_metric_checkpoint is None:
            return {}
        state: Dict[str, Any] = {"key_metric": dict(self._key_metric_checkpoint.state_dict())}
        if self._engine is not None:
            state["best_metric"] = float(self._engine.state.best_metric)
            state["best_metric_epoch"] = int(self._engine.state.best_metric_epoch)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`: the kept files' scores, and the engine's best metric and epoch."""
        if self._key_metric_checkpoint is not None and "key_metric" in state_dict:
            self._key_metric_checkpoint.load_state_dict(state_dict["key_metric"])
        if self._engine is not None and "best_metric" in state_dict:
            self._engine.state.best_metric = state_dict["best_metric"]
            self._engine.state.best_metric_epoch = state_dict["best_metric_epoch"]
