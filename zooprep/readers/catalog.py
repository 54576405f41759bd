"""Sources from a catalog file: CSV, Parquet, FITS or ECSV tables.

Columns carry Rubin ``DiaSource`` names.  A catalog needs at least:

* an integer id: ``diaSourceId``, or the column named by ``--id-column``;
* the image the source is on: ``visit`` and ``detector``, or an ``image``
  column (any text naming the image; render path templates can use it);
* its position: ``x`` and ``y`` (pixels) or ``ra`` and ``dec`` (degrees).

Catalogs from other pipelines can be mapped with ``--rename old=new``
(applied before any check).  Ids are read as exact 64-bit integers: CSV files
are parsed with pandas' nullable integer types, so a column with missing
values never turns into float64; a float id column is refused when it may have
lost digits.  The instrument is the file's ``instrument`` column, or
``--instrument`` where the file has none.

The file is read whole into memory (a few hundred bytes per row); filters are
evaluated as pandas masks (`zooprep.readers.where.to_mask`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zooprep.errors import InputError
from zooprep.readers.base import (
    ColumnBatch,
    InMemoryFilter,
    ReadFailure,
    image_group,
    kept_positions,
)
from zooprep.readers.where import Expr, unknown_column

__all__ = [
    "CatalogReader",
    "check_minimum_columns",
    "frame_batches",
    "frame_records",
    "int64_ids",
]

log = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fts")
ECSV_SUFFIXES = (".ecsv",)
#: Rows converted to dicts at a time.
CHUNK = 10_000
#: Rows per column batch.
BATCH = 50_000


def _suffix(path: Path) -> str:
    """The file's format suffix (``.csv.gz`` counts as one)."""
    name = path.name.lower()
    for suffix in (*CSV_SUFFIXES, *PARQUET_SUFFIXES, *FITS_SUFFIXES, *ECSV_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def read_parquet(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Read a local Parquet file into a pandas DataFrame, with Arrow's own reader.

    Given a local path, pandas opens it as a Python file object and hands that
    to Arrow, whose reader threads then hold Python buffers.  One of them
    released while the interpreter is shutting down aborts the process
    ("terminate called without an active exception", apache/arrow#34314):
    about one ``zooprep select --learn-from`` in a hundred ended that way.  A
    path Arrow opens itself leaves no Python object in its threads.

    Parameters
    ----------
    path
        The Parquet file.
    **kwargs
        Passed to `pandas.read_parquet` (e.g. ``columns``, ``dtype_backend``).

    Examples
    --------
    >>> import pandas as pd, tempfile, pathlib
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "t.parquet"
    >>> pd.DataFrame({"id": [1, 2]}).to_parquet(file)
    >>> read_parquet(file)["id"].tolist()
    [1, 2]
    """
    import pandas as pd
    import pyarrow.fs

    return pd.read_parquet(
        os.fspath(path), filesystem=pyarrow.fs.LocalFileSystem(), **kwargs
    )


def check_minimum_columns(columns: Sequence[str], id_column: str, where: str) -> None:
    """Raise InputError unless the id, an image key and a position are present.

    Parameters
    ----------
    columns : sequence of str
        Available columns.
    id_column : str
        The id column.
    where : str
        What is being read (for the message).
    """
    have = set(columns)
    if id_column not in have:
        raise unknown_column(id_column, columns, f"{where} (id column)")
    missing = []
    if not ({"visit", "detector"} <= have or "image" in have):
        missing.append("visit+detector (or image)")
    if not ({"x", "y"} <= have or {"ra", "dec"} <= have):
        missing.append("x+y (or ra+dec)")
    if missing:
        raise InputError(
            f"{where}: missing column(s) {' and '.join(missing)}; columns: "
            f"{', '.join(list(columns)[:20])}{' ...' if len(columns) > 20 else ''} "
            "(use --rename OLD=NEW to map other names)"
        )


def int64_ids(series: Any, column: str, where: str) -> np.ndarray:
    """A column of ids as an exact ``int64`` array, or an InputError naming the row.

    Strings are parsed digit by digit (never through float); floats are refused
    when any value is not integral or beyond 2**53.
    """
    import pandas as pd

    missing = np.asarray(pd.isna(series), dtype=bool)
    if missing.any():
        row = int(np.argmax(missing)) + 1
        raise InputError(f"{where}: row {row}: id column {column!r} is empty")
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise InputError(f"{where}: id column {column!r} holds booleans, not ids")
    if pd.api.types.is_integer_dtype(dtype):
        return np.asarray(series.astype("int64"), dtype=np.int64)
    if pd.api.types.is_float_dtype(dtype):
        values = np.asarray(series, dtype=np.float64)
        bad = (values != np.round(values)) | (np.abs(values) >= 2.0**53)
        if bad.any():
            row = int(np.argmax(bad)) + 1
            raise InputError(
                f"{where}: row {row}: id {values[row - 1]!r} in column {column!r} "
                "is a floating-point number and may have lost digits; store ids "
                "as integers (or text)"
            )
        return values.astype(np.int64)
    out = np.empty(len(series), dtype=np.int64)
    for n, value in enumerate(series.astype(object).tolist()):
        text = value.decode() if isinstance(value, bytes) else str(value).strip()
        try:
            number = int(text)
            out[n] = number
        except (ValueError, OverflowError):
            raise InputError(
                f"{where}: row {n + 1}: id {text!r} in column {column!r} is not a "
                "64-bit integer"
            ) from None
    return out


def _decode_bytes(frame: Any) -> Any:
    """Turn columns of bytes (FITS strings) into text, so filters compare text."""
    for name in frame.columns:
        col = frame[name]
        if col.dtype == object:
            sample = col.dropna().head(20).tolist()
            if sample and all(isinstance(v, bytes) for v in sample):
                frame[name] = [
                    v.decode("utf-8", "replace").rstrip() if isinstance(v, bytes) else v
                    for v in col.tolist()
                ]
    return frame


def _py_values(series: Any) -> list[Any]:
    """A column as Python values, with None for missing ones and text for bytes."""
    import pandas as pd

    values = series.astype(object).where(pd.notna(series), None).tolist()
    if values and any(isinstance(v, bytes) for v in values[:100]):
        values = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values
        ]
    return [v.item() if isinstance(v, np.generic) else v for v in values]


#: Python types an object column may hold for `frame_batches` (else: rows).
_PLAIN = {str, int, float, type(None)}


def _column_kind(series: Any) -> str | None:
    """'plain' or 'bool' for a column `frame_batches` hands over, else None.

    None for a column only `frame_records` converts exactly (dates,
    categories, unsigned 64-bit integers, bytes, mixed objects).
    """
    import pandas as pd

    dtype = series.dtype
    api = pd.api.types
    if api.is_bool_dtype(dtype):
        return "bool"
    if api.is_integer_dtype(dtype) or api.is_float_dtype(dtype):
        if api.is_unsigned_integer_dtype(dtype) and dtype.itemsize >= 8:
            return None  # may exceed SQLite's 64-bit signed integers
        return "plain"
    if isinstance(dtype, pd.StringDtype):
        return "plain"
    if api.is_object_dtype(dtype):
        found = set(map(type, series.to_numpy(dtype=object).tolist()))
        if found <= _PLAIN:
            return "plain"
        if found <= {bool, type(None)}:
            return "bool"
    return None


def _column_values(series: Any) -> list[Any]:
    """A column as Python values (NaN and NA stored as NULL), in C loops."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype):
        values: list[Any] = series.to_numpy().tolist()
        return values
    found: list[Any] = series.to_numpy(dtype=object, na_value=None).tolist()
    return found


def frame_batches(frame: Any, positions: np.ndarray) -> Iterator[ColumnBatch] | None:
    """Rows of ``frame`` at ``positions`` as column batches, or None.

    None when a column needs `frame_records` (see `_column_kind`).  The
    values store as the JSON form of `frame_records` reads back.
    """
    names = [str(c) for c in frame.columns]
    kinds: dict[str, str] = {}
    for name, column in zip(names, frame.columns, strict=True):
        kind = _column_kind(frame[column])
        if kind is None:
            return None
        kinds[name] = kind

    def batches() -> Iterator[ColumnBatch]:
        for start in range(0, len(positions), BATCH):
            part = frame.iloc[positions[start : start + BATCH]]
            columns = [_column_values(part[c]) for c in part.columns]
            yield ColumnBatch(names, columns, kinds, {})

    return batches()


def frame_records(frame: Any, positions: np.ndarray) -> Iterator[dict[str, Any]]:
    """Rows of ``frame`` at ``positions`` as dicts of Python values."""
    names = [str(c) for c in frame.columns]
    for start in range(0, len(positions), CHUNK):
        part = frame.iloc[positions[start : start + CHUNK]]
        columns = [_py_values(part[name]) for name in part.columns]
        for values in zip(*columns, strict=True):
            yield dict(zip(names, values, strict=True))


class CatalogReader(InMemoryFilter):
    """A table file of DiaSource-like rows (CSV, Parquet, FITS, ECSV).

    Parameters
    ----------
    path : str or os.PathLike
        The catalog file; its format is taken from the suffix.
    id_column : str or None
        Id column after renaming (default ``diaSourceId``).
    rename : mapping of str to str, optional
        ``{old: new}`` column renames, applied first.
    instrument : str or None
        Instrument for rows without an ``instrument`` value.

    Raises
    ------
    InputError
        Missing or unreadable file, unknown format, missing columns, ids
        that are empty or not exact integers.
    """

    kind = "catalog"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        id_column: str | None = None,
        rename: Mapping[str, str] | None = None,
        instrument: str | None = None,
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        self.id_column = id_column or "diaSourceId"
        self.rename = dict(rename or {})
        self.instrument = instrument
        frame = self._read()
        unknown = [old for old in self.rename if old not in frame.columns]
        if unknown:
            raise unknown_column(
                unknown[0], [str(c) for c in frame.columns], f"{self.path} (--rename)"
            )
        frame = frame.rename(columns=self.rename)
        check_minimum_columns(
            [str(c) for c in frame.columns], self.id_column, str(self.path)
        )
        ids = int64_ids(frame[self.id_column], self.id_column, str(self.path))
        frame[self.id_column] = ids
        if instrument is not None:
            if "instrument" in frame.columns:
                frame["instrument"] = (
                    frame["instrument"]
                    .astype(object)
                    .where(frame["instrument"].notna(), instrument)
                )
            else:
                frame["instrument"] = instrument
        order = np.argsort(ids, kind="stable")
        self.frame = frame.iloc[order].reset_index(drop=True)
        self.ids = ids[order]
        self._masks: dict[Expr, np.ndarray] = {}

    def _read(self) -> Any:
        """Read the file into a pandas DataFrame, ids kept exact."""
        import pandas as pd

        if not self.path.is_file():
            raise InputError(f"--catalog: no file at {self.path}")
        suffix = _suffix(self.path)
        try:
            if suffix in CSV_SUFFIXES:
                file_id = next(
                    (old for old, new in self.rename.items() if new == self.id_column),
                    self.id_column,
                )
                sep = "\t" if suffix == ".tsv" else ","
                return pd.read_csv(
                    self.path,
                    sep=sep,
                    dtype={file_id: "string"},
                    dtype_backend="numpy_nullable",
                )
            if suffix in PARQUET_SUFFIXES:
                return read_parquet(self.path, dtype_backend="numpy_nullable")
            if suffix in FITS_SUFFIXES or suffix in ECSV_SUFFIXES:
                from astropy.table import Table

                fmt = "ascii.ecsv" if suffix in ECSV_SUFFIXES else "fits"
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    table = Table.read(self.path, format=fmt)
                for w in caught:
                    log.debug("%s: %s", self.path, w.message)
                multi = [n for n in table.colnames if len(table[n].shape) > 1]
                if multi:
                    log.info("%s: skipping array columns %s", self.path, multi)
                    table.remove_columns(multi)
                return _decode_bytes(table.to_pandas())
        except InputError:
            raise
        except Exception as exc:  # any parser's error is an unreadable file
            raise InputError(
                f"--catalog {self.path}: cannot read as {suffix.lstrip('.')} "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
            ) from None
        raise InputError(
            f"--catalog {self.path}: unknown format {suffix!r}; use CSV, Parquet, "
            "FITS or ECSV"
        )

    # -- SourceReader -------------------------------------------------------------

    def describe(self) -> str:
        """The file's path."""
        return str(self.path)

    @property
    def failures(self) -> Sequence[ReadFailure]:
        """A catalog is read whole or not at all."""
        return ()

    @property
    def paths(self) -> Sequence[str]:
        """The catalog file."""
        return (str(self.path),)

    def columns(self) -> list[str]:
        """The (renamed) columns."""
        return [str(c) for c in self.frame.columns]

    def _filter_frame(self) -> Any:
        """The (renamed, id-sorted) catalog itself."""
        return self.frame

    def scan(
        self, where: Expr | None, column: str | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield ``(ids, values)`` of matching rows in ascending id order."""
        mask = self._mask(where)
        values = None
        if column is not None:
            if column not in self.frame.columns:
                raise unknown_column(column, self.columns(), "--stratify")
            values = np.array(_py_values(self.frame[column][mask]), dtype=object)
        yield self.ids[mask], values

    def rows(
        self,
        where: Expr | None,
        *,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield matching rows as dicts in ascending id order."""
        positions = kept_positions(self._mask(where), self.ids, ids, limit)
        return frame_records(self.frame, positions)

    def column_batches(
        self,
        where: Expr | None,
        *,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> Iterator[ColumnBatch] | None:
        """The rows `rows` yields, as column batches (None: columns need rows)."""
        positions = kept_positions(self._mask(where), self.ids, ids, limit)
        return frame_batches(self.frame, positions)

    def group(self, row: Mapping[str, Any]) -> str | None:
        """``visit/detector``, or the ``image`` column."""
        return image_group(row)
