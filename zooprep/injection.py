"""Fake point sources: an image's PSF, where fakes may go, and the pixels they add.

This module holds the science of ``zooprep fakes`` and nothing of the run:
plain numpy arrays and FITS headers in, plain values out.

Pixel convention as everywhere in zooprep (`zooprep.images.base`): arrays are
``[y, x]``, pixel centres at integer coordinates, the first pixel is 0.

What a fake is
--------------
A point source of flux ``F`` (image counts) at ``(x, y)`` adds
``F * P(x, y)`` to the science image, where ``P`` is the image's PSF
integrated over each pixel and normalised to sum 1 over the drawn stamp,
plus the photon noise of those counts: each pixel gets
``Poisson(F * P * g) / g`` with ``g`` the gain (electrons per count), so
the added noise has variance ``F * P / g``.  The same photons land in the
difference image (science minus the template matched to it), and nothing is
added to the template.

The PSF (`measure_psf`), in this order unless one is asked for:

1. ``psfimage``: an image HDU named ``PSFIMAGE`` (or ``PSF``) in the science
   file, the pipeline's PSF at the image centre;
2. ``epsf``: an effective PSF (Anderson & King 2000) built with photutils'
   `~photutils.psf.EPSFBuilder` from isolated, unsaturated stars of the
   science image (at least `MIN_EPSF_STARS`);
3. ``gaussian``: a circular Gaussian of the seeing measured on the image's
   stars (photutils' `~photutils.psf.fit_fwhm`), or of the header's
   ``FWHM``/``SEEING`` when no star can be measured.

How the choice was made is recorded per image (`PSFModel.how`).

The zero point, gain and saturation level come from the header, or the
arguments (`ImageFacts`).  Where fakes may go is `allowed_map`: inside the
margin, off masked (NaN or flagged) pixels, off everything detected in the
science and difference images, and away from the run's own sources; `place`
puts them there at random, apart from each other, or says how many fit.

photutils (the optional extra ``zooprep[fakes]``) is imported only when a PSF
is measured or sources are detected.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from zooprep.errors import InputError
from zooprep.options import PSF_CHOICES
from zooprep.photometry import NJY_ZEROPOINT

__all__ = [
    "AB_NJY_ZEROPOINT",
    "MIN_EPSF_STARS",
    "PSF_CHOICES",
    "Crowded",
    "ImageFacts",
    "PSFModel",
    "allowed_map",
    "counts_to_njy",
    "draw_fake",
    "expected_snr",
    "flux_noise",
    "forced_photometry",
    "header_gain",
    "header_saturation",
    "header_zeropoint",
    "mag_to_counts",
    "mask_bits",
    "measure_psf",
    "place",
    "require_photutils",
    "sky_and_noise",
]

log = logging.getLogger(__name__)

PSFKind = Literal["psfimage", "epsf", "gaussian"]

#: Fewest stars an effective PSF is built from; fewer give a Gaussian.
MIN_EPSF_STARS = 10
#: Oversampling of the effective PSF of an undersampled image (FWHM under
#: `WELL_SAMPLED` pixels) with at least `OVERSAMPLE_STARS` stars; otherwise 1
#: (with few stars an oversampled grid is mostly empty cells and noise).
EPSF_OVERSAMPLING = 2
WELL_SAMPLED = 2.5
OVERSAMPLE_STARS = 40
#: Stars for the PSF peak at least this many times the pixel noise.
STAR_PEAK_SNR = 5.0
#: The AB magnitude of 1 nJy (`zooprep.photometry`'s).
AB_NJY_ZEROPOINT = NJY_ZEROPOINT
#: A Gaussian stamp reaches this many FWHM (4.7 sigma) from the fake's centre (at least
#: `MIN_HALF` pixels): all but 2e-5 of its flux.
STAMP_FWHM = 2.0
MIN_HALF = 7

#: Header keywords, in order of preference.
ZEROPOINT_KEYS = ("MAGZERO", "MAGZPT", "MAGZP", "PHOTZP", "ZEROPT", "ZP", "ZPMAG")
GAIN_KEYS = ("GAIN", "EGAIN", "CCDGAIN", "GAINEFF")
SATURATION_KEYS = ("SATURATE", "SATLEVEL", "SATURATION")
FWHM_KEYS = ("FWHM", "PSF_FWHM", "FWHMPIX")
SEEING_KEYS = ("SEEING", "DIMMSEE", "FWHM_ARC")

#: LSST mask planes a fake must not touch (``MP_<NAME>`` header keywords give
#: each plane's bit).  ``DETECTED`` marks the footprints of detected sources.
AVOID_PLANES = (
    "BAD",
    "SAT",
    "INTRP",
    "CR",
    "EDGE",
    "NO_DATA",
    "SUSPECT",
    "CROSSTALK",
    "STREAK",
    "UNMASKEDNAN",
    "DETECTED",
    "DETECTED_NEGATIVE",
    "INJECTED",
)

_INSTALL = "pip install 'zooprep[fakes]'"


def require_photutils() -> Any:
    """Import photutils, or raise `~zooprep.errors.InputError` saying how to install it."""
    try:
        import photutils
        import photutils.psf
    except ImportError as exc:
        raise InputError(
            f"injecting fakes needs photutils (>= 2.0), which is missing here "
            f"({exc}); install it with {_INSTALL}"
        ) from None
    return photutils


# -- photometric calibration --------------------------------------------------


def mag_to_counts(mag: float | np.ndarray, zeropoint: float) -> Any:
    """Image counts of an AB magnitude: ``10 ** (-0.4 * (mag - zeropoint))``."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - zeropoint))


