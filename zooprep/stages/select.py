"""``zooprep select``: choose the sources to show volunteers and start a run.

The stage reads one source (an APDB, a catalog file or alert packets), keeps
the rows that pass the filters, optionally samples them, and adds them to the
run with status ``selected``.  Rows are always taken in ascending id order, so
the same filter gives the same rows from SQLite, PostgreSQL or a file, and
``--limit N`` means "the N smallest ids that pass".

Sampling (``--sample N --seed S``) gives every passing row a random key from
``numpy.random.default_rng(S)``, drawn in id order, and keeps the N rows with
the smallest keys: a uniform sample without replacement, reproducible, found
in one streaming pass that holds only N candidates (times the number of strata)
in memory, followed by a fetch of the chosen ids.  ``--stratify COLUMN:BINS``
splits the passing rows into BINS equal-width bins of a numeric column (or
into its distinct values for text and boolean columns), and gives each bin an
equal share of N; bins with fewer rows give all they have and the rest is
shared among the others.  Rows whose COLUMN is missing are not sampled.
Without ``--seed`` a seed is drawn and saved in ``zooprep.toml``.

A run that already holds sources is refused unless ``append=True`` (new ids
are added, ids already there are kept as they are: rendered or uploaded
state is never dropped) or the call repeats the saved selection exactly (an
interrupted select then continues).

Alert files that cannot be read are recorded as failed rows (stage
``select``, with the reason) under the stable negative id
`zooprep.readers.base.failure_id` of the file's path, so ``zooprep status``
lists them; they are retired (status ``removed``) when a later select reads
the file successfully.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from zooprep import interrupt
from zooprep.errors import InputError, RateLimited, RunError
from zooprep.files import remove_temporary, storage_guard
from zooprep.options import SelectOptions, parse_stratify
from zooprep.progress import NullReporter, Reporter
from zooprep.readers.base import (
    ColumnBatchReader,
    ReadFailure,
    SourceReader,
    SqliteCopyReader,
    StreamReader,
    failure_id,
)
from zooprep.readers.where import Expr, combine, parse_where, sugar, to_mask
from zooprep.run import STATUSES, AddResult, Run, saved_count
from zooprep.vocabulary import BROKER_KINDS

__all__ = ["SelectResult", "open_reader", "sample_ids", "select"]

log = logging.getLogger(__name__)

#: How many duplicated ids a result lists.
SHOW_DUPLICATES = 10


@dataclass
class SelectResult:
    """What `select` did.

    Attributes
    ----------
    selected : int
        Sources added to the run by this call.
    already_in_run : int
        Sources that were already in the run (kept as they were).
    duplicates : int
        Rows whose id repeated an earlier row of this selection (skipped).
    duplicate_ids : list of int
        The first few duplicated ids.
    failed : int
        Alert files that could not be read, broker objects that could not be
        used or stream messages that were not alerts (recorded as failed rows).
    source : str
        What was read (URL without password, file or glob).
    failures : list of ReadFailure
        The unreadable files (objects, messages) and why.
    what : str
        What the failures were: ``unreadable files``, ``unusable objects``
        or ``bad messages``.
    learning : str
        With ``next``: what was chosen, how, and from what.
    """

    selected: int = 0
    already_in_run: int = 0
    duplicates: int = 0
    duplicate_ids: list[int] = field(default_factory=list)
    failed: int = 0
    source: str = ""
    failures: list[ReadFailure] = field(default_factory=list)
    what: str = "unreadable files"
    learning: str = ""

    def __str__(self) -> str:
        parts = [f"selected {self.selected} sources from {self.source}"]
        if self.already_in_run:
            parts.append(f"{self.already_in_run} already in the run")
        if self.duplicates:
            shown = ", ".join(str(i) for i in self.duplicate_ids)
            parts.append(f"{self.duplicates} duplicated ids skipped (e.g. {shown})")
        if self.failed:
            parts.append(f"{self.failed} {self.what} recorded as failed")
        if self.learning:
            parts.append(self.learning)
        return "; ".join(parts)


# -- sampling -------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    """True for ints and floats (not bools)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


