"""Atomic file writes: a reader sees the old file or the complete new one, never a partial write.

The data goes to a temporary file ``.<name>.<random>.tmp`` in the destination's directory (same file system, so
the rename is atomic), is flushed and fsync'ed, given the permissions a plain ``open`` would give (``0o666`` less
the umask: ``mkstemp`` alone makes files private, ``0o600``, which hides checkpoints from the rest of a cluster
group), and then ``os.replace``-d over the destination.  If writing fails, the temporary file is removed and the
destination is untouched.  A process killed mid-write (SIGKILL, OOM killer, node failure) cannot clean up; its
temporary file is removed by :func:`remove_stale_temp_files` when the run resumes.

A write that fails because of the storage itself — no space left (``ENOSPC``), quota exceeded (``EDQUOT``), an I/O
error (``EIO``) — raises :class:`StorageWriteError` naming the file, the reason and how many bytes were written,
even where the ``OSError`` reached the writer inside a library that reports it as something else
(``torch.save`` turns it into ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``).
"""
import errno
import logging
import os
import re
import shutil
import tempfile
from typing import IO, Callable, List, Optional

__all__ = ["atomic_write", "atomic_write_path", "atomic_write_bytes", "atomic_write_text", "default_file_mode",
           "remove_stale_temp_files", "StorageWriteError", "STORAGE_ERRNOS", "storage_error", "format_bytes",
           "free_bytes"]

logger = logging.getLogger(__name__)

# The name mkstemp gives our temporary files: "." + destination name + "." + 8 random characters + ".tmp".
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")

# errno values that mean "the storage failed", not "the data or the path is wrong".
STORAGE_ERRNOS = frozenset(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EIO)
                           if code is not None)


class StorageWriteError(OSError):
    """Writing a file failed because of the storage (no space left, quota exceeded, I/O error); the destination
    is unchanged and no temporary file is left.  ``str()`` is the whole message (no ``[Errno N]`` prefix);
    ``errno``, ``strerror`` and ``filename`` are set as for any ``OSError``."""

    def __init__(self, code: int, message: str, path: str) -> None:
        super().__init__(code, os.strerror(code), path)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return type(self), (self.errno, self.message, self.filename)


def storage_error(error: BaseException) -> Optional[OSError]:
    """The ``OSError`` with an errno of :data:`STORAGE_ERRNOS` among ``error`` and its causes/contexts, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def format_bytes(size: float) -> str:
    """``size`` in B/kB/MB/GB/TB (powers of 1000, one decimal), e.g. ``1.1 GB``."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def free_bytes(path: str) -> Optional[int]:
    """Free space (for this user) on the file system holding ``path`` (or its nearest existing parent); None if
    it cannot be read."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def atomic_write(path: str, write: Callable[[IO[bytes]], None], durable: bool = True) -> None:
    """Call ``write(binary_file)`` and atomically move the result to ``path``."""

    def write_temp_file(tmp_path: str) -> None:
        with open(tmp_path, "wb") as f:
            write(f)

    atomic_write_path(path, write_temp_file, durable)


def atomic_write_path(path: str, write_file: Callable[[str], None], durable: bool = True) -> None:
    """Call ``write_file(temporary_path)`` — for writers that need a file *name* (h5py) — then fsync that file and
    atomically move it to ``path``.  On any error the temporary file is removed and ``path`` is untouched; a
    storage failure (:data:`STORAGE_ERRNOS`) is raised as :class:`StorageWriteError`.  ``durable=False`` skips
    the two fsyncs (file and folder) for writers of many files that flush once at the end (``os.sync``): the move
    is still atomic, so a crash never leaves a partial file under ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as error:
        if error.errno in STORAGE_ERRNOS:
            raise _storage_write_error(path, error, 0) from error
        raise
    try:
        os.fchmod(fd, default_file_mode())
        os.close(fd)
        write_file(tmp_path)
        if durable:
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as error:
        written = os.path.getsize(tmp_path) if os.path.exists(tmp_path) else 0
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        cause = None if isinstance(error, StorageWriteError) else storage_error(error)
        if cause is not None:
            raise _storage_write_error(path, cause, written) from error
        raise
    if durable:
        _fsync_directory(directory)


def _storage_write_error(path: str, cause: OSError, written: int) -> StorageWriteError:
    code = cause.errno
    message = (f"cannot write {path}: {os.strerror(code)} ({errno.errorcode.get(code, code)}) after "
               f"{format_bytes(written)} were written; {path} was left as it was and the partial file was removed")
    return StorageWriteError(code, message, path)


def atomic_write_bytes(path: str, payload: bytes, durable: bool = True) -> None:
    """Atomically replace ``path`` with ``payload`` (``durable``: see :func:`atomic_write_path`)."""
    atomic_write(path, lambda f: f.write(payload), durable)


def atomic_write_text(path: str, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def remove_stale_temp_files(directory: str) -> List[str]:
    """Delete the temporary files :func:`atomic_write` left in ``directory`` (not below) when a process was killed.

    Call it only where no other process may be writing into ``directory`` at the same time (the trainer calls it
    on rank 0 when it starts, before it writes anything).  Returns the removed paths.
    """
    if not os.path.isdir(directory):
        return []
    removed = [os.path.join(directory, name) for name in sorted(os.listdir(directory)) if _TEMP_NAME.match(name)]
    removed = [path for path in removed if os.path.isfile(path)]
    for path in removed:
        os.remove(path)
    if removed:
        logger.info("Removed %d temporary files left by an interrupted write: %s", len(removed), removed)
    return removed


def default_file_mode() -> int:
    """The permissions ``open(path, "w")`` gives a new file: ``0o666`` less the process umask (reading the umask
    means setting it; it is restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
