"""Files zooprep writes appear whole or not at all (`zooprep.files.atomic_write`)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from zooprep import files
from zooprep.files import atomic_write


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_written_file_replaces_the_old_one_whole_and_leaves_nothing_else(
    tmp_path: Path,
) -> None:
    target = tmp_path / "cutouts" / "0" / "506428274000265570.png"
    atomic_write(target, b"first")  # its folders are made
    assert target.read_bytes() == b"first"
    atomic_write(target, b"second, longer")
    atomic_write(str(target), b"3", fsync=True)
    assert target.read_bytes() == b"3"
    assert _listing(target.parent) == [target.name]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a.png"
    atomic_write(target, b"old")
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if len(data) > 4:
            return real_write(fd, bytes(data[:4]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="No space left") as caught:
        atomic_write(target, b"new and longer")
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["a.png"]


def test_where_unnamed_files_are_refused_files_are_written_by_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_tmpfile(path: str, flags: int, *args: int, **kw: int) -> int:
        if getattr(os, "O_TMPFILE", 0) and flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported", path)
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(files, "_UNNAMED", True)
    monkeypatch.setattr(os, "open", no_tmpfile)
    target = tmp_path / "sub" / "b.png"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert files._UNNAMED is False  # asked once, then not again
    assert _listing(target.parent) == ["b.png"]


def test_a_forked_worker_writes_its_own_files(tmp_path: Path) -> None:
    atomic_write(tmp_path / "parent.png", b"p")
    pid = os.fork()
    if pid == 0:  # the child: write, then leave without running pytest's exit
        try:
            atomic_write(tmp_path / "child.png", b"c")
            atomic_write(tmp_path / "parent.png", b"replaced by the child")
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (tmp_path / "child.png").read_bytes() == b"c"
    assert (tmp_path / "parent.png").read_bytes() == b"replaced by the child"
    atomic_write(tmp_path / "after.png", b"a")
    assert _listing(tmp_path) == ["after.png", "child.png", "parent.png"]