class _Strata:
    """Maps values of the stratify column to bin numbers (-1: not sampled)."""

    def __init__(
        self, reader: SourceReader, where: Expr | None, column: str, bins: int
    ):
        lo, hi = np.inf, -np.inf
        categories: set[Any] = set()
        numeric = True
        for _, values in reader.scan(where, column):
            assert values is not None
            present = [v for v in values if v is not None and not _isnan(v)]
            if numeric and all(_is_number(v) for v in present):
                if present:
                    arr = np.asarray(present, dtype=np.float64)
                    lo, hi = min(lo, float(arr.min())), max(hi, float(arr.max()))
            else:
                numeric = False
            categories.update(present)
        self.numeric = numeric
        self.bins = bins
        self.lo, self.hi = lo, hi
        self.categories = sorted(categories, key=lambda v: (str(type(v)), str(v)))
        self.count = bins if numeric else len(self.categories)

    def assign(self, values: np.ndarray) -> np.ndarray:
        """Bin number of each value."""
        out = np.full(len(values), -1, dtype=np.int64)
        if self.numeric:
            arr = np.array(
                [np.nan if v is None else float(v) for v in values], dtype=np.float64
            )
            ok = np.isfinite(arr)
            if self.hi > self.lo:
                scaled = (arr[ok] - self.lo) / (self.hi - self.lo) * self.bins
                out[ok] = np.clip(np.floor(scaled), 0, self.bins - 1).astype(np.int64)
            else:
                out[ok] = 0
            return out
        index = {v: n for n, v in enumerate(self.categories)}
        for n, v in enumerate(values):
            if v is not None and not _isnan(v):
                out[n] = index.get(v, -1)
        return out


def _isnan(value: Any) -> bool:
    """True for float NaN."""
    return isinstance(value, float | np.floating) and bool(np.isnan(value))


def _even_quotas(counts: Sequence[int], n: int) -> list[int]:
    """Share ``n`` among bins as evenly as their counts allow."""
    quota = [0] * len(counts)
    remaining = n
    active = [b for b, c in enumerate(counts) if c > 0]
    while remaining > 0 and active:
        share, extra = divmod(remaining, len(active))
        for i, b in enumerate(active):
            take = min(share + (1 if i < extra else 0), counts[b] - quota[b])
            quota[b] += take
            remaining -= take
        active = [b for b in active if quota[b] < counts[b]]
    return quota


def sample_ids(
    reader: SourceReader,
    where: Expr | None,
    n: int,
    seed: int,
    stratify: str | None = None,
) -> np.ndarray:
    """Choose ``n`` ids at random among the rows that pass ``where``.

    Parameters
    ----------
    reader : SourceReader
        The source (scanned in ascending id order).
    where : Expr or None
        The filter.
    n : int
        Sample size (all passing rows when fewer).
    seed : int
        Seed of `numpy.random.default_rng`.
    stratify : str or None
        ``COLUMN:BINS`` for an even spread over bins of COLUMN.

    Returns
    -------
    numpy.ndarray
        The chosen ids (``int64``), sorted.
    """
    column, bins = parse_stratify(stratify)
    strata = _Strata(reader, where, column, bins) if column else None
    nstrata = strata.count if strata is not None else 1
    rng = np.random.default_rng(seed)
    keys = [np.empty(0, dtype=np.float64) for _ in range(nstrata)]
    kept = [np.empty(0, dtype=np.int64) for _ in range(nstrata)]
    counts = [0] * nstrata
    for ids, values in reader.scan(where, column):
        if interrupt.requested():
            break  # the caller raises Interrupted (nothing was added yet)
        draws = rng.random(len(ids))
        if strata is not None:
            assert values is not None
            labels = strata.assign(values)
        else:
            labels = np.zeros(len(ids), dtype=np.int64)
        for s in np.unique(labels[labels >= 0]):
            sel = labels == s
            counts[s] += int(sel.sum())
            k = np.concatenate([keys[s], draws[sel]])
            i = np.concatenate([kept[s], ids[sel]])
            if len(k) > n:
                part = np.argpartition(k, n - 1)[:n]
                k, i = k[part], i[part]
            keys[s], kept[s] = k, i
    quotas = _even_quotas(counts, n)
    chosen = [
        kept[s][np.argsort(keys[s], kind="stable")[:q]] for s, q in enumerate(quotas)
    ]
    if strata is not None:
        log.info("stratified sample: %s rows per bin of %s", quotas, column)
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


# -- opening sources ----------------------------------------------------------------


