"""Checkpoint saver that writes every file atomically."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from ignite.engine import Engine
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from sasnet_components.utils.io import atomic_link, atomic_path

__all__ = ["AtomicCheckpointSaver"]

logger = logging.getLogger(__name__)
# errors of os.link where the file system has no hard links (or none between these names)
_NO_LINKS = {errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


class _AtomicDiskSaver(DiskSaver):
    """ignite ``DiskSaver`` that writes through :func:`sasnet_components.utils.io.atomic_path`
    (temporary file + ``os.replace``, the usual ``rw-r--r--`` permissions, no temporary file left
    behind on an error or SIGTERM, stale ones of interrupted runs removed), with an optional fixed
    filename.

    ignite's ``Checkpoint`` (and MONAI's final checkpoint) remove the file to be superseded *before*
    writing the new one; here removals are deferred until the next write has succeeded, and a file
    that the write replaces (a fixed filename) is not removed at all, so a failed write leaves the
    previous checkpoint in place.

    When :attr:`link_source` names a file (set by :class:`AtomicCheckpointSaver` for one save), the
    save makes its file a hard link to that one (:func:`sasnet_components.utils.io.atomic_link`)
    instead of writing `checkpoint`; where the file system has no hard links it writes `checkpoint`.
    """

    def __init__(self, dirname: str, filename: Optional[str] = None) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False)
        self.filename = filename
        self.link_source: Optional[str] = None
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
        source, self.link_source = self.link_source, None
        if source is not None:
            try:
                atomic_link(source, path)
                return
            except OSError as e:
                if e.errno not in _NO_LINKS:
                    raise
                logger.info("cannot link %s to %s (%s): writing it", path, source, e.strerror)
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
    Takes the arguments of ``monai.handlers.CheckpointSaver``, and `link_final`.

    With ``link_final=True``, a final checkpoint due at the iteration of the last interval
    checkpoint (``save_interval``) is not written again: its file becomes a hard link to the
    interval file, one copy of the data on disk (ignite's later removal of the interval file removes
    only that name; every write replaces a name, never changes the shared data). The final
    checkpoint then holds the state of the interval save, made at ``ITERATION_COMPLETED``, not the
    state after the ``EPOCH_COMPLETED`` and ``COMPLETED`` handlers: use it when the objects of
    `save_dict` continue the same from both (as :class:`sasnet_components.SARFusion` does: a run
    resumed from a memory saved before the roll of ``EPOCH_COMPLETED`` does that roll). Where the
    file system has no hard links the final checkpoint is written as usual.

    A key-metric saver (the best model on validation) has a state: the scores of the files it
    keeps and, once attached, the best metric and its epoch of its engine. Put the saver in a
    training checkpoint's ``save_dict``: a resumed run then replaces the best model only with a
    better one, as the uninterrupted run would (a new saver would replace it at the first validation).

    Args:
        args: positional arguments of ``monai.handlers.CheckpointSaver``.
        link_final: link the final checkpoint to the interval checkpoint of the same iteration.
        kwargs: keyword arguments of ``monai.handlers.CheckpointSaver``.
    """

    def __init__(self, *args: Any, link_final: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.link_final = link_final
        self._interval_iteration: Optional[int] = None  # engine iteration of the last interval checkpoint
        for attr in ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint"):
            checkpoint = getattr(self, attr, None)
            if checkpoint is not None:  # keep the fixed filename of MONAI's saver, if any
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, getattr(checkpoint.save_handler, "filename", None))
        self._engine: Optional[Engine] = None

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        self._engine = engine

    def interval_completed(self, engine: Engine) -> None:
        super().interval_completed(engine)
        self._interval_iteration = engine.state.iteration

    def completed(self, engine: Engine) -> None:
        self._offer_interval_file(engine)
        super().completed(engine)

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        self._offer_interval_file(engine)
        super().exception_raised(engine, e)

    def _offer_interval_file(self, engine: Engine) -> None:
        """With `link_final`, have the final save link to the interval checkpoint of this iteration, if any."""
        if self._final_checkpoint is None:
            return
        source = None
        if self.link_final and self._interval_checkpoint is not None and self._interval_iteration == engine.state.iteration:
            last = self._interval_checkpoint.last_checkpoint
            source = str(last) if last is not None and os.path.isfile(last) else None
        self._final_checkpoint.save_handler.link_source = source

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
