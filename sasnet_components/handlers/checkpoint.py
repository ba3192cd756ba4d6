"""Checkpoint saver that writes every file atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional

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
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for attr in ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint"):
            checkpoint = getattr(self, attr, None)
            if checkpoint is not None:  # keep the fixed filename of MONAI's saver, if any
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, getattr(checkpoint.save_handler, "filename", None))
