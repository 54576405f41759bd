"""``RUN/results.html``: how the volunteers' answers compare with the pipeline's score.

One self-contained file (no network, no scripts, inline CSS): the plots are
matplotlib figures (``Figure`` + Agg) embedded as base64 PNG, and so are the
cutouts in the galleries of the biggest disagreements.

- Calibration: sources binned by the pipeline score, the mean volunteer
  real fraction per bin against the mean score, with the count per bin.
- Score distribution per consensus answer.
- ROC of the score against the volunteers' consensus (real when the "real"
  answer has strictly the most votes; subjects without a consensus left out),
  with its area (AUC; ties in the score count one half).
- Galleries: the sources where score and real fraction differ most, both ways.
- What was skipped and why, and the rows used per workflow version.
- For a batch chosen by ``select --next``: the calibration after each batch
  (this run and those it learnt from), with its uncertainty, each stream's
  share and the labels each batch spent per 0.01 of calibration error
  (`_learning_section`).
- With known answers (``zooprep fakes``): completeness against injected
  magnitude and S/N (consensus, single classifications, skill-weighted vote,
  pipeline score) with binomial error bars and the fitted 50 % points;
  purity; each volunteer's skill (`_known_sections`).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from zooprep.stages.export import SKIP_REASONS

if TYPE_CHECKING:
    import pandas as pd

    from zooprep.learning import BatchStep
    from zooprep.stages.known import KnownReport

__all__ = ["ReportFacts", "calibration", "render_report", "roc_curve"]


class ReportFacts(Protocol):
    """What the report shows of a results call (`zooprep.stages.results.ResultsResult`)."""

    real_answer: str
    workflow_id: str
    task: str
    rows: int
    classifications: int
    subjects: int
    skipped: dict[str, int]
    versions: dict[str, dict[str, int]]


#: Cards per disagreement gallery.
GALLERY = 12
#: Cutouts larger than this are not embedded (bytes).
MAX_EMBED = 2_000_000

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1150px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;
padding:.2em .6em;text-align:right;font-size:.9em}th{background:#f3f3f3}
td.l,th.l{text-align:left}.note{color:#555;font-size:.9em}
figure{margin:.5em 0}figure img{max-width:100%}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ccc;border-radius:4px;padding:6px;width:260px;font-size:.8em}
.card img{width:100%;image-rendering:pixelated;background:#eee}
.card dl{display:grid;grid-template-columns:auto 1fr;gap:0 .5em;margin:.3em 0}
.card dt{color:#666}.card dd{margin:0;font-family:monospace}
"""


def _esc(value: Any) -> str:
    """HTML-escape any value."""
    return html.escape(str(value), quote=True)


def _png(fig: Any) -> str:
    """A matplotlib Figure as a base64 PNG data URI (rendered with Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def calibration(
    score: np.ndarray, real: np.ndarray, bins: int = 10
) -> list[dict[str, float]]:
    """Mean real fraction per score bin.

    Parameters
    ----------
    score : numpy.ndarray
        The pipeline's score per source (NaN rows are ignored).
    real : numpy.ndarray
        The volunteers' real fraction per source.
    bins : int
        Equal-width bins over [0, 1], or over the score's range when it
        leaves [0, 1].  A score equal to the upper edge falls in the last bin.

    Returns
    -------
    list of dict
        Per bin: ``lo``, ``hi``, ``n``, ``score`` (mean), ``real`` (mean) and
        ``err`` (standard error of the mean real fraction, NaN when n < 2).
    """
    ok = np.isfinite(score) & np.isfinite(real)
    s, f = score[ok], real[ok]
    lo, hi = 0.0, 1.0
    if len(s) and (s.min() < 0 or s.max() > 1):
        lo, hi = float(s.min()), float(s.max())
        hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    index = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        sel = index == b
        n = int(sel.sum())
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": n,
                "score": float(s[sel].mean()) if n else math.nan,
                "real": float(f[sel].mean()) if n else math.nan,
                "err": float(f[sel].std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
            }
        )
    return out


def roc_curve(
    score: np.ndarray, label: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC curve and its area for a score against boolean labels.

    Parameters
    ----------
    score : numpy.ndarray
        Higher means more likely real.
    label : numpy.ndarray of bool
        The reference (volunteers' consensus is real).

    Returns
    -------
    fpr, tpr : numpy.ndarray
        False and true positive rates, one point per distinct score, from
        (0, 0) to (1, 1).
    auc : float
        Area under the curve (trapezoids, so tied scores count one half);
        NaN when one class is empty.
    """
    order = np.argsort(-score, kind="stable")
    s, y = score[order], label[order].astype(bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]), math.nan
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index per score
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    tpr = np.r_[0.0, tp / npos]
    fpr = np.r_[0.0, fp / nneg]
    auc = float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))
    return fpr, tpr, auc


