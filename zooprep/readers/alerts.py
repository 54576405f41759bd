"""Sources from ZTF and Rubin Avro alert packets.

Every Avro object-container file matched by the glob is read with fastavro,
all of its records (a container may hold many alerts).  Each alert becomes one
row; the packet stays where it is and is the image source of the render stage
(`zooprep.images.stamps.AlertStamps` reads the stamps again from
``_alert_path`` / ``_alert_index``).

Every row has ``diaSourceId`` (the default id column), ``instrument`` and the
bookkeeping keys ``_alert_path`` (absolute path), ``_alert_index`` (0-based
record index in the file) and ``_alert_format`` (``'ztf'`` or ``'rubin'``).

Rubin alerts (a ``diaSource`` record) give their ``diaSource`` fields as they
are; ZTF alerts (a ``candidate`` record) give every scalar ``candidate`` field
and the DiaSource names `ztf_row` maps (``diaSourceId`` from ``candid``,
``band`` from ``fid``, ``visit`` from ``pid``, ``psfFlux`` from ``magpsf``...).
The full mapping, what happens to unreadable files and the memory needed are
in ``docs/alerts.md``.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zooprep.avro import read_records
from zooprep.errors import InputError
from zooprep.photometry import ztf_flux, ztf_snr
from zooprep.readers.base import InMemoryFilter, ReadFailure, kept_positions
from zooprep.readers.where import Expr, unknown_column
from zooprep.vocabulary import ZTF_BANDS

__all__ = ["AlertReader", "alert_rows", "ztf_row", "ztf_schema_instrument"]

log = logging.getLogger(__name__)


def _scalar(value: Any) -> bool:
    """True for values a row column can hold (not records, lists or bytes)."""
    return value is None or isinstance(value, bool | int | float | str)


def ztf_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """The row of one ZTF alert record (the mapping is in ``docs/alerts.md``).

    Parameters
    ----------
    record : mapping
        A decoded ZTF alert (``objectId``, ``candid``, ``candidate`` ...).

    Returns
    -------
    dict
        DiaSource-named columns plus the candidate's own fields.
    """
    cand = record["candidate"]
    row: dict[str, Any] = {k: v for k, v in cand.items() if _scalar(v)}
    candid = record.get("candid", cand.get("candid"))
    row["candid"] = candid
    row["diaSourceId"] = candid
    row["objectId"] = record.get("objectId")
    row["ra"], row["dec"] = cand.get("ra"), cand.get("dec")
    row["x"], row["y"] = cand.get("xpos"), cand.get("ypos")
    row["band"] = ZTF_BANDS.get(cand.get("fid"))
    drb = cand.get("drb")
    row["reliability"] = drb if drb is not None else cand.get("rb")
    pid, rcid = cand.get("pid"), cand.get("rcid")
    if isinstance(pid, int) and isinstance(rcid, int):
        row["visit"] = pid // 10_000 if (pid // 100) % 100 == rcid else pid
    else:
        row["visit"] = pid
    row["detector"] = rcid
    flux, err = ztf_flux(
        cand.get("magpsf"), cand.get("sigmapsf"), cand.get("isdiffpos")
    )
    if flux is not None:
        row["psfFlux"] = flux
        if err is not None:
            row["psfFluxErr"] = err
            row["snr"] = ztf_snr(cand.get("sigmapsf"))
    row["instrument"] = ztf_schema_instrument(record)
    return row


def ztf_schema_instrument(record: Mapping[str, Any]) -> str | None:
    """The camera of an alert in the ZTF schema, from the packet itself.

    Other surveys (e.g. DECam difference-imaging streams) publish in the ZTF
    schema too, so the schema does not say "ZTF": an ``instrument`` field of
    the record or its candidate names the camera; otherwise a ZTF object id
    (``ZTF`` + year + letters) says ZTF; otherwise the camera is unknown
    (None: ``--instrument`` or nothing is shown).
    """
    cand = record.get("candidate") or {}
    for value in (record.get("instrument"), cand.get("instrument")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    object_id = record.get("objectId")
    if isinstance(object_id, str) and object_id.startswith("ZTF"):
        return "ZTF"
    return None


def _rubin_row(record: Mapping[str, Any], instrument: str) -> dict[str, Any]:
    """The row of one Rubin alert record: its diaSource fields as they are."""
    source = record["diaSource"]
    row: dict[str, Any] = {k: v for k, v in source.items() if _scalar(v)}
    if row.get("diaSourceId") is None:
        row["diaSourceId"] = record.get("diaSourceId")
    row.setdefault("instrument", instrument)
    return row


def alert_rows(
    path: str | os.PathLike[str], *, instrument: str | None = None
) -> list[dict[str, Any]]:
    """Read every alert of one Avro container file as rows.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.avro`` file.
    instrument : str or None
        Instrument of the alerts: Rubin packets do not name their camera
        (``LSSTCam`` when None); for packets in the ZTF schema it replaces
        the camera read from the packet (see `ztf_schema_instrument`).

    Returns
    -------
    list of dict
        One row per record, in file order, with ``_alert_path``,
        ``_alert_index`` and ``_alert_format``.

    Raises
    ------
    InputError
        One line naming the file: missing, not Avro, a Confluent wire-format
        payload, damaged, or records that are neither ZTF nor Rubin alerts.
    """
    path = os.path.abspath(os.fspath(path))
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(read_records(path)):
        if isinstance(record.get("candidate"), Mapping):
            row, fmt = ztf_row(record), "ztf"
            if instrument:
                row["instrument"] = instrument
            elif row["instrument"] is None:
                del row["instrument"]
        elif isinstance(record.get("diaSource"), Mapping):
            row, fmt = _rubin_row(record, instrument or "LSSTCam"), "rubin"
        else:
            raise InputError(
                f"{path}: record {index} is neither a ZTF alert (candidate) "
                "nor a Rubin alert (diaSource)"
            )
        row["_alert_path"] = path
        row["_alert_index"] = index
        row["_alert_format"] = fmt
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: Avro file holds no alerts")
    return rows


def _typed_series(values: list[Any]) -> Any:
    """A pandas column for filtering: Int64 stays exact, floats float64, else object."""
    import pandas as pd

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pd.array(values, dtype="boolean")
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.array(values, dtype="Int64")
    if present and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in present
    ):
        return np.array([np.nan if v is None else float(v) for v in values])
    return np.array(values, dtype=object)


class AlertReader(InMemoryFilter):
    """ZTF and Rubin alert packets matched by a glob pattern.

    Parameters
    ----------
    pattern : str or os.PathLike
        A glob (``alerts/**/*.avro``; ``**`` recurses), one file, or a
        directory (all ``*.avro`` files below it).
    id_column : str or None
        Id column (default ``diaSourceId``; ``candid`` also works for ZTF).
    instrument : str or None
        Instrument of Rubin alerts (``LSSTCam`` by default).

    Raises
    ------
    InputError
        When nothing matches the pattern.  Unreadable files do not raise: they
        are listed in `failures`.
    """

    kind = "alerts"

    def __init__(
        self,
        pattern: str | os.PathLike[str],
        *,
        id_column: str | None = None,
        instrument: str | None = None,
    ) -> None:
        self.pattern = os.fspath(pattern)
        self.id_column = id_column or "diaSourceId"
        self.instrument = instrument
        self.paths = self._expand()
        self._failures: list[ReadFailure] = []
        rows: list[dict[str, Any]] = []
        for path in self.paths:
            try:
                found = alert_rows(path, instrument=instrument)
                missing = [
                    r["_alert_index"] for r in found if r.get(self.id_column) is None
                ]
                if missing:
                    raise InputError(
                        f"{path}: record {missing[0]} has no {self.id_column!r} "
                        "(see --id-column)"
                    )
            except InputError as exc:
                log.warning("%s", exc)
                fmt = "rubin" if "Confluent" in str(exc) else None
                self._failures.append(ReadFailure(path, str(exc), fmt))
                continue
            rows.extend(found)
        rows.sort(
            key=lambda r: (int(r[self.id_column]), r["_alert_path"], r["_alert_index"])
        )
        self._rows = rows
        self.ids = np.array([int(r[self.id_column]) for r in rows], dtype=np.int64)
        self._columns: list[str] = []
        seen: set[str] = set()
        for row in rows:
            for key in row:
                if key not in seen:
                    seen.add(key)
                    self._columns.append(key)
        self._frame: Any = None
        self._masks: dict[Expr, np.ndarray] = {}

    def _expand(self) -> list[str]:
        """The files the pattern names, sorted."""
        text = os.path.expanduser(self.pattern)
        path = Path(text)
        if path.is_dir():
            found = sorted(
                str(p.resolve()) for p in path.rglob("*.avro") if p.is_file()
            )
        elif path.is_file():
            found = [str(path.resolve())]
        else:
            found = sorted(
                {
                    str(Path(p).resolve())
                    for p in glob.glob(text, recursive=True)
                    if Path(p).is_file()
                }
            )
        if not found:
            raise InputError(f"--alerts {self.pattern!r}: no files match")
        return found

    # -- SourceReader -------------------------------------------------------------

    def describe(self) -> str:
        """The pattern as given."""
        return self.pattern

    @property
    def failures(self) -> Sequence[ReadFailure]:
        """Files that could not be read."""
        return tuple(self._failures)

    def columns(self) -> list[str]:
        """Every column that any row has."""
        return list(self._columns)

    def _filter_frame(self) -> Any:
        """The rows as a typed DataFrame, built on the first filter."""
        import pandas as pd

        if self._frame is None:
            self._frame = pd.DataFrame(
                {
                    name: _typed_series([r.get(name) for r in self._rows])
                    for name in self._columns
                },
                index=pd.RangeIndex(len(self._rows)),
            )
        return self._frame

    def scan(
        self, where: Expr | None, column: str | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield ``(ids, values)`` of matching rows in ascending id order."""
        mask = self._mask(where)
        values = None
        if column is not None:
            if column not in self._columns:
                raise unknown_column(column, self._columns, "--stratify")
            values = np.array(
                [
                    r.get(column)
                    for r, keep in zip(self._rows, mask, strict=True)
                    if keep
                ],
                dtype=object,
            )
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
        for p in positions:
            yield self._rows[int(p)]

    def group(self, row: Mapping[str, Any]) -> str | None:
        """The packet's path: its records are read again together."""
        path = row.get("_alert_path")
        return None if path is None else str(path)
