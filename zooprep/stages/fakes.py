"""``zooprep fakes``: known answers for a run, injected or named by a column.

Injected fakes (``--count N --mag A:B``) are point sources of known
magnitude put into the science and difference images of the run, never the
template, and added to the run as sources of their own, mixed in among the
real ones.  For each image (in the order the run's sources first use them):

1. read the science and difference images (and the science file's ``MASK``,
   ``VARIANCE`` and ``PSFIMAGE`` extensions when it has them);
2. take the zero point, gain and saturation level (`zooprep.injection`: the
   flags, else the variance plane for the gain, else the header) and the
   PSF (``PSFIMAGE``, an effective PSF from the image's stars, or a Gaussian
   of the measured seeing), recorded per image in ``RUN/fakes/plans.json``;
3. place the image's share of the fakes at random on allowed pixels (off
   edges, masked pixels and detected sources; apart from each other and from
   the run's sources), uniform in magnitude;
4. refuse, before anything is written, magnitudes that saturate and counts
   that do not fit;
5. draw each fake as flux x PSF with its photon noise (`zooprep.injection.draw_fake`),
   keep the counts it adds (``RUN/fakes/<n>.npz``, read back by render), and
   measure it on the injected images as the pipeline would (PSF and
   aperture flux, S/N), so its row looks like its neighbours'.

Every image is planned before anything is recorded; then the fakes, their
known answers (`zooprep.run.KnownAnswer`: magnitude, expected S/N, stream)
and the plans are committed in one transaction.  A stage killed before that
leaves no fake; running it again redoes the same fakes (everything is drawn
from ``--seed``).  Run again with the same settings, it does nothing.

Nothing tells a fake from a real source in the files or the visible
metadata: its id continues its image's id sequence, its columns are its
image's, its file is named by its id like every other, and it sits among the
real sources in the run's order (so in the manifest and the upload).  The
truth is in the run state and, written by the manifest, in hidden metadata.

Known answers from a column (``--truth-column COL``, any run, alert runs too):
the pipeline's own injected sources matched to DiaSources (true / 1), or an
expert's labels (``real`` / ``bogus``).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zooprep import injection as inj
from zooprep import interrupt
from zooprep.errors import InputError, SettingsMismatch
from zooprep.files import atomic_write, storage_guard
from zooprep.images import absolute, from_options
from zooprep.images.base import FileImages, ImageSource
from zooprep.images.fits import open_image
from zooprep.images.injected import PLANS, Injection, plan_key, save_injection
from zooprep.images.stamps import AlertStamps
from zooprep.options import FakesOptions, ImageOptions, RenderOptions
from zooprep.progress import NullReporter, Reporter
from zooprep.run import KnownAnswer, Run, Source
from zooprep.vocabulary import is_flag_column, truthy

__all__ = ["FakesResult", "fakes"]

log = logging.getLogger(__name__)

#: Faintest a brightest fake may be: its expected S/N on the difference image.
MIN_BRIGHT_SNR = 5.0
#: A fake's peak (with the sky under it) must stay below this share of saturation.
SATURATION_SHARE = 0.9
#: Cutout size assumed when the run has no render settings yet.
DEFAULT_SIZE = 30

_REAL = {"real", "injected", "fake", "transient", "true", "yes", "1"}
_BOGUS = {"bogus", "artefact", "artifact", "artifacts", "artefacts", "junk"}
_UNKNOWN = {"", "false", "f", "no", "n", "0", "none", "nan", "null", "unknown"}


@dataclass
class FakesResult:
    """What `fakes` did.

    Attributes
    ----------
    added : int
        Fakes injected and added as sources.
    marked : int
        Sources given a known answer from ``truth_column``.
    real, bogus : int
        Known-real and known-bogus subjects recorded by this call.
    training : int
        Of those, training subjects (the rest are blind).
    images : int
        Images that received fakes.
    psf : dict of str to int
        Images per PSF kind used.
    already : int
        Fakes the run already had with the same settings (nothing done).
    """

    added: int = 0
    marked: int = 0
    real: int = 0
    bogus: int = 0
    training: int = 0
    images: int = 0
    psf: dict[str, int] = field(default_factory=dict)
    already: int = 0

    def __str__(self) -> str:
        if self.already:
            return (
                f"fakes: the run already has these {self.already} fakes; nothing to do"
            )
        if self.marked:
            return (
                f"fakes: {self.marked} known answers from the column "
                f"({self.real} real, {self.bogus} bogus; {self.training} training, "
                f"{self.marked - self.training} blind)"
            )
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.psf.items()))
        return (
            f"fakes: {self.added} injected into {self.images} images "
            f"({self.training} training, {self.added - self.training} blind; "
            f"PSF: {kinds})"
        )


def fakes(
    run: str | os.PathLike[str],
    options: FakesOptions | Mapping[str, Any] | None = None,
    *,
    images: ImageSource | ImageOptions | Mapping[str, Any] | None = None,
    reporter: Reporter | None = None,
    **fields: Any,
) -> FakesResult:
    """Add known answers to a run: injected fakes, or sources a column names.

    Parameters
    ----------
    run : str or path-like
        The run directory (made by `zooprep.select`).
    options : FakesOptions or mapping, optional
        Count, magnitudes, seed, training share, PSF choice; or the truth
        column (`~zooprep.options.FakesOptions`).
    images : ImageSource, ImageOptions or mapping, optional
        The images to inject into, in render's words (``science``,
        ``template``, ``difference`` path templates, or ``butler`` ...); saved
        as the run's render images, so ``zooprep render RUN`` draws from the
        same ones.  None uses the run's saved render images.
    reporter : Reporter, optional
        Progress over the images.
    **fields
        The fields of `~zooprep.options.FakesOptions`, when ``options`` is
        not given.

    Returns
    -------
    FakesResult

    Raises
    ------
    zooprep.errors.InputError
        An alert run (no image to inject into), a magnitude range that
        saturates or that no image shows, a count that crowds an image, an
        image without zero point or gain, a truth column the sources lack or
        whose values say nothing: one line, before anything is written.
    zooprep.errors.SettingsMismatch
        The run has fakes made with other settings (``force`` replaces them).
    zooprep.errors.StorageError
        The run directory is full or cannot be written.
    """
    given = FakesOptions.coerce(options, fields)
    opts = given.resolved()
    reporter = reporter or NullReporter()
    with storage_guard(run, lambda: "no fake was added"), Run.open(run) as r:
        if opts.truth_column is not None:
            return _from_column(r, opts)
        return _inject(r, opts, images, reporter)


# -- known answers from a column ----------------------------------------------------


def _truth_of(value: Any, column: str, source_id: int) -> str | None:
    """'real', 'bogus' or None (unknown) for one cell of the truth column."""
    if value is None or isinstance(value, bool):
        return "real" if value else None
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isnan(value):
            return None
        return "real" if value else None
    text = str(value).strip().lower()
    if text in _UNKNOWN:
        return None
    if text in _REAL or truthy(text):
        return "real"
    if text in _BOGUS:
        return "bogus"
    raise InputError(
        f"source {source_id}: {column} = {value!r} says neither real (true, 1, "
        "real, injected) nor bogus (bogus, artefact); nothing was recorded"
    )


def _from_column(r: Run, options: FakesOptions) -> FakesResult:
    """Record the known answers a column names (nothing is injected)."""
    column = str(options.truth_column)
    rng = np.random.default_rng([options.seed, 7])
    answers: list[KnownAnswer] = []
    seen_column = False
    for src in r.iter_sources():
        if column not in src.row:
            continue
        seen_column = True
        truth = _truth_of(src.row.get(column), column, src.id)
        if truth is None:
            continue
        mag = _finite(src.row.get(options.truth_mag)) if options.truth_mag else None
        stream = "training" if rng.random() < options.training else "blind"
        answers.append(
            KnownAnswer(
                src.id,
                truth,
                "column",
                stream,
                mag=mag,
                snr=_finite(src.row.get("snr")),
            )
        )
    if not seen_column:
        raise InputError(
            f"no source of {r.path} has a column {column!r}; the columns are "
            f"{', '.join(_columns(r))}"
        )
    if not answers:
        raise InputError(
            f"column {column!r} marks no source as known real or bogus; nothing "
            "was recorded"
        )
    if options.truth_mag and not any(
        a.mag is not None for a in answers if a.truth == "real"
    ):
        raise InputError(
            f"--truth-mag {options.truth_mag!r}: no known-real source has a finite "
            "value there"
        )
    r.clear_known("column")
    r.record_known(answers)
    r.save(options)
    result = FakesResult(marked=len(answers))
    result.real = sum(1 for a in answers if a.truth == "real")
    result.bogus = len(answers) - result.real
    result.training = sum(1 for a in answers if a.stream == "training")
    log.info("%s", result)
    return result


def _finite(value: Any) -> float | None:
    """A finite float, or None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _columns(r: Run) -> list[str]:
    """Column names of the run's first sources."""
    cols: dict[str, None] = {}
    for n, src in enumerate(r.iter_sources(page=50)):
        cols.update(dict.fromkeys(src.row))
        if n >= 50:
            break
    return list(cols)


