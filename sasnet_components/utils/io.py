"""File writing that never leaves a partial file under the final name, nor a temporary file behind.

A write goes to a temporary file in the folder of the final file, named
``.sasnet-tmp.<host>.<pid>.<final name>.<random><suffix>``, which is moved over the final name when
the write has succeeded. The writing process holds an exclusive ``flock`` on its temporary file
while it writes. The temporary file is removed when the write raises (``KeyboardInterrupt`` from
Ctrl-C included) or the process gets SIGTERM. A process killed without a chance to clean up
(SIGKILL, power loss) leaves its temporary files, and the kernel releases its locks; the first write
of a later process into the same folder removes them (see :func:`atomic_path`). Files not named by
this pattern are never removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Iterator, Optional, Union

from .errors import InputPermissionError, NotAFolderError

try:
    import fcntl
except ImportError:  # not POSIX: liveness from host, PID and age only
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "atomic_link",
    "atomic_path",
    "atomic_write_text",
    "check_output_folder",
    "current_umask",
    "sha256_file",
    "temporary_dir",
]

logger = logging.getLogger(__name__)

_STALE_AGE_S = 24 * 3600  # without locks: a temporary file unmodified for a day is stale, whatever its host and process
_FRESH_S = 60  # a temporary modified within the last minute is never removed (it may not be locked yet)
_MARK = ".sasnet-tmp"
_NAME = re.compile(re.escape(_MARK) + r"\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[1-9][0-9]{0,8})\.")
_live: set[str] = set()  # this process's temporary files being written (absolute paths)
_cleaned: set[str] = set()  # folders whose stale temporary files this process has removed
_sigterm_checked = False
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_live.clear)  # a forked child must not remove its parent's files


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    """The host name as temporary names hold it: anything but letters, digits and ``-`` becomes ``-``
    (dots too, as they separate the fields)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())


def _pid_exists(pid: int) -> bool:
    """Whether a process `pid` exists on this host."""
    if os.name != "posix":  # os.kill would terminate the process, not probe it: assume it exists
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return True


def _lock(fd: int) -> None:
    """Hold an exclusive ``flock`` on `fd` (a temporary being written) where the file system has locks."""
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _locked(path: str) -> Optional[bool]:
    """Whether a process holds the ``flock`` of `path`; None where that cannot be told (no locks)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # releases the lock just taken


def _is_stale(entry: os.DirEntry, host: str, now: float) -> bool:
    """Whether `entry` is a temporary file or folder of this module that no process is writing.

    Never one modified within the last minute. Otherwise: stale when no process holds its lock;
    where locks cannot be told, when its process on this host no longer exists or it was last
    modified more than a day ago (whether a process on another host exists cannot be checked).
    """
    match = _NAME.match(entry.name)
    if match is None or not (entry.is_file(follow_symlinks=False) or entry.is_dir(follow_symlinks=False)):
        return False
    age = now - entry.stat(follow_symlinks=False).st_mtime
    if age < _FRESH_S:
        return False
    locked = _locked(entry.path)
    if locked is not None:
        return not locked
    return age > _STALE_AGE_S or (match["host"] == host and not _pid_exists(int(match["pid"])))


def _remove_stale_temporaries(folder: str) -> None:
    """Remove the stale temporary files in `folder` (see `_is_stale`), once per folder and process."""
    if folder in _cleaned:
        return
    host, now = _host(), time.time()
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                if _is_stale(entry, host, now):
                    _remove(entry.path)
                    logger.info("removed stale temporary %s (its write was interrupted)", entry.path)
            except FileNotFoundError:  # removed meanwhile, by another process
                pass
            except OSError as e:
                logger.warning("could not remove stale temporary file %s: %s", entry.path, e)
    _cleaned.add(folder)


def _remove(path: str) -> None:
    """Remove a temporary file, or a temporary folder with its content."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _remove_live_temporaries_and_terminate(signum: int, frame: Optional[FrameType]) -> None:
    """SIGTERM handler: remove the temporaries being written, then terminate by the default action."""
    for name in list(_live):
        with contextlib.suppress(OSError):
            _remove(name)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _handle_sigterm() -> None:
    """Install the SIGTERM handler, once, from the main thread, only over the default action.

    A Python handler installed by the program is kept: it either raises (and the ``finally`` of
    :func:`atomic_path` removes the temporary file) or lets the write go on. An ignored SIGTERM stays
    ignored.
    """
    global _sigterm_checked
    if _sigterm_checked or threading.current_thread() is not threading.main_thread():
        return
    _sigterm_checked = True
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _remove_live_temporaries_and_terminate)


