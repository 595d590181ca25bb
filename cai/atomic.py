"""Atomic writes and file locks: readers see an old file or a new one, never half of one, and
writers of the same file or folder take turns.

A new file (or a whole folder, for a model cache entry) is written under a temporary name beside
its destination and renamed into place: a rename within one folder is atomic, so a crash at any
moment leaves either the old content or the new. A lock is a hidden `.NAME.lock` file beside what it
guards; it is never deleted, because removing it on release would let a waiting writer and a new
one each lock a different file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from cai.errors import UsageError


def write_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8, newlines as given) to `path` through a synced temporary file.

    An existing file keeps its permissions; a new one gets 0644, whatever the temporary file had.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def building_folder(final: Path) -> Iterator[Path]:
    """A fresh temporary folder beside `final` to build into; when the block ends without an error
    it replaces `final` (an old `final` is moved aside and deleted), otherwise it is deleted."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the folder is shared like any other cache entry
    try:
        yield tmp
        if final.exists():
            # Two renames, not rmtree first: until the new folder is in place, a reader finds the old
            # one whole or nothing at all, never a folder half deleted.
            trash = final.with_name(f".{final.name}-old-{os.getpid()}")
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def lock_path(path: Path) -> Path:
    """The lock file that guards `path` (a file or a folder)."""
    return path.parent / f".{path.name}.lock"


def acquire(lock_file: Path, *, timeout: float, busy: str) -> FileLock:
    """Take the lock `lock_file` and return it (the caller releases it); UsageError(`busy`) when
    another process holds it for longer than `timeout` seconds."""
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise UsageError(busy) from None
    return lock


@contextmanager
def file_lock(path: Path, timeout: float | None = 60) -> Iterator[None]:
    """Serialises the writers of `path`. `timeout=None` waits as long as it takes (a model being
    built by another process); otherwise a UsageError says the file is busy."""
    if timeout is None:
        lock = acquire(lock_path(path), timeout=-1, busy="")
    else:
        lock = acquire(lock_path(path), timeout=timeout,
                       busy=f"{path}: another process is changing it (waited {timeout:g} s); try again")
    try:
        yield
    finally:
        lock.release()
