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
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from zooprep.run import STATUSES, Run, Source, atomic_write
from zooprep.vocabulary import ZTF_BANDS, is_flag_column, truthy

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
        value = row.get(name)
        if isinstance(value, bool) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
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
    sigma = _number(row, "sigmapsf")
    if sigma:
        return 2.5 / math.log(10) / sigma
    return None


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
    statuses, bands, dirs, reasons, flag_names = (_Index() for _ in range(5))
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
        _TEMPLATE.replace("__TITLE__", html.escape(title))
        .replace("__MADE__", html.escape(made))
        .replace("__COUNTS__", count_cells or "<td>no sources</td>")
        .replace("__SUMMARY__", summary)
        .replace("__DATA__", payload)
    )


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="zooprep preview">
<title>zooprep preview: __TITLE__</title>
<style>
:root { --fg:#1d1d1f; --muted:#666; --line:#d8d8dc; --bg:#f6f6f8; --accent:#2b6cb0; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
  color:var(--fg); background:var(--bg); }
header { padding:12px 18px; background:#fff; border-bottom:1px solid var(--line); }
header h1 { margin:0 0 4px; font-size:18px; }
header .made { color:var(--muted); font-size:12px; }
table.counts { border-collapse:collapse; margin-top:6px; }
table.counts td { padding:2px 8px 2px 0; }
td.num { text-align:right; font-variant-numeric:tabular-nums; padding-right:18px; }
#summary img { max-width:100%; height:auto; display:block; margin-top:8px; }
main { display:flex; align-items:flex-start; gap:16px; padding:14px 18px; }
aside { flex:0 0 250px; background:#fff; border:1px solid var(--line);
  border-radius:6px; padding:10px 12px; position:sticky; top:8px;
  max-height:calc(100vh - 16px); overflow:auto; }
aside h2 { font-size:13px; margin:12px 0 4px; text-transform:uppercase;
  letter-spacing:.04em; color:var(--muted); }
aside h2:first-child { margin-top:0; }
aside label { display:block; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
aside input[type=number] { width:80px; }
.flagrow { display:flex; justify-content:space-between; gap:6px; align-items:center;
  font-size:12px; margin:2px 0; }
.flagrow span { overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
#results { flex:1; min-width:0; }
.bar { display:flex; flex-wrap:wrap; gap:10px; align-items:center; margin-bottom:10px; }
.bar button { padding:3px 10px; }
#zp-count { font-weight:600; }
#grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(330px, 1fr)); gap:12px; }
figure.card { margin:0; background:#fff; border:1px solid var(--line); border-radius:6px;
  overflow:hidden; }
figure.card img { width:100%; height:auto; min-height:60px; display:block;
  background:#222; image-rendering:pixelated; }
.placeholder { height:110px; display:flex; align-items:center; justify-content:center;
  background:#eee; color:var(--muted); text-align:center; padding:8px; font-size:12px; }
figcaption { padding:6px 8px; font-size:12px; }
figcaption .id { font-weight:600; font-family:ui-monospace, monospace; }
.st { display:inline-block; padding:0 6px; border-radius:8px; font-size:11px;
  background:#e2e8f0; margin-left:4px; }
.st-failed { background:#fed7d7; color:#822727; }
.st-rendered { background:#c6f6d5; }
.st-uploaded, .st-linked { background:#bee3f8; }
.st-removed { background:#e2e2e2; color:#777; }
.chip { display:inline-block; padding:0 5px; margin:2px 2px 0 0; border-radius:3px;
  background:#fefcbf; border:1px solid #ecc94b; font-size:11px; }
.reason { color:#822727; margin-top:3px; word-break:break-word; }
.meta { color:#333; }
.empty { padding:30px; text-align:center; color:var(--muted); }
</style>
</head>
<body>
<header>
  <h1>zooprep preview: __TITLE__</h1>
  <div class="made">made __MADE__ &middot; cutouts load as you scroll;
    filters live in the address (#...), so a view can be bookmarked</div>
  <table class="counts"><tr>__COUNTS__</tr></table>
  <details id="summary" open><summary>Summary plots</summary>
    <img id="zp-summary" alt="reliability and S/N histograms, sources per visit"
      src="data:image/png;base64,__SUMMARY__">
  </details>
</header>
<main>
  <aside id="filters">
    <h2>Status</h2><div id="f-status"></div>
    <h2>Band</h2><div id="f-band"></div>
    <h2>Reliability</h2>
    <div><input id="f-rmin" type="number" step="0.01" placeholder="min"> to
      <input id="f-rmax" type="number" step="0.01" placeholder="max"></div>
    <h2>Id contains</h2><div><input id="f-id" type="search" size="22"></div>
    <h2>Flags</h2>
    <div class="flagrow"><span>any flag</span><select id="f-anyflag">
      <option value="">either</option><option value="any">some set</option>
      <option value="none">none set</option></select></div>
    <div id="f-flags"></div>
    <p><button id="f-reset" type="button">Reset filters</button></p>
  </aside>
  <section id="results">
    <div class="bar">
      <span id="zp-count"></span>
      <label>sort <select id="s-key">
        <option value="seq">selection order</option>
        <option value="reliability">reliability</option>
        <option value="snr">S/N</option>
        <option value="visit">visit</option>
        <option value="detector">detector</option>
        <option value="id">id</option>
        <option value="status">status</option>
      </select></label>
      <label><input id="s-desc" type="checkbox"> descending</label>
      <label>per page <select id="s-per">
        <option>30</option><option selected>60</option><option>120</option>
        <option>240</option></select></label>
      <button id="p-prev" type="button">&laquo; prev</button>
      <span id="p-info"></span>
      <button id="p-next" type="button">next &raquo;</button>
    </div>
    <div id="grid"></div>
  </section>
</main>
<script type="application/json" id="zp-data">__DATA__</script>
<script>
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("zp-data").textContent);
  const N = D.n;
  const $ = (id) => document.getElementById(id);
  const num = (a) => Float64Array.from(a, (v) => (v === null ? NaN : v));
  const REL = num(D.rel), SNR = num(D.snr), VISIT = num(D.visit), DET = num(D.detector);
  const SEQ = Float64Array.from(D.seq);
  const FLAGS = Float64Array.from(D.flags);
  const POW = D.flagNames.map((_, i) => Math.pow(2, i));
  const has = (i, f) => Math.floor(FLAGS[i] / POW[f]) % 2 === 1;
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) =>
    ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const fmt = (v, d) => (Number.isNaN(v) ? "&ndash;" : v.toFixed(d));
  const short = (f) => f.replace(/^pixelFlags_/, "px_");

  const S = { status: new Set(), band: new Set(), rmin: NaN, rmax: NaN, id: "",
    any: "", flag: new Set(), noflag: new Set(), sort: "seq", desc: false,
    per: 60, page: 1 };

  function readHash() {
    const p = new URLSearchParams(location.hash.replace(/^#/, ""));
    const list = (k) => new Set((p.get(k) || "").split(",").filter((x) => x !== ""));
    S.status = list("status"); S.band = list("band");
    const rel = (p.get("rel") || ":").split(":");
    S.rmin = rel[0] === "" ? NaN : Number(rel[0]);
    S.rmax = rel.length > 1 && rel[1] !== "" ? Number(rel[1]) : NaN;
    S.id = p.get("id") || "";
    const flags = list("flag"), noflags = list("noflag");
    S.any = flags.has("any") ? "any" : noflags.has("any") || flags.has("none") ? "none" : "";
    flags.delete("any"); flags.delete("none"); noflags.delete("any");
    S.flag = flags; S.noflag = noflags;
    const sort = p.get("sort") || "seq";
    S.desc = sort.startsWith("-"); S.sort = sort.replace(/^-/, "");
    S.per = Math.max(1, parseInt(p.get("per") || "60", 10) || 60);
    S.page = Math.max(1, parseInt(p.get("page") || "1", 10) || 1);
  }

  function writeHash() {
    const p = [];
    const add = (k, v) => { if (v !== "") p.push(k + "=" + encodeURIComponent(v).replace(/%2C/g, ",")); };
    add("status", [...S.status].join(","));
    add("band", [...S.band].join(","));
    if (!Number.isNaN(S.rmin) || !Number.isNaN(S.rmax))
      add("rel", (Number.isNaN(S.rmin) ? "" : S.rmin) + ":" + (Number.isNaN(S.rmax) ? "" : S.rmax));
    add("id", S.id);
    const flags = [...S.flag]; if (S.any === "any") flags.push("any");
    const noflags = [...S.noflag]; if (S.any === "none") noflags.push("any");
    add("flag", flags.join(",")); add("noflag", noflags.join(","));
    if (S.sort !== "seq" || S.desc) add("sort", (S.desc ? "-" : "") + S.sort);
    if (S.per !== 60) add("per", String(S.per));
    if (S.page !== 1) add("page", String(S.page));
    const h = p.length ? "#" + p.join("&") : " ";
    history.replaceState(null, "", h === " " ? location.pathname + location.search : h);
  }

  function filtered() {
    const code = (names, wanted) => new Set(names.map((n, i) => (wanted.has(n) ? i : -1)).filter((i) => i >= 0));
    const st = S.status.size ? code(D.statuses, S.status) : null;
    const bd = S.band.size ? code(D.bands, S.band) : null;
    const fi = D.flagNames.map((n, i) => (S.flag.has(n) ? i : -1)).filter((i) => i >= 0);
    const nf = D.flagNames.map((n, i) => (S.noflag.has(n) ? i : -1)).filter((i) => i >= 0);
    const unknownFlag = [...S.flag].some((n) => !D.flagNames.includes(n));
    const out = new Int32Array(N); let k = 0;
    if (unknownFlag) return out.subarray(0, 0);
    const lo = S.rmin, hi = S.rmax, idq = S.id;
    for (let i = 0; i < N; i++) {
      if (st && !st.has(D.status[i])) continue;
      if (bd && !bd.has(D.band[i])) continue;
      if (!Number.isNaN(lo) && !(REL[i] >= lo)) continue;
      if (!Number.isNaN(hi) && !(REL[i] <= hi)) continue;
      if (S.any === "any" && FLAGS[i] === 0) continue;
      if (S.any === "none" && FLAGS[i] !== 0) continue;
      let ok = true;
      for (const f of fi) if (!has(i, f)) { ok = false; break; }
      if (ok) for (const f of nf) if (has(i, f)) { ok = false; break; }
      if (!ok) continue;
      if (idq && D.id[i].indexOf(idq) < 0) continue;
      out[k++] = i;
    }
    return out.subarray(0, k);
  }

  const KEYS = { seq: SEQ, reliability: REL, snr: SNR, visit: VISIT, detector: DET };
  function sorted(idx) {
    const arr = Array.from(idx);
    const dir = S.desc ? -1 : 1;
    if (S.sort === "id") {
      arr.sort((a, b) => dir * (D.id[a].length - D.id[b].length || (D.id[a] < D.id[b] ? -1 : D.id[a] > D.id[b] ? 1 : 0)));
    } else if (S.sort === "status") {
      arr.sort((a, b) => dir * D.statuses[D.status[a]].localeCompare(D.statuses[D.status[b]]) || SEQ[a] - SEQ[b]);
    } else if (S.sort !== "seq" && KEYS[S.sort]) {
      const v = KEYS[S.sort];
      // Missing values go last whichever the direction.
      arr.sort((a, b) => {
        const x = v[a], y = v[b];
        if (Number.isNaN(x)) return Number.isNaN(y) ? SEQ[a] - SEQ[b] : 1;
        if (Number.isNaN(y)) return -1;
        return dir * (x - y) || SEQ[a] - SEQ[b];
      });
    } else if (S.desc) {
      arr.reverse();
    }
    return arr;
  }

  function src(i) {
    if (D.dir[i] < 0) return null;
    const folder = D.dirs[D.dir[i]];
    const name = D.file[i] || D.id[i] + ".png";
    return D.root + (folder ? folder + "/" : "") + name;
  }

  function card(i) {
    const status = D.statuses[D.status[i]];
    const url = src(i);
    const flags = D.flagNames.filter((_, f) => has(i, f));
    const reason = D.reasons[D.reason[i]];
    const pic = url
      ? '<a href="' + esc(url) + '" target="_blank"><img loading="lazy" decoding="async" src="' +
        esc(url) + '" alt="cutouts of ' + D.id[i] + '"></a>'
      : '<div class="placeholder">' + (status === "failed" ? "no cutout" : "not rendered yet") + "</div>";
    const where = [
      Number.isNaN(VISIT[i]) ? "" : "visit " + D.visit[i],
      Number.isNaN(DET[i]) ? "" : "det " + D.detector[i],
      D.bands[D.band[i]] ? "band " + esc(D.bands[D.band[i]]) : "",
    ].filter(Boolean).join(" &middot; ");
    return '<figure class="card" data-id="' + D.id[i] + '" data-status="' + esc(status) + '">' + pic +
      '<figcaption><span class="id">' + D.id[i] + '</span><span class="st st-' + esc(status) + '">' +
      esc(status) + "</span>" + (D.subject && D.subject[i] ? ' <span class="meta">subject ' + esc(D.subject[i]) + "</span>" : "") +
      '<div class="meta">' + where + "</div>" +
      '<div class="meta">reliability ' + fmt(REL[i], 3) + " &middot; S/N " + fmt(SNR[i], 1) + "</div>" +
      (flags.length ? "<div>" + flags.map((f) => '<span class="chip" title="' + esc(f) + '">' + esc(short(f)) + "</span>").join("") + "</div>" : "") +
      (reason ? '<div class="reason">' + esc(reason) + "</div>" : "") +
      "</figcaption></figure>";
  }

  function draw() {
    const idx = sorted(filtered());
    const pages = Math.max(1, Math.ceil(idx.length / S.per));
    if (S.page > pages) S.page = pages;
    const start = (S.page - 1) * S.per;
    const shown = idx.slice(start, start + S.per);
    $("grid").innerHTML = shown.length ? shown.map(card).join("") :
      '<div class="empty">No source matches these filters.</div>';
    const c = $("zp-count");
    c.textContent = idx.length.toLocaleString("en") + " of " + N.toLocaleString("en") + " sources";
    c.dataset.count = String(idx.length); c.dataset.total = String(N);
    c.dataset.shown = String(shown.length); c.dataset.page = String(S.page);
    c.dataset.pages = String(pages);
    $("p-info").textContent = "page " + S.page + " of " + pages;
    $("p-prev").disabled = S.page <= 1; $("p-next").disabled = S.page >= pages;
    document.body.dataset.ready = "1";
  }

  function controls() {
    const counts = (codes, names) => { const c = names.map(() => 0); for (const v of codes) c[v]++; return c; };
    const box = (el, names, set, cnt, key) => {
      el.innerHTML = names.map((n, i) => '<label><input type="checkbox" data-key="' + key +
        '" value="' + esc(n) + '"' + (set.has(n) ? " checked" : "") + "> " + esc(n || "(none)") +
        " (" + cnt[i].toLocaleString("en") + ")</label>").join("");
    };
    box($("f-status"), D.statuses, S.status, counts(D.status, D.statuses), "status");
    box($("f-band"), D.bands, S.band, counts(D.band, D.bands), "band");
    $("f-flags").innerHTML = D.flagNames.length ? D.flagNames.map((n, i) =>
      '<div class="flagrow"><span title="' + esc(n) + '">' + esc(short(n)) + " (" +
      D.flagCounts[i].toLocaleString("en") + ')</span><select data-flag="' + esc(n) + '">' +
      '<option value="">either</option><option value="set"' + (S.flag.has(n) ? " selected" : "") +
      '>set</option><option value="unset"' + (S.noflag.has(n) ? " selected" : "") +
      ">not set</option></select></div>").join("") : '<div class="meta">no flag is set on any source</div>';
    $("f-rmin").value = Number.isNaN(S.rmin) ? "" : S.rmin;
    $("f-rmax").value = Number.isNaN(S.rmax) ? "" : S.rmax;
    $("f-id").value = S.id; $("f-anyflag").value = S.any;
    $("s-key").value = S.sort; $("s-desc").checked = S.desc;
    $("s-per").value = String(S.per);
  }

  function changed(resetPage) { if (resetPage) S.page = 1; writeHash(); draw(); }

  document.addEventListener("change", (e) => {
    const t = e.target;
    if (t.dataset.key) {
      const set = S[t.dataset.key];
      if (t.checked) set.add(t.value); else set.delete(t.value);
    } else if (t.dataset.flag) {
      S.flag.delete(t.dataset.flag); S.noflag.delete(t.dataset.flag);
      if (t.value === "set") S.flag.add(t.dataset.flag);
      if (t.value === "unset") S.noflag.add(t.dataset.flag);
    } else if (t.id === "f-rmin" || t.id === "f-rmax") {
      S.rmin = $("f-rmin").value === "" ? NaN : Number($("f-rmin").value);
      S.rmax = $("f-rmax").value === "" ? NaN : Number($("f-rmax").value);
    } else if (t.id === "f-anyflag") { S.any = t.value; }
    else if (t.id === "s-key") { S.sort = t.value; }
    else if (t.id === "s-desc") { S.desc = t.checked; }
    else if (t.id === "s-per") { S.per = parseInt(t.value, 10); }
    else return;
    changed(true);
  });
  $("f-id").addEventListener("input", () => { S.id = $("f-id").value.trim(); changed(true); });
  $("f-reset").addEventListener("click", () => { location.hash = ""; readHash(); controls(); changed(true); });
  const go = (d) => { S.page += d; changed(false); window.scrollTo(0, $("results").offsetTop); };
  $("p-prev").addEventListener("click", () => go(-1));
  $("p-next").addEventListener("click", () => go(1));
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    if (e.key === "ArrowRight" && !$("p-next").disabled) go(1);
    if (e.key === "ArrowLeft" && !$("p-prev").disabled) go(-1);
  });
  // Mark each card whose thumbnail loaded (or failed to), for people and tests.
  const mark = (e) => {
    if (e.target.tagName !== "IMG") return;
    const fig = e.target.closest("figure");
    if (fig) fig.dataset.img = e.type === "load" ? "loaded" : "broken";
  };
  $("grid").addEventListener("load", mark, true);
  $("grid").addEventListener("error", mark, true);
  window.addEventListener("hashchange", () => { readHash(); controls(); draw(); });
  readHash(); controls(); draw();
})();
</script>
</body>
</html>
"""