def _apdb_config(path: str | os.PathLike[str]) -> tuple[str, str | None, str]:
    """(SQLAlchemy URL, schema, table prefix) of an APDB config, via lsst-dax-apdb."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lsst.dax.apdb import ApdbConfig
    except ImportError:
        raise InputError(
            f"--apdb-config {os.fspath(path)}: needs the optional package "
            "lsst-dax-apdb (pip install lsst-dax-apdb); or give --apdb URL"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = ApdbConfig.from_uri(os.fspath(path))
    except Exception as exc:  # the package raises many types for bad configs
        raise InputError(
            f"--apdb-config {os.fspath(path)}: cannot read the APDB config "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        ) from None
    url = getattr(config, "db_url", None)
    if not url:
        raise InputError(
            f"--apdb-config {os.fspath(path)}: only SQL APDBs can be read "
            f"(this config is a {type(config).__name__})"
        )
    return (
        str(url),
        getattr(config, "namespace", None),
        getattr(config, "prefix", "") or "",
    )


def open_reader(
    options: SelectOptions, run: str | os.PathLike[str] | None = None
) -> SourceReader | StreamReader:
    """The reader of the one source ``options`` names (not opened yet).

    Parameters
    ----------
    options : SelectOptions
        ``apdb``, ``catalog``, ``alerts``, ``apdb_config``, a broker
        (``lasair_query``, ``lasair_objects``, ``fink_objects``,
        ``alerce_objects``) or ``kafka`` names the source; the other fields
        configure its reader.
    run : path, optional
        The run directory: brokers and streams keep what they read there.

    Returns
    -------
    SourceReader
        An `~zooprep.readers.apdb.ApdbReader`,
        `~zooprep.readers.catalog.CatalogReader`,
        `~zooprep.readers.alerts.AlertReader`, a broker reader
        (`~zooprep.readers.lasair.LasairReader`, ...) or
        `~zooprep.readers.kafka.KafkaReader`.
    """
    broker = _broker_reader(options, run)
    if broker is not None:
        return broker
    if options.tap:
        from zooprep.readers.tap import TapReader

        return TapReader(
            options.tap,
            table=options.table or None,
            query=options.query or None,
            id_column=options.id_column or None,
            instrument=options.instrument or None,
            mode=options.tap_mode,
            page_size=options.tap_page_size,
            store=run,
            resume_after=None if options.append else _recorded(run),
        )
    apdb, schema, prefix = options.apdb, options.schema, ""
    if options.apdb_config:
        apdb, config_schema, prefix = _apdb_config(options.apdb_config)
        schema = schema or config_schema
    if apdb:
        from zooprep.readers.apdb import ApdbReader

        return ApdbReader(
            apdb,
            schema=schema or None,
            id_column=options.id_column or None,
            instrument=options.instrument or None,
            table=f"{prefix}DiaSource",
        )
    if options.catalog:
        from zooprep.readers.catalog import CatalogReader

        return CatalogReader(
            options.catalog,
            id_column=options.id_column or None,
            rename=options.rename or None,
            instrument=options.instrument or None,
        )
    if options.alerts:
        from zooprep.readers.alerts import AlertReader

        return AlertReader(
            options.alerts,
            id_column=options.id_column or None,
            instrument=options.instrument or None,
        )
    raise InputError("give exactly one source (see zooprep select --help)")


def _recorded(run: str | os.PathLike[str] | None) -> tuple[int, int] | None:
    """``(last id, count)`` of a run's sources, for a reader that continues."""
    if run is None or not (Path(run) / Run.STATE).is_file():
        return None
    with Run.open(run, lock=False) as handle:
        last = handle.last_id()
        return None if last is None else (last, len(handle))


