"""What the alert-broker readers (Lasair, Fink, ALeRCE) share.

A broker reader is given object ids (or a query that yields them), asks the
broker for each object's sources and forced photometry, and makes **one row
per diaSource that has cutouts** (``per_object='all'``) or only the newest
such source of each object (``per_object='latest'``).  Every row carries the
URLs of its three cutouts (``_cutout_template``, ``_cutout_science``,
``_cutout_difference``: `zooprep.images.brokers.BrokerCutouts` fetches them
at render time) and ``_history_path``, the object's whole history written in
the run (`write_history`), from which the light curve is drawn.

Everything a broker answers is kept in the run directory
(``RUN/brokers/<broker>/``, one JSON file per answer, written atomically) by
`ResponseCache`, so a select that is interrupted, killed or stopped by a rate
limit and run again asks the broker only for what it does not have yet.
`CallLimit` counts the calls (their times are kept in the run too) against
the broker's rate limit: before a call that would exceed it, it waits for the
next free slot (a stop request ends the wait) as long as the total wait stays
within ``max_wait`` seconds, and otherwise stops cleanly with
`~zooprep.errors.RateLimited` ("interrupted: N done ...; run the same command
to continue").  Rows of the objects fetched before the stop are added.

An object that cannot be used (unknown to the broker, no source with
cutouts, an error answer) becomes a failed row of stage ``select`` with a
one-line reason, under the stable negative id of ``<broker>:<objectId>``;
the other objects carry on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from zooprep import interrupt
from zooprep.errors import InputError, RateLimited
from zooprep.files import atomic_write
from zooprep.readers.base import InMemoryFilter, ReadFailure, kept_positions
from zooprep.readers.where import Expr, unknown_column

__all__ = [
    "CUTOUT_COLUMNS",
    "PER_OBJECT",
    "BrokerAnswer",
    "BrokerObject",
    "BrokerReader",
    "CallLimit",
    "ResponseCache",
    "object_ids",
    "parse_rate",
    "write_history",
]

log = logging.getLogger(__name__)

#: Row columns holding the cutout URLs, in template, science, difference order.
CUTOUT_COLUMNS = ("_cutout_template", "_cutout_science", "_cutout_difference")
#: Choices of ``per_object``.
PER_OBJECT = ("all", "latest")
#: Longest single sleep while waiting for a rate limit (a stop is seen at once).
_NAP = 0.5
#: Columns of a history entry that the light curve needs.
HISTORY_COLUMNS = ("diaSourceId", "midpointMjdTai", "band", "psfFlux", "psfFluxErr")


def parse_rate(text: str | int | None, flag: str) -> tuple[int, float] | None:
    """``"100"`` (per hour) or ``"100/60"`` (per 60 s) as ``(calls, seconds)``.

    Examples
    --------
    >>> parse_rate("100", "--lasair-rate")
    (100, 3600.0)
    >>> parse_rate("5/2", "--lasair-rate")
    (5, 2.0)
    """
    if text is None or text == "":
        return None
    calls, _, period = str(text).partition("/")
    try:
        n, seconds = int(calls), float(period) if period else 3600.0
    except ValueError:
        raise InputError(
            f"{flag} {text!r}: give calls per hour (100) or CALLS/SECONDS (100/3600)"
        ) from None
    if n < 1 or not seconds > 0:
        raise InputError(f"{flag} {text!r}: the rate must be positive")
    return n, seconds


def object_ids(value: str | os.PathLike[str] | Sequence[Any], flag: str) -> list[int]:
    """Object ids from a comma-separated list, a list, or a file of them.

    A file holds one id per line (blank lines and ``#`` comments skipped), or
    is a CSV whose ``diaObjectId`` (else ``objectId``, ``oid``, else first)
    column holds them.  Ids keep their first order; repeats are dropped.

    Raises
    ------
    InputError
        Naming the file and line (or the item) that is not a whole number.

    Examples
    --------
    >>> object_ids("170028485706776685, 313893023095193658", "--lasair-objects")
    [170028485706776685, 313893023095193658]
    """
    items: list[tuple[str, Any]] = []
    if isinstance(value, str | os.PathLike) and _is_file(value):
        path = Path(os.fspath(value))
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{flag} {path}: cannot read ({exc})") from None
        lines = [ln for ln in text.splitlines() if ln.strip()]
        first = lines[0] if lines else ""
        if "," in first and not first.replace(",", "").strip().isdigit():
            reader = csv.DictReader(lines)
            names = reader.fieldnames or []
            column = next(
                (c for c in ("diaObjectId", "objectId", "oid") if c in names),
                names[0] if names else "",
            )
            for n, row in enumerate(reader, start=2):
                items.append((f"{path}:{n}", row.get(column)))
        else:
            for n, line in enumerate(text.splitlines(), start=1):
                token = line.split("#", 1)[0].strip()
                if token and not (n == 1 and not token[:1].isdigit()):
                    items.append((f"{path}:{n}", token))
    elif isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        items = [(f"{flag} item {n}", t) for n, t in enumerate(text.split(","), 1)]
    else:
        items = [(f"{flag} item {n}", t) for n, t in enumerate(value, 1)]
    out: list[int] = []
    seen: set[int] = set()
    for where, token in items:
        text_token = str(token).strip() if token is not None else ""
        if not text_token:
            continue
        try:
            oid = int(text_token)
        except ValueError:
            raise InputError(
                f"{where}: {text_token!r} is not an object id (a whole number)"
            ) from None
        if oid not in seen:
            seen.add(oid)
            out.append(oid)
    if not out:
        raise InputError(f"{flag}: no object ids given")
    return out


def _is_file(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` names a file (a long id list is no file name)."""
    try:
        return Path(os.fspath(value)).is_file()
    except (OSError, ValueError):
        return False


class ResponseCache:
    """Broker answers kept in the run directory, one JSON file each.

    Parameters
    ----------
    folder : path or None
        ``RUN/brokers/<broker>``; None keeps nothing (every call is made).
    """

    def __init__(self, folder: str | os.PathLike[str] | None) -> None:
        self.folder = None if folder is None else Path(folder)

    def _path(self, key: str) -> Path | None:
        if self.folder is None:
            return None
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
        safe = "".join(c if c.isalnum() else "-" for c in key.split("?", 1)[0])[:40]
        return self.folder / f"{safe}-{digest}.json"

    def get(self, key: str) -> Any:
        """The answer kept for ``key``, or None."""
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))["answer"]
        except (OSError, ValueError, KeyError):
            return None  # a damaged file is asked for again

    def put(self, key: str, answer: Any) -> None:
        """Keep ``answer`` for ``key`` (atomically: a kill leaves none or all)."""
        path = self._path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"key": key, "answer": answer}).encode("utf-8"))


