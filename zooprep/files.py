"""Writing files: whole or not at all, and one line when the disk says no.

Every file zooprep writes whole (settings, PNG cutouts, the manifest and its
parts, preview, results, a downloaded export) goes through `atomic_file` or
`atomic_write`: the bytes go to a hidden temporary file in the same directory,
which is renamed over the target only when writing finished.  A killed
process leaves at most a ``.NAME.PID.tmp`` file behind; an exception removes
it.

`atomic_write` (whole bytes at once, e.g. every cutout PNG) does the same
with less work where the system allows it (Linux ``O_TMPFILE``): the bytes go
to an unnamed file in the target's directory, which is given the target's
name only when written (``linkat``), so there is no temporary name to make,
rename and remove, and a killed process leaves nothing behind.  A target that
already exists is replaced through a temporary name as above; a file system
without unnamed files gets the temporary-file way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from zooprep.errors import StorageError, ZooprepError

__all__ = [
    "atomic_file",
    "atomic_write",
    "remove_temporary",
    "storage_error",
    "storage_guard",
    "temporary_name",
]

#: The run's state file (`zooprep.run.Run.STATE`), named in SQLite errors.
STATE_FILE = "state.sqlite"


def temporary_name(path: Path) -> Path:
    """The temporary file a write of ``path`` uses: ``.NAME.PID.tmp`` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_file(
    path: str | os.PathLike[str], mode: str = "wb", *, fsync: bool = False, **kw: Any
) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the block ends.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (its directory is created when absent).
    mode : str
        ``"wb"`` or ``"w"`` (then pass ``encoding``, ``newline`` as for `open`).
    fsync : bool
        Flush the data to disk before the rename, so that it also survives a
        power cut (used for settings).
    **kw
        More arguments for `open`.

    Yields
    ------
    file object
        Write to it inside the block.  Whatever else the block does happens
        before the rename (e.g. recording the new file's hash first).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(target)
    try:
        with open(tmp, mode, **kw) as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(
    path: str | os.PathLike[str], data: bytes, *, fsync: bool = False
) -> None:
    """Write ``data`` to ``path``: whole, or not at all.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (its directory is created when absent).
    data : bytes
        Its new content.
    fsync : bool
        Flush the data to disk before it gets its name (see `atomic_file`).
    """
    if _unnamed_write(os.fspath(path), data, fsync):
        return
    with atomic_file(path, "wb", fsync=fsync) as fh:
        fh.write(data)


#: Whether to try unnamed files (``O_TMPFILE``); False after a file system
#: or kernel refused one.
_UNNAMED = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
#: ``(pid, fd)`` of this process's ``/proc/self/fd`` (reopened after a fork).
_PROC_FD: tuple[int, int] | None = None
#: ``errno`` values that mean "no unnamed files here" (old kernels, NFS, ...).
_NO_UNNAMED = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.EXDEV)


def _proc_fd() -> int:
    """The ``/proc/self/fd`` directory of this process, opened once per process."""
    global _PROC_FD
    pid = os.getpid()
    if _PROC_FD is None or _PROC_FD[0] != pid:
        _PROC_FD = (pid, os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY))
    return _PROC_FD[1]


def _unnamed_write(target: str, data: bytes, fsync: bool) -> bool:
    """Write ``target`` through an unnamed file; False when this system cannot.

    The file gets its name by ``linkat`` only once it is complete; when the
    target exists it is linked to the temporary name and renamed over it.
    Write errors (a full disk, no permission) are raised as they are.
    """
    global _UNNAMED
    if not _UNNAMED:
        return False
    folder = os.path.dirname(target) or "."
    flags = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
    try:
        try:
            fd = os.open(folder, flags, 0o666)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(folder, flags, 0o666)
        proc = _proc_fd()
    except OSError as exc:
        if exc.errno not in _NO_UNNAMED and not isinstance(exc, FileNotFoundError):
            raise
        _UNNAMED = False
        return False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
        try:
            os.link(str(fd), target, src_dir_fd=proc, follow_symlinks=True)
        except FileExistsError:
            tmp = str(temporary_name(Path(target)))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # left by a killed process that had our pid
            os.link(str(fd), tmp, src_dir_fd=proc, follow_symlinks=True)
            try:
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    finally:
        os.close(fd)
    return True


#: Names `atomic_write` gives its temporary files: ``.<name>.<pid>.tmp``.
TEMPORARY = re.compile(r"\..+\.\d+\.tmp")


