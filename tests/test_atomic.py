"""Atomic writes, atomically replaced folders and file locks (cai/atomic.py)."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from cai.atomic import acquire, building_folder, file_lock, lock_path, write_atomic
from cai.errors import UsageError


def test_write_atomic_replaces_the_file_and_keeps_its_mode(tmp_path):
    f = tmp_path / "c.yaml"
    write_atomic(f, "a: 1\r\nb: é\n")
    assert f.read_bytes() == "a: 1\r\nb: é\n".encode()  # newlines exactly as given, UTF-8
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    os.chmod(f, 0o600)
    write_atomic(f, "a: 2\n")
    assert f.read_text() == "a: 2\n" and stat.S_IMODE(f.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("old\n")
    with pytest.raises(TypeError):
        write_atomic(f, b"not text")  # fails inside the write, after the temporary file exists
    assert f.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["c.yaml"]


def test_building_folder_replaces_the_old_folder_only_when_the_build_succeeds(tmp_path):
    final = tmp_path / "entry"
    with building_folder(final) as tmp:
        assert tmp.parent == tmp_path and tmp != final
        (tmp / "w").write_text("1")
    assert (final / "w").read_text() == "1" and stat.S_IMODE(final.stat().st_mode) == 0o755

    with pytest.raises(RuntimeError):
        with building_folder(final) as tmp:
            (tmp / "w").write_text("half")
            raise RuntimeError("build failed")
    assert (final / "w").read_text() == "1"  # the old entry is untouched

    with building_folder(final) as tmp:
        (tmp / "v").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["v"]
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # no temporary or old folder left


def test_file_lock_serialises_writers_and_says_when_it_is_busy(tmp_path):
    f = tmp_path / "c.yaml"
    held = acquire(lock_path(f), timeout=1, busy="busy")
    try:
        with pytest.raises(UsageError, match=r"c\.yaml: another process is changing it \(waited 0\.2 s\)"):
            with file_lock(f, timeout=0.2):
                pass
        # timeout=None waits for as long as it takes, here until the holder lets go
        entered = threading.Event()

        def wait_for_the_lock():
            with file_lock(f, timeout=None):
                entered.set()

        waiter = threading.Thread(target=wait_for_the_lock)
        waiter.start()
        assert not entered.wait(0.3)
    finally:
        held.release()
    waiter.join(10)
    assert entered.is_set()
    assert lock_path(f).exists()  # the lock file stays, so every writer locks the same file


def test_acquire_names_what_is_busy(tmp_path):
    first = acquire(tmp_path / ".lock", timeout=1, busy="run is in use")
    try:
        with pytest.raises(UsageError, match="^run is in use$"):
            acquire(tmp_path / ".lock", timeout=0.1, busy="run is in use")
    finally:
        first.release()
    acquire(tmp_path / ".lock", timeout=0.1, busy="run is in use").release()  # free again
