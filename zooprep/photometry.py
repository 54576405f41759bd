"""Photometric rules, defined once: AB magnitudes and nJy, and ZTF's signed fluxes.

Rubin measures fluxes in nanojansky; an AB magnitude ``m`` is the flux
``10**(-0.4 * (m - 31.4))`` nJy (`NJY_ZEROPOINT`: the AB magnitude of 1 nJy,
since 3631 Jy is magnitude 0).  ZTF alerts give a difference magnitude
``magpsf`` with its error ``sigmapsf`` and the sign of the difference in
``isdiffpos``: ``'t'`` when science minus reference is positive, ``'f'``
when the difference image is reference minus science (the source faded).
The alert reader (a row's ``psfFlux``), the light curves and the stamps'
annotation all use these functions.

Examples
--------
>>> round(mag_to_njy(31.4), 6), round(njy_to_mag(mag_to_njy(22.5)), 6)
(1.0, 22.5)
>>> ztf_flux(20.0, 0.1, "f")[0] < 0 < ztf_flux(20.0, 0.1, "t")[0]
True
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from zooprep.vocabulary import finite_number

__all__ = [
    "FLUX_UNITS",
    "NJY_ZEROPOINT",
    "FluxUnit",
    "ab_magnitudes",
    "flux_unit",
    "mag_to_njy",
    "magnitude_errors",
    "negative_difference",
    "njy_to_mag",
    "ztf_flux",
    "ztf_snr",
]

#: AB magnitude of 1 nJy.
NJY_ZEROPOINT = 31.4


class FluxUnit(NamedTuple):
    """A unit light curves show flux in: symbol, name spelt out, size in nJy."""

    symbol: str
    name: str
    njy: float


#: The units of a light curve's flux axis, smallest first.
FLUX_UNITS = (
    FluxUnit("nJy", "nanojansky", 1.0),
    FluxUnit("µJy", "microjansky", 1e3),
    FluxUnit("mJy", "millijansky", 1e6),
    FluxUnit("Jy", "jansky", 1e9),
)


def flux_unit(largest: float) -> FluxUnit:
    """The smallest unit in which a flux of ``largest`` nJy is below 999.5.

    (So that it is still below 1000 when rounded to three digits.)

    Tick labels then have at most three digits before the decimal point
    (``-800``, ``0.25``), so they fit the classifier's fixed chart margin
    and never need an exponent.

    >>> flux_unit(950).symbol, flux_unit(680_000).symbol, flux_unit(2e6).symbol
    ('nJy', 'µJy', 'mJy')
    """
    size = abs(float(largest)) if math.isfinite(largest) else 0.0
    for unit in FLUX_UNITS:
        if size < 999.5 * unit.njy:
            return unit
    return FLUX_UNITS[-1]


def mag_to_njy(mag: float) -> float:
    """An AB magnitude as a flux in nJy."""
    return float(10.0 ** (-0.4 * (mag - NJY_ZEROPOINT)))


def ab_magnitudes(flux: Any) -> np.ndarray:
    """Fluxes in nJy as AB magnitudes (NaN where a flux is not positive)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return NJY_ZEROPOINT - 2.5 * np.log10(np.asarray(flux, dtype=float))


def magnitude_errors(flux: Any, flux_err: Any) -> np.ndarray:
    """The magnitude errors of fluxes ``flux`` +/- ``flux_err`` (nJy)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.5 / np.log(10) * np.asarray(flux_err) / np.abs(np.asarray(flux))


def njy_to_mag(flux: Any) -> float | None:
    """A flux in nJy as an AB magnitude; None unless it is a positive number."""
    value = finite_number(flux)
    if value is None or value <= 0:
        return None
    return float(ab_magnitudes(value))


def negative_difference(isdiffpos: Any) -> bool:
    """Whether ZTF's ``isdiffpos`` says the difference is reference minus science.

    ``'f'`` (also ``'0'``, ``'false'``, any case) means negative; ``'t'``,
    ``'1'`` and a missing value mean positive.
    """
    return str(isdiffpos).strip().lower() in ("f", "0", "false")


def ztf_flux(
    magpsf: Any, sigmapsf: Any, isdiffpos: Any
) -> tuple[float | None, float | None]:
    """The signed difference flux and its error in nJy of a ZTF detection.

    Parameters
    ----------
    magpsf, sigmapsf : float
        Difference magnitude and its error (missing or NaN: no detection).
    isdiffpos : str
        The sign of the difference (`negative_difference`).

    Returns
    -------
    tuple of float or None
        ``(flux, error)``: ``(None, None)`` without a magnitude; the error is
        None unless ``sigmapsf`` is a positive number.
    """
    mag = finite_number(magpsf)
    if mag is None:
        return None, None
    flux = mag_to_njy(mag)
    if negative_difference(isdiffpos):
        flux = -flux
    sigma = finite_number(sigmapsf)
    err = (
        abs(flux) * sigma * math.log(10.0) / 2.5
        if sigma is not None and sigma > 0
        else None
    )
    return flux, err


def ztf_snr(sigmapsf: Any) -> float | None:
    """The signal-to-noise ratio of a ZTF detection with magnitude error ``sigmapsf``."""
    sigma = finite_number(sigmapsf)
    return 2.5 / math.log(10.0) / sigma if sigma is not None and sigma > 0 else None