# -- injected fakes -------------------------------------------------------------------


@dataclass
class _Group:
    """The run's sources on one image."""

    key: Any
    sources: list[Source] = field(default_factory=list)


@dataclass
class _Plan:
    """One image's fakes, ready to record."""

    index: int
    injection: Injection
    rows: list[tuple[dict[str, Any], str | None]]
    answers: list[KnownAnswer]
    record: dict[str, Any]


def _inject(
    r: Run,
    options: FakesOptions,
    images: ImageSource | ImageOptions | Mapping[str, Any] | None,
    reporter: Reporter,
) -> FakesResult:
    """Plan every image's fakes, then record them all at once."""
    select = r.settings.select
    kind = select.kind if select is not None else None
    if kind == "alerts":
        raise InputError(
            f"{r.path} holds alert packets, whose stamps are cutouts, not images: "
            "no fake can be injected into them; mark known answers from a column "
            f"instead: zooprep fakes {r.path} --truth-column COL"
        )
    known = r.known_answers()
    injected = [a for a in known.values() if a.origin == "injected"]
    saved = r.settings.fakes
    if injected:
        if saved is not None and _plain(saved.to_toml()) == _plain(options.to_toml()):
            return FakesResult(already=len(injected))
        if not options.force:
            raise SettingsMismatch(
                f"{r.path} already has {len(injected)} fakes made with other "
                "settings; pass --force to replace them"
            )
        uploaded = [
            a.id for a in injected if (s := r.get(a.id)) is not None and s.subject_id
        ]
        if uploaded:
            raise SettingsMismatch(
                f"{len(uploaded)} fakes of {r.path} are uploaded already (source "
                f"{uploaded[0]}); they cannot be replaced: start a new run"
            )
        r.remove_fakes()
        known = r.known_answers()

    render = r.settings.render or RenderOptions.defaults()
    given_images: ImageOptions | None = None
    if isinstance(images, Mapping):
        given_images = ImageOptions(**images)
    elif isinstance(images, ImageOptions):
        given_images = images
    if given_images is not None:
        render = render.merge(images=absolute(given_images))
    source = (
        images
        if images is not None and given_images is None
        else from_options(render, kind)
    )
    assert not isinstance(source, Mapping | ImageOptions)
    if isinstance(source, AlertStamps):
        raise InputError(
            f"{r.path} has no images to inject into (its sources carry alert "
            f"stamps); mark known answers from a column: zooprep fakes {r.path} "
            "--truth-column COL"
        )
    source.check(_columns(r))
    id_column = str((select.id_column if select is not None else None) or "id")
    sizes = tuple(render.sizes or (DEFAULT_SIZE,))
    groups = _groups(r, source, set(known))
    shares = _shares(options.count or 0, [len(g.sources) for g in groups])

    reporter.start("fakes", sum(1 for n in shares if n))
    plans: list[_Plan] = []
    used_ids: set[int] = set()
    try:
        for index, (group, n) in enumerate(zip(groups, shares, strict=True)):
            if n == 0:
                continue
            # Stopped (SIGTERM, Ctrl-C): nothing is written yet; the same
            # command plans the same fakes again.
            interrupt.check(0, "(no fake was added)")
            plans.append(
                _plan_image(
                    r, index, group, n, source, options, sizes, id_column, used_ids
                )
            )
            reporter.advance(1)
    finally:
        reporter.finish()

    interrupt.check(0, "(no fake was added)")
    # Everything planned and checked: record it.
    folder = r.path / "fakes"
    folder.mkdir(exist_ok=True)
    for plan in plans:
        save_injection(folder / f"{plan.index}.npz", plan.injection)
    rows = [row for plan in plans for row in plan.rows]
    answers = [a for plan in plans for a in plan.answers]
    rng = np.random.default_rng([options.seed, 1_000_003])
    total = len(r)
    before = [int(v) for v in rng.integers(0, total + 1, size=len(rows))]
    records = [plan.record for plan in plans]
    atomic_write(
        r.path / PLANS,
        json.dumps({"images": records}, indent=1).encode("utf-8"),
    )
    if given_images is not None:  # render draws from the same images
        saved_render = r.settings.render or RenderOptions.record()
        r.save(saved_render.merge(images=render.images))
    r.add_fakes(rows, id_column, answers, before)
    r.save(options)
    result = FakesResult(added=len(rows), images=len(plans))
    result.real = len(rows)
    result.training = sum(1 for a in answers if a.stream == "training")
    for plan in plans:
        kind_psf = str(plan.record["psf"])
        result.psf[kind_psf] = result.psf.get(kind_psf, 0) + 1
    log.info("%s", result)
    return result


