"""Files that a reader never sees half written, and updates that concurrent processes do not lose.

* :func:`atomic_write`: the new content goes to a temporary file beside the target, is flushed to disk and renamed
  onto the target (``os.replace``: atomic on POSIX file systems), so a reader, or a run killed mid-write, sees
  the old complete file or the new complete one (checkpoints: :class:`lit_diffusion.resume.AtomicCheckpointIO`;
  result JSON, reference-feature caches, results CSV).
* :func:`locked`: an exclusive lock (``fcntl.flock`` on ``.<name>.lock`` beside the file) around a
  read-modify-write, so two evaluations appending to one results CSV keep both rows, each whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` into a fresh temporary file beside ``path``, ``fsync`` it, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, path.stat().st_mode & 0o777 if path.exists() else 0o644)  # not mkstemp's private 0600
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda file: file.write(text.encode()))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (via ``.<name>.lock`` beside it) inside the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every OS or file system allows it)."""
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
