"""Words the stages share, defined once.

Constants and small rules that more than one module needs: the Zooniverse
endpoints, the hidden id key of a subject's metadata, ZTF filter names, what a
flag column is, how a text cell says "true", and how failure reasons are
grouped.  This module imports nothing heavy, so the command line can use it.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from zooprep.errors import InputError

__all__ = [
    "BROKER_KINDS",
    "BUTLER_DATASET_TYPES",
    "CONTENT_TYPES",
    "ID_TEXT_KEY",
    "KNOWN_ANSWER_KEY",
    "KNOWN_MAG_KEY",
    "KNOWN_SNR_KEY",
    "POSITIONS",
    "PRIORITY_KEY",
    "PRODUCTION",
    "PROPENSITY_COLUMN",
    "RANK_COLUMN",
    "STAGING",
    "STAMP_KINDS",
    "STRATEGIES",
    "STREAM_COLUMN",
    "STREAM_KEY",
    "ZTF_BANDS",
    "expand_env",
    "is_flag_column",
    "reason_key",
    "refuse_secret_query",
    "truthy",
]

#: Select kinds whose sources come from an alert broker or stream.
BROKER_KINDS = ("lasair", "fink", "alerce", "kafka")
#: Select kinds whose sources carry (or link to) their own stamps: render needs
#: no image flags and shows each stamp whole unless --sizes is given.
STAMP_KINDS = ("alerts", *BROKER_KINDS)

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

#: Hidden subject metadata of a batch chosen by ``select --next``: Panoptes
#: copies ``#priority`` into the subject's priority in its set when the
#: subject is linked through the API (a prioritized workflow serves the
#: lowest first); ``#zooprep_stream`` says what chose it (strategy, random).
PRIORITY_KEY = "#priority"
#: How ``select --next`` chooses (`zooprep.learning`).
STRATEGIES = ("uncertainty", "disagreement", "stratified")
STREAM_KEY = "#zooprep_stream"
#: The hidden columns of such a source's row in the run state (never metadata
#: as they are): its stream, rank (1 = most informative) and propensity.
STREAM_COLUMN = "_zooprep_stream"
RANK_COLUMN = "_zooprep_rank"
PROPENSITY_COLUMN = "_zooprep_propensity"

#: Where a source is placed on its images: catalogue ``x``/``y``, sky
#: ``ra``/``dec`` through the WCS, or ``auto`` (``x``/``y`` when present).
Position = Literal["auto", "xy", "radec"]
POSITIONS: tuple[Position, ...] = ("auto", "xy", "radec")

#: Files a subject may have, by extension, and the content type upload
#: declares for each (the manifest lists only these): the types both Panoptes
#: and the classifier's ``SubjectLocation`` accept, with an ending the
#: classifier allows for the type (no SVG: the classifier refuses it).
CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".mp4": "video/mp4",
    ".txt": "text/plain",
    ".json": "application/json",
}

#: The default Butler dataset types of the three images (current Rubin names).
BUTLER_DATASET_TYPES = {
    "science": "preliminary_visit_image",
    "template": "template_matched",
    "difference": "difference_image",
}

#: ZTF filter ids (``fid``) and their band names.
ZTF_BANDS = {1: "g", 2: "r", 3: "i"}

#: Failure reasons are grouped (`reason_key`) by a text of at most this length.
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


#: Words that only lead to what follows them (dropped with a variable part).
_LINKS = frozenset(
    {"at", "from", "in", "of", "on", "to", "for", "with", "by", "under", "is"}
)
#: A token of a reason that differs row by row: a URL, a path, a number or
#: coordinate (``x=12.5,``), a size (``30x30``), an id.
_VARIABLE = re.compile(
    r"""[('"]*(
        \S*://\S*                              # a URL
      | [~.]{0,2}/\S*                          # an absolute or relative path
      | \S+/\S*\.\w{1,8}\b\S*                   # a path with an extension
      | \w*=?[-+]?\d[\d.,:xXeE+-]*\w*           # a number, x=12.5, 30x30, 1000-byte
    )[)'",;:]*""",
    re.VERBOSE,
)
#: What is kept although it has digits: an HTTP status (in brackets too), a
#: number of attempts.
_KEPT = re.compile(r"\(HTTP \d{3}\)|HTTP \d{3}|\b\d{1,2} (?:attempts?|tries|times)\b")


#: Units that follow a number (dropped with it).
_UNITS = frozenset(
    {"s", "ms", "px", "pixels", "bytes", "byte", "deg", "arcsec", "mb", "kb", "rows"}
)


def _scrub(part: str) -> tuple[str, bool]:
    """One segment of a reason without its variable tokens; and whether it lost any."""
    words: list[str] = []
    lost = after_number = False
    for token in part.split():
        if _VARIABLE.fullmatch(token) and "\x01" not in token:
            while words and words[-1].lower() in _LINKS:
                words.pop()
            lost = after_number = True
            continue
        if after_number and token.strip(",;:").lower() in _UNITS:
            after_number = False
            continue
        after_number = False
        words.append(token)
    return " ".join(words).strip(" ,;"), lost


