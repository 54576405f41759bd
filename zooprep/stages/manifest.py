"""The manifest stage: a CSV that people review in a spreadsheet and Zooniverse accepts.

`manifest` writes ``RUN/manifest.csv``, one row per rendered source, by
default in the column layout of Zooniverse's server-side subject-set import
(``layout="import"``)::

    external_id,location:1,metadata:#diaSourceId,metadata:!visit,...,#zooprep_id
    506428274000265570,cutouts/0/506428274000265570.png,506428274000265570,...,id:506428274000265570

- ``external_id``: the source id, a plain decimal integer.
- ``location:1`` ... ``location:N``: the files to upload (PNG, not ``.npy``),
  relative to the manifest's folder, or full URLs with ``url_root``.
- ``metadata:<key>``: subject metadata; ``<key>`` carries the Zooniverse
  prefix (``#`` hidden, ``!`` Talk only, ``%`` index field).
- ``#zooprep_id``: the id again as text (``id:<digits>``).  Spreadsheets turn
  64-bit integers into ``5.06428E+17`` or round them to 15 digits; text with
  a letter in front survives, so `read_reviewed` can tell which id a damaged
  row had and name it.

With ``layout="panoptes-cli"`` the headers are the metadata keys themselves,
as ``panoptes subject-set upload-subjects`` keeps every header verbatim as a
key (and strips only a leading ``%``)::

    #zooprep_id,#location:1,#diaSourceId,!visit,...
    id:506428274000265570,cutouts/0/506428274000265570.png,506428274000265570,...

``#zooprep_id`` (the id as text) is then the row's id, ``#location:N`` the
files (panoptes-cli finds them because they exist), every other column a
metadata key.  `read_reviewed` tells the layouts apart by the header.

`read_reviewed` reads the file back after a person edited it: it accepts
deleted and reordered rows, edited metadata, other quoting, CRLF, a UTF-8 BOM
and semicolons, and refuses (`~zooprep.errors.ManifestEditError`, naming the
lines) ids a spreadsheet damaged, ids of no source in the run, duplicated
ids, and changed or missing files.  `mark_removed` records the rows deleted
in review as status ``removed`` (and brings back rows that were re-added).

``manifests/README.md`` documents every column and how each Zooniverse tool
reads the file.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit, urlunsplit

from zooprep.errors import InputError, ManifestEditError
from zooprep.files import atomic_file
from zooprep.progress import NullReporter, Reporter
from zooprep.run import Run, Source
from zooprep.vocabulary import ID_TEXT_KEY, is_flag_column

__all__ = [
    "DEFAULT_METADATA",
    "ID_TEXT_COLUMN",
    "LAYOUTS",
    "ManifestResult",
    "ManifestRow",
    "ReviewSync",
    "ReviewedManifest",
    "manifest",
    "mark_removed",
    "read_reviewed",
]

logger = logging.getLogger(__name__)

#: Metadata columns written when ``--metadata`` is not given (those present).
DEFAULT_METADATA = (
    "id",
    "visit",
    "detector",
    "band",
    "ra",
    "dec",
    "reliability",
    "snr",
    "diaObjectId",
    "objectId",
)
#: The column that repeats the source id as spreadsheet-proof text.
ID_TEXT_COLUMN = ID_TEXT_KEY
#: What comes before the digits in `ID_TEXT_COLUMN`.
ID_TEXT_PREFIX = "id:"
#: Column layouts: Zooniverse's server-side import (default), or panoptes-cli's.
LAYOUTS = ("import", "panoptes-cli")
#: Files of a source that go into the manifest and upload: the render stage's
#: PNGs (upload declares every file ``image/png``; ``.npy`` files stay local).
UPLOADABLE = (".png",)
#: Statuses of the sources a manifest lists (failed ones: failed in upload).
LISTED = ("rendered", "uploaded", "linked", "failed")
#: Written for a missing (null or NaN) value.  Never an empty cell: panoptes-cli
#: takes an empty cell in the first row for a file column (the folder exists).
MISSING = "nan"

_EXTERNAL_ID = "external_id"
_LOCATION = "location:"
_METADATA = "metadata:"
_CLI_LOCATION = "#location:"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_SCIENTIFIC = re.compile(r"[+-]?\d+([.,]\d*)?[eE][+-]?\d+")
_ID_COLUMNS = ("diaSourceId", "candid", "sourceId", "id")
#: Columns that could bias a volunteer, besides flag columns (hidden by default).
_BIASING = re.compile(
    r"(reliability|snr|^s_?n$|^rb$|^drb|^is[A-Z_]|score|prob|bogus|classtar)",
    re.IGNORECASE,
)
_TALK_ONLY = {"visit", "detector", "ra", "dec", "ccdid", "exposure"}


# -- results -------------------------------------------------------------------


@dataclass
class ManifestResult:
    """What `manifest` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The manifest file.
    rows : int
        Data rows written (one per source).
    columns : list of str
        The header, in order.
    parts : list of pathlib.Path
        Numbered parts written with ``split`` (empty without it).
    failed : int
        Rendered sources left out because their file is missing (they are
        marked failed in the render stage, so ``zooprep render`` redoes them).
    layout : str
        The column layout written, one of `LAYOUTS`.
    """

    path: Path
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    parts: list[Path] = field(default_factory=list)
    failed: int = 0
    layout: str = "import"

    def __str__(self) -> str:
        text = f"manifest: {self.rows} rows written to {self.path}"
        if self.parts:
            text += f" and {len(self.parts)} parts ({self.parts[0].name} ...)"
        if self.failed:
            text += f"; {self.failed} sources left out (file missing)"
        return text


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
        The column layout found in the header, one of `LAYOUTS`.
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


# -- writing -------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """The resolved columns of a manifest."""

    id_column: str
    columns: tuple[str, ...]  # catalog columns, metadata order
    keys: tuple[str, ...]  # Zooniverse metadata keys, with prefixes
    locations: int
    url_root: str | None
    kind: str = "import"  # one of LAYOUTS

    @property
    def header(self) -> list[str]:
        """The CSV header row."""
        if self.kind == "panoptes-cli":
            return [
                ID_TEXT_COLUMN,
                *(f"{_CLI_LOCATION}{n}" for n in range(1, self.locations + 1)),
                *self.keys,
            ]
        return [
            _EXTERNAL_ID,
            *(f"{_LOCATION}{n}" for n in range(1, self.locations + 1)),
            *(f"{_METADATA}{k}" for k in self.keys),
            ID_TEXT_COLUMN,
        ]


def manifest(
    run: str | os.PathLike[str] | Run,
    *,
    url_root: str | None = None,
    output: str | os.PathLike[str] | None = None,
    metadata: Sequence[str] | None = None,
    hidden: Sequence[str] | None = None,
    talk_only: Sequence[str] | None = None,
    index: Sequence[str] | None = None,
    split: int | None = None,
    layout: str | None = None,
    reporter: Reporter | None = None,
) -> ManifestResult:
    """Write the run's manifest: one CSV row per rendered source.

    Choices not given are taken from the ``[manifest]`` section of
    ``zooprep.toml`` (an earlier call), then from the defaults; the choices
    used are saved there.

    Parameters
    ----------
    run : str, path-like or Run
        The run directory (or an open `~zooprep.run.Run`).
    url_root : str, optional
        Where the run directory's files will be hosted: locations become
        ``URL_ROOT/cutouts/<chunk>/<id>.png`` (a query string, e.g. a
        signed-URL token, is kept at the end).
    output : str or path-like, optional
        Write here instead of ``RUN/manifest.csv``; relative locations are
        then relative to this file's folder.
    metadata : sequence of str, optional
        Catalog columns to include (``id`` is the source id column).
        Default: those of `DEFAULT_METADATA` that the sources have.
    hidden : sequence of str, optional
        Columns hidden from volunteers (``#``).  Id columns and columns that
        could bias a classification (reliability, S/N, flags, scores) are
        hidden unless named in ``talk_only`` or ``index``.
    talk_only : sequence of str, optional
        Columns hidden in the classifier but shown in Talk (``!``).
        Default: visit, detector, ra, dec.
    index : sequence of str, optional
        Index fields of the subject set (``%``).  Default: none.
    split : int, optional
        Also write numbered parts of at most ``split`` rows beside the
        manifest (``manifest-001.csv``, ...), e.g. 10000 for Zooniverse's
        server-side import.
    layout : {"import", "panoptes-cli"}, optional
        The columns.  ``"import"`` (default): ``external_id``,
        ``location:N``, ``metadata:<key>``, ``#zooprep_id``, for Zooniverse's
        server-side import and ``zooprep upload``.  ``"panoptes-cli"``:
        ``#zooprep_id``, ``#location:N`` and bare ``<key>`` headers, so that
        ``panoptes subject-set upload-subjects`` gives subjects the intended
        metadata keys (``zooprep upload`` reads it too).
    reporter : Reporter, optional
        Progress callbacks.

    Returns
    -------
    ManifestResult
        The path, row count, header and parts written.

    Raises
    ------
    zooprep.errors.InputError
        A named column is not a catalog column, a column is given two
        visibilities, the layout is unknown, the run has no rendered source,
        or the existing
        manifest was edited since zooprep wrote it (it is never overwritten).
    """
    choices = (url_root, output, metadata, hidden, talk_only, index, split, layout)
    if isinstance(run, Run):
        return _write(run, *choices, reporter)
    with Run.open(run) as r:
        return _write(r, *choices, reporter)


def _write(
    run: Run,
    url_root: str | None,
    output: str | os.PathLike[str] | None,
    metadata: Sequence[str] | None,
    hidden: Sequence[str] | None,
    talk_only: Sequence[str] | None,
    index: Sequence[str] | None,
    split: int | None,
    kind: str | None,
    reporter: Reporter | None,
) -> ManifestResult:
    """Body of `manifest` on an open run."""
    reporter = reporter or NullReporter()
    saved = run.settings.get("manifest", {})
    kind = kind if kind is not None else saved.get("layout") or "import"
    if kind not in LAYOUTS:
        raise InputError(f"--layout must be one of {', '.join(LAYOUTS)}, not {kind!r}")
    url_root = url_root if url_root is not None else saved.get("url_root")
    split = split if split is not None else saved.get("split")
    if split is not None and int(split) < 1:
        raise InputError(f"--split must be at least 1, not {split}")
    if output is not None:
        path = Path(output).absolute()
    elif saved.get("output"):
        path = Path(saved["output"])
    else:
        path = run.path / "manifest.csv"
    _refuse_overwriting_review(path, saved)

    first = next(run.iter_sources(["rendered", "uploaded", "linked"], page=1), None)
    if first is None:
        raise InputError(
            f"run {run.path} has no rendered source; run 'zooprep render' first"
        )
    id_column = _id_column(run, first)
    layout = _layout(
        first,
        id_column,
        metadata if metadata is not None else saved.get("metadata"),
        hidden if hidden is not None else saved.get("hidden"),
        talk_only if talk_only is not None else saved.get("talk_only"),
        index if index is not None else saved.get("index"),
        _max_locations(run),
        url_root,
        kind,
    )
    total = _count_listed(run)
    prefix = _prefix(run, path.parent.resolve())
    result = ManifestResult(path=path, columns=layout.header, layout=kind)
    reporter.start("manifest", total)
    digest = hashlib.sha256()
    parts = _Parts(path, int(split), total, layout.header) if split else None
    written: list[tuple[int, int]] = []
    try:
        with atomic_file(path, "w", encoding="utf-8", newline="") as fh:
            out = _HashingWriter(fh, digest)
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(layout.header)
            line = 1
            for src in _listed(run):
                cells = _cells(run, src, layout, prefix)
                if cells is None:
                    result.failed += 1
                    reporter.advance(1, failed=1)
                    continue
                writer.writerow(cells)
                line += 1
                written.append((src.id, line))
                if parts is not None:
                    parts.write(cells)
                reporter.advance(1)
            fh.flush()
            # Remember the new file's hash before it replaces the old one (at
            # the end of this block): a kill between the two leaves a manifest
            # whose hash zooprep knows, so the next run does not mistake it
            # for a reviewed (edited) one.
            run.save_settings(
                "manifest", {**saved, "sha256_pending": digest.hexdigest()}
            )
        if parts is not None:
            result.parts = parts.close()
    finally:
        if parts is not None:
            parts.discard()
        reporter.finish()
    result.rows = len(written)
    _record_written(run, written)
    run.save_settings(
        "manifest",
        {
            "metadata": list(layout.columns),
            "keys": list(layout.keys),
            "id_column": id_column,
            "url_root": url_root,
            "layout": kind,
            "output": str(path) if path != run.path / "manifest.csv" else None,
            "split": split,
            "rows": result.rows,
            "sha256": digest.hexdigest(),
            "written": datetime.now().astimezone().isoformat(timespec="seconds"),
            **_visibility_lists(layout),
        },
    )
    logger.info("%s", result)
    return result


class _HashingWriter:
    """A text file that also feeds what is written to a hash."""

    def __init__(self, fh: IO[str], digest: Any) -> None:
        self.fh = fh
        self.digest = digest

    def write(self, text: str) -> int:
        """Write and hash."""
        self.digest.update(text.encode("utf-8"))
        return self.fh.write(text)


class _Parts:
    """Numbered manifest parts of at most ``size`` rows, each written atomically."""

    def __init__(self, path: Path, size: int, total: int, header: list[str]) -> None:
        self.path, self.size, self.header = path, size, header
        self.width = max(3, len(str(max(1, math.ceil(total / size)))))
        self.done: list[Path] = []
        self.fh: IO[str] | None = None
        self.writer: Any = None
        self.count = 0
        self._file: Any = None  # the atomic_file of the part being written

    def name(self, n: int) -> Path:
        """Path of part ``n`` (1-based)."""
        return self.path.with_name(
            f"{self.path.stem}-{n:0{self.width}d}{self.path.suffix}"
        )

    def write(self, cells: list[str]) -> None:
        """Add one row, starting a new part when the current one is full."""
        if self.fh is None or self.count >= self.size:
            self._close_current()
            target = self.name(len(self.done) + 1)
            self._file = atomic_file(target, "w", encoding="utf-8", newline="")
            self.fh = self._file.__enter__()
            self.writer = csv.writer(self.fh, lineterminator="\n")
            self.writer.writerow(self.header)
            self.count = 0
        self.writer.writerow(cells)
        self.count += 1

    def _close_current(self) -> None:
        """Move the part being written into place."""
        if self._file is None:
            return
        self._file.__exit__(None, None, None)
        self.done.append(self.name(len(self.done) + 1))
        self.fh, self._file = None, None

    def close(self) -> list[Path]:
        """Finish the last part and delete stale parts of an earlier, longer run."""
        self._close_current()
        pattern = re.compile(
            rf"{re.escape(self.path.stem)}-\d{{3,}}{re.escape(self.path.suffix)}"
        )
        keep = {p.name for p in self.done}
        for old in self.path.parent.iterdir():
            if pattern.fullmatch(old.name) and old.name not in keep:
                old.unlink()
        return self.done

    def discard(self) -> None:
        """Remove a half-written part after an error."""
        if self._file is not None:
            # Leaving the block with an error removes the temporary file.
            self._file.__exit__(OSError, OSError("manifest part discarded"), None)
            self.fh, self._file = None, None


def _refuse_overwriting_review(path: Path, saved: dict[str, Any]) -> None:
    """Raise when ``path`` is a manifest someone edited since zooprep wrote it."""
    if not path.exists():
        return
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() in (saved.get("sha256"), saved.get("sha256_pending")):
        return
    raise InputError(
        f"{path} was edited after zooprep wrote it; zooprep will not overwrite "
        "a reviewed manifest: upload it as it is, or move it away and run "
        "'zooprep manifest' again"
    )


def _listed(run: Run) -> Iterator[Source]:
    """Sources that belong in the manifest, in selection order."""
    return run.iter_sources(LISTED, stage="upload")


def _count_listed(run: Run) -> int:
    """How many sources `_listed` yields."""
    return run.count(LISTED, stage="upload")


def _max_locations(run: Run) -> int:
    """The largest number of uploadable files of one source (at least 1)."""
    return max(1, run.max_files(UPLOADABLE, LISTED, stage="upload"))


def _uploadable(files: Iterable[str]) -> list[str]:
    """The files Zooniverse can show, in order (``.npy`` and friends left out)."""
    return [f for f in files if os.path.splitext(f)[1].lower() in UPLOADABLE]


def _id_column(run: Run, first: Source) -> str:
    """Name of the catalog column that holds the source id."""
    for section in ("select", "manifest"):
        name = run.settings.get(section, {}).get("id_column")
        if name:
            return str(name)
    for name in _ID_COLUMNS:
        if first.row.get(name) == first.id:
            return name
    for name, value in first.row.items():
        if value == first.id and not isinstance(value, bool):
            return str(name)
    return "id"


def _layout(
    first: Source,
    id_column: str,
    metadata: Sequence[str] | None,
    hidden: Sequence[str] | None,
    talk_only: Sequence[str] | None,
    index: Sequence[str] | None,
    locations: int,
    url_root: str | None,
    kind: str = "import",
) -> _Layout:
    """Resolve the metadata columns and their prefixes."""
    available = [k for k in first.row if not str(k).startswith("_")]
    if id_column not in available:
        available.insert(0, id_column)

    def name(col: str) -> str:
        return id_column if col == "id" else col

    if metadata is None:
        columns = [name(c) for c in DEFAULT_METADATA if name(c) in available]
    else:
        columns = [name(c) for c in metadata]
        unknown = [c for c in columns if c not in available]
        if unknown:
            raise InputError(
                f"--metadata names {', '.join(unknown)}, not columns of the sources; "
                f"they have: {', '.join(available)}"
            )
    columns = list(dict.fromkeys(columns))
    choices = {
        "--hidden": [name(c) for c in hidden or []],
        "--talk-only": [name(c) for c in talk_only or []],
        "--index": [name(c) for c in index or []],
    }
    for flag, cols in choices.items():
        stray = [c for c in cols if c not in columns]
        if stray:
            raise InputError(
                f"{flag} names {', '.join(stray)}, which are not metadata columns; "
                "add them to --metadata"
            )
    explicit: dict[str, str] = {}
    for flag, cols in choices.items():
        for col in cols:
            if col in explicit and explicit[col] != flag:
                raise InputError(
                    f"column {col} is given to both {explicit[col]} and {flag}; choose one"
                )
            explicit[col] = flag
    prefix = {"--hidden": "#", "--talk-only": "!", "--index": "%"}
    keys = []
    for col in columns:
        if col.startswith(("#", "!", "%", "/")) or ":" in col:
            raise InputError(
                f"metadata column {col!r} cannot be a Zooniverse key (it starts "
                "with a prefix character or holds ':'); rename it in the catalog"
            )
        if col in explicit:
            keys.append(prefix[explicit[col]] + col)
        elif (
            col == id_column
            or _is_id(col)
            or is_flag_column(col)
            or _BIASING.search(col)
        ):
            keys.append("#" + col)
        elif col in _TALK_ONLY:
            keys.append("!" + col)
        else:
            keys.append(col)
    if kind == "panoptes-cli" and ID_TEXT_COLUMN in keys:
        raise InputError(
            f"metadata column {ID_TEXT_COLUMN[1:]} would give the key "
            f"{ID_TEXT_COLUMN}, which the panoptes-cli layout uses for the "
            "source id; leave it out of --metadata or do not hide it"
        )
    return _Layout(id_column, tuple(columns), tuple(keys), locations, url_root, kind)


def _is_id(col: str) -> bool:
    """True for internal id columns (``diaObjectId``, ``objectId``, ``candid``)."""
    return col.endswith(("Id", "ID", "_id")) or col in {"candid", "id", "objectId"}


def _visibility_lists(layout: _Layout) -> dict[str, list[str]]:
    """The resolved ``hidden``/``talk_only``/``index`` lists, for zooprep.toml."""
    out: dict[str, list[str]] = {"hidden": [], "talk_only": [], "index": []}
    names = {"#": "hidden", "!": "talk_only", "%": "index"}
    for col, key in zip(layout.columns, layout.keys, strict=True):
        if key[0] in names and key[1:] == col:
            out[names[key[0]]].append(col)
    return out


def _cells(run: Run, src: Source, layout: _Layout, prefix: str) -> list[str] | None:
    """The CSV cells of one source, or None (recorded as failed) when its file is gone."""
    files = _uploadable(src.files)
    root = str(run.path)
    missing = [f for f in files if not os.path.isfile(os.path.join(root, f))]
    if not files or missing:
        if src.status == "rendered":
            what = missing[0] if missing else "no image file"
            run.mark_failed(
                src.id,
                "render",
                f"manifest: {what} is missing; run 'zooprep render' again",
            )
            return None
        logger.warning("source %d (%s): file missing on disk", src.id, src.status)
    if layout.url_root:
        locations = [_join_url(layout.url_root, f) for f in files]
    else:
        locations = [prefix + f for f in files]
    locations += [""] * (layout.locations - len(locations))
    values = []
    for col in layout.columns:
        value = src.id if col == layout.id_column else src.row.get(col)
        values.append(_escape(_text(value)))
    if layout.kind == "panoptes-cli":
        return [f"{ID_TEXT_PREFIX}{src.id}", *locations, *values]
    return [str(src.id), *locations, *values, f"{ID_TEXT_PREFIX}{src.id}"]


def _prefix(run: Run, base: Path) -> str:
    """What to put before a run-relative path to make it relative to ``base``."""
    rel = Path(os.path.relpath(run.path.resolve(), base)).as_posix()
    return "" if rel == "." else rel + "/"


def _join_url(root: str, relative: str) -> str:
    """``root`` + ``relative`` with exactly one slash between, query kept at the end."""
    parts = urlsplit(root)
    path = parts.path.rstrip("/") + "/" + quote(relative.lstrip("/"), safe="/")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def _text(value: Any) -> str:
    """A metadata value as one line of text."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        if value == 0 or 1e-12 <= abs(value) < 1e15:
            # Positional, never 1.7e-05: a spreadsheet gives a number written
            # with an exponent a 3-digit scientific format and saves it so.
            return format(Decimal(repr(value)), "f")
        return repr(value)
    if isinstance(value, list | dict):
        import json

        return json.dumps(value, separators=(",", ":"))
    text = str(value)
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text


def _escape(text: str) -> str:
    """Defuse a value a spreadsheet would run as a formula (``'`` in front)."""
    if text.startswith("'") or (
        text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text)
    ):
        return "'" + text
    return text