def _fig_calibration(cal: list[dict[str, float]], name: str) -> str:
    """The calibration plot with counts per bin."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax, axn = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    full = [c for c in cal if c["n"]]
    lo, hi = cal[0]["lo"], cal[-1]["hi"]
    ax.plot([lo, hi], [0, 1], ls=":", c="grey")
    ax.errorbar(
        [c["score"] for c in full],
        [c["real"] for c in full],
        yerr=[0 if math.isnan(c["err"]) else c["err"] for c in full],
        marker="o",
        c="#377eb8",
        capsize=3,
    )
    for c in full:
        ax.annotate(
            f"{c['n']}",
            (c["score"], c["real"]),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=8,
        )
    ax.set_ylabel("volunteer real fraction (mean)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"calibration: volunteers vs {name}")
    centres = [(c["lo"] + c["hi"]) / 2 for c in cal]
    axn.bar(
        centres, [c["n"] for c in cal], width=(hi - lo) / len(cal) * 0.9, color="#999"
    )
    axn.set_ylabel("sources")
    axn.set_xlabel(name)
    return _png(fig)


def _fig_distribution(
    score: np.ndarray, consensus: list[str | None], labels: Mapping[str, str], name: str
) -> str:
    """Histograms of the score per consensus answer."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    ok = np.isfinite(score)
    lo, hi = (0.0, 1.0)
    if ok.any() and (score[ok].min() < 0 or score[ok].max() > 1):
        lo, hi = float(score[ok].min()), float(score[ok].max()) or 1.0
    edges = np.linspace(lo, hi, 21)
    groups: dict[str, list[float]] = {}
    for s, c in zip(score, consensus, strict=True):
        if np.isfinite(s):
            key = "no consensus (tie)" if c is None else labels.get(c, c)
            groups.setdefault(key, []).append(float(s))
    for key, values in sorted(groups.items()):
        ax.hist(
            values,
            bins=list(edges),
            histtype="step",
            lw=1.8,
            label=f"{key} ({len(values)})",
        )
    ax.set_xlabel(name)
    ax.set_ylabel("sources")
    ax.set_title(f"{name} per volunteer consensus")
    if groups:
        ax.legend(fontsize=8)
    return _png(fig)


def _fig_roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, name: str) -> str:
    """The ROC curve."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 5.0), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.plot(fpr, tpr, c="#e41a1c", lw=2, drawstyle="default")
    ax.set_xlabel("false positive rate (volunteers: not real)")
    ax.set_ylabel("true positive rate (volunteers: real)")
    ax.set_title(f"ROC of {name}: AUC = {auc:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    return _png(fig)


def _cutout(run: Path, rel: str | None) -> str | None:
    """A cutout file as a data URI, when it exists and is small enough."""
    if not rel:
        return None
    path = Path(rel) if Path(rel).is_absolute() else run / rel
    try:
        if path.stat().st_size > MAX_EMBED:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _num(value: Any, fmt: str = ".3f") -> str:
    """A number for display (a dash when missing)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return "&ndash;"
    return "&ndash;" if math.isnan(f) else format(f, fmt)