def _broker_reader(
    options: SelectOptions, run: str | os.PathLike[str] | None
) -> SourceReader | StreamReader | None:
    """The broker or stream reader ``options`` asks for, or None."""
    o = options
    common: dict[str, Any] = {"store": run, "instrument": o.instrument or None}
    if o.kafka:
        from zooprep.readers.kafka import KafkaReader, parse_config

        assert o.topic
        assert run is not None
        return KafkaReader(
            o.kafka,
            o.topic,
            group=o.group or None,
            max_messages=o.max,
            until_idle=o.until_idle,
            schema_registry=o.schema_registry or None,
            config=parse_config(o.kafka_config),
            lasair_web=o.lasair_web,
            **common,
        )
    if not (
        o.lasair_query
        or o.lasair_objects
        or o.fink_objects
        or o.fink_tag
        or o.alerce_objects
        or o.alerce_query
    ):
        return None
    from zooprep.readers.brokers import object_ids, parse_rate

    common.update(per_object=o.per_object, max_wait=float(o.broker_wait))
    if o.lasair_query or o.lasair_objects:
        from zooprep.readers.lasair import LasairReader

        rate = parse_rate(o.lasair_rate, "--lasair-rate")
        if o.lasair_query:
            return LasairReader(
                query=o.lasair_query,
                endpoint=o.lasair_endpoint,
                rate=rate,
                **common,
            )
        assert o.lasair_objects
        ids = object_ids(o.lasair_objects, "--lasair-objects")
        return LasairReader(ids, endpoint=o.lasair_endpoint, rate=rate, **common)
    if o.fink_objects or o.fink_tag:
        from zooprep.readers.fink import FinkReader

        if o.fink_tag:
            return FinkReader(tag=o.fink_tag, endpoint=o.fink_endpoint, **common)
        assert o.fink_objects
        ids = object_ids(o.fink_objects, "--fink-objects")
        return FinkReader(ids, endpoint=o.fink_endpoint, **common)
    from zooprep.readers.alerce import AlerceReader

    if o.alerce_query:
        return AlerceReader(query=o.alerce_query, **common)
    assert o.alerce_objects
    return AlerceReader(object_ids(o.alerce_objects, "--alerce-objects"), **common)


def _stream(
    handle: Run, reader: StreamReader, expr: Expr | None, reporter: Reporter
) -> SelectResult:
    """Read a stream batch by batch: record each batch, then commit its offsets.

    A batch's rows and its bad messages (failed rows) are in the run before
    its offsets are committed, so a kill in between reads the batch again:
    nothing is lost, and the ids already recorded are kept as they are.
    """
    result = SelectResult(source=reader.describe(), what="bad messages")
    reporter.start("select", reader.max_messages)
    for batch in reader.batches():
        rows = batch.rows
        if expr is not None and rows:
            import pandas as pd

            frame = pd.DataFrame(rows).convert_dtypes()
            mask = np.asarray(to_mask(expr, frame), dtype=bool)
            rows = [r for r, keep in zip(rows, mask, strict=True) if keep]
        added = handle.add_sources(rows, reader.id_column, group=reader.group)
        _record_failures(handle, reader, batch.failures)
        reader.commit(batch)
        result.selected += added.added
        result.already_in_run += added.already_in_run
        result.duplicates += len(added.duplicates)
        result.failed += len(batch.failures)
        result.failures.extend(batch.failures)
        reporter.advance(batch.messages, failed=len(batch.failures))
    reporter.finish()
    interrupt.check(result.selected)
    return result


# -- the stage --------------------------------------------------------------------------


def _counted(
    rows: Iterable[dict[str, Any]], reporter: Reporter
) -> Iterator[dict[str, Any]]:
    """Pass rows through, advancing the reporter every 1000 rows.

    Stops early (the rows read so far are still added) when a stop was asked
    for: select checks that right after adding them.
    """
    n = 0
    for row in rows:
        if interrupt.requested():
            break
        yield row
        n += 1
        if n == 1000:
            reporter.advance(n)
            n = 0
    if n:
        reporter.advance(n)


def _add_in_bulk(
    handle: Run,
    reader: SourceReader,
    expr: Expr | None,
    ids: list[int] | None,
    limit: int | None,
    reporter: Reporter,
) -> AddResult | None:
    """Add the rows through the reader's faster path, or None when it has none.

    An SQLite source is copied by SQLite (`Run.add_selection`), a reader
    with column batches is stored a batch at a time (`Run.add_batches`);
    either way no row passes through Python on its own.
    """
    progress, stop = reporter.advance, interrupt.requested
    if isinstance(reader, SqliteCopyReader):
        selection = reader.sqlite_selection(expr)
        if selection is not None:
            return handle.add_selection(
                selection,
                reader.id_column,
                ids=ids,
                limit=limit,
                progress=progress,
                stop=stop,
            )
    if isinstance(reader, ColumnBatchReader):
        batches = reader.column_batches(expr, ids=ids, limit=limit)
        if batches is not None:
            return handle.add_batches(
                batches, reader.id_column, progress=progress, stop=stop
            )
    return None


