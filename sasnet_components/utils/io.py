"""File writing that never leaves a partial file under the final name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

__all__ = ["atomic_path", "atomic_write_text", "current_umask"]


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in the folder of `path`; on success move it over `path` (``os.replace``).

    On an exception the temporary file is removed and `path` keeps its previous content. The file
    gets the permissions a plain ``open(path, "w")`` would give (``0o666`` minus the umask).

    Args:
        path: the final file.
        suffix: suffix of the temporary name, for writers that choose the format by suffix
            (e.g. ``".nii.gz"`` for nibabel).

    Example::

        with atomic_path("out/datalist.json") as tmp:
            tmp.write_text(text)
    """
    target = Path(path)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically, see :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