def _gallery(
    run: Path,
    rows: pd.DataFrame,
    score: str,
    labels: Mapping[str, str],
    files: Mapping[int, str | None],
    flags: list[str],
) -> str:
    """Cards: cutout and numbers of each source in ``rows``."""
    if rows.empty:
        return "<p class='note'>none</p>"
    cards = []
    for rec in rows.to_dict("records"):
        sid = int(rec["source_id"])
        uri = _cutout(run, files.get(sid))
        img = (
            f"<img src='{uri}' alt='cutout of source {sid}'>"
            if uri
            else "<p class='note'>no cutout file</p>"
        )
        set_flags = [f for f in flags if rec.get(f) is True or rec.get(f) == 1]
        cons = rec.get("consensus")
        cards.append(
            f"<div class='card' data-source-id='{sid}'>{img}<dl>"
            f"<dt>source</dt><dd>{sid}</dd>"
            f"<dt>subject</dt><dd>{int(rec['subject_id'])}</dd>"
            f"<dt>{_esc(score)}</dt><dd>{_num(rec.get(score))}</dd>"
            f"<dt>real fraction</dt><dd>{_num(rec['real_fraction'])}</dd>"
            f"<dt>volunteers</dt><dd>{int(rec['n_volunteers'])}</dd>"
            f"<dt>consensus</dt><dd>{_esc(labels.get(cons, cons) if cons else 'tie')}</dd>"
            f"<dt>snr</dt><dd>{_num(rec.get('snr'), '.1f')}</dd>"
            f"<dt>flags</dt><dd>{_esc(', '.join(set_flags) or 'none')}</dd>"
            "</dl></div>"
        )
    return "<div class='gallery'>" + "".join(cards) + "</div>"


