"""Writing files so that readers see the old file or the new one, never half.

Every file zooprep writes whole (settings, PNG cutouts, the manifest and its
parts, preview, results, a downloaded export) goes through `atomic_file` or
`atomic_write`: the bytes go to a hidden temporary file in the same directory,
which is renamed over the target only when writing finished.  A killed
process leaves at most a ``.NAME.PID.tmp`` file behind; an exception removes
it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_file", "atomic_write", "temporary_name"]


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


def atomic_write(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through `atomic_file`."""
    with atomic_file(path, "wb", fsync=fsync) as fh:
        fh.write(data)