@dataclass
class CallLimit:
    """Calls to a rate-limited API, counted in a sliding window.

    Parameters
    ----------
    rate : tuple of (int, float) or None
        At most this many calls per that many seconds (None: no limit).
    max_wait : float
        Seconds this select may spend waiting in all; past that it stops.
    path : path or None
        File keeping the calls' times (Unix seconds) across runs.
    name : str
        The broker, for messages.
    clock, sleep : callables
        Time source and sleeper (tests give their own).
    """

    rate: tuple[int, float] | None
    max_wait: float = 3600.0
    path: Path | None = None
    name: str = "broker"
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    calls: list[float] = field(default_factory=list)
    waited: float = 0.0
    made: int = 0

    def __post_init__(self) -> None:
        if self.path is not None and self.path.is_file():
            try:
                self.calls = [float(t) for t in json.loads(self.path.read_text())]
            except (OSError, ValueError, TypeError):
                self.calls = []

    def _window(self) -> list[float]:
        assert self.rate is not None
        now = self.clock()
        self.calls = [t for t in self.calls if t > now - self.rate[1]]
        return self.calls

    def next_free(self) -> float:
        """Seconds until a call is allowed (0 when one is allowed now)."""
        if self.rate is None:
            return 0.0
        window = self._window()
        if len(window) < self.rate[0]:
            return 0.0
        oldest = sorted(window)[-self.rate[0]]
        margin = min(1.0, 0.05 * self.rate[1])  # clocks and queues differ a little
        return max(0.0, oldest + self.rate[1] + margin - self.clock())

    def _describe(self, wait: float) -> str:
        assert self.rate is not None
        n, period = self.rate
        per = "hour" if period == 3600 else f"{period:g} s"
        at = datetime.fromtimestamp(self.clock() + wait).strftime("%H:%M:%S")
        return f"({self.name}'s limit of {n} calls per {per} is used up; the next call is allowed at {at})"

    def wait(self, seconds: float, done: int) -> None:
        """Wait ``seconds`` for the limit, or stop cleanly when that is too long."""
        if seconds <= 0:
            return
        if self.waited + seconds > self.max_wait:
            raise RateLimited(done, self._describe(seconds))
        log.warning(
            "%s rate limit: waiting %.0f s for the next free call", self.name, seconds
        )
        end = self.clock() + seconds
        while (left := end - self.clock()) > 0:
            interrupt.check(done)
            self.sleep(min(_NAP, left))
        self.waited += seconds

    def before(self, done: int) -> None:
        """Wait (or stop) until one more call is allowed."""
        self.wait(self.next_free(), done)

    def record(self) -> None:
        """Count one call made now."""
        self.made += 1
        if self.rate is None:
            return
        self.calls.append(self.clock())
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(self._window()).encode("utf-8"))

    def refused(self, done: int) -> None:
        """The broker answered 429 (someone else used the token): wait one slot.

        A refused call does not count against the limit (DRF's throttle keeps
        only the calls it allowed), so asking again a slot later costs
        nothing, and goes on as soon as the broker's window has room.
        """
        if self.rate is None:
            self.wait(60.0, done)
            return
        n, period = self.rate
        self.wait(max(period / n, 0.2), done)