@contextlib.contextmanager
def _temporary(parent: Union[str, os.PathLike], name: str, suffix: Optional[str] = None) -> Iterator[Path]:
    """A new temporary file (`suffix` given) or folder (``None``) in `parent`, named by this module's
    pattern, locked and registered for SIGTERM while in use, removed at the end if still there; the
    first one in a folder also removes the stale temporaries there."""
    folder = os.path.abspath(parent)
    _handle_sigterm()
    prefix = f"{_MARK}.{_host()}.{os.getpid()}.{name}."
    if suffix is None:
        path = tempfile.mkdtemp(dir=folder, prefix=prefix)
        fd = os.open(path, os.O_RDONLY)
    else:
        fd, path = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    _live.add(path)
    try:
        _lock(fd)  # held while the caller writes through its own file objects (same file or folder)
        _remove_stale_temporaries(folder)
        yield Path(path)
    finally:
        os.close(fd)
        if os.path.lexists(path):
            _remove(path)
        _live.discard(path)


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in the folder of `path`; on success move it over `path` (``os.replace``).

    On an exception or SIGTERM the temporary file is removed and `path` keeps its previous content.
    The file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` minus the umask).
    The temporary file is locked (``flock``) while the caller writes it. The first call for a folder
    in a process also removes the temporary files that interrupted writes left there: those not
    modified for a minute whose lock no process holds (where the file system has no locks: those of
    a process of this host that no longer exists, and those of any host unmodified for a day).

    Args:
        path: the final file.
        suffix: suffix of the temporary name, for writers that choose the format by suffix
            (e.g. ``".nii.gz"`` for nibabel).

    Example::

        with atomic_path("out/datalist.json") as tmp:
            tmp.write_text(text)
    """
    target = Path(path)
    with _temporary(target.parent, target.name, suffix) as tmp:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)


@contextlib.contextmanager
def temporary_dir(parent: Union[str, os.PathLike], name: str) -> Iterator[Path]:
    """Yield a new empty folder in `parent`, named as this module's temporaries, removed at the end if still there.

    For a folder written in full before it is moved into place (``os.replace``): like
    :func:`atomic_path`'s temporary file, it is removed on an exception or SIGTERM, and a later run's
    first temporary in `parent` removes it when its process was killed outright.

    Args:
        parent: the folder that will hold the result.
        name: the result's name, part of the temporary name.
    """
    with _temporary(parent, name) as path:
        yield path


def atomic_link(source: Union[str, os.PathLike], path: Union[str, os.PathLike]) -> None:
    """Make `path` a hard link to the file `source` atomically: `path` names either its previous file or `source`'s.

    The link is made at a temporary name (in a folder of :func:`temporary_dir`, next to `path`) and
    moved over `path` with ``os.replace``. Both names then share one copy of the data; removing or
    replacing either name (as :func:`atomic_path` replaces) leaves the other intact.

    Args:
        source: an existing file, on the file system of `path`.
        path: the name to make.

    Raises:
        OSError: where the file system has no hard links, or `source` is on another one; `path` is unchanged.
    """
    target = Path(path)
    with temporary_dir(target.parent, target.name) as tmp:
        os.link(source, tmp / target.name)
        os.replace(tmp / target.name, target)


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically, see :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def sha256_file(path: Union[str, os.PathLike]) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits (read in blocks of 1 MiB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output_folder(folder: Union[str, os.PathLike], option: str = "output_dir") -> bool:
    """Raise unless `folder` is a writable folder or can be created as one (nothing is created).

    Uses ``os.access`` on the nearest existing folder, so a read-only folder or file system is
    found before any data is read or model loaded, not when the first result is saved.

    Args:
        folder: the output folder.
        option: the option that names it, for the message (``--<option>``).

    Returns:
        True when the folder can be used.

    Raises:
        NotAFolderError: `folder` is, or lies under, an existing file.
        InputPermissionError: `folder`, or the folder it would be created in, is not writable.
    """
    folder = Path(folder).expanduser().absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotAFolderError(
            f"output folder '{folder}' cannot be used: '{existing}' is a file, not a folder; choose another --{option}."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputPermissionError(
            f"output folder '{folder}' cannot be used: no permission to write in '{existing}'; choose a folder "
            f"you can write to (--{option})."
        )
    return True