def render_report(
    run: Path,
    table: pd.DataFrame,
    result: ReportFacts,
    *,
    uploaded: int,
    answers: list[str],
    labels: Mapping[str, str],
    export: Path,
    workflow_name: str,
    aggregation_version: str,
    examples: Mapping[str, list[str]],
    score: str | None,
    files: Mapping[int, str | None],
    known: KnownReport | None = None,
    learning: list[BatchStep] | None = None,
) -> str:
    """The results page as one HTML string.

    Parameters
    ----------
    run : pathlib.Path
        The run directory (for the cutout files).
    table : pandas.DataFrame
        The results table (`zooprep.results` columns).
    result : ReportFacts
        Counts of what was used and skipped (a
        `~zooprep.stages.results.ResultsResult`).
    uploaded : int
        Subjects the run uploaded.
    answers : list of str
        Answer slugs, in column order.
    labels : mapping
        Answer slug to the label volunteers saw.
    export : pathlib.Path
        The classification export read.
    workflow_name : str
        The workflow's display name.
    aggregation_version : str
        panoptes-aggregation's version.
    examples : mapping
        A few example rows per skip reason.
    score : str or None
        The pipeline score column, None when the sources have none.
    files : mapping
        Source id to its cutout, relative to the run.
    known : zooprep.stages.known.KnownReport, optional
        What the run's known answers say (``zooprep fakes``).
    learning : list of zooprep.learning.BatchStep, optional
        The calibration after each batch (a run of ``select --next``).

    Returns
    -------
    str
        The page.
    """
    real = result.real_answer
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>zooprep results</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Volunteers vs pipeline: {_esc(run.name)}</h1>",
        "<table id='summary'>",
    ]
    summary = [
        ("export", export.name),
        ("workflow", f"{result.workflow_id} {workflow_name}"),
        ("task", result.task),
        ("'real' answer", f"{labels.get(real, real)} ({real})"),
        ("answers", ", ".join(f"{labels.get(a, a)} ({a})" for a in answers)),
        ("rows in export", result.rows),
        ("volunteer votes used", result.classifications),
        ("subjects with results", len(table)),
        ("uploaded subjects in run", uploaded),
        ("mapped by #zooprep_id", int((table["mapped_by"] == "zooprep_id").sum())),
        ("pipeline score", score or "none"),
        ("panoptes-aggregation", aggregation_version),
        ("written", datetime.now().astimezone().isoformat(timespec="seconds")),
    ]
    parts += [
        f"<tr><th class='l'>{_esc(k)}</th><td class='l'>{_esc(v)}</td></tr>"
        for k, v in summary
    ]
    parts.append("</table>")

    # What was skipped, and the versions.
    parts.append("<h2 id='skipped'>Rows not used as votes</h2>")
    if result.skipped:
        parts.append(
            "<table id='skipped-table'><tr><th class='l'>reason</th><th>rows</th>"
            "<th class='l'>meaning</th><th class='l'>e.g.</th></tr>"
        )
        for reason, n in result.skipped.items():
            parts.append(
                f"<tr data-reason='{_esc(reason)}'><td class='l'>{_esc(reason)}</td>"
                f"<td>{n}</td><td class='l'>{_esc(SKIP_REASONS[reason])}</td>"
                f"<td class='l'>{_esc('; '.join(examples.get(reason, [])[:3]))}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>every row was used</p>")
    parts.append(
        "<h2 id='versions'>Workflow versions</h2><p class='note'>Rows of workflow "
        f"{_esc(result.workflow_id)} per version. By default only the latest major "
        "version is used: a major version change means the tasks changed.</p>"
        "<table id='versions-table'><tr><th>version</th><th>rows used</th>"
        "<th>rows not used</th></tr>"
    )
    for version, counts in result.versions.items():
        parts.append(
            f"<tr><td>{_esc(version)}</td><td>{counts['used']}</td>"
            f"<td>{counts['skipped']}</td></tr>"
        )
    parts.append("</table>")

    if known is not None:
        parts += _known_sections(known)
    if score is None:
        parts.append(
            "<h2>Pipeline score</h2><p class='note'>The sources have no "
            "reliability (or drb/rb) column: no calibration or ROC.</p>"
        )
    else:
        parts += _score_sections(run, table, score, labels, real, files)
    if learning and score is not None:
        parts += _learning_section(learning, score)
    parts.append("</body></html>")
    return "\n".join(parts)