def _plain(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as ``zooprep.toml`` keeps them (no None values, lists of floats)."""
    return {
        k: [float(x) for x in v] if isinstance(v, list | tuple) else v
        for k, v in options.items()
        if v is not None
    }


def _groups(r: Run, source: ImageSource, skip: set[int]) -> list[_Group]:
    """The run's sources grouped by image, in the order the images are first used."""
    by_key: dict[str, _Group] = {}
    for src in r.iter_sources():
        if src.id in skip:
            continue
        key = source.group_key(src.row)
        text = plan_key(key)
        group = by_key.get(text)
        if group is None:
            group = by_key[text] = _Group(key)
        group.sources.append(src)
    return list(by_key.values())


def _shares(count: int, sizes: Sequence[int]) -> list[int]:
    """``count`` split over groups in proportion to ``sizes`` (largest remainders)."""
    total = sum(sizes)
    if total == 0:
        return [0] * len(sizes)
    exact = [count * s / total for s in sizes]
    out = [math.floor(e) for e in exact]
    for i in sorted(range(len(sizes)), key=lambda i: (out[i] - exact[i], i))[
        : count - sum(out)
    ]:
        out[i] += 1
    return out


def _extension(path: str, names: Sequence[str]) -> tuple[np.ndarray, Any] | None:
    """The data and header of the first image HDU named one of ``names``, or None."""
    from astropy.io import fits

    try:
        with fits.open(
            path, memmap=False, lazy_load_hdus=True, use_fsspec="://" in path
        ) as hdul:
            for hdu in hdul:
                name = str(hdu.header.get("EXTNAME", "")).strip().upper()
                if name in names and getattr(hdu, "data", None) is not None:
                    data = np.asarray(hdu.data)
                    if data.ndim == 2:
                        return data, hdu.header.copy()
    except (OSError, ValueError, TypeError) as exc:
        log.debug("%s: no %s extension (%s)", path, "/".join(names), exc)
    return None


def _variance_gain(
    image: np.ndarray, variance: np.ndarray, bad: np.ndarray
) -> float | None:
    """Electrons per count from the slope of variance against counts (1 / slope).

    None when the plane does not rise with the counts enough to measure it
    (a constant placeholder, or too few good pixels).
    """
    good = ~bad & np.isfinite(image) & np.isfinite(variance)
    if good.sum() < 100:
        return None
    x, y = image[good].astype(float), variance[good].astype(float)
    # medians in bins of the counts, robust to sources and cosmic rays
    edges = np.unique(np.percentile(x, np.linspace(1, 99.9, 25)))
    if len(edges) < 4:
        return None
    which = np.digitize(x, edges)
    xs, ys = [], []
    for b in range(1, len(edges)):
        sel = which == b
        if sel.sum() >= 10:
            xs.append(float(np.median(x[sel])))
            ys.append(float(np.median(y[sel])))
    if len(xs) < 3 or np.ptp(xs) <= 0:
        return None
    slope = float(np.polyfit(xs, ys, 1)[0])
    rise = slope * float(np.ptp(xs))
    if not (math.isfinite(slope) and slope > 0 and rise > 0.05 * abs(np.median(ys))):
        return None
    return 1.0 / slope


def _where(image: Any, row: Mapping[str, Any]) -> tuple[float, float]:
    """A source's position in an image's array frame (catalogue x/y, else ra/dec)."""
    x, y = _finite(row.get("x")), _finite(row.get("y"))
    if x is not None and y is not None:
        x0, y0 = image.origin
        return x - x0, y - y0
    ra, dec = _finite(row.get("ra")), _finite(row.get("dec"))
    wcs = image.wcs
    if ra is None or dec is None or wcs is None:
        return math.nan, math.nan
    px, py = wcs.world_to_pixel_values(ra, dec)
    return float(px), float(py)


def _plan_image(
    r: Run,
    index: int,
    group: _Group,
    count: int,
    source: ImageSource,
    options: FakesOptions,
    sizes: Sequence[int],
    id_column: str,
    used_ids: set[int],
) -> _Plan:
    """Measure one image, place and draw its fakes, and make their rows."""
    first = group.sources[0].row
    if not isinstance(source, FileImages):
        raise InputError(
            f"the image source {type(source).__name__} cannot say which files a "
            "source's images are; fakes need FITS path templates or a Butler"
        )
    sci_path, tmp_path, dif_path = source.paths(first)
    science = open_image(sci_path)
    difference = open_image(dif_path)
    ny, nx = science.shape
    if difference.shape != science.shape:
        raise InputError(
            f"{dif_path} ({difference.shape[1]}x{difference.shape[0]}) is not the "
            f"size of the science image {sci_path} ({nx}x{ny}); fakes need the two "
            "on one pixel grid"
        )
    sci = science.read(slice(0, ny), slice(0, nx)).astype(float)
    dif = difference.read(slice(0, ny), slice(0, nx)).astype(float)
    header = science.header
    where = f"image {sci_path}"

    mask = _extension(sci_path, ("MASK",))
    bad = ~np.isfinite(sci) | ~np.isfinite(dif)
    saturation = inj.header_saturation(header)
    if mask is not None:
        bits = inj.mask_bits(mask[1])
        planes = mask[0].astype(np.int64)
        bad |= (planes & bits) != 0 if bits != -1 else planes != 0
        sat_bits = inj.mask_bits(mask[1], ("SAT",))
        if saturation is None and sat_bits not in (-1, 0):
            flagged = (planes & sat_bits) != 0
            if flagged.any():
                saturation = (float(np.nanmin(sci[flagged])), "MASK SAT pixels")
    variance = _extension(sci_path, ("VARIANCE",))
    psf_hdu = _extension(sci_path, ("PSFIMAGE", "PSF"))

    if options.zeropoint is not None:
        zp, zp_from = float(options.zeropoint), "--zeropoint"
    else:
        found_zp = inj.header_zeropoint(header)
        if found_zp is None:
            raise InputError(
                f"{where}: no photometric zero point in its header (MAGZERO, "
                "PHOTZP, FLUXMAG0 or BUNIT nJy): give --zeropoint (the AB magnitude "
                "of one count)"
            )
        zp, zp_from = found_zp
    gain_from = ""
    if options.gain is not None:
        gain, gain_from = float(options.gain), "--gain"
    else:
        measured = (
            _variance_gain(sci, variance[0], bad) if variance is not None else None
        )
        if measured is not None:
            gain, gain_from = (
                measured,
                "VARIANCE plane (1 / slope of variance vs counts)",
            )
        else:
            found_gain = inj.header_gain(header)
            if found_gain is None:
                raise InputError(
                    f"{where}: no gain (no GAIN in its header, no VARIANCE plane) to "
                    "draw the fakes' photon noise: give --gain (electrons per count)"
                )
            gain, gain_from = found_gain
    sat_level = saturation[0] if saturation else None
    try:
        psf = inj.measure_psf(
            sci,
            header,
            bad=bad,
            psf_image=None if psf_hdu is None else psf_hdu[0],
            choice=options.psf,
            saturation=sat_level,
        )
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None

    biggest = max(int(s) for s in sizes)
    half_diagonal = biggest / 2 * math.sqrt(2)
    separation = options.separation or max(
        half_diagonal, 2 * psf.half * math.sqrt(2) + 1
    )
    margin = max(biggest // 2 + 1, psf.half)
    positions = [_where(science, s.row) for s in group.sources]
    allowed = inj.allowed_map(
        sci,
        dif,
        psf=psf,
        margin=margin,
        bad=bad,
        sources=positions,
        separation=separation,
    )
    rng = np.random.default_rng([options.seed, index])
    sky_noise = inj.flux_noise(
        dif, psf, allowed, np.random.default_rng([options.seed, index, 1])
    )
    sky = float(np.median(sci[~bad])) if (~bad).any() else 0.0
    _, pixel_noise = inj.sky_and_noise(dif, bad)
    facts = inj.ImageFacts(
        zeropoint=zp,
        gain=gain,
        saturation=sat_level,
        sky=sky,
        flux_noise=sky_noise,
        pixel_noise=pixel_noise,
        psf=psf,
        sources={"zeropoint": zp_from, "gain": gain_from},
    )
    bright, faint = options.mag
    _check_magnitudes(facts, bright, faint, where, saturation)
    try:
        placed = inj.place(rng, allowed, count, separation)
    except inj.Crowded as exc:
        raise InputError(
            f"--count {options.count}: {count} fakes would crowd {where}: only "
            f"{exc.placed} fit {separation:.0f} px apart, away from edges, masked "
            "pixels and sources; use a smaller --count (or --separation)"
        ) from None
    mags = rng.uniform(bright, faint, size=count)
    streams = rng.random(count) < options.training

    corners, stamps = [], []
    sci_injected = sci.copy()
    dif_injected = dif.copy()
    flux = facts.counts(mags)
    for j, (x, y) in enumerate(placed):
        noise_rng = np.random.default_rng([options.seed, index, 2, j])
        _, added, y0, x0 = inj.draw_fake(psf, x, y, float(flux[j]), gain, noise_rng)
        h, w = added.shape
        sci_injected[y0 : y0 + h, x0 : x0 + w] += added
        dif_injected[y0 : y0 + h, x0 : x0 + w] += added
        corners.append((y0, x0))
        stamps.append(added)
    injection = Injection(
        science=sci_path,
        difference=dif_path,
        corners=np.asarray(corners, dtype=np.int64).reshape(-1, 2),
        stamps=np.asarray(stamps, dtype=np.float32),
    )
    rows, answers = _rows(
        r,
        group,
        science,
        placed,
        mags,
        streams,
        facts,
        sci_injected,
        dif_injected,
        id_column,
        used_ids,
        index,
    )
    record = {
        "plan": index,
        "key": plan_key(group.key),
        "science": sci_path,
        "template": tmp_path,
        "difference": dif_path,
        "fakes": count,
        "psf": psf.kind,
        "psf_how": psf.how,
        "fwhm": round(psf.fwhm, 4),
        "zeropoint": zp,
        "zeropoint_from": zp_from,
        "gain": gain,
        "gain_from": gain_from,
        "saturation": sat_level,
        "saturation_from": saturation[1] if saturation else "not known (not checked)",
        "flux_noise": sky_noise,
        "pixel_noise": pixel_noise,
        "separation": separation,
        "margin": margin,
    }
    return _Plan(index, injection, rows, answers, record)


def _check_magnitudes(
    facts: inj.ImageFacts,
    bright: float,
    faint: float,
    where: str,
    saturation: tuple[float, str] | None,
) -> None:
    """Refuse magnitudes that saturate the image or that it cannot show."""
    if saturation is not None:
        level, named = saturation
        stamp, _, _ = facts.psf.draw(0.0, 0.0)
        peak_share = float(stamp.max())
        sky = max(facts.sky, 0.0)
        peak = facts.peak(bright) + sky
        if peak > SATURATION_SHARE * level:
            limit = facts.zeropoint - 2.5 * math.log10(
                (SATURATION_SHARE * level - sky) / peak_share
            )
            raise InputError(
                f"--mag {bright:g}:{faint:g}: a {bright:g} mag fake peaks at "
                f"{peak:.0f} counts on {where}, over {SATURATION_SHARE:.0%} of its "
                f"saturation level {level:.0f} ({named}); the brightest that stays "
                f"under it is {math.ceil(limit * 10) / 10:.1f} mag: use --mag "
                f"{math.ceil(limit * 10) / 10:.1f}:{faint:g}"
            )
    snr = float(facts.snr(bright))
    if snr < MIN_BRIGHT_SNR:
        raise InputError(
            f"--mag {bright:g}:{faint:g}: even a {bright:g} mag fake has S/N "
            f"{snr:.1f} on the difference image of {where}: volunteers would see "
            "nothing; use brighter magnitudes"
        )


def _id_step(values: Sequence[int]) -> int:
    """The common step of a group's ids (their differences' gcd), at least 1."""
    ordered = sorted(set(values))
    step = 0
    for a, b in itertools.pairwise(ordered):
        step = math.gcd(step, b - a)
    return max(step, 1)


def _new_ids(
    r: Run, values: Sequence[int], count: int, used: set[int], check_run: bool = True
) -> list[int]:
    """``count`` ids continuing a group's id sequence (unused by the run's sources)."""
    step = _id_step(values)
    out: list[int] = []
    candidate = max(values)
    while len(out) < count:
        candidate += step
        if candidate in used or (check_run and r.get(candidate) is not None):
            continue
        used.add(candidate)
        out.append(candidate)
    return out


def _rows(
    r: Run,
    group: _Group,
    science: Any,
    placed: Sequence[tuple[float, float]],
    mags: np.ndarray,
    streams: np.ndarray,
    facts: inj.ImageFacts,
    sci_injected: np.ndarray,
    dif_injected: np.ndarray,
    id_column: str,
    used_ids: set[int],
    index: int,
) -> tuple[list[tuple[dict[str, Any], str | None]], list[KnownAnswer]]:
    """The fakes' rows, looking like their image's sources, and their truth."""
    rows = [s.row for s in group.sources]
    columns: list[str] = []
    for row in rows:
        for c in row:
            if c not in columns:
                columns.append(c)
    constant = {
        c: rows[0].get(c)
        for c in columns
        if all(row.get(c) == rows[0].get(c) for row in rows)
    }
    ids = {id_column: _new_ids(r, [s.id for s in group.sources], len(placed), used_ids)}
    for c in columns:
        values = [
            int(row[c])
            for row in rows
            if isinstance(row.get(c), int) and not isinstance(row.get(c), bool)
        ]
        if c != id_column and c.endswith(("ObjectId", "objectId")) and values:
            ids[c] = _new_ids(r, values, len(placed), set(), check_run=False)
    x0, y0 = science.origin
    wcs = science.wcs
    zp = facts.zeropoint
    njy = float(inj.counts_to_njy(1.0, zp))
    sky_dif = float(np.median(dif_injected[np.isfinite(dif_injected)]))
    sky_sci = float(np.median(sci_injected[np.isfinite(sci_injected)]))
    out_rows: list[tuple[dict[str, Any], str | None]] = []
    answers: list[KnownAnswer] = []
    for j, (x, y) in enumerate(placed):
        fake: dict[str, Any] = dict.fromkeys(columns)
        fake.update(constant)
        for c, values in ids.items():
            fake[c] = values[j]
        for c in columns:
            if is_flag_column(c) and c not in constant:
                fake[c] = False
        fake["x"], fake["y"] = float(x + x0), float(y + y0)
        if wcs is not None and ("ra" in columns or "dec" in columns):
            ra, dec = wcs.pixel_to_world_values(x, y)
            fake["ra"], fake["dec"] = float(ra), float(dec)
        flux, _, chi2, ndata = inj.forced_photometry(
            dif_injected, facts.psf, x, y, facts.pixel_noise, sky_dif
        )
        flux_err = math.sqrt(
            facts.flux_noise**2 + facts.psf.poisson_factor * max(flux, 0.0) / facts.gain
        )
        sci_flux, _, _, _ = inj.forced_photometry(
            sci_injected, facts.psf, x, y, facts.pixel_noise, sky_sci
        )
        measured = {
            "psfFlux": flux * njy,
            "psfFluxErr": flux_err * njy,
            "snr": flux / flux_err if flux_err > 0 else None,
            "psfChi2": chi2,
            "psfNdata": ndata,
            "apFlux": _aperture(dif_injected, x, y, 2 * facts.psf.fwhm, sky_dif) * njy,
            "apFluxErr": facts.pixel_noise
            * math.sqrt(math.pi * (2 * facts.psf.fwhm) ** 2)
            * njy,
            "scienceFlux": sci_flux * njy,
            "scienceFluxErr": flux_err * njy,
        }
        for c, value in measured.items():
            if c in columns:
                fake[c] = value
        out_rows.append((fake, group.sources[0].grp))
        answers.append(
            KnownAnswer(
                id=int(fake[id_column]),
                truth="real",
                origin="injected",
                stream="training" if streams[j] else "blind",
                mag=float(mags[j]),
                snr=float(facts.snr(float(mags[j]))),
                flux=float(facts.counts(float(mags[j])) * njy),
                plan=index,
            )
        )
    return out_rows, answers


def _aperture(
    image: np.ndarray, x: float, y: float, radius: float, sky: float
) -> float:
    """Sum of ``image - sky`` within ``radius`` pixels of ``(x, y)``."""
    ny, nx = image.shape
    r = math.ceil(radius)
    cx, cy = math.floor(x + 0.5), math.floor(y + 0.5)
    ys = slice(max(0, cy - r), min(ny, cy + r + 1))
    xs = slice(max(0, cx - r), min(nx, cx + r + 1))
    yy, xx = np.mgrid[ys, xs]
    inside = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    data = image[ys, xs] - sky
    return float(np.nansum(np.where(inside, data, 0.0)))