def _unescape(text: str) -> str:
    """Inverse of `_escape`."""
    if (
        len(text) > 1
        and text[0] == "'"
        and (text[1] == "'" or text[1] in _FORMULA_START)
    ):
        return text[1:]
    return text


def _record_written(run: Run, written: list[tuple[int, int]]) -> None:
    """Remember which sources the manifest lists (to tell deleted rows later)."""
    run.record_manifest(written)


# -- reading back ----------------------------------------------------------------


def read_reviewed(
    run: Run, path: str | os.PathLike[str] | None = None
) -> ReviewedManifest:
    """Read a manifest after review, refusing rows a spreadsheet damaged.

    Both layouts are read (`LAYOUTS`, told apart by the header): ``import``
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
    saved = run.settings.get("manifest", {})
    if path is None:
        path = saved.get("output") or run.path / "manifest.csv"
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no manifest at {path}; run 'zooprep manifest {run.path}'")
    for encoding in _encodings(path):
        try:
            return _read(
                run, path, encoding, saved.get("url_root"), saved.get("id_column", "")
            )
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
        return key if self.layout == "panoptes-cli" else f"{_METADATA}{key}"


def _layout_of(names: list[str]) -> str:
    """The layout of a header: `LAYOUTS` item, from the id and location names."""
    if _EXTERNAL_ID in names or any(
        n.startswith((_LOCATION, _METADATA)) for n in names
    ):
        return "import"
    if ID_TEXT_COLUMN in names or any(n.startswith(_CLI_LOCATION) for n in names):
        return "panoptes-cli"
    return "import"


def _parse_header(cells: list[str], path: Path) -> _Header:
    """Find the columns by name (any order), refusing a header that lost some."""
    names = [c.strip() for c in cells]
    dupes = sorted({n for n in names if names.count(n) > 1 and n})
    if dupes:
        raise ManifestEditError(
            f"{path}: line 1: column {dupes[0]} appears twice", rows=[1]
        )
    layout = _layout_of(names)
    if layout == "panoptes-cli":
        id_name, location = ID_TEXT_COLUMN, _CLI_LOCATION
    else:
        id_name, location = _EXTERNAL_ID, _LOCATION
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
        taken = {names.index(ID_TEXT_COLUMN), *(i for _, i in locations)}
        return _Header(
            external_id=None,
            locations=[i for _, i in locations],
            metadata=[(i, n) for i, n in enumerate(names) if n and i not in taken],
            id_text=names.index(ID_TEXT_COLUMN),
            layout=layout,
        )
    metadata = [
        (i, n[len(_METADATA) :]) for i, n in enumerate(names) if n.startswith(_METADATA)
    ]
    ignored = [
        n
        for n in names
        if n
        and n not in (_EXTERNAL_ID, ID_TEXT_COLUMN)
        and not n.startswith((_LOCATION, _METADATA))
    ]
    if ignored:
        logger.warning(
            "%s: columns %s are not sent to Zooniverse (name metadata columns "
            "'metadata:<key>')",
            path,
            ", ".join(ignored),
        )
    return _Header(
        external_id=names.index(_EXTERNAL_ID),
        locations=[i for _, i in locations],
        metadata=metadata,
        id_text=names.index(ID_TEXT_COLUMN) if ID_TEXT_COLUMN in names else None,
    )


def _sniff_delimiter(first_line: str, path: Path) -> str:
    """The separator a spreadsheet saved with: the one that yields an id column."""
    for delimiter in (",", ";", "\t", "|"):
        cells = next(csv.reader([first_line], delimiter=delimiter), [])
        if {_EXTERNAL_ID, ID_TEXT_COLUMN} & {c.strip() for c in cells}:
            return delimiter
    raise ManifestEditError(
        f"{path}: line 1: no external_id or {ID_TEXT_COLUMN} column (not a zooprep "
        "manifest, or its header was changed)",
        rows=[1],
    )


def _read(
    run: Run, path: Path, encoding: str, url_root: str | None, id_column: str
) -> ReviewedManifest:
    """Read and check every row; raise once with all the bad rows."""
    prefix = _prefix(run, path.parent.resolve())
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
    text_id = _text_id(cells[header.id_text]) if header.id_text is not None else None
    if header.external_id is None:  # panoptes-cli layout: the text id is the id
        raw = cells[header.id_text].strip() if header.id_text is not None else ""
        source_id, why = text_id, None
        if text_id is None:
            why = (
                f"{ID_TEXT_COLUMN} {raw!r} is not {ID_TEXT_PREFIX}<digits>"
                if raw
                else f"{ID_TEXT_COLUMN} is empty"
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
    files = _uploadable(src.files)
    if not files:
        return None, f"source {source_id} has no rendered file ({src.status})"
    given = [cells[i].strip() for i in header.locations]
    while given and not given[-1] and len(given) > len(files):
        given.pop()
    prefix, root = where
    expected_rel = [prefix + f for f in files]
    expected_url = [_join_url(url_root, f) for f in files] if url_root else []
    # Relative to the manifest's folder, or to the run directory (a reviewed
    # copy saved elsewhere), or the URLs written with url_root.
    if given not in (expected_rel, list(files), expected_url):
        is_url = bool(given) and "://" in given[0]
        wanted = expected_url if is_url and expected_url else expected_rel
        changed = next(
            (g for g, w in zip(given, wanted, strict=False) if g != w),
            given[0] if given else "",
        )
        return None, (
            f"id {source_id}: location {changed!r} was changed (zooprep wrote "
            f"{', '.join(wanted)})"
        )
    local = [root / f for f in files]
    gone = [p for p in local if not os.path.isfile(p)]
    if gone:
        return None, f"id {source_id}: file {gone[0]} does not exist"
    meta: dict[str, str] = {}
    for i, key in header.metadata:
        value = _unescape(cells[i])
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


def _text_id(cell: str) -> int | None:
    """The id in the ``#zooprep_id`` cell, when it is intact."""
    cell = _unescape(cell.strip())
    if cell.startswith(ID_TEXT_PREFIX) and _INTEGER.fullmatch(
        cell[len(ID_TEXT_PREFIX) :]
    ):
        return int(cell[len(ID_TEXT_PREFIX) :])
    return None