def _score_sections(
    run: Path,
    table: pd.DataFrame,
    score: str,
    labels: Mapping[str, str],
    real: str,
    files: Mapping[int, str | None],
) -> list[str]:
    """Calibration, distributions, ROC and galleries."""
    s = np.asarray(table[score].to_numpy(dtype=float, na_value=np.nan))
    f = np.asarray(table["real_fraction"].to_numpy(dtype=float))
    consensus = [None if not isinstance(c, str) else c for c in table["consensus"]]
    out: list[str] = []
    cal = calibration(s, f)
    out.append("<h2 id='calibration'>Calibration</h2>")
    if not any(c["n"] for c in cal):
        out.append(f"<p class='note'>no source has a {_esc(score)} value</p>")
        return out
    out.append(
        f"<figure><img id='fig-calibration' alt='calibration' src='{_fig_calibration(cal, score)}'>"
        "<figcaption class='note'>Mean volunteer real fraction per bin of "
        f"{_esc(score)}; error bars: standard error; numbers: sources per bin."
        "</figcaption></figure>"
    )
    out.append(
        "<table id='calibration-table'><tr><th>bin</th><th>sources</th>"
        f"<th>mean {_esc(score)}</th><th>mean real fraction</th></tr>"
    )
    for c in cal:
        out.append(
            f"<tr><td>{c['lo']:.2f}&ndash;{c['hi']:.2f}</td><td>{c['n']}</td>"
            f"<td>{_num(c['score'])}</td><td>{_num(c['real'])}</td></tr>"
        )
    out.append("</table>")
    out.append(
        "<h2 id='distribution'>Score per consensus</h2>"
        f"<figure><img id='fig-distribution' alt='score distribution' "
        f"src='{_fig_distribution(s, consensus, labels, score)}'></figure>"
    )
    keep = np.array([c is not None for c in consensus]) & np.isfinite(s)
    label = np.array([c == real for c in consensus])
    fpr, tpr, auc = roc_curve(s[keep], label[keep])
    out.append("<h2 id='roc'>ROC</h2>")
    if math.isnan(auc):
        out.append(
            "<p class='note'>All sources with a consensus have the same answer: "
            "no ROC.</p>"
        )
    else:
        out.append(
            f"<figure><img id='fig-roc' alt='ROC' src='{_fig_roc(fpr, tpr, auc, score)}'>"
            f"<figcaption class='note'>Volunteers' consensus as truth "
            f"({int(label[keep].sum())} real, {int((~label[keep]).sum())} not; "
            f"{int((~keep).sum())} without consensus or score left out). "
            f"<span id='auc'>AUC = {auc:.4f}</span></figcaption></figure>"
        )
    flags = [c for c in table.columns if "flag" in c.lower() or c == "isDipole"]
    diff = s - f
    scored = table.assign(_diff=diff)[np.isfinite(diff)]
    high = scored[scored["_diff"] > 0].sort_values("_diff", ascending=False)
    low = scored[scored["_diff"] < 0].sort_values("_diff")
    out.append(
        "<h2 id='pipeline-real'>Pipeline says real, volunteers do not</h2>"
        f"<p class='note'>largest {_esc(score)} &minus; real fraction</p>"
        + _gallery(run, high.head(GALLERY), score, labels, files, flags)
    )
    out.append(
        "<h2 id='volunteers-real'>Volunteers say real, pipeline does not</h2>"
        f"<p class='note'>largest real fraction &minus; {_esc(score)}</p>"
        + _gallery(run, low.head(GALLERY), score, labels, files, flags)
    )
    return out


#: Colour and label of each classifier's completeness curve.
_CLASSIFIER_STYLE = {
    "consensus": ("#377eb8", "consensus (most votes real)"),
    "single": ("#999999", "single classifications"),
    "swap": ("#4daf4a", "skill-weighted (SWAP p > 0.5)"),
    "pipeline": ("#e41a1c", "pipeline score"),
}


def _fig_completeness(known: KnownReport, quantity: str) -> str:
    """Completeness against injected magnitude (or S/N), every classifier."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax = fig.subplots()
    for who, (colour, label) in _CLASSIFIER_STYLE.items():
        c = known.curves.get((who, quantity))
        if c is None:
            continue
        low, high = c.interval()
        full = c.n > 0
        x = c.centres[full]
        y = c.fraction[full]
        ax.errorbar(
            x,
            y,
            yerr=[np.clip(y - low[full], 0, None), np.clip(high[full] - y, 0, None)],
            marker="o",
            ms=4,
            ls="none",
            c=colour,
            capsize=2,
            label=label,
        )
        fit = known.fits.get((who, quantity))
        if fit is not None:
            grid = (
                np.geomspace(c.edges[0], c.edges[-1], 200)
                if quantity == "snr"
                else np.linspace(c.edges[0], c.edges[-1], 200)
            )
            ax.plot(grid, fit(grid), c=colour, lw=1)
            ax.axvline(fit.x50, c=colour, ls=":", lw=1)
    ax.axhline(0.5, c="grey", lw=0.5)
    ax.set_ylim(-0.03, 1.05)
    ax.set_ylabel("completeness (found / known real)")
    if quantity == "snr":
        ax.set_xscale("log")
        ax.set_xlabel("injected S/N (expected, difference image)")
    else:
        ax.set_xlabel("injected AB magnitude")
    ax.set_title(
        f"completeness against injected {'S/N' if quantity == 'snr' else 'magnitude'}"
    )
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def _fig_skills(known: KnownReport) -> str:
    """The volunteers' skill: a histogram, and P(real|real) against P(bogus|bogus)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 3.8), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    both = known.bogus > 0
    values = [s.skill if both else s.p_real for s in known.skills]
    ax.hist(values, bins=20, color="#984ea3")
    ax.set_xlabel("skill  P_real + P_bogus - 1" if both else "P(says real | real)")
    ax.set_ylabel("volunteers")
    ax.set_title(f"{len(values)} volunteers with known answers")
    sizes = [10 + 2 * math.sqrt(s.known) for s in known.skills]
    ax2.scatter(
        [s.p_real for s in known.skills],
        [s.p_bogus for s in known.skills],
        s=sizes,
        c="#984ea3",
        alpha=0.6,
    )
    ax2.plot([0, 1], [1, 0], ls=":", c="grey")
    ax2.set_xlim(0, 1)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("P(says real | real)")
    ax2.set_ylabel("P(says not real | bogus)")
    ax2.set_title("confusion matrices (size: known answers)")
    return _png(fig)