def reason_key(reason: object) -> str:
    """What went wrong, without what differs row by row: the group of a failure.

    Technical details in brackets go (an HTTP status stays); the reason's
    parts (split at ``": "``) lose their URLs, paths, numbers and ids (a
    number of attempts stays), and a part that was only a name and an id
    (``source 1234``) goes; the first part left is the group, with the next
    one when it is only a word or two (``drawing failed: TypeError``).  Long
    groups are cut to `REASON_WIDTH` characters ending in ``...``.

    Examples
    --------
    >>> reason_key("http://h.org/1234567/42/science.fits: no such object")
    'no such object'
    >>> reason_key("s3://b/7/tmpl.fits: access denied (HTTP 403): no permission")
    'access denied (HTTP 403)'
    >>> reason_key("source at x=5000.0, y=11.0 is off the science image "
    ...            "/data/7/sci.fits (400x300 pixels)")
    'source is off the science image'
    >>> reason_key("all-NaN 30x30 difference cutout from /data/7/diff.fits")
    'all-NaN difference cutout'
    >>> reason_key("drawing failed: ValueError: bad value 3.5")
    'drawing failed: ValueError'
    """
    text = " ".join(str(reason).split()) if reason else ""
    kept: list[str] = []

    def protect(match: re.Match[str]) -> str:
        kept.append(match.group(0))
        return f"\x01{chr(65 + len(kept) - 1)}\x01"

    text = _KEPT.sub(protect, text)
    while re.search(r"\([^()]*\)", text):  # technical details in brackets
        text = re.sub(r"\s*\([^()]*\)", "", text)
    parts = []
    for segment in text.split(": "):
        scrubbed, lost = _scrub(segment)
        if scrubbed and not (lost and len(scrubbed.split()) < 2):
            parts.append(scrubbed)  # not "source <id>" nor "subject <id>"
    if not parts:
        return "unknown"
    head = parts[0]
    if len(head.split()) <= 2 and len(parts) > 1:
        head = f"{head}: {parts[1]}"
    for n, value in enumerate(kept):
        head = head.replace(f"\x01{chr(65 + n)}\x01", value)
    return head if len(head) < REASON_WIDTH else head[: REASON_WIDTH - 3] + "..."


# -- secrets in templates ----------------------------------------------------------

#: Query parameters that carry a signature, a key or a token (lower case):
#: Azure SAS ``sig``, AWS ``X-Amz-*`` (and SigV2 ``Signature``), GCS
#: ``X-Goog-*``, CloudFront ``Policy``/``Key-Pair-Id``, and the generic names.
SECRET_QUERY_KEYS = frozenset(
    {
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "awsaccesskeyid",
        "x-goog-signature",
        "x-goog-credential",
        "googleaccessid",
        "policy",
        "key-pair-id",
        "token",
        "access_token",
        "auth",
        "key",
        "api_key",
        "apikey",
        "secret",
        "password",
    }
)

#: ``{env:NAME}`` in a template: the environment variable NAME.
ENV_FIELD = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def refuse_secret_query(template: str, what: str) -> None:
    """Raise InputError when a URL template's query holds a literal secret.

    Templates are saved in ``zooprep.toml``; a signature, key or token
    (`SECRET_QUERY_KEYS`) must come from the environment instead, written
    ``{env:NAME}`` (a whole query too: ``...fits?{env:AZURE_SAS}``).

    Examples
    --------
    >>> refuse_secret_query("https://a.blob.core.windows.net/c/{visit}.fits"
    ...                     "?{env:AZURE_SAS}", "--science")
    >>> refuse_secret_query("https://x.org/{visit}.fits?sv=1&sig=abc", "--science")
    Traceback (most recent call last):
    ...
    zooprep.errors.InputError: --science https://x.org/{visit}.fits: its query holds a secret (sig=...), which zooprep.toml would keep; name an environment variable instead: sig={env:NAME}, or the whole query: ?{env:NAME}
    """
    if "?" not in template:
        return
    parts = urlsplit(template)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.strip().lower() not in SECRET_QUERY_KEYS:
            continue
        if value and not ENV_FIELD.sub("", value):
            continue  # the value is {env:NAME} (or several): read when used
        shown = template.split("?", 1)[0]
        raise InputError(
            f"{what} {shown}: its query holds a secret ({key}=...), which "
            f"zooprep.toml would keep; name an environment variable instead: "
            f"{key}={{env:NAME}}, or the whole query: ?{{env:NAME}}"
        )


def expand_env(template: str, what: str) -> str:
    """``template`` with each ``{env:NAME}`` replaced by that variable (braces escaped).

    The result is still a format template over a row's columns: braces of a
    variable's value are doubled so that they stay text.

    Raises
    ------
    InputError
        When a variable named is not set (its value is never shown).

    Examples
    --------
    >>> import os
    >>> os.environ["ZOOPREP_DOCTEST_SAS"] = "sv=1&sig=abc"
    >>> expand_env("https://x.org/{visit}.fits?{env:ZOOPREP_DOCTEST_SAS}", "--science")
    'https://x.org/{visit}.fits?sv=1&sig=abc'
    """
    if "{env:" not in template:
        return template

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = os.environ.get(name)
        if found is None:
            raise InputError(
                f"{what} names {{env:{name}}}, but the environment variable "
                f"{name} is not set"
            )
        return found.replace("{", "{{").replace("}", "}}")

    return ENV_FIELD.sub(value, template)
