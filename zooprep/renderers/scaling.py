"""Normalisations and colour maps: cutout pixels to RGB bytes.

Three normalisations, each returning floats in ``[0, 1]`` (NaN where the input
has no finite value), with the semantics of `astropy.visualization`:

- `minmax_asinh`: ``MinMaxInterval`` + ``AsinhStretch(a=0.1)`` (template and
  science in the seed);
- `zscale_linear`: ``ZScaleInterval`` + ``LinearStretch``, clipped (difference
  in the seed);
- `central_asinh`: min/max of the central 15x15 pixels + ``AsinhStretch(a=0.1)``
  (the difference in current lsst.analysis.ap).

`zscale_limits` is a faster equivalent of ``ZScaleInterval().get_limits``
(the same sampling, rejection and limits, with the straight-line fit solved in
closed form instead of by ``numpy.polyfit``); the tests check it against
astropy on real images.  The interval and asinh steps are the numpy
operations astropy's ``BaseInterval.__call__`` and ``AsinhStretch.__call__``
perform, in the same order on the same types, without building astropy
objects per panel (the tests check the values are bit-identical).

Colours: `colormap_lut` turns a matplotlib colour map into a 256-entry lookup
table, and `colorize` maps normalised values through it the way matplotlib
does (``floor(x * 256)``, 1.0 in the last bin), painting non-finite pixels in
one fixed colour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "STRETCHES",
    "central_asinh",
    "colorize",
    "colormap_lut",
    "minmax_asinh",
    "parse_color",
    "to_index",
    "zscale_limits",
    "zscale_linear",
]


def _all_bad(data: np.ndarray) -> np.ndarray | None:
    """An all-NaN float array when ``data`` has no finite pixel, else None."""
    if np.isfinite(data).any():
        return None
    return np.full(data.shape, np.nan, dtype=np.float32)


def _as_float(data: np.ndarray) -> np.ndarray:
    """``data`` as a floating-point array (float32 stays float32)."""
    arr = np.asarray(data)
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return arr


def minmax_asinh(data: np.ndarray, a: float = 0.1) -> np.ndarray:
    """Min/max interval with an asinh stretch, as astropy computes it.

    Parameters
    ----------
    data : `~numpy.ndarray`
        Cutout pixels, ``[y, x]``; NaN (and inf) mean no data.
    a : float, optional
        The asinh stretch's ``a`` (astropy's default for the seed is 0.1).

    Returns
    -------
    `~numpy.ndarray`
        Values in ``[0, 1]``, NaN where ``data`` is not finite.  A constant
        image maps to 0.
    """
    arr = _as_float(data)
    bad = _all_bad(arr)
    if bad is not None:
        return bad
    ok = arr[np.isfinite(arr)]
    return _asinh(_interval(arr, np.min(ok), np.max(ok)), a)


def _interval(arr: np.ndarray, vmin: Any, vmax: Any) -> np.ndarray:
    """``(arr - vmin) / (vmax - vmin)`` clipped to [0, 1], as astropy's intervals.

    The operations of ``BaseInterval.__call__(arr, clip=True)``, with the
    limits as ``get_limits`` gives them (numpy scalars or floats).
    """
    values = np.subtract(arr, float(vmin))
    if (vmax - vmin) != 0:
        np.true_divide(values, vmax - vmin, out=values)
    np.clip(values, 0.0, 1.0, out=values)
    return values


def _asinh(values: np.ndarray, a: float) -> np.ndarray:
    """The ``AsinhStretch(a)(values, clip=True)`` of astropy, in place.

    ``values`` is a fresh array from `_interval`, already clipped to [0, 1],
    so the clipped copy astropy starts with would be the same values.
    """
    np.true_divide(values, a, out=values)
    np.arcsinh(values, out=values)
    np.true_divide(values, np.arcsinh(1.0 / a), out=values)
    return values


def central_asinh(data: np.ndarray, box: int = 15, a: float = 0.1) -> np.ndarray:
    """Min/max of the central ``box`` x ``box`` pixels, then an asinh stretch.

    Parameters
    ----------
    data : `~numpy.ndarray`
        Cutout pixels, ``[y, x]``.
    box : int, optional
        Side of the central box that sets the interval (15 in lsst.analysis.ap).
    a : float, optional
        The asinh stretch's ``a``.

    Returns
    -------
    `~numpy.ndarray`
        Values in ``[0, 1]`` (pixels outside the box's range are clipped),
        NaN where ``data`` is not finite.  When the box has no finite pixel
        the whole cutout's min/max is used.
    """
    arr = _as_float(data)
    bad = _all_bad(arr)
    if bad is not None:
        return bad
    ny, nx = arr.shape
    y0 = max(0, (ny - box) // 2)
    x0 = max(0, (nx - box) // 2)
    centre = arr[y0 : y0 + box, x0 : x0 + box]
    ok = centre[np.isfinite(centre)]
    if ok.size == 0:
        ok = arr[np.isfinite(arr)]
    return _asinh(_interval(arr, ok.min(), ok.max()), a)


def zscale_limits(
    data: np.ndarray,
    n_samples: int = 1000,
    contrast: float = 0.25,
    max_reject: float = 0.5,
    min_npixels: int = 5,
    krej: float = 2.5,
    max_iterations: int = 5,
) -> tuple[float, float]:
    """The limits of astropy's ``ZScaleInterval``, computed faster.

    The algorithm and parameters are astropy's (IRAF's zscale): sample up to
    ``n_samples`` finite pixels with a fixed stride, sort them, fit a line
    with iterative k-sigma rejection, and widen the median by the slope over
    ``contrast``.  The weighted line fit is solved in closed form rather than
    with ``numpy.polyfit``; the limits agree with astropy's to rounding.

    Parameters
    ----------
    data : `~numpy.ndarray`
        Pixels; non-finite values are ignored.  Must hold a finite value.
    n_samples, contrast, max_reject, min_npixels, krej, max_iterations
        As in `astropy.visualization.ZScaleInterval`.

    Returns
    -------
    vmin, vmax : float
        The interval's limits.
    """
    arr = np.asarray(data)
    values = arr[np.isfinite(arr)]
    stride = int(max(1.0, values.size / n_samples))
    samples = values[::stride][:n_samples]
    samples.sort()

    npix = len(samples)
    vmin = samples[0]
    vmax = samples[-1]

    minpix = max(min_npixels, int(npix * max_reject))
    x = np.arange(npix, dtype=np.float64)
    y = samples.astype(np.float64)
    ngoodpix = npix
    last_ngoodpix = npix + 1
    badpix = np.zeros(npix, dtype=bool)
    ngrow = max(1, int(npix * 0.01))
    kernel = np.ones(ngrow, dtype=bool)
    slope = np.float64(0.0)

    for _ in range(max_iterations):
        if ngoodpix >= last_ngoodpix or ngoodpix < minpix:
            break
        good = ~badpix
        xg = x[good]
        yg = y[good]
        xm = xg.sum() / xg.size
        ym = yg.sum() / yg.size
        dx = xg - xm
        slope = np.float64(np.dot(dx, yg - ym) / np.dot(dx, dx))
        intercept = ym - slope * xm
        flat = samples - (slope * x + intercept)
        kept = flat[good]
        dev = kept - kept.sum() / kept.size
        threshold = krej * np.sqrt(np.dot(dev, dev) / kept.size)
        badpix[(flat < -threshold) | (flat > threshold)] = True
        badpix = np.convolve(badpix, kernel, mode="same")
        last_ngoodpix = ngoodpix
        ngoodpix = int(np.sum(~badpix))

    if ngoodpix >= minpix:
        if contrast > 0:
            slope = slope / contrast
        center_pixel = (npix - 1) // 2
        median = np.median(samples)
        vmin = max(vmin, median - (center_pixel - 1) * slope)
        vmax = min(vmax, median + (npix - center_pixel) * slope)
    return float(vmin), float(vmax)


def zscale_linear(data: np.ndarray) -> np.ndarray:
    """Zscale interval with a linear stretch, clipped to ``[0, 1]``.

    Parameters
    ----------
    data : `~numpy.ndarray`
        Cutout pixels, ``[y, x]``; NaN (and inf) mean no data.

    Returns
    -------
    `~numpy.ndarray`
        Values in ``[0, 1]``, NaN where ``data`` is not finite.
    """
    arr = _as_float(data)
    bad = _all_bad(arr)
    if bad is not None:
        return bad
    vmin, vmax = zscale_limits(arr)
    return _interval(arr, vmin, vmax)


#: Normalisations by the name used in `~zooprep.options.RenderOptions`.
STRETCHES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "minmax-asinh": minmax_asinh,
    "zscale": zscale_linear,
    "asinh-central": central_asinh,
}


def colormap_lut(name: str) -> np.ndarray:
    """A matplotlib colour map as a ``(256, 3)`` uint8 lookup table.

    Parameters
    ----------
    name : str
        A matplotlib colour map name (``gray``, ``bone``, ``viridis``...).

    Returns
    -------
    `~numpy.ndarray`
        Row ``i`` is the colour matplotlib gives to bin ``i`` of 256.

    Raises
    ------
    ValueError
        When matplotlib has no colour map of that name.
    """
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name].resampled(256)
    except KeyError:
        raise ValueError(f"unknown matplotlib colour map {name!r}") from None
    lut = cmap(np.arange(256), bytes=True)[:, :3]
    return np.ascontiguousarray(lut, dtype=np.uint8)


def parse_color(color: str) -> tuple[int, int, int]:
    """A matplotlib colour (name, ``#rrggbb``, RGB tuple) as 0-255 integers.

    Parameters
    ----------
    color : str or tuple
        Anything `matplotlib.colors.to_rgb` accepts.

    Returns
    -------
    tuple of int
        ``(r, g, b)``.

    Raises
    ------
    ValueError
        When matplotlib does not know the colour.
    """
    from matplotlib.colors import to_rgb

    try:
        r, g, b = to_rgb(color)
    except ValueError:
        raise ValueError(f"not a colour: {color!r}") from None
    return round(r * 255), round(g * 255), round(b * 255)


def to_index(normed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour-map bins of normalised values, as matplotlib computes them.

    Parameters
    ----------
    normed : `~numpy.ndarray`
        Values in ``[0, 1]``, NaN for no data.

    Returns
    -------
    index : `~numpy.ndarray`
        uint8 bin ``floor(x * 256)`` (1.0 in bin 255); 0 where ``normed`` is NaN.
    bad : `~numpy.ndarray`
        True where ``normed`` is not finite.
    """
    xa = np.multiply(normed, 256)
    bad = ~np.isfinite(xa)
    if bad.any():
        xa[bad] = 0
    np.clip(xa, 0, 255, out=xa)
    return xa.astype(np.uint8), bad


def colorize(
    normed: np.ndarray,
    lut: np.ndarray,
    nan_rgb: tuple[int, int, int],
) -> np.ndarray:
    """RGB pixels of normalised values through a lookup table.

    Parameters
    ----------
    normed : `~numpy.ndarray`
        Values in ``[0, 1]``, NaN for no data, shape ``(ny, nx)``.
    lut : `~numpy.ndarray`
        ``(256, 3)`` uint8 table from `colormap_lut`.
    nan_rgb : tuple of int
        Colour of non-finite pixels.

    Returns
    -------
    `~numpy.ndarray`
        ``(ny, nx, 3)`` uint8.
    """
    index, bad = to_index(normed)
    rgb = np.take(lut, index, axis=0)
    if bad.any():
        rgb[bad] = nan_rgb
    return rgb
