"""Reading a manifest back after review, for ``zooprep upload``.

`read_reviewed` reads ``RUN/manifest.csv`` (either layout of
`zooprep.stages.manifest`) after a person edited it: it accepts deleted and
reordered rows, edited metadata, other quoting, CRLF, a UTF-8 BOM and
semicolons, and refuses (`~zooprep.errors.ManifestEditError`, naming the
lines) ids a spreadsheet damaged, ids of no source in the run, duplicated
ids, and changed or missing files.  `mark_removed` records the rows deleted
in review as status ``removed`` (and brings back rows that were re-added).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from zooprep.errors import InputError, ManifestEditError
from zooprep.manifest_format import (
    CLI_LOCATION,
    EXTERNAL_ID,
    ID_TEXT_PREFIX,
    INTEGER,
    LOCATION,
    METADATA,
    NUMBER,
    SCIENTIFIC,
    join_url,
    layout_of,
    parse_id_text,
    relative_prefix,
    text,
    unescape,
    uploadable,
)
from zooprep.options import ManifestOptions
from zooprep.run import Run
from zooprep.vocabulary import ID_TEXT_KEY

__all__ = [
    "ManifestRow",
    "ReviewSync",
    "ReviewedManifest",
    "mark_removed",
    "read_reviewed",
]

logger = logging.getLogger(__name__)


@dataclass
class ManifestRow:
    """One row of a reviewed manifest, ready to upload.

    Attributes
    ----------
    line : int
        1-based line number in the CSV file (the header is line 1).
    source_id : int
        The source id (exact 64-bit integer).
    files : list of pathlib.Path
        Absolute local paths of the files to upload, in location order.
    urls : list of str
        The locations as URLs when the manifest was written with ``url_root``
        (empty otherwise), in the same order as ``files``.
    metadata : dict of str to str
        Subject metadata as the reviewer left it: keys with their Zooniverse
        prefixes (``#``, ``!``, ``%``), values with the formula escape removed.
        A ``%`` key marks an index field: send it without the ``%`` and list
        it in the subject set's ``indexFields`` (as panoptes-cli does).
    """

    line: int
    source_id: int
    files: list[Path] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class ReviewedManifest:
    """A manifest read back after review.

    Attributes
    ----------
    path : pathlib.Path
        The file read.
    rows : list of ManifestRow
        Rows to upload, in file order.
    removed : list of int
        Ids of sources that were in the manifest as zooprep wrote it but are
        no longer in the file (deleted in review), in selection order.
    layout : str
        The column layout found in the header, one of `~zooprep.manifest_format.LAYOUTS`.
    """

    path: Path
    rows: list[ManifestRow] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    layout: str = "import"

    @property
    def index_fields(self) -> list[str]:
        """Names of the index fields (``%`` keys, without the ``%``)."""
        keys = self.rows[0].metadata if self.rows else {}
        return [k[1:] for k in keys if k.startswith("%")]


@dataclass
class ReviewSync:
    """What `mark_removed` changed in the run state.

    Attributes
    ----------
    removed : int
        Sources newly given status ``removed``.
    restored : int
        Sources back to ``rendered`` because their row is in the manifest again.
    already_uploaded : int
        Deleted rows whose subject was already on Zooniverse (left as they are).
    """

    removed: int = 0
    restored: int = 0
    already_uploaded: int = 0


def read_reviewed(
    run: Run, path: str | os.PathLike[str] | None = None
) -> ReviewedManifest:
    """Read a manifest after review, refusing rows a spreadsheet damaged.

    Both layouts are read (`~zooprep.manifest_format.LAYOUTS`, told apart by the header): ``import``
    (``external_id``, ``location:N``, ``metadata:<key>``; other columns are
    ignored) and ``panoptes-cli`` (``#zooprep_id``, ``#location:N``; every
    other column is a metadata key, as panoptes-cli would send it).

    Parameters
    ----------
    run : Run
        The open run the manifest belongs to.
    path : str or path-like, optional
        The manifest (default: where `manifest` last wrote it).

    Returns
    -------
    ReviewedManifest
        The rows to upload (with their files, URLs and final metadata) and
        the ids deleted in review.

    Raises
    ------
    zooprep.errors.ManifestEditError
        Naming the lines (``rows``) whose id is in scientific notation, was
        rounded, is not an integer, matches no source of the run or appears
        twice, or whose locations were changed or point at missing files;
        also when the header lost ``external_id`` or its locations.
    zooprep.errors.InputError
        The file does not exist.
    """
    saved = run.settings.manifest or ManifestOptions.defaults()
    if path is None:
        path = saved.output or run.path / "manifest.csv"
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no manifest at {path}; run 'zooprep manifest {run.path}'")
    for encoding in _encodings(path):
        try:
            return _read(run, path, encoding, saved.url_root, saved.id_column or "")
        except UnicodeDecodeError:
            continue
    raise InputError(f"{path}: cannot decode the file as UTF-8, UTF-16 or Windows-1252")


def _encodings(path: Path) -> list[str]:
    """Encodings to try, from the byte-order mark."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ["utf-16"]
    return ["utf-8-sig", "cp1252"]


@dataclass
class _Header:
    """Where the columns of a reviewed manifest are."""

    external_id: int | None  # None in the panoptes-cli layout
    locations: list[int]
    metadata: list[tuple[int, str]]
    id_text: int | None
    layout: str = "import"

    def label(self, key: str) -> str:
        """The header of the metadata column ``key``, for messages."""
        return key if self.layout == "panoptes-cli" else f"{METADATA}{key}"


def _parse_header(cells: list[str], path: Path) -> _Header:
    """Find the columns by name (any order), refusing a header that lost some."""
    names = [c.strip() for c in cells]
    dupes = sorted({n for n in names if names.count(n) > 1 and n})
    if dupes:
        raise ManifestEditError(
            f"{path}: line 1: column {dupes[0]} appears twice", rows=[1]
        )
    layout = layout_of(names)
    if layout == "panoptes-cli":
        id_name, location = ID_TEXT_KEY, CLI_LOCATION
    else:
        id_name, location = EXTERNAL_ID, LOCATION
    if id_name not in names:
        raise ManifestEditError(f"{path}: line 1: no {id_name} column", rows=[1])
    locations = sorted(
        (int(n[len(location) :]), i)
        for i, n in enumerate(names)
        if n.startswith(location) and n[len(location) :].isdigit()
    )
    if not locations:
        raise ManifestEditError(
            f"{path}: line 1: no {location}1 column (the file column was renamed "
            "or deleted)",
            rows=[1],
        )
    if [n for n, _ in locations] != list(range(1, len(locations) + 1)):
        raise ManifestEditError(
            f"{path}: line 1: location columns must be {location}1..N", rows=[1]
        )
    if layout == "panoptes-cli":
        # Every other column is a metadata key, as panoptes-cli reads it.
        taken = {names.index(ID_TEXT_KEY), *(i for _, i in locations)}
        return _Header(
            external_id=None,
            locations=[i for _, i in locations],
            metadata=[(i, n) for i, n in enumerate(names) if n and i not in taken],
            id_text=names.index(ID_TEXT_KEY),
            layout=layout,
        )
    metadata = [
        (i, n[len(METADATA) :]) for i, n in enumerate(names) if n.startswith(METADATA)
    ]
    ignored = [
        n
        for n in names
        if n
        and n not in (EXTERNAL_ID, ID_TEXT_KEY)
        and not n.startswith((LOCATION, METADATA))
    ]
    if ignored:
        logger.warning(
            "%s: columns %s are not sent to Zooniverse (name metadata columns "
            "'metadata:<key>')",
            path,
            ", ".join(ignored),
        )
    return _Header(
        external_id=names.index(EXTERNAL_ID),
        locations=[i for _, i in locations],
        metadata=metadata,
        id_text=names.index(ID_TEXT_KEY) if ID_TEXT_KEY in names else None,
    )


def _sniff_delimiter(first_line: str, path: Path) -> str:
    """The separator a spreadsheet saved with: the one that yields an id column."""
    for delimiter in (",", ";", "\t", "|"):
        cells = next(csv.reader([first_line], delimiter=delimiter), [])
        if {EXTERNAL_ID, ID_TEXT_KEY} & {c.strip() for c in cells}:
            return delimiter
    raise ManifestEditError(
        f"{path}: line 1: no external_id or {ID_TEXT_KEY} column (not a zooprep "
        "manifest, or its header was changed)",
        rows=[1],
    )


def _read(
    run: Run, path: Path, encoding: str, url_root: str | None, id_column: str
) -> ReviewedManifest:
    """Read and check every row; raise once with all the bad rows."""
    prefix = relative_prefix(run.path, path.parent.resolve())
    root = run.path.resolve()
    problems: list[tuple[int, str]] = []
    seen: dict[int, int] = {}
    result = ReviewedManifest(path=path)
    with open(path, encoding=encoding, newline="") as fh:
        delimiter = _sniff_delimiter(fh.readline(), path)
    with open(path, encoding=encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = _parse_header(next(reader), path)
        result.layout = header.layout
        width = _width(header)
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue  # blank rows that spreadsheets leave at the end
            cells += [""] * max(0, width - len(cells))
            row, problem = _check_row(
                run, cells, header, line, (prefix, root), url_root, id_column, seen
            )
            if problem:
                problems.append((line, problem))
            elif row is not None:
                result.rows.append(row)
    if problems:
        shown = "; ".join(f"line {ln}: {why}" for ln, why in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ManifestEditError(
            f"{path}: {len(problems)} rows refused, nothing will be uploaded: "
            f"{shown}{more}",
            rows=[ln for ln, _ in problems],
        )
    result.removed = _removed(run, seen)
    return result


def _width(header: _Header) -> int:
    """Number of cells a full row has (up to the last column zooprep reads)."""
    idx = [*header.locations, *(i for i, _ in header.metadata)]
    idx += [i for i in (header.external_id, header.id_text) if i is not None]
    return max(idx) + 1


def _check_row(
    run: Run,
    cells: list[str],
    header: _Header,
    line: int,
    where: tuple[str, Path],
    url_root: str | None,
    id_column: str,
    seen: dict[int, int],
) -> tuple[ManifestRow | None, str | None]:
    """One reviewed row as a `ManifestRow`, or why it is refused."""
    text_id = (
        parse_id_text(cells[header.id_text]) if header.id_text is not None else None
    )
    if header.external_id is None:  # panoptes-cli layout: the text id is the id
        raw = cells[header.id_text].strip() if header.id_text is not None else ""
        source_id, why = text_id, None
        if text_id is None:
            why = (
                f"{ID_TEXT_KEY} {raw!r} is not {ID_TEXT_PREFIX}<digits>"
                if raw
                else f"{ID_TEXT_KEY} is empty"
            )
    else:
        raw = cells[header.external_id].strip()
        source_id, why = _parse_id(raw, text_id)
    if source_id is None:
        return None, why
    if source_id in seen:
        return None, f"id {source_id} appears twice (also on line {seen[source_id]})"
    seen[source_id] = line
    src = run.get(source_id)
    if src is None:
        near = _near_id(run, source_id)
        if near is not None and header.external_id is not None:
            return None, (
                f"external_id {raw} looks rounded by a spreadsheet (source {near} "
                "exists)"
            )
        return None, f"id {source_id} matches no source of this run"
    files = uploadable(src.files)
    if not files:
        return None, f"source {source_id} has no rendered file ({src.status})"
    given = [cells[i].strip() for i in header.locations]
    while given and not given[-1] and len(given) > len(files):
        given.pop()
    prefix, root = where
    expected_rel = [prefix + f for f in files]
    expected_url = [join_url(url_root, f) for f in files] if url_root else []
    # Relative to the manifest's folder, or to the run directory (a reviewed
    # copy saved elsewhere), or the URLs written with url_root.
    if given not in (expected_rel, list(files), expected_url):
        is_url = bool(given) and "://" in given[0]
        wanted = expected_url if is_url and expected_url else expected_rel
        n = next(
            (i for i, (g, w) in enumerate(zip(given, wanted, strict=False)) if g != w),
            min(len(given), len(wanted)),
        )
        if n >= len(given) or not given[n]:
            return None, (
                f"id {source_id}: location {n + 1} ({wanted[n]}) was deleted; "
                "every file of a subject must stay listed"
            )
        if n >= len(wanted):
            return None, (
                f"id {source_id}: location {n + 1} {given[n]!r} was added; "
                f"zooprep wrote {len(wanted)} locations"
            )
        return None, (
            f"id {source_id}: location {given[n]!r} was changed (zooprep wrote "
            f"{wanted[n]})"
        )
    local = [root / f for f in files]
    gone = [p for p in local if not os.path.isfile(p)]
    if gone:
        return None, f"id {source_id}: file {gone[0]} does not exist"
    meta: dict[str, str] = {}
    for i, key in header.metadata:
        value = unescape(cells[i])
        column = _column_of(key)
        original = src.id if column == id_column else src.row.get(column)
        damaged = _damaged(value, original)
        if damaged:
            return None, f"id {source_id}: {header.label(key)} {damaged}"
        meta[key] = _restore(value, original)
    return (
        ManifestRow(
            line=line,
            source_id=source_id,
            files=local,
            urls=expected_url if given == expected_url and url_root else [],
            metadata=meta,
        ),
        None,
    )


def _column_of(key: str) -> str:
    """The catalog column behind a metadata key (prefixes removed)."""
    if key.startswith("//"):
        return key[2:]
    return key.lstrip("#!%")


def _parse_id(raw: str, text_id: int | None) -> tuple[int | None, str | None]:
    """The exact id of a row, or why its ``external_id`` cannot be trusted."""
    was = f" (it was {text_id}, as {ID_TEXT_KEY} still says)" if text_id else ""
    if not raw:
        return None, f"external_id is empty{was}"
    if SCIENTIFIC.fullmatch(raw):
        return None, (
            f"external_id {raw} is in scientific notation: a spreadsheet stored "
            f"the id as a number and lost digits{was}"
        )
    if not INTEGER.fullmatch(raw):
        return None, f"external_id {raw!r} is not an integer{was}"
    value = int(raw)
    if text_id is not None and value != text_id:
        if _rounds_to(text_id, value):
            return None, f"external_id {raw} was rounded by a spreadsheet{was}"
        return None, f"external_id {raw} does not match {ID_TEXT_KEY} {text_id}"
    return value, None


def _rounds_to(exact: int, seen: int) -> bool:
    """True when ``seen`` is ``exact`` after a spreadsheet's rounding.

    That is ``exact`` rounded to 15-17 significant digits (Excel, LibreOffice)
    or turned into the nearest float64 and back (pandas, Google Sheets).
    """
    if exact == seen:
        return False
    digits = len(str(abs(exact)))
    rounded = {round(exact, keep - digits) for keep in (15, 16, 17) if digits > keep}
    return seen in rounded or seen == int(float(exact))


def _near_id(run: Run, value: int) -> int | None:
    """A source id that a spreadsheet could have rounded to ``value``."""
    digits = len(str(abs(value)))
    if digits <= 15:
        return None
    span = 10 ** (digits - 15)
    for candidate in run.ids_between(value - span, value + span):
        if _rounds_to(candidate, value):
            return candidate
    return None


def _as_number(text: str) -> float | None:
    """``text`` as a number (also with a decimal comma), or None."""
    t = text.strip()
    for candidate in (t, t.replace(",", ".")):
        if NUMBER.fullmatch(candidate):
            return float(candidate)
    return None


def _damaged(value: str, original: Any) -> str | None:
    """Why ``value`` is a 64-bit integer that a spreadsheet mangled, or None."""
    if not isinstance(original, int) or isinstance(original, bool):
        return None
    if abs(original) < 10**15 or value.strip() == str(original):
        return None
    if SCIENTIFIC.fullmatch(value.strip()):
        return f"{value.strip()} is in scientific notation (it was {original})"
    if INTEGER.fullmatch(value.strip()) and _rounds_to(original, int(value)):
        return f"{value.strip()} was rounded by a spreadsheet (it was {original})"
    return None


def _restore(value: str, original: Any) -> str:
    """The original text when a spreadsheet only reformatted the value."""
    if original is None or isinstance(original, list | dict):
        return value
    written = text(original)
    if value == written:
        return value
    if isinstance(original, bool):
        return written if value.strip().lower() == written else value
    if isinstance(original, int | float):
        number = _as_number(value)
        if number is None:
            return value
        if number == float(original):
            return written
        shown = _significant_digits(value)
        if shown >= 5 and number != 0:
            # Within half a unit of the last digit shown: the spreadsheet
            # rounded for display (half-up or half-even, either is fine).
            # Decimal arithmetic on the texts: exact, no float noise.
            exact = Decimal(repr(float(original)))
            seen = Decimal(repr(number))
            unit = Decimal(10) ** (seen.adjusted() - shown + 1)
            if abs(seen - exact) <= unit / 2:
                return written
    return value


def _significant_digits(text: str) -> int:
    """How many significant digits a number's text shows."""
    mantissa = re.split(r"[eE]", text.strip())[0].lstrip("+-").replace(",", ".")
    digits = mantissa.replace(".", "").lstrip("0")
    return len(digits)


def _removed(run: Run, kept: dict[int, int]) -> list[int]:
    """Ids listed when zooprep wrote the manifest but absent from the reviewed file."""
    return [sid for sid in run.manifest_ids() if sid not in kept]


def mark_removed(run: Run, reviewed: ReviewedManifest) -> ReviewSync:
    """Record the review in the run state, so ``zooprep status`` shows it.

    Rows deleted in review go from ``rendered`` to ``removed``; rows that are
    in the reviewed manifest again go from ``removed`` back to ``rendered``.
    Deleted rows already uploaded keep their status (the subject exists on
    Zooniverse; delete it there if needed).

    Parameters
    ----------
    run : Run
        The open run.
    reviewed : ReviewedManifest
        What `read_reviewed` returned.

    Returns
    -------
    ReviewSync
        How many sources changed.
    """
    sync = ReviewSync()
    with run.transaction():
        for sid in reviewed.removed:
            src = run.get(sid)
            if src is None:
                continue
            if src.status == "rendered":
                run.update(sid, status="removed")
                sync.removed += 1
            elif src.status in ("uploaded", "linked"):
                sync.already_uploaded += 1
        for row in reviewed.rows:
            src = run.get(row.source_id)
            if src is not None and src.status == "removed":
                run.update(row.source_id, status="rendered")
                sync.restored += 1
    if sync.already_uploaded:
        logger.warning(
            "%d rows deleted in review were already uploaded; their subjects stay "
            "on Zooniverse",
            sync.already_uploaded,
        )
    return sync