def counts_to_njy(counts: float | np.ndarray, zeropoint: float) -> Any:
    """Flux in nJy of image counts, given the zero point (AB mag of 1 count)."""
    return np.asarray(counts, dtype=float) * 10.0 ** (
        0.4 * (AB_NJY_ZEROPOINT - zeropoint)
    )


def _number(header: Mapping[str, Any], key: str) -> float | None:
    """A finite number from a header card, or None."""
    try:
        value = float(header[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def header_zeropoint(header: Mapping[str, Any]) -> tuple[float, str] | None:
    """The AB zero point the header gives, and the keyword; None when it gives none.

    ``MAGZERO`` and its kin; ``FLUXMAG0`` (counts of a magnitude-0 source, as
    older LSST exposures write); ``BUNIT = 'nJy'`` (calibrated Rubin images:
    31.4).
    """
    for key in ZEROPOINT_KEYS:
        value = _number(header, key)
        if value is not None and 10.0 < value < 45.0:
            return value, key
    flux0 = _number(header, "FLUXMAG0")
    if flux0 is not None and flux0 > 0:
        return 2.5 * math.log10(flux0), "FLUXMAG0"
    if str(header.get("BUNIT", "")).strip().lower() == "njy":
        return AB_NJY_ZEROPOINT, "BUNIT nJy"
    return None


def header_gain(header: Mapping[str, Any]) -> tuple[float, str] | None:
    """The gain (electrons per count) the header gives, and the keyword(s)."""
    for key in GAIN_KEYS:
        value = _number(header, key)
        if value is not None and value > 0:
            return value, key
    amps = [_number(header, k) for k in ("GAINA", "GAINB")]
    found = [v for v in amps if v is not None and v > 0]
    if found:
        return float(np.mean(found)), "GAINA/GAINB"
    return None


def header_saturation(header: Mapping[str, Any]) -> tuple[float, str] | None:
    """The saturation level (counts) the header gives, and the keyword(s)."""
    for key in SATURATION_KEYS:
        value = _number(header, key)
        if value is not None and value > 0:
            return value, key
    amps = [_number(header, k) for k in ("SATURATA", "SATURATB")]
    found = [v for v in amps if v is not None and v > 0]
    if found:
        return float(min(found)), "SATURATA/SATURATB"
    return None


def mask_bits(header: Mapping[str, Any], planes: Sequence[str] = AVOID_PLANES) -> int:
    """The bits of an LSST ``MASK`` HDU (``MP_<NAME>`` keywords) for ``planes``.

    Returns -1 (every bit) when the header names no plane.
    """
    bits = 0
    named = False
    for key in header:
        if str(key).startswith("MP_"):
            named = True
            if str(key)[3:] in planes:
                try:
                    bits |= 1 << int(header[key])
                except (TypeError, ValueError):
                    continue
    return bits if named else -1


# -- the PSF --------------------------------------------------------------------


@dataclass(frozen=True)
class PSFModel:
    """The point-spread function fakes are drawn with.

    Parameters
    ----------
    kind : {'psfimage', 'epsf', 'gaussian'}
        Where it came from (see the module docstring).
    how : str
        One line saying how it was obtained, recorded with the fakes.
    fwhm : float
        Full width at half maximum in pixels.
    image : numpy.ndarray or None
        The PSF image (``psfimage`` and ``epsf``), centred, oversampled by
        ``oversampling``.
    oversampling : int
        Oversampling factor of ``image``.
    """

    kind: PSFKind
    how: str
    fwhm: float
    image: np.ndarray | None = field(default=None, repr=False)
    oversampling: int = 1

    @property
    def half(self) -> int:
        """Half the side of a drawn stamp, in pixels.

        A Gaussian is drawn to `STAMP_FWHM` FWHM from its centre; an image PSF
        to its whole extent and one pixel more, wherever the centre falls
        within its pixel.
        """
        if self.image is not None:
            extent = (min(self.image.shape) / self.oversampling - 1) / 2
            return int(math.floor(extent) + 1)
        return int(max(MIN_HALF, math.ceil(STAMP_FWHM * self.fwhm)))

    def draw(self, x: float, y: float) -> tuple[np.ndarray, int, int]:
        """The PSF at ``(x, y)`` of unit flux, integrated over pixels.

        Unit flux means what photutils' models of it mean: the integral of the
        Gaussian (the stamp holds all but a millionth of it), or the sum of
        the PSF image, which the stamp holds whole (to the precision of its
        spline interpolation).  So a fake's flux is the flux photutils' PSF
        photometry with the same PSF measures.

        Parameters
        ----------
        x, y : float
            0-based pixel position of the point source.

        Returns
        -------
        stamp : numpy.ndarray
            ``(2 * half + 1)`` square, float64, non-negative.
        y0, x0 : int
            Image pixel of ``stamp[0, 0]``.
        """
        half = self.half
        cx, cy = math.floor(x + 0.5), math.floor(y + 0.5)
        y0, x0 = cy - half, cx - half
        yy, xx = np.mgrid[y0 : cy + half + 1, x0 : cx + half + 1].astype(float)
        if self.kind == "gaussian":
            stamp = _gaussian_prf(xx, yy, x, y, self.fwhm)
        else:
            assert self.image is not None
            from photutils.psf import ImagePSF

            model = ImagePSF(
                self.image, flux=1.0, x_0=x, y_0=y, oversampling=self.oversampling
            )
            stamp = np.asarray(model(xx, yy), dtype=float)
        stamp = np.where(np.isfinite(stamp) & (stamp > 0), stamp, 0.0)
        if not stamp.sum() > 0:
            raise InputError(f"the {self.kind} PSF is empty at x={x:.1f}, y={y:.1f}")
        return stamp, y0, x0

    @property
    def poisson_factor(self) -> float:
        """``sum(P**3) / sum(P**2)**2``: the source's own photon noise in a PSF flux.

        A PSF fit (the best linear estimate on a flat sky) of a source of
        ``F`` counts has, from the source's photons alone, the variance
        ``F / gain`` times this factor (4/3 for a Gaussian; at least 1).
        """
        stamp, _, _ = self.draw(0.0, 0.0)
        return float((stamp**3).sum() / (stamp**2).sum() ** 2)


def _gaussian_prf(
    xx: np.ndarray, yy: np.ndarray, x: float, y: float, fwhm: float
) -> np.ndarray:
    """A circular Gaussian integrated over each pixel (exact, with erf)."""
    from scipy.special import erf

    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    s = sigma * math.sqrt(2.0)
    fx = 0.5 * (erf((xx - x + 0.5) / s) - erf((xx - x - 0.5) / s))
    fy = 0.5 * (erf((yy - y + 0.5) / s) - erf((yy - y - 0.5) / s))
    return np.asarray(fx * fy, dtype=float)


def _colnames(table: Any, *names: str) -> str:
    """The first of ``names`` that is a column of ``table`` (photutils renamed some)."""
    for name in names:
        if name in table.colnames:
            return name
    raise KeyError(names[0])


def _pixel_scale(header: Mapping[str, Any]) -> float | None:
    """Arcsec per pixel from a header's celestial WCS, or None."""
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wcs = WCS(header, naxis=2)
        except Exception:  # astropy raises many kinds on a bad WCS
            return None
    if not wcs.has_celestial:
        return None
    return float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)


def header_fwhm(header: Mapping[str, Any]) -> tuple[float, str] | None:
    """The seeing FWHM in pixels the header gives, and the keyword."""
    for key in FWHM_KEYS:
        value = _number(header, key)
        if value is not None and 0.5 < value < 100:
            return value, key
    scale = _pixel_scale(header)
    for key in SEEING_KEYS:
        value = _number(header, key)
        if value is not None and value > 0 and scale:
            return value / scale, f"{key} / pixel scale"
    return None


@dataclass(frozen=True)
class _Stars:
    """Point sources found on the science image."""

    x: np.ndarray
    y: np.ndarray
    peak: np.ndarray
    good: np.ndarray  # isolated, unsaturated, inside, unmasked


def _find_stars(
    science: np.ndarray,
    bad: np.ndarray,
    fwhm: float,
    noise: float,
    saturation: float | None,
    sky: float,
) -> _Stars:
    """Stars of the science image (DAOStarFinder), and which are fit for a PSF."""
    from photutils.detection import DAOStarFinder

    finder = DAOStarFinder(fwhm=fwhm, threshold=5.0 * noise, exclude_border=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no sources found" is an answer here
        table = finder(np.where(bad, 0.0, science), mask=bad)
    if table is None or len(table) == 0:
        empty = np.zeros(0)
        return _Stars(empty, empty, empty, empty.astype(bool))
    x = np.asarray(table[_colnames(table, "x_centroid", "xcentroid")], dtype=float)
    y = np.asarray(table[_colnames(table, "y_centroid", "ycentroid")], dtype=float)
    peak = np.asarray(table["peak"], dtype=float)
    flux = np.asarray(table["flux"], dtype=float)
    round1 = np.abs(np.asarray(table["roundness1"], dtype=float))
    round2 = np.abs(np.asarray(table["roundness2"], dtype=float))
    ny, nx = science.shape
    reach = math.ceil(2.5 * fwhm) + 2
    inside = (x >= reach) & (x < nx - reach) & (y >= reach) & (y < ny - reach)
    if len(x) > 1:
        d2 = (x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2
        np.fill_diagonal(d2, np.inf)
        isolated = d2.min(axis=1) > (3.0 * fwhm) ** 2
    else:
        isolated = np.ones(len(x), dtype=bool)
    level = saturation if saturation is not None else np.inf
    unsaturated = peak + sky < 0.7 * level
    if saturation is None and len(peak) > 3:
        # no level known: leave out the brightest stars
        unsaturated &= peak < np.percentile(peak, 95)
    bright = (flux > 0) & (peak > STAR_PEAK_SNR * noise)
    clean = np.array(
        [
            not bad[
                max(0, int(yi) - reach) : int(yi) + reach + 1,
                max(0, int(xi) - reach) : int(xi) + reach + 1,
            ].any()
            for xi, yi in zip(x, y, strict=True)
        ],
        dtype=bool,
    )
    point = (round1 < 0.6) & (round2 < 0.6)
    return _Stars(x, y, peak, inside & isolated & unsaturated & bright & clean & point)


def _fit_fwhm(science: np.ndarray, stars: _Stars, fwhm: float) -> np.ndarray:
    """Gaussian FWHM of the good stars (photutils' fit_fwhm), finite ones only."""
    from photutils.psf import fit_fwhm

    if not stars.good.any():
        return np.zeros(0)
    box = 2 * math.ceil(fwhm) + 1
    xy = np.column_stack([stars.x[stars.good], stars.y[stars.good]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a star that does not fit is dropped below
        try:
            found = np.asarray(fit_fwhm(science, xypos=xy, fit_shape=box), dtype=float)
        except (ValueError, RuntimeError):
            return np.zeros(0)
    return found[np.isfinite(found) & (found > 0.5) & (found < 100)]


def _build_epsf(
    science: np.ndarray, stars: _Stars, fwhm: float
) -> tuple[np.ndarray, int, int]:
    """An effective PSF from the good stars (photutils' EPSFBuilder).

    Returns the PSF image (summing to ``oversampling**2``), the number of
    stars used and the oversampling.
    """
    from astropy.nddata import NDData
    from astropy.table import Table
    from photutils.psf import EPSFBuilder, extract_stars

    n = int(stars.good.sum())
    over = EPSF_OVERSAMPLING if fwhm < WELL_SAMPLED and n >= OVERSAMPLE_STARS else 1
    size = 2 * math.ceil(2.0 * fwhm) + 1
    table = Table({"x": stars.x[stars.good], "y": stars.y[stars.good]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # photutils warns on stars it drops
        cut = extract_stars(NDData(science), table, size=size)
        builder = EPSFBuilder(oversampling=over, maxiters=10, progress_bar=False)
        epsf, fitted = builder(cut)
    data = np.asarray(epsf.data, dtype=float)
    _check_epsf(data, over, fwhm)
    # A PSF is not negative: the noise of the wings is clipped, so that the
    # drawn fake and its flux are one non-negative profile.
    data = np.clip(data, 0.0, None)
    return data / data.sum() * over**2, len(fitted), over


def _check_epsf(data: np.ndarray, over: int, fwhm: float) -> None:
    """Raise ValueError unless the ePSF peaks at its centre with about the stars' width."""
    if not (np.isfinite(data).all() and data.sum() > 0):
        raise ValueError("the effective PSF is not finite and positive")
    ny, nx = data.shape
    peak_y, peak_x = np.unravel_index(int(np.argmax(data)), data.shape)
    if abs(peak_y - (ny - 1) / 2) > over or abs(peak_x - (nx - 1) / 2) > over:
        raise ValueError("the effective PSF does not peak at its centre")
    core = np.clip(data, 0.0, None)
    width = _image_fwhm(core) / over
    if not 0.5 * fwhm < width < 2.0 * fwhm:
        raise ValueError(
            f"the effective PSF is {width:.1f} px wide, the stars {fwhm:.1f} px"
        )


def measure_psf(
    science: np.ndarray,
    header: Mapping[str, Any],
    *,
    bad: np.ndarray | None = None,
    psf_image: np.ndarray | None = None,
    psf_image_name: str = "PSFIMAGE",
    choice: str = "auto",
    saturation: float | None = None,
) -> PSFModel:
    """The PSF of a science image, by the rule of the module docstring.

    Parameters
    ----------
    science : numpy.ndarray
        The science image (any background; NaN where there is no data).
    header : mapping
        Its header (``FWHM``/``SEEING`` as a last resort, the WCS for the
        pixel scale).
    bad : numpy.ndarray of bool, optional
        Pixels not to use (masked, NaN).
    psf_image : numpy.ndarray, optional
        The pipeline's PSF image (a ``PSFIMAGE`` HDU), centred.
    psf_image_name : str
        Where ``psf_image`` came from, for the record.
    choice : {'auto', 'psfimage', 'epsf', 'gaussian'}
        ``auto`` takes the first usable of the three.
    saturation : float, optional
        Saturation level; stars near it are not used.

    Returns
    -------
    PSFModel

    Raises
    ------
    zooprep.errors.InputError
        The PSF asked for cannot be had (no PSF HDU, too few stars), or no
        PSF at all (no star, no FWHM in the header).
    """
    if choice not in PSF_CHOICES:
        raise InputError(
            f"--psf must be one of {', '.join(PSF_CHOICES)}, not {choice!r}"
        )
    if choice in ("auto", "psfimage") and psf_image is not None:
        image = np.clip(np.asarray(psf_image, dtype=float), 0.0, None)
        if image.ndim == 2 and np.isfinite(image).all() and image.sum() > 0:
            image = image / image.sum()
            fwhm = _image_fwhm(image)
            return PSFModel(
                "psfimage",
                f"the pipeline's PSF image ({psf_image_name}, FWHM {fwhm:.2f} px)",
                fwhm,
                image,
                1,
            )
    if choice == "psfimage":
        raise InputError(
            "--psf psfimage: the science image has no PSFIMAGE (or PSF) image HDU"
        )
    require_photutils()
    data = np.asarray(science, dtype=float)
    bad = ~np.isfinite(data) if bad is None else (bad | ~np.isfinite(data))
    sky, noise = sky_and_noise(data, bad)
    guess = header_fwhm(header)
    # The seeing: find stars with a guess, fit their width, and again with
    # that width until it settles, so that it does not depend on the guess.
    fwhm = guess[0] if guess else 3.0
    widths = np.zeros(0)
    for _ in range(6):
        stars = _find_stars(data - sky, bad, fwhm, noise, saturation, sky)
        widths = _fit_fwhm(data - sky, stars, fwhm)
        if len(widths) < 3:
            break
        measured = float(np.median(widths))
        settled = abs(measured - fwhm) < 0.01 * fwhm
        fwhm = measured
        if settled:
            break
    stars = _find_stars(data - sky, bad, fwhm, noise, saturation, sky)
    n_good = int(stars.good.sum())
    if choice in ("auto", "epsf") and n_good >= MIN_EPSF_STARS and len(widths) >= 3:
        try:
            image, used, over = _build_epsf(data - sky, stars, fwhm)
        except (ValueError, RuntimeError) as exc:
            if choice == "epsf":
                raise InputError(
                    f"--psf epsf: no usable effective PSF ({exc})"
                ) from None
            log.info("no effective PSF (%s); using a Gaussian", exc)
        else:
            return PSFModel(
                "epsf",
                f"effective PSF from {used} stars (photutils EPSFBuilder, "
                f"oversampling {over}; star FWHM {fwhm:.2f} px)",
                fwhm,
                image,
                over,
            )
    if choice == "epsf":
        raise InputError(
            f"--psf epsf: only {n_good} isolated unsaturated stars on the science "
            f"image; an effective PSF needs at least {MIN_EPSF_STARS}"
        )
    if len(widths) >= 3:
        return PSFModel(
            "gaussian",
            f"Gaussian of the seeing measured on {len(widths)} stars "
            f"(FWHM {float(np.median(widths)):.2f} px)",
            float(np.median(widths)),
        )
    if guess is not None:
        return PSFModel(
            "gaussian",
            f"Gaussian of the header's seeing ({guess[1]}: FWHM {guess[0]:.2f} px)",
            float(guess[0]),
        )
    raise InputError(
        "no PSF: no PSFIMAGE HDU, too few stars to measure the seeing "
        f"({len(widths)}), and no FWHM or SEEING in the header"
    )


def _image_fwhm(image: np.ndarray) -> float:
    """FWHM (pixels of the image) of a centred PSF image, from its second moments."""
    ny, nx = image.shape
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    total = image.sum()
    cx, cy = (image * xx).sum() / total, (image * yy).sum() / total
    var = (image * ((xx - cx) ** 2 + (yy - cy) ** 2)).sum() / total / 2.0
    return float(2.0 * math.sqrt(2.0 * math.log(2.0)) * math.sqrt(max(var, 1e-6)))


def sky_and_noise(data: np.ndarray, bad: np.ndarray) -> tuple[float, float]:
    """Sigma-clipped median and standard deviation of the good pixels."""
    from astropy.stats import sigma_clipped_stats

    good = data[~bad]
    if good.size < 16:
        raise InputError("too few unmasked pixels to measure the background")
    _, median, std = sigma_clipped_stats(good, sigma=3.0, maxiters=10)
    if not (math.isfinite(std) and std > 0):
        raise InputError("the image has no noise to measure (constant pixels)")
    return float(median), float(std)


# -- where fakes may go ---------------------------------------------------------


def _detected(
    image: np.ndarray, bad: np.ndarray, fwhm: float, both_signs: bool
) -> np.ndarray:
    """Pixels of sources detected at 3 sigma (photutils), grown by one FWHM."""
    from astropy.convolution import Gaussian2DKernel, convolve
    from photutils.segmentation import detect_sources
    from scipy.ndimage import binary_dilation

    sigma = fwhm / 2.3548
    kernel = Gaussian2DKernel(sigma, x_size=2 * math.ceil(3 * sigma) + 1)
    kernel.normalize()
    clean = np.where(bad, 0.0, image)
    smooth = convolve(clean, kernel, boundary="extend", normalize_kernel=True)
    # measured, not sigma / sqrt(kernel area): a difference image's noise is
    # correlated between pixels, so smoothing lowers it less than that
    _, smooth_noise = sky_and_noise(smooth, bad)
    found = np.zeros(image.shape, dtype=bool)
    signs = (1.0, -1.0) if both_signs else (1.0,)
    for sign in signs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no sources found" is an answer
            segm = detect_sources(
                sign * smooth, 3.0 * smooth_noise, npixels=5, mask=bad
            )
        if segm is not None:
            found |= segm.data > 0
    grow = max(1, math.ceil(fwhm))
    disk = _disk(grow)
    return np.asarray(binary_dilation(found, structure=disk), dtype=bool)


def _disk(radius: int) -> np.ndarray:
    """A boolean disk of the given radius (pixels)."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return np.asarray(xx**2 + yy**2 <= radius**2, dtype=bool)


def _stamp_mask(mask: np.ndarray, x: float, y: float, radius: float) -> None:
    """Set ``mask`` True within ``radius`` of ``(x, y)``, in place."""
    ny, nx = mask.shape
    r = math.ceil(radius)
    cx, cy = math.floor(x + 0.5), math.floor(y + 0.5)
    y0, y1 = max(0, cy - r), min(ny, cy + r + 1)
    x0, x1 = max(0, cx - r), min(nx, cx + r + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    mask[y0:y1, x0:x1] |= (xx - x) ** 2 + (yy - y) ** 2 <= radius**2


def allowed_map(
    science: np.ndarray,
    difference: np.ndarray,
    *,
    psf: PSFModel,
    margin: int,
    bad: np.ndarray | None = None,
    sources: Sequence[tuple[float, float]] = (),
    separation: float = 0.0,
) -> np.ndarray:
    """Where a fake's centre may go: a boolean map of the image.

    A fake's whole stamp stays off masked pixels, and its centre stays
    ``margin`` pixels from every edge, out of the footprints of sources
    detected in the science image (positive) and the difference image (both
    signs), grown by one FWHM, and ``separation`` pixels from each of
    ``sources`` (the run's own sources on this image).

    Parameters
    ----------
    science, difference : numpy.ndarray
        The two images fakes go into (same shape).
    psf : PSFModel
        Gives the stamp size and the FWHM.
    margin : int
        Pixels kept clear at each edge (at least the stamp's half side).
    bad : numpy.ndarray of bool, optional
        Masked pixels (NaN pixels are always bad).
    sources : sequence of (x, y)
        Positions (array frame) to keep ``separation`` from.
    separation : float
        Pixels between a fake and any of ``sources``.

    Returns
    -------
    numpy.ndarray of bool
    """
    require_photutils()
    from scipy.ndimage import binary_dilation

    sci = np.asarray(science, dtype=float)
    dif = np.asarray(difference, dtype=float)
    if sci.shape != dif.shape:
        raise InputError(
            f"science {sci.shape} and difference {dif.shape} images differ in shape"
        )
    bad = (
        (~np.isfinite(sci))
        | (~np.isfinite(dif))
        | (np.zeros(sci.shape, bool) if bad is None else bad)
    )
    ny, nx = sci.shape
    margin = max(int(margin), psf.half)
    ok = np.zeros(sci.shape, dtype=bool)
    if ny > 2 * margin and nx > 2 * margin:
        ok[margin : ny - margin, margin : nx - margin] = True
    # a fake's stamp is the square of side 2 half + 1 around its pixel
    square = np.ones((2 * psf.half + 1, 2 * psf.half + 1), dtype=bool)
    ok &= ~binary_dilation(bad, structure=square)
    sky_s, _ = sky_and_noise(sci, bad)
    sky_d, _ = sky_and_noise(dif, bad)
    ok &= ~_detected(sci - sky_s, bad, psf.fwhm, both_signs=False)
    ok &= ~_detected(dif - sky_d, bad, psf.fwhm, both_signs=True)
    blocked = np.zeros(sci.shape, dtype=bool)
    for x, y in sources:
        if math.isfinite(x) and math.isfinite(y):
            _stamp_mask(blocked, x, y, separation + _HALF_DIAGONAL)
    return np.asarray(ok & ~blocked, dtype=bool)


#: A position is anywhere within its pixel: pixels whose centre is this much
#: farther than a distance are kept out too.
_HALF_DIAGONAL = math.sqrt(0.5)


class Crowded(InputError):
    """Not every fake fits on an image; ``placed`` did."""

    def __init__(self, message: str, placed: int) -> None:
        super().__init__(message)
        self.placed = placed


def place(
    rng: np.random.Generator, allowed: np.ndarray, count: int, separation: float
) -> list[tuple[float, float]]:
    """Random positions on allowed pixels, each ``separation`` pixels from the others.

    Positions are uniform within their pixel (sub-pixel offsets in
    ``[-0.5, 0.5)``).  The order of draws depends only on ``rng``.

    Raises
    ------
    Crowded
        Fewer than ``count`` positions fit; its ``placed`` says how many did.
    """
    taken = ~allowed
    out: list[tuple[float, float]] = []
    while len(out) < count:
        candidates = np.flatnonzero(~taken)
        if candidates.size == 0:
            raise Crowded(
                f"only {len(out)} of {count} fakes fit {separation:.0f} px apart "
                "away from edges, masked pixels and sources",
                len(out),
            )
        k = candidates[int(rng.integers(candidates.size))]
        iy, ix = divmod(int(k), allowed.shape[1])
        dx, dy = rng.uniform(-0.5, 0.5, size=2)
        x, y = ix + float(dx), iy + float(dy)
        out.append((x, y))
        _stamp_mask(taken, x, y, separation + _HALF_DIAGONAL)
    return out


# -- drawing and measuring --------------------------------------------------------


def draw_fake(
    psf: PSFModel,
    x: float,
    y: float,
    flux: float,
    gain: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The counts one fake adds: its expected stamp and a photon-noise draw of it.

    Parameters
    ----------
    psf : PSFModel
        The image's PSF.
    x, y : float
        0-based position (array frame).
    flux : float
        Total counts.
    gain : float
        Electrons per count.
    rng : numpy.random.Generator
        The fake's own generator (its noise is a function of it alone).

    Returns
    -------
    expected : numpy.ndarray
        ``flux * PSF`` (float64).
    added : numpy.ndarray
        ``Poisson(expected * gain) / gain`` (float32): what goes into the
        science and difference images.
    y0, x0 : int
        Image pixel of the stamps' ``[0, 0]``.
    """
    if not (flux > 0 and math.isfinite(flux)):
        raise InputError(f"a fake's flux must be positive and finite, not {flux}")
    if not (gain > 0 and math.isfinite(gain)):
        raise InputError(f"the gain must be positive and finite, not {gain}")
    shape, y0, x0 = psf.draw(x, y)
    expected = flux * shape
    electrons = rng.poisson(expected * gain)
    added = (electrons / gain).astype(np.float32)
    return expected, added, y0, x0


def forced_photometry(
    image: np.ndarray,
    psf: PSFModel,
    x: float,
    y: float,
    noise: float,
    background: float = 0.0,
) -> tuple[float, float, float, int]:
    """PSF flux at a fixed position: the least-squares scale of the PSF stamp.

    With the pixel noise ``noise`` the same everywhere, the best linear
    estimate is ``sum(P * d) / sum(P**2)``, of variance
    ``noise**2 / sum(P**2)``.  Pixels that are NaN or off the image are left
    out (the PSF is renormalised to what remains).

    Returns
    -------
    flux, error, chi2, ndata : float, float, float, int
    """
    stamp, y0, x0 = psf.draw(x, y)
    ny, nx = image.shape
    h, w = stamp.shape
    ys, xs = slice(max(0, y0), min(ny, y0 + h)), slice(max(0, x0), min(nx, x0 + w))
    data = np.asarray(image[ys, xs], dtype=float) - background
    p = stamp[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    good = np.isfinite(data)
    if not good.any():
        return float("nan"), float("nan"), float("nan"), 0
    p, d = p[good], data[good]
    pp = float((p * p).sum())
    flux = float((p * d).sum() / pp)
    error = float(noise / math.sqrt(pp))
    chi2 = float((((d - flux * p) / noise) ** 2).sum())
    return flux, error, chi2, int(good.sum())


def flux_noise(
    difference: np.ndarray,
    psf: PSFModel,
    allowed: np.ndarray,
    rng: np.random.Generator,
    n: int = 1000,
) -> float:
    """The noise of a PSF flux on the difference image, measured on blank sky.

    Forced PSF photometry at ``n`` random allowed positions (no fake there
    yet); the robust standard deviation (1.4826 MAD) of those fluxes.  It
    includes the pixel-to-pixel correlations a difference image has, which
    the pixel noise alone would miss.
    """
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0:
        raise InputError("no blank sky to measure the noise on")
    picks = candidates[rng.integers(candidates.size, size=n)]
    bad = ~np.isfinite(difference)
    sky, noise = sky_and_noise(np.asarray(difference, dtype=float), bad)
    fluxes = []
    for k in picks:
        iy, ix = divmod(int(k), allowed.shape[1])
        flux, _, _, _ = forced_photometry(difference, psf, ix, iy, noise, sky)
        if math.isfinite(flux):
            fluxes.append(flux)
    values = np.asarray(fluxes)
    mad = float(np.median(np.abs(values - np.median(values))))
    return 1.4826 * mad if mad > 0 else float(np.std(values))


def expected_snr(
    flux: float | np.ndarray, sky_flux_noise: float, gain: float, factor: float = 1.0
) -> Any:
    """S/N of a PSF flux: ``F / sqrt(sigma_sky**2 + factor * F / gain)``.

    ``factor`` is the PSF's `PSFModel.poisson_factor`.
    """
    f = np.asarray(flux, dtype=float)
    return f / np.sqrt(sky_flux_noise**2 + factor * np.maximum(f, 0.0) / gain)


@dataclass(frozen=True)
class ImageFacts:
    """What the fakes of one image were drawn with (recorded per image).

    Attributes
    ----------
    zeropoint : float
        AB magnitude of one count.
    gain : float
        Electrons per count.
    saturation : float or None
        Saturation level in counts (None: not known, not checked).
    sky : float
        Median of the science image (its background level).
    flux_noise : float
        Noise of a PSF flux on the blank difference image (counts).
    pixel_noise : float
        Pixel noise of the difference image (counts).
    psf : PSFModel
        The PSF.
    sources : dict of str to str
        Where each number came from (``{"zeropoint": "MAGZERO", ...}``).
    """

    zeropoint: float
    gain: float
    saturation: float | None
    sky: float
    flux_noise: float
    pixel_noise: float
    psf: PSFModel
    sources: dict[str, str] = field(default_factory=dict)

    def counts(self, mag: float | np.ndarray) -> Any:
        """Counts of an AB magnitude on this image."""
        return mag_to_counts(mag, self.zeropoint)

    def snr(self, mag: float | np.ndarray) -> Any:
        """Expected S/N of a fake of this magnitude on the difference image."""
        return expected_snr(
            self.counts(mag), self.flux_noise, self.gain, self.psf.poisson_factor
        )

    def peak(self, mag: float) -> float:
        """The brightest pixel a fake of this magnitude adds (at a pixel centre)."""
        stamp, _, _ = self.psf.draw(0.0, 0.0)
        return float(self.counts(mag) * stamp.max())
