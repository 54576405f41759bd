"""``zooprep preview``: a self-contained HTML gallery of a run's cutouts.

The page is one file, ``RUN/preview.html``, that needs no network: its
JavaScript and CSS are inline, the summary plots are embedded PNGs, and the
cutouts are referenced by their relative paths (``cutouts/0/<id>.png``), so the
page stays small and the browser loads only the thumbnails on screen
(``loading="lazy"``).  The sources' key metadata travels as one compact JSON
object of columns (one array per field), and the page draws only the current
page of results, so it stays responsive with 100,000 sources.

The page reads its filters from the URL fragment and writes them back there,
so a filtered view can be bookmarked or shared::

    preview.html#status=rendered,failed&band=r&rel=0.5:1&flag=pixelFlags_edge
        &noflag=isDipole&sort=-reliability&per=60&page=2

``flag``/``noflag`` take flag column names (``any`` / ``none`` for "some flag
set" / "no flag set"); ``rel`` is ``min:max`` (either side may be empty);
``sort`` is a field name, ``-`` first for descending.

The page's HTML, CSS and JavaScript are the package file
``zooprep/templates/preview.html``; this module collects the data and fills
its placeholders.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from zooprep.files import atomic_write
from zooprep.photometry import ztf_snr
from zooprep.run import STATUSES, Run, Source
from zooprep.vocabulary import ZTF_BANDS, finite_number, is_flag_column, truthy

__all__ = ["flag_columns", "preview"]

log = logging.getLogger(__name__)

#: Band names of ZTF's ``fid``.

#: Where nested alert rows keep the per-detection fields.
_NESTED = ("diaSource", "candidate")


def preview(
    run: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
) -> Path:
    """Write a self-contained HTML gallery of a run's cutouts.

    Parameters
    ----------
    run : str or path-like
        The run directory.  It is read without taking its lock, so a preview
        can be made while another stage is working on the run.
    output : str or path-like, optional
        Where to write the page (default ``RUN/preview.html``).  Links to the
        cutouts are made relative to the page's folder.
    title : str, optional
        Page title (default: the run directory's name).

    Returns
    -------
    pathlib.Path
        The page written.

    Raises
    ------
    zooprep.errors.RunError
        When ``run`` is not a readable run directory.

    Examples
    --------
    >>> import zooprep
    >>> zooprep.preview("run1")  # doctest: +SKIP
    PosixPath('run1/preview.html')
    """
    run_path = Path(run)
    out = Path(output) if output is not None else run_path / "preview.html"
    with Run.open(run_path, lock=False) as r:
        data = _collect(r.iter_sources())
        counts = r.counts()
    prefix = os.path.relpath(run_path.resolve(), out.resolve().parent)
    data["root"] = "" if prefix == "." else prefix.replace(os.sep, "/") + "/"
    summary = _summary_png(data)
    page = _page(
        data,
        summary=summary,
        counts=counts,
        title=title or run_path.resolve().name,
    )
    atomic_write(out, page.encode("utf-8"))
    log.info("preview of %d sources written to %s", data["n"], out)
    return out


# -- reading the run ----------------------------------------------------------


def flag_columns(row: Mapping[str, Any]) -> list[str]:
    """The names of a row's flag columns that are set.

    Flag columns are those `zooprep.vocabulary.is_flag_column` names
    (``*_flag``, ``pixelFlags*``, ``isDipole``...); a value is set when
    `zooprep.vocabulary.truthy`.

    Parameters
    ----------
    row : mapping
        A source's columns.

    Returns
    -------
    list of str
        Flag columns whose value is true, in the row's order.

    Examples
    --------
    >>> flag_columns({"pixelFlags_edge": True, "isDipole": False, "snr": 5.0})
    ['pixelFlags_edge']
    """
    return [
        key
        for key, value in row.items()
        if is_flag_column(key) and value is not None and truthy(value)
    ]


def _flat(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """A row with the fields of a nested alert record (``candidate``...) on top."""
    for key in _NESTED:
        inner = row.get(key)
        if isinstance(inner, Mapping):
            return {**inner, **{k: v for k, v in row.items() if k != key}}
    return row


def _number(row: Mapping[str, Any], *names: str) -> float | None:
    """The first finite number among ``names`` in ``row``."""
    for name in names:
        number = finite_number(row.get(name))
        if number is not None:
            return number
    return None


def _snr(row: Mapping[str, Any]) -> float | None:
    """Signal to noise: ``snr``, else PSF flux over its error, else from a magnitude error."""
    snr = _number(row, "snr")
    if snr is not None:
        return snr
    flux, err = _number(row, "psfFlux"), _number(row, "psfFluxErr")
    if flux is not None and err:
        return abs(flux / err)
    return ztf_snr(row.get("sigmapsf"))


def _band(row: Mapping[str, Any]) -> str:
    """The band name (``band``, ``filter`` or ZTF's ``fid``), or ``""``."""
    for name in ("band", "filter", "filterName"):
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    fid = row.get("fid")
    if isinstance(fid, int) and not isinstance(fid, bool):
        return ZTF_BANDS.get(fid, str(fid))
    return ""


def _int_or_none(value: Any) -> int | None:
    """An integer column value, or None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _round(value: float | None, digits: int) -> float | None:
    """Round to ``digits`` significant digits for a compact JSON."""
    if value is None or value == 0:
        return value
    return float(f"{value:.{digits}g}")


class _Index:
    """Interns strings: the JSON stores each distinct value once."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._pos: dict[str, int] = {}

    def __call__(self, value: str) -> int:
        pos = self._pos.get(value)
        if pos is None:
            pos = self._pos[value] = len(self.values)
            self.values.append(value)
        return pos


def _png(source: Source) -> str | None:
    """The source's first PNG file (relative to the run), if any."""
    for name in source.files:
        if name.lower().endswith(".png"):
            return name
    return None


#: Files a subject may show besides its first picture (``.npy`` is not shown).
_SHOWN = (".png", ".jpg", ".jpeg", ".gif", ".json")


def _more(source: Source, first: str | None) -> str:
    """The source's other locations, as ``|``-joined names after ``<id>``.

    Only files beside the first picture whose names start with the source id
    (as render writes them) are listed: frames, the light curve, its JSON.
    """
    if first is None:
        return ""
    folder = first.rpartition("/")[0]
    stem = str(source.id)
    out = []
    for name in source.files:
        if name == first or not name.lower().endswith(_SHOWN):
            continue
        where, _, base = name.rpartition("/")
        if where == folder and base.startswith(stem):
            out.append(base[len(stem) :])
    return "|".join(out)


def _collect(sources: Any) -> dict[str, Any]:
    """Stream the run's sources into compact columns (one list per field)."""
    ids: list[str] = []
    seq: list[int] = []
    status: list[int] = []
    visit: list[int | None] = []
    detector: list[int | None] = []
    band: list[int] = []
    rel: list[float | None] = []
    snr: list[float | None] = []
    flags: list[int] = []
    file_dir: list[int] = []
    file_name: list[str] = []
    reason: list[int] = []
    subject: list[str] = []
    more: list[int] = []
    statuses, bands, dirs, reasons, flag_names, mores = (_Index() for _ in range(6))
    mores("")
    reasons("")
    flag_count: Counter[str] = Counter()
    row_flags: list[list[str]] = []
    is_flag: dict[str, bool] = {}
    for src in sources:
        row = _flat(src.row)
        ids.append(str(src.id))
        seq.append(src.seq)
        status.append(statuses(src.status))
        visit.append(_int_or_none(row.get("visit")))
        detector.append(_int_or_none(row.get("detector", row.get("ccdid"))))
        band.append(bands(_band(row)))
        rel.append(_round(_number(row, "reliability", "drb", "rb"), 4))
        value = _snr(row)
        snr.append(None if value is None else round(value, 1))
        set_flags = [
            key
            for key, value in row.items()
            if value is not None
            and is_flag.setdefault(key, is_flag_column(key))
            and truthy(value)
        ]
        if src.padded:
            set_flags.append("padded")
        flag_count.update(set_flags)
        row_flags.append(set_flags)
        png = _png(src)
        if png is None:
            file_dir.append(-1)
            file_name.append("")
        else:
            folder, _, name = png.rpartition("/")
            file_dir.append(dirs(folder))
            file_name.append("" if name == f"{src.id}.png" else name)
        more.append(mores(_more(src, png)))
        text = ""
        if src.status == "failed":
            text = (
                f"{src.stage or 'unknown stage'}: {src.reason or 'no reason recorded'}"
            )
        reason.append(reasons(text))
        subject.append(src.subject_id or "")
    # The 52 most common flags fit exactly in a JavaScript number's mantissa.
    for name, _ in flag_count.most_common(52):
        flag_names(name)
    positions = {name: i for i, name in enumerate(flag_names.values)}
    for set_flags in row_flags:
        mask = 0
        for name in set_flags:
            bit = positions.get(name)
            if bit is not None:
                mask |= 1 << bit
        flags.append(mask)
    data: dict[str, Any] = {
        "n": len(ids),
        "id": ids,
        "seq": seq,
        "status": status,
        "statuses": statuses.values,
        "visit": visit,
        "detector": detector,
        "band": band,
        "bands": bands.values,
        "rel": rel,
        "snr": snr,
        "flags": flags,
        "flagNames": flag_names.values,
        "flagCounts": [flag_count[name] for name in flag_names.values],
        "dir": file_dir,
        "dirs": dirs.values,
        "file": file_name,
        "reason": reason,
        "reasons": reasons.values,
    }
    if any(subject):
        data["subject"] = subject
    if len(mores.values) > 1:
        data["more"] = more
        data["mores"] = mores.values
    return data


# -- the summary plots --------------------------------------------------------


def _summary_png(data: Mapping[str, Any]) -> str:
    """Reliability and S/N histograms and sources per visit, as base64 PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.0), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    ax_rel, ax_snr, ax_visit = fig.subplots(1, 3)
    failed_code = (
        data["statuses"].index("failed") if "failed" in data["statuses"] else -1
    )
    status = np.asarray(data["status"], dtype=np.int64)
    rel = np.array([np.nan if v is None else v for v in data["rel"]], dtype=float)
    snr = np.array([np.nan if v is None else v for v in data["snr"]], dtype=float)

    ok = np.isfinite(rel)
    if ok.any():
        bins = np.linspace(0.0, 1.0, 21) if rel[ok].max() <= 1 else 20
        ax_rel.hist(rel[ok], bins=bins, color="#4c72b0", label="all")
        bad = ok & (status == failed_code)
        if bad.any():
            ax_rel.hist(rel[bad], bins=bins, color="#c44e52", label="failed")
            ax_rel.legend(fontsize=8)
    else:
        _empty(ax_rel, "no reliability values")
    ax_rel.set_xlabel("reliability")
    ax_rel.set_ylabel("sources")

    ok = np.isfinite(snr) & (snr > 0)
    if ok.any():
        lo, hi = np.log10(snr[ok].min()), np.log10(snr[ok].max())
        edges = np.logspace(lo, hi if hi > lo else lo + 1, 25)
        ax_snr.hist(snr[ok], bins=edges, color="#55a868")
        ax_snr.set_xscale("log")
    else:
        _empty(ax_snr, "no S/N values")
    ax_snr.set_xlabel("S/N")

    visits = Counter(v for v in data["visit"] if v is not None)
    if visits:
        shown = sorted(visits.most_common(30))
        ax_visit.bar(range(len(shown)), [n for _, n in shown], color="#8172b2")
        ax_visit.set_xticks(range(len(shown)))
        ax_visit.set_xticklabels(
            [str(v) for v, _ in shown], rotation=60, ha="right", fontsize=7
        )
        more = f" (30 busiest of {len(visits)})" if len(visits) > 30 else ""
        ax_visit.set_title(f"sources per visit{more}", fontsize=9)
    else:
        _empty(ax_visit, "no visit column")
    ax_visit.set_ylabel("sources")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _empty(ax: Any, text: str) -> None:
    """Mark a plot panel that has nothing to show."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


# -- the page -----------------------------------------------------------------


def _page(
    data: Mapping[str, Any], *, summary: str, counts: Mapping[str, int], title: str
) -> str:
    """The HTML document."""
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    # Keep the JSON inert inside <script>: no closing tag, no comment opener.
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e")
    payload = payload.replace("&", "\\u0026")
    count_cells = "".join(
        f"<td>{html.escape(name)}</td><td class='num'>{counts.get(name, 0):,}</td>"
        for name in STATUSES
        if counts.get(name, 0)
    )
    made = datetime.now().astimezone().isoformat(timespec="seconds")
    return (
        _template()
        .replace("__TITLE__", html.escape(title))
        .replace("__MADE__", html.escape(made))
        .replace("__COUNTS__", count_cells or "<td>no sources</td>")
        .replace("__SUMMARY__", summary)
        .replace("__DATA__", payload)
    )


def _template() -> str:
    """The page's HTML, CSS and JavaScript (``zooprep/templates/preview.html``).

    Placeholders ``__TITLE__``, ``__MADE__``, ``__COUNTS__``, ``__SUMMARY__``
    and ``__DATA__`` are filled in by `_page`.
    """
    return (
        resources.files("zooprep")
        .joinpath("templates", "preview.html")
        .read_text(encoding="utf-8")
    )