def _record_failures(
    run: Run, reader: SourceReader | StreamReader, failures: Sequence[ReadFailure]
) -> None:
    """Record unreadable files as failed rows; retire those now read fine."""
    id_column = reader.id_column
    for failure in failures:
        fid = failure_id(failure.path)
        row: dict[str, Any] = {id_column: fid, "_alert_path": failure.path}
        if failure.format:
            row["_alert_format"] = failure.format
        run.add_sources([row], id_column, group=None)
        run.mark_failed(fid, "select", failure.reason)
    bad = {f.path for f in failures}
    for path in reader.paths:
        if path in bad:
            continue
        old = run.get(failure_id(path))
        if old is not None and old.status == "failed" and old.stage == "select":
            run.update(old.id, status="removed")


#: Reader settings that a reader object already has (refused beside one).
_READER_FIELDS = ("apdb", "catalog", "alerts", "apdb_config", "schema", "id_column",
                  "rename", "instrument")  # fmt: skip


def select(
    run: str | os.PathLike[str],
    options: SelectOptions | Mapping[str, Any] | None = None,
    *,
    reader: SourceReader | None = None,
    reporter: Reporter | None = None,
    **fields: Any,
) -> SelectResult:
    """Choose sources and add them to a run (creating it).

    Parameters
    ----------
    run : str or os.PathLike
        The run directory (created when absent).
    options : SelectOptions or mapping, optional
        Where to read sources and which to keep.  Instead of an options
        object the same fields may be given as a mapping or as keywords
        (``select(run, apdb=..., limit=100)``).
    reader : SourceReader, optional
        A source reader of your own (see `zooprep.readers.base.SourceReader`)
        instead of ``apdb``/``catalog``/``alerts``: its ``kind`` and
        ``describe()`` are saved as the run's ``kind`` and ``source``.
    reporter : Reporter, optional
        Progress reporting.
    **fields
        The fields of `~zooprep.options.SelectOptions`, when ``options`` is
        not an object.

    Returns
    -------
    SelectResult
        Counts of selected, already present, duplicated and failed sources.

    Raises
    ------
    InputError
        Bad options, unreachable or unreadable source, unknown columns.
    RunError
        The run already holds sources and ``append`` is False.
    StorageError
        The run directory is full, over quota or read-only; what was recorded
        is kept: free space (or make it writable) and call again.
    Interrupted
        A stop was asked for (SIGTERM, SIGINT, SIGHUP on the command line, or
        `zooprep.interrupt.request_stop`); finished rows are recorded.

    Examples
    --------
    >>> select("run1", apdb="sqlite:///apdb.sqlite3",  # doctest: +SKIP
    ...        where="reliability > 0.5", sample=100, seed=1)
    """
    if reader is not None and not isinstance(options, SelectOptions):
        given = {**(options or {}), **fields}
        mixed = [k for k in _READER_FIELDS if given.get(k)]
        if mixed:
            raise InputError(
                f"select() got a reader object and {', '.join(mixed)}; give the "
                "reader what it needs when you make it"
            )
        options = SelectOptions.coerce(
            options, {**fields, "kind": reader.kind, "source": reader.describe()}
        )
    else:
        options = SelectOptions.coerce(options, fields)
    with storage_guard(run, functools.partial(_saved, Path(run))):
        return _select(Path(run), options.resolved(), reader, reporter)


def _saved(path: Path) -> str:
    """``N sources saved`` (for the message after a failed write)."""
    if not (path / Run.STATE).is_file():
        return "no source saved"
    return f"{saved_count(path, STATUSES)} sources saved"


def _next_plan(
    path: Path,
    request: SelectOptions,
    reader: SourceReader | StreamReader,
    expr: Expr | None,
    seed: int | None,
    handle: Run | None,
) -> Any:
    """The batch ``--next`` chooses (`zooprep.stages.nextbatch`), or None."""
    if not request.next:
        return None
    from zooprep.stages.nextbatch import plan

    if isinstance(reader, StreamReader):
        raise InputError("--next needs a source it can scan, not a stream")
    assert seed is not None
    saved = handle.settings.select if handle is not None else None
    return plan(path, request.resolved(), reader, expr, int(seed), saved)