def remove_temporary(folder: Path, *, recursive: bool = False) -> int:
    """Delete the temporary files `atomic_write` left in ``folder``; return how many.

    A process killed while writing (or stopped by a full disk) can leave
    ``.<name>.<pid>.tmp`` files.  Only call this on a folder that no other
    process is writing to (the run's lock guarantees that for the run).
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if recursive:
                removed += remove_temporary(Path(entry.path), recursive=True)
        elif TEMPORARY.fullmatch(entry.name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


#: OSError numbers that mean "this cannot be written", with what to say.
_WRITE_ERRORS = {
    errno.ENOSPC: ("no space left on", "free space"),
    errno.EDQUOT: ("disk quota exceeded on", "free space or raise the quota"),
    errno.EFBIG: ("file size limit reached on", "raise the limit"),
    errno.EROFS: ("read-only file system at", "make it writable"),
    errno.EIO: ("input/output error writing", "check the disk"),
}
_PERMISSION = (errno.EACCES, errno.EPERM)
#: SQLite primary result codes that mean the same.
_SQLITE_CODES = {13: errno.ENOSPC, 8: errno.EROFS, 10: errno.EIO}


def storage_error(
    exc: BaseException,
    where: str | os.PathLike[str],
    saved: str,
    *,
    database: str = STATE_FILE,
) -> StorageError | None:
    """The `StorageError` for a failed write, or None if ``exc`` is something else.

    Parameters
    ----------
    exc : BaseException
        An `OSError` or `sqlite3.DatabaseError`.
    where : path-like
        The run directory (or output file): errors about permissions count
        only for paths inside it; SQLite errors are reported as its state file.
    saved : str
        What is kept, e.g. ``"1200 sources saved"``.
    database : str
        The name SQLite errors are reported under, inside ``where``.
    """
    base = Path(where)
    code: int | None = None
    path = str(base)
    inside = True
    if isinstance(exc, sqlite3.DatabaseError):
        primary = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        code = _SQLITE_CODES.get(primary)
        if code is None and "disk is full" in str(exc):
            code = errno.ENOSPC
        if code is None and "readonly database" in str(exc):
            code = errno.EROFS
        path = str(base / database) if base.is_dir() else str(base)
        if code == errno.EIO and _nearly_full(base):
            code = errno.ENOSPC  # SQLite says "disk I/O error" for some full disks
        elif code == errno.EIO and _file_limit():
            code = errno.EFBIG  # ... and for a file (or its log) past RLIMIT_FSIZE
    elif isinstance(exc, OSError) and exc.errno is not None:
        code = exc.errno
        path = str(exc.filename) if exc.filename else str(base)
        root = os.path.abspath(base)
        full = os.path.abspath(path)
        inside = full == root or full.startswith(root + os.sep)
        if code in (*_PERMISSION, errno.EIO) and not inside:
            return None  # e.g. an unreadable input file: not ours to report
    if code in _PERMISSION:
        return StorageError(
            f"no permission to write {path}: {saved}; make it writable and run "
            "the same command again",
            path,
        )
    if code not in _WRITE_ERRORS:
        return None
    what, todo = _WRITE_ERRORS[code]
    if code in (errno.ENOSPC, errno.EDQUOT) and inside:
        path = str(base)  # the full file system, named by the run directory
    return StorageError(
        f"{what} {path}: {saved}; {todo} and run the same command again", path
    )


def _nearly_full(path: Path) -> bool:
    """Whether the file system holding ``path`` has less than 1 MiB free."""
    try:
        stat = os.statvfs(path if path.exists() else path.parent)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 1 << 20


def _file_limit() -> bool:
    """Whether this process may not write files past a size (RLIMIT_FSIZE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return soft != resource.RLIM_INFINITY


@contextlib.contextmanager
def storage_guard(
    where: str | os.PathLike[str], saved: Callable[[], str]
) -> Iterator[None]:
    """Turn a failed write under ``where`` into one `StorageError` line.

    ``saved()`` says what is kept (it is called only after an error, once
    the run is closed, and may open it read-only).
    """
    try:
        yield
    except (OSError, sqlite3.DatabaseError) as exc:
        try:
            kept = saved()
        except (OSError, sqlite3.Error, ZooprepError):
            kept = "everything recorded before is kept"
        err = storage_error(exc, where, kept)
        if err is None:
            raise
        raise err from exc