@dataclass
class BrokerObject:
    """What a broker knows of one object, in Rubin's DiaSource names.

    Attributes
    ----------
    sources : list of dict
        Every diaSource (``diaSourceId``, ``midpointMjdTai``, ``band``,
        ``psfFlux`` ...), any order.
    forced : list of dict
        Forced photometry (``midpointMjdTai``, ``band``, ``psfFlux`` ...).
    cutouts : dict
        ``diaSourceId -> (template, science, difference)`` URLs, only for
        sources whose cutouts the broker still has.
    """

    object_id: int
    sources: list[dict[str, Any]]
    forced: list[dict[str, Any]]
    cutouts: dict[int, tuple[str, str, str]]


def write_history(folder: Path, broker: str, obj: BrokerObject) -> Path:
    """Write an object's history for its light curves; return the file's path.

    ``folder/<broker>-<diaObjectId>.json`` holds ``{"diaObjectId", "broker",
    "sources": [...], "forced": [...]}``, each entry with `HISTORY_COLUMNS`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{broker}-{obj.object_id}.json"

    def keep(entry: Mapping[str, Any]) -> dict[str, Any]:
        return {k: _plain(entry.get(k)) for k in HISTORY_COLUMNS if k in entry}

    doc = {
        "diaObjectId": obj.object_id,
        "broker": broker,
        "sources": [keep(s) for s in obj.sources],
        "forced": [keep(f) for f in obj.forced],
    }
    atomic_write(path, json.dumps(doc).encode("utf-8"))
    return path


def _plain(value: Any) -> Any:
    """JSON-friendly scalars (NaN as None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


class BrokerReader(InMemoryFilter):
    """Rows from an alert broker, one per diaSource with cutouts.

    Subclasses set `kind` and `broker`, and give `_candidates` (the object
    ids to read, asking the broker when the ids come from a query) and
    `_fetch` (one object from the broker, through `_call`).

    Parameters
    ----------
    ids : sequence of int or None
        The objects to read (None: the subclass finds them).
    per_object : {'all', 'latest'}
        Every source with cutouts, or the newest one per object.
    store : path or None
        The run directory: answers, call times and histories are kept there.
    rate : tuple of (int, float) or None
        The broker's rate limit, ``(calls, seconds)``.
    max_wait : float
        Seconds the reader may wait for the rate limit in all.
    instrument : str or None
        The camera named on the rows (``LSSTCam`` by default).
    """

    kind = "broker"
    broker = "broker"
    id_column = "diaSourceId"

    def __init__(
        self,
        ids: Sequence[int] | None = None,
        *,
        per_object: str = "all",
        store: str | os.PathLike[str] | None = None,
        rate: tuple[int, float] | None = None,
        max_wait: float = 3600.0,
        instrument: str | None = None,
    ) -> None:
        if per_object not in PER_OBJECT:
            raise InputError(
                f"per_object {per_object!r} is not one of {', '.join(PER_OBJECT)}"
            )
        self.object_list = None if ids is None else [int(i) for i in ids]
        self.per_object = per_object
        self.store = None if store is None else Path(store)
        folder = None if self.store is None else self.store / "brokers" / self.broker
        self.cache = ResponseCache(folder)
        self.limit = CallLimit(
            rate,
            max_wait,
            path=None if folder is None else folder / "calls.json",
            name=self.broker.capitalize(),
        )
        self.instrument: str | None = instrument or "LSSTCam"
        self.ids = np.empty(0, dtype=np.int64)
        self._rows: list[dict[str, Any]] = []
        self._columns: list[str] = []
        self._failures: list[ReadFailure] = []
        self._masks: dict[Expr, np.ndarray] = {}
        self._frame: Any = None
        self._opened = False
        #: Objects read, from the run's cache or from the broker.
        self.objects_read = 0
        #: The stop that ended reading early (rows read before it are kept).
        self.stopped: RateLimited | None = None

    # -- what subclasses give ------------------------------------------------------

    def _candidates(self) -> list[int]:
        """The object ids to read."""
        if self.object_list is None:
            raise InputError(f"{self.broker}: no objects given")
        return self.object_list

    def _fetch(self, object_id: int) -> BrokerObject:
        """One object from the broker (raise `BrokerAnswer` for a bad answer)."""
        raise NotImplementedError

    # -- calling the broker ---------------------------------------------------------

    def _counted(self, call: Callable[[], Any]) -> Any:
        """Make one call to the broker, within (and counted against) its limit.

        The call is counted when its answer came: the broker counts it on
        arrival, in between, so the window is never overrun.
        """
        self.limit.before(len(self._rows))
        try:
            return call()
        finally:
            self.limit.record()

    def _call(self, key: str, call: Callable[[], Any], *, counted: bool = False) -> Any:
        """``call()``'s answer, from the run's cache when it was kept there.

        ``call`` makes one broker call through `_counted`, or (``counted``)
        several, counting each itself.
        """
        kept = self.cache.get(key)
        if kept is not None:
            return kept
        answer = call() if counted else self._counted(call)
        self.cache.put(key, answer)
        return answer

    # -- SourceReader ---------------------------------------------------------------

    def open(self) -> BrokerReader:
        """Read every object (cached answers first), then build the rows."""
        if self._opened:
            return self
        self._opened = True
        rows: list[dict[str, Any]] = []
        try:
            for oid in self._candidates():
                if interrupt.requested():
                    break
                try:
                    obj = self._fetch(oid)
                except BrokerAnswer as exc:
                    self._failures.append(ReadFailure(f"{self.broker}:{oid}", str(exc)))
                    continue
                self.objects_read += 1
                made = self._object_rows(obj)
                if not made:
                    newest = max(
                        (s.get("midpointMjdTai") or 0 for s in obj.sources),
                        default=None,
                    )
                    when = (
                        f"; its newest source is from MJD {newest:.1f}"
                        if newest
                        else ""
                    )
                    self._failures.append(
                        ReadFailure(
                            f"{self.broker}:{oid}",
                            f"{self.broker} object {oid}: no source with cutouts "
                            f"({self._expiry_note()}{when})",
                        )
                    )
                rows.extend(made)
        except RateLimited as exc:
            self.stopped = exc
        rows.sort(key=lambda r: int(r[self.id_column]))
        self._rows = rows
        self.ids = np.array([int(r[self.id_column]) for r in rows], dtype=np.int64)
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        self._columns = list(seen)
        return self

    def _expiry_note(self) -> str:
        return "the broker keeps cutouts of recent sources only"

    def _object_rows(self, obj: BrokerObject) -> list[dict[str, Any]]:
        """The rows of one object: its sources with cutouts (or the newest)."""
        history = None
        if self.store is not None:
            history = write_history(self.store / "history", self.broker, obj)
        usable = [
            s
            for s in obj.sources
            if s.get("diaSourceId") is not None and int(s["diaSourceId"]) in obj.cutouts
        ]
        usable.sort(key=lambda s: (s.get("midpointMjdTai") or 0, int(s["diaSourceId"])))
        if self.per_object == "latest":
            usable = usable[-1:]
        rows = []
        for s in usable:
            row = {k: v for k, v in s.items() if _scalar(v)}
            sid = int(s["diaSourceId"])
            row["diaSourceId"] = sid
            row.setdefault("diaObjectId", obj.object_id)
            row.setdefault("instrument", self.instrument)
            row["_broker"] = self.broker
            for column, url in zip(CUTOUT_COLUMNS, obj.cutouts[sid], strict=True):
                row[column] = url
            if history is not None:
                row["_history_path"] = str(history)
            rows.append(row)
        return rows

    def close(self) -> None:
        """Nothing to release (clients hold no connections between calls)."""

    @property
    def paths(self) -> Sequence[str]:
        """The objects read, as ``<broker>:<id>`` (to retire their old failures)."""
        return [
            f"{self.broker}:{i}"
            for i in sorted({int(r["diaObjectId"]) for r in self._rows})
        ]

    def describe(self) -> str:
        """The broker and the objects asked for (never a token)."""
        ids = self.object_list or []
        shown = ",".join(str(i) for i in ids[:5]) + (",..." if len(ids) > 5 else "")
        return f"{self.broker} objects {shown} ({len(ids)} objects)"

    @property
    def failures(self) -> Sequence[ReadFailure]:
        """Objects that could not be used, and why."""
        return tuple(self._failures)

    def columns(self) -> list[str]:
        """Every column any row has."""
        self.open()
        return list(self._columns)

    def _filter_frame(self) -> Any:
        import pandas as pd

        if self._frame is None:
            self._frame = pd.DataFrame(
                [{c: r.get(c) for c in self._columns} for r in self._rows],
                columns=self._columns,
            ).convert_dtypes()
        return self._frame

    def check(self, where: Expr | None, column: str | None = None) -> None:
        """Raise InputError now if the filter or ``column`` cannot be used."""
        self.open()
        if not self._rows:
            return  # nothing to filter; the failures say why
        super().check(where, column)

    def scan(
        self, where: Expr | None, column: str | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """``(ids, values)`` of matching rows, ascending."""
        self.open()
        if not self._rows:
            yield self.ids, (np.empty(0, dtype=object) if column else None)
            return
        mask = self._mask(where)
        values = None
        if column is not None:
            if column not in self._columns:
                raise unknown_column(column, self._columns, "--stratify")
            values = np.array(
                [r.get(column) for r, k in zip(self._rows, mask, strict=True) if k],
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
        """Matching rows, ascending by id."""
        self.open()
        if not self._rows:
            return
        for p in kept_positions(self._mask(where), self.ids, ids, limit):
            yield self._rows[int(p)]

    def group(self, row: Mapping[str, Any]) -> str | None:
        """The object: its sources' cutouts come from the same broker calls."""
        oid = row.get("diaObjectId")
        return None if oid is None else f"{self.broker}:{oid}"


class BrokerAnswer(Exception):
    """An answer that makes one object unusable; ``str()`` is the row's reason."""
