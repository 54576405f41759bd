"""Words the stages share, defined once.

Constants and small rules that more than one module needs: the Zooniverse
endpoints, the hidden id key of a subject's metadata, ZTF filter names, what a
flag column is, how a text cell says "true", and how failure reasons are
grouped.  This module imports nothing heavy, so the command line can use it.
"""

from __future__ import annotations

import math
from typing import Any, Literal

__all__ = [
    "CONTENT_TYPES",
    "ID_TEXT_KEY",
    "KNOWN_ANSWER_KEY",
    "KNOWN_MAG_KEY",
    "KNOWN_SNR_KEY",
    "POSITIONS",
    "PRODUCTION",
    "STAGING",
    "ZTF_BANDS",
    "is_flag_column",
    "reason_key",
    "truthy",
]

#: The production Panoptes endpoint (the default of upload and results).
PRODUCTION = "https://www.zooniverse.org"
#: Zooniverse's staging endpoint, for rehearsals.
STAGING = "https://panoptes-staging.zooniverse.org"

#: Hidden subject metadata (and manifest column) holding the source id as text.
ID_TEXT_KEY = "#zooprep_id"

#: Hidden subject metadata of known-answer subjects (``zooprep fakes``):
#: the answer (``real``/``bogus``), and an injected fake's AB magnitude and
#: expected S/N.
KNOWN_ANSWER_KEY = "#known_answer"
KNOWN_MAG_KEY = "#fake_mag"
KNOWN_SNR_KEY = "#fake_snr"

#: Where a source is placed on its images: catalogue ``x``/``y``, sky
#: ``ra``/``dec`` through the WCS, or ``auto`` (``x``/``y`` when present).
Position = Literal["auto", "xy", "radec"]
POSITIONS: tuple[Position, ...] = ("auto", "xy", "radec")

#: Files a subject may have, by extension, and the content type upload
#: declares for each (the manifest lists only these).
CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".mp4": "video/mp4",
    ".txt": "text/plain",
    ".json": "application/json",
}

#: ZTF filter ids (``fid``) and their band names.
ZTF_BANDS = {1: "g", 2: "r", 3: "i"}

#: Failure reasons are grouped by the text before the first colon, cut to this.
REASON_WIDTH = 80


def is_flag_column(name: str) -> bool:
    """True for a pipeline flag column.

    A flag column's name contains ``flag`` in any case (``pixelFlags_edge``,
    ``centroid_flag``, ``forced_PsfFlux_flag_edge``), or is ``isDipole``.

    Examples
    --------
    >>> is_flag_column("pixelFlags_saturated"), is_flag_column("snr")
    (True, False)
    """
    return "flag" in name.lower() or name == "isDipole"


def truthy(value: Any) -> bool:
    """A flag's value as a bool.

    Text is true when it reads ``1``, ``t``, ``true`` or ``yes`` (any case,
    surrounding blanks ignored); numbers when non-zero and not NaN; anything
    else (None, bytes, records) is false.
    """
    if isinstance(value, str):
        return value.strip().lower() in ("1", "t", "true", "yes")
    if isinstance(value, bool | int | float):
        return bool(value) and not (isinstance(value, float) and math.isnan(value))
    return False


def finite_number(value: Any) -> float | None:
    """A value as a finite float, or None when missing, NaN, infinite or not a number.

    Booleans (Python's or NumPy's) are flags, not numbers, and give None.
    """
    if value is None or isinstance(value, bool):
        return None
    if getattr(getattr(value, "dtype", None), "kind", None) == "b":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def reason_key(reason: object) -> str:
    """The group of a failure reason: the part before the first colon.

    What follows the colon differs per row (a path, a number), so it is left
    out; long heads are cut to `REASON_WIDTH` characters ending in ``...``.
    """
    text = str(reason) if reason else "unknown"
    head = text.split(":", 1)[0]
    return head if len(head) < REASON_WIDTH else head[: REASON_WIDTH - 3] + "..."