def _parse_id(raw: str, text_id: int | None) -> tuple[int | None, str | None]:
    """The exact id of a row, or why its ``external_id`` cannot be trusted."""
    was = f" (it was {text_id}, as {ID_TEXT_COLUMN} still says)" if text_id else ""
    if not raw:
        return None, f"external_id is empty{was}"
    if _SCIENTIFIC.fullmatch(raw):
        return None, (
            f"external_id {raw} is in scientific notation: a spreadsheet stored "
            f"the id as a number and lost digits{was}"
        )
    if not _INTEGER.fullmatch(raw):
        return None, f"external_id {raw!r} is not an integer{was}"
    value = int(raw)
    if text_id is not None and value != text_id:
        if _rounds_to(text_id, value):
            return None, f"external_id {raw} was rounded by a spreadsheet{was}"
        return None, f"external_id {raw} does not match {ID_TEXT_COLUMN} {text_id}"
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
        if _NUMBER.fullmatch(candidate):
            return float(candidate)
    return None


def _damaged(value: str, original: Any) -> str | None:
    """Why ``value`` is a 64-bit integer that a spreadsheet mangled, or None."""
    if not isinstance(original, int) or isinstance(original, bool):
        return None
    if abs(original) < 10**15 or value.strip() == str(original):
        return None
    if _SCIENTIFIC.fullmatch(value.strip()):
        return f"{value.strip()} is in scientific notation (it was {original})"
    if _INTEGER.fullmatch(value.strip()) and _rounds_to(original, int(value)):
        return f"{value.strip()} was rounded by a spreadsheet (it was {original})"
    return None


def _restore(value: str, original: Any) -> str:
    """The original text when a spreadsheet only reformatted the value."""
    if original is None or isinstance(original, list | dict):
        return value
    written = _text(original)
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
