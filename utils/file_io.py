"""Atomic file writes: a reader sees the old file or the complete new one, never a partial write.

The data goes to a temporary file ``.<name>.<random>.tmp`` in the destination's directory (same file system, so
the rename is atomic), is flushed and fsync'ed, given the permissions a plain ``open`` would give (``0o666`` less
the umask: ``mkstemp`` alone makes files private, ``0o600``, which hides checkpoints from the rest of a cluster
group), and then ``os.replace``-d over the destination.  If writing fails, the temporary file is removed and the
destination is untouched.  A process killed mid-write (SIGKILL, OOM killer, node failure) cannot clean up; its
temporary file is removed by :func:`remove_stale_temp_files` when the run resumes.
"""
import logging
import os
import re
import tempfile
from typing import IO, Callable, List

__all__ = ["atomic_write", "atomic_write_path", "atomic_write_bytes", "atomic_write_text", "default_file_mode",
           "remove_stale_temp_files"]

logger = logging.getLogger(__name__)

# The name mkstemp gives our temporary files: "." + destination name + "." + 8 random characters + ".tmp".
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(binary_file)`` and atomically move the result to ``path``."""

    def write_temp_file(tmp_path: str) -> None:
        with open(tmp_path, "wb") as f:
            write(f)

    atomic_write_path(path, write_temp_file)


def atomic_write_path(path: str, write_file: Callable[[str], None]) -> None:
    """Call ``write_file(temporary_path)`` — for writers that need a file *name* (h5py) — then fsync that file and
    atomically move it to ``path``.  On any error the temporary file is removed and ``path`` is untouched."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, default_file_mode())
        os.close(fd)
        write_file(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    _fsync_directory(directory)


def atomic_write_bytes(path: str, payload: bytes) -> None:
    """Atomically replace ``path`` with ``payload``."""
    atomic_write(path, lambda f: f.write(payload))


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