def _select(
    path: Path,
    options: SelectOptions,
    given_reader: SourceReader | StreamReader | None,
    reporter: Reporter | None,
) -> SelectResult:
    """`select` with validated options."""
    o = options
    sample, seed, stratify, limit = o.sample, o.seed, o.stratify, o.limit
    reporter = reporter or NullReporter()
    if sample is None and not o.next and seed is not None:
        log.info("--seed has no effect without --sample")
        seed = None
    expr: Expr | None = combine(
        parse_where(o.where) if o.where else None,
        sugar(
            visit=o.visit,
            detector=o.detector,
            band=o.band,
            reliability_min=o.reliability_min,
            reliability_max=o.reliability_max,
        ),
    )
    existing = (path / Run.STATE).is_file()
    handle = Run.open(path) if existing else None
    reader: SourceReader | StreamReader | None = None
    try:
        reader = given_reader if given_reader is not None else open_reader(o, path)
        if handle is None and reader.store is not None:
            # Brokers and streams keep what they read in the run: make it first.
            handle = Run.create(path)
        reader.open()
        if not isinstance(reader, StreamReader):
            reader.check(expr, parse_stratify(stratify)[0])
        request = o.merge(
            kind=reader.kind,
            source=reader.describe(),
            id_column=reader.id_column,
            seed=seed,
        )
        if handle is not None:
            saved = handle.settings.select
            if (
                (sample or o.next)
                and seed is None
                and saved is not None
                and saved.seed is not None
            ):
                seed = int(saved.seed)
                request = request.merge(seed=seed)
            if (
                len(handle)
                and not o.append
                and (saved is None or saved.request() != request.request())
            ):
                raise RunError(
                    f"{path} already holds {len(handle)} sources (selected from "
                    f"{saved.source if saved else 'another source'}); use --append "
                    "to add sources to it, or choose a new run directory"
                )
            if len(handle) and not o.append:
                log.info("%s: continuing the same selection", path)
        if (sample or o.next) and seed is None:
            seed = secrets.randbelow(2**31)
            request = request.merge(seed=seed)
            log.info("--sample without --seed: using seed %d", seed)
        plan = _next_plan(path, request, reader, expr, seed, handle)
        if plan is not None:
            request = request.merge(learned=plan.learned.digest)
        if handle is None:
            handle = Run.create(path)
        remove_temporary(path)  # a settings file a killed select was writing
        previous = handle.settings.select
        history = list(previous.history or ()) if o.append and previous else []
        if o.append and previous is not None:
            history.append(
                f"{previous.selected_at or '?'}: {previous.kind} {previous.source}"
                + (f" where {previous.where}" if previous.where else "")
            )
        handle.save(
            request.merge(
                instrument=reader.instrument,
                selected_at=datetime.now().astimezone().isoformat(timespec="seconds"),
                history=history or None,
            )
        )

        if isinstance(reader, StreamReader):
            return _stream(handle, reader, expr, reporter)
        ids: np.ndarray | None = None
        if plan is not None:
            plan.write(path)
            ids = plan.ids
            total: int | None = len(ids)
        elif sample:
            assert seed is not None
            ids = sample_ids(reader, expr, int(sample), int(seed), stratify)
            interrupt.check(0)
            total = len(ids) if limit is None else min(len(ids), limit)
        else:
            total = limit
        reporter.start("select", total)
        wanted = None if ids is None else ids.tolist()
        added = None
        if plan is None:  # --next annotates each row: those go row by row
            added = _add_in_bulk(handle, reader, expr, wanted, limit, reporter)
        if added is None:  # the reader has no faster path for these rows
            rows = reader.rows(expr, ids=wanted, limit=limit)
            if plan is not None:
                rows = plan.annotate(rows, reader.id_column)
            added = handle.add_sources(
                _counted(rows, reporter), reader.id_column, group=reader.group
            )
        interrupt.check(added.added)
        failures = list(reader.failures)
        _record_failures(handle, reader, failures)
        if reader.stopped is not None:  # a broker's rate limit ended reading early
            raise RateLimited(added.added, str(reader.stopped.what))
        if failures:
            reporter.advance(0, failed=len(failures))
        reporter.finish()
        result = SelectResult(
            selected=added.added,
            already_in_run=added.already_in_run,
            duplicates=len(added.duplicates),
            duplicate_ids=added.duplicates[:SHOW_DUPLICATES],
            failed=len(failures),
            source=reader.describe(),
            failures=failures,
            what="unusable objects"
            if reader.kind in BROKER_KINDS
            else "unreadable files",
            learning=plan.summary() if plan is not None else "",
        )
        if added.duplicates:
            log.warning(
                "%d duplicated ids skipped, e.g. %s",
                len(added.duplicates),
                ", ".join(str(i) for i in added.duplicates[:SHOW_DUPLICATES]),
            )
        return result
    finally:
        if reader is not None:
            reader.close()
        if handle is not None:
            handle.close()
