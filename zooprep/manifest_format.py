"""The manifest CSV format: written by `zooprep.stages.manifest`, read back by `zooprep.stages.review`.

Two column layouts (`LAYOUTS`).  ``import`` (the default) is that of
Zooniverse's server-side subject-set import::

    external_id,location:1,metadata:#diaSourceId,metadata:!visit,...,#zooprep_id
    506428274000265570,cutouts/0/506428274000265570.png,506428274000265570,...,id:506428274000265570

- ``external_id``: the source id, a plain decimal integer.
- ``location:1`` ... ``location:N``: the files to upload (those with a
  content type, `UPLOADABLE`; not ``.npy``), relative to the manifest's
  folder, or full URLs under a ``url_root`` (`join_url`).
- ``metadata:<key>``: subject metadata; ``<key>`` carries the Zooniverse
  prefix (``#`` hidden, ``!`` Talk only, ``%`` index field).
- ``#zooprep_id`` (`~zooprep.vocabulary.ID_TEXT_KEY`): the id again as text,
  ``id:<digits>`` (`id_text`).  Spreadsheets turn 64-bit integers into
  ``5.06428E+17`` or round them to 15 digits; text with a letter in front
  survives, so a damaged row's id can still be named.

``panoptes-cli``: the headers are the metadata keys themselves, as
``panoptes subject-set upload-subjects`` keeps every header verbatim as a
key (and strips only a leading ``%``)::

    #zooprep_id,#location:1,#diaSourceId,!visit,...
    id:506428274000265570,cutouts/0/506428274000265570.png,506428274000265570,...

``#zooprep_id`` is then the row's id, ``#location:N`` the files, every other
column a metadata key.  `layout_of` tells the layouts apart by the header.

Cells: a value is one line of `text` (missing values as `MISSING`, floats
positional); a value a spreadsheet would run as a formula gets a ``'`` in
front (`escape`, undone by `unescape`).  ``manifests/README.md`` documents
every column and how each Zooniverse tool reads the file.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from zooprep.vocabulary import CONTENT_TYPES, ID_TEXT_KEY

__all__ = [
    "CLI_LOCATION",
    "EXTERNAL_ID",
    "ID_TEXT_PREFIX",
    "INTEGER",
    "LAYOUTS",
    "LOCATION",
    "METADATA",
    "MISSING",
    "NUMBER",
    "SCIENTIFIC",
    "UPLOADABLE",
    "escape",
    "header",
    "id_text",
    "join_url",
    "layout_of",
    "parse_id_text",
    "relative_prefix",
    "text",
    "unescape",
    "uploadable",
]

#: Column layouts: Zooniverse's server-side import (default), or panoptes-cli's.
LAYOUTS = ("import", "panoptes-cli")
#: The id column of the import layout.
EXTERNAL_ID = "external_id"
#: Prefix of the file columns (``location:1``...) of the import layout.
LOCATION = "location:"
#: Prefix of the metadata columns of the import layout.
METADATA = "metadata:"
#: Prefix of the file columns of the panoptes-cli layout (hidden from volunteers).
CLI_LOCATION = "#location:"
#: What comes before the digits in the ``#zooprep_id`` column.
ID_TEXT_PREFIX = "id:"
#: Files of a source that go into the manifest and upload: those upload has a
#: content type for (``.npy`` files stay local).
UPLOADABLE = tuple(CONTENT_TYPES)
#: Written for a missing (null or NaN) value.  Never an empty cell: panoptes-cli
#: takes an empty cell in the first row for a file column (the folder exists).
MISSING = "nan"
#: A number as text, a whole number, and scientific notation (``5.06E+17``).
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
INTEGER = re.compile(r"[+-]?\d+")
SCIENTIFIC = re.compile(r"[+-]?\d+([.,]\d*)?[eE][+-]?\d+")
#: What a spreadsheet runs as a formula at the start of a cell.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def header(layout: str, locations: int, keys: Sequence[str]) -> list[str]:
    """The CSV header of a manifest with ``locations`` file columns and these keys.

    Examples
    --------
    >>> header("import", 2, ["#visit", "band"])
    ['external_id', 'location:1', 'location:2', 'metadata:#visit', 'metadata:band', '#zooprep_id']
    >>> header("panoptes-cli", 1, ["band"])
    ['#zooprep_id', '#location:1', 'band']
    """
    if layout == "panoptes-cli":
        return [
            ID_TEXT_KEY,
            *(f"{CLI_LOCATION}{n}" for n in range(1, locations + 1)),
            *keys,
        ]
    return [
        EXTERNAL_ID,
        *(f"{LOCATION}{n}" for n in range(1, locations + 1)),
        *(f"{METADATA}{k}" for k in keys),
        ID_TEXT_KEY,
    ]


def layout_of(names: Sequence[str]) -> str:
    """The layout a header is in (`LAYOUTS`), from its id and location names."""
    if EXTERNAL_ID in names or any(n.startswith((LOCATION, METADATA)) for n in names):
        return "import"
    if ID_TEXT_KEY in names or any(n.startswith(CLI_LOCATION) for n in names):
        return "panoptes-cli"
    return "import"


def id_text(source_id: int) -> str:
    """A source id as spreadsheet-proof text: ``id:<digits>``."""
    return f"{ID_TEXT_PREFIX}{source_id}"


def parse_id_text(cell: str) -> int | None:
    """The id in a ``#zooprep_id`` cell, when it is intact.

    Examples
    --------
    >>> parse_id_text("id:506428274000265570"), parse_id_text("5.06428E+17")
    (506428274000265570, None)
    """
    cell = unescape(cell.strip())
    digits = cell[len(ID_TEXT_PREFIX) :]
    if cell.startswith(ID_TEXT_PREFIX) and INTEGER.fullmatch(digits):
        return int(digits)
    return None


def uploadable(files: Iterable[str]) -> list[str]:
    """The files Zooniverse can show, in order (``.npy`` and friends left out)."""
    return [f for f in files if os.path.splitext(f)[1].lower() in UPLOADABLE]


def relative_prefix(run: Path, base: Path) -> str:
    """What to put before a run-relative path to make it relative to ``base``."""
    rel = Path(os.path.relpath(run.resolve(), base)).as_posix()
    return "" if rel == "." else rel + "/"


def join_url(root: str, relative: str) -> str:
    """``root`` + ``relative`` with exactly one slash between, query kept at the end.

    Examples
    --------
    >>> join_url("https://h.org/run1/?tok", "cutouts/0/1.png")
    'https://h.org/run1/cutouts/0/1.png?tok'
    """
    parts = urlsplit(root)
    path = parts.path.rstrip("/") + "/" + quote(relative.lstrip("/"), safe="/")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def text(value: Any) -> str:
    """A metadata value as one line of text.

    Examples
    --------
    >>> text(None), text(True), text(1.7e-05), text(506428274000265570)
    ('nan', 'true', '0.000017', '506428274000265570')
    """
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
        return json.dumps(value, separators=(",", ":"))
    out = str(value)
    return " ".join(out.splitlines()) if "\n" in out or "\r" in out else out


def escape(cell: str) -> str:
    """Defuse a value a spreadsheet would run as a formula (``'`` in front).

    Examples
    --------
    >>> escape("=HYPERLINK(1)"), escape("-1.5"), unescape(escape("'quoted"))
    ("'=HYPERLINK(1)", '-1.5', "'quoted")
    """
    if cell.startswith("'") or (
        cell.startswith(_FORMULA_START) and not NUMBER.fullmatch(cell)
    ):
        return "'" + cell
    return cell


def unescape(cell: str) -> str:
    """Inverse of `escape`."""
    if (
        len(cell) > 1
        and cell[0] == "'"
        and (cell[1] == "'" or cell[1] in _FORMULA_START)
    ):
        return cell[1:]
    return cell