def _known_sections(known: KnownReport) -> list[str]:
    """The report's part on the known answers."""
    out = [
        "<h2 id='known'>Known answers</h2><p class='note'>Subjects whose answer is "
        "known (zooprep fakes: injected fakes are real; a truth column's sources "
        f"are real or bogus): {known.real} real, {known.bogus} bogus with votes "
        f"({known.blind} blind, {known.training} training). Completeness is the "
        "share of the known-real ones a classifier calls real; the bars are 68 % "
        "binomial (Wilson) intervals, the lines maximum-likelihood logistic fits, "
        "the dotted lines their 50 % points. Single classifications count each "
        "volunteer's vote on a fake as one trial. The skill-weighted vote is "
        f"SWAP's (prior {known.prior:g}). The pipeline says real at score >= "
        f"{known.threshold:g}.</p>",
        "<table id='completeness'><tr><th class='l'>classifier</th>"
        "<th>known real</th><th>found</th><th>50 % magnitude</th>"
        "<th>50 % S/N</th></tr>",
    ]
    for who, (_, label) in _CLASSIFIER_STYLE.items():
        c = known.curves.get((who, "mag")) or known.curves.get((who, "snr"))
        if c is None:
            continue
        cells = []
        for quantity, fmt in (("mag", ".2f"), ("snr", ".1f")):
            fit = known.fits.get((who, quantity))
            if fit is None:
                cells.append("&mdash;")
            elif math.isfinite(fit.x50_err):
                cells.append(f"{fit.x50:{fmt}} &plusmn; {fit.x50_err:{fmt}}")
            else:  # a step with no known answer near it: no error to give
                cells.append(f"{fit.x50:{fmt}} (error not measurable)")
        out.append(
            f"<tr data-classifier='{_esc(who)}'><td class='l'>{_esc(label)}</td>"
            f"<td>{int(c.n.sum())}</td><td>{int(c.k.sum())}</td>"
            f"<td>{cells[0]}</td><td>{cells[1]}</td></tr>"
        )
    out.append("</table>")
    for quantity in ("mag", "snr"):
        if any(q == quantity for _, q in known.curves):
            out.append(
                f"<figure><img alt='completeness against {quantity}' "
                f"src='{_fig_completeness(known, quantity)}'></figure>"
            )
    if known.purity:
        out.append(
            "<h3>Purity on the known answers</h3><table id='purity'><tr>"
            "<th class='l'>classifier</th><th>called real</th><th>of them real</th>"
            "<th>purity</th><th>known bogus</th><th>called real</th>"
            "<th>false-positive rate</th></tr>"
        )
        for who, p in known.purity.items():
            low, high = p.interval()
            out.append(
                f"<tr><td class='l'>{_esc(_CLASSIFIER_STYLE[who][1])}</td>"
                f"<td>{p.called_real}</td><td>{p.true_real}</td>"
                f"<td>{_num(p.purity)}</td><td>{p.bogus}</td>"
                f"<td>{p.bogus_called_real}</td><td>{_num(p.false_positive_rate)} "
                f"({_num(low)}&ndash;{_num(high)})</td></tr>"
            )
        out.append(
            "</table><p class='note'>Purity here is that of the known-answer "
            "sample, whose mix of real and bogus was chosen; the false-positive "
            "rate on known bogus subjects does not depend on it.</p>"
        )
    if known.skills:
        out.append(
            "<h2 id='skills'>Volunteer skill</h2><p class='note'>Each volunteer's "
            "confusion matrix on the known answers (P_real: says real when real; "
            "P_bogus: says not real when bogus; one imaginary right and one wrong "
            "answer each, so a newcomer is 0.5 and 0.5). Skill = P_real + "
            "P_bogus - 1: 0 is guessing, 1 always right. All volunteers are in "
            "volunteers.csv.</p>"
            f"<figure><img alt='skills' src='{_fig_skills(known)}'></figure>"
            "<table id='skills-table'><tr><th class='l'>volunteer</th>"
            "<th>known real</th><th>said real</th><th>known bogus</th>"
            "<th>said not real</th><th>P_real</th><th>P_bogus</th><th>skill</th></tr>"
        )
        for sk in known.skills[:10] + known.skills[10:][-5:]:
            out.append(
                f"<tr><td class='l'>{_esc(sk.volunteer)}</td><td>{sk.real}</td>"
                f"<td>{sk.real_said_real}</td><td>{sk.bogus}</td>"
                f"<td>{sk.bogus_said_bogus}</td><td>{_num(sk.p_real)}</td>"
                f"<td>{_num(sk.p_bogus)}</td><td>{_num(sk.skill)}</td></tr>"
            )
        out.append("</table>")
    return out


def _learning_section(steps: list[BatchStep], score: str) -> list[str]:
    """The calibration after each batch: a table and the curves with +-1 sd."""
    from matplotlib.figure import Figure

    out = [
        "<h2 id='batches'>Batches: what choosing bought</h2>",
        "<p class='note'>The volunteers' real-fraction per bin of "
        f"{_esc(score)} (Beta posterior mean +- sd), fitted on each batch and "
        "those before it, every label weighted by one over its chance of being "
        "chosen. Calibration error: the RMS over the bins of the posterior sd. "
        "Labels per 0.01: the batch's labels over how far the error fell.</p>",
        "<table id='batches-table'><tr><th>batch</th><th class='l'>run</th>"
        "<th>labels</th><th>labels so far</th><th>strategy</th><th>random</th>"
        "<th>blind</th><th>calibration error</th><th>labels per 0.01</th></tr>",
    ]
    for k, step in enumerate(steps, start=1):
        shares = step.shares()
        out.append(
            f"<tr><td>{k}</td><td class='l'>{_esc(Path(step.run).name)}</td>"
            f"<td>{step.labels}</td><td>{step.total}</td>"
            + "".join(
                f"<td>{shares.get(s, 0.0):.0%}</td>"
                for s in ("strategy", "random", "blind")
            )
            + f"<td>{step.error:.4f}</td><td>{_num(step.labels_per_error, '.0f')}</td>"
            "</tr>"
        )
    out.append("</table>")
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    for k, step in enumerate(steps, start=1):
        cal = step.calibration
        line = ax.plot(
            cal.centres, cal.mean, marker="o", ms=3, label=f"after batch {k}"
        )
        ax.fill_between(
            cal.centres,
            cal.mean - cal.sd,
            cal.mean + cal.sd,
            color=line[0].get_color(),
            alpha=0.15,
        )
    ax.plot([steps[0].calibration.edges[0], steps[0].calibration.edges[-1]], [0, 1],
            ls=":", c="grey")  # fmt: skip
    ax.set_xlabel(score)
    ax.set_ylabel("volunteer real fraction")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=8)
    ax.set_title("calibration after each batch (+- 1 sd)")
    out.append(
        "<figure><img id='fig-batches' alt='calibration after each batch' "
        f"src='{_png(fig)}'></figure>"
    )
    return out
