"""Cutting helpers shared by the image sources.

Centring convention
-------------------
Pixels are indexed ``[y, x]`` with centres at integer coordinates, the first
pixel being 0 (see `zooprep.images.base`).  A source at ``(x, y)`` lies on the
pixel ``(round(x), round(y))`` (halves round up: ``floor(v + 0.5)``).  A cutout
of size ``N`` puts that pixel at index ``N // 2`` on both axes: for odd ``N``
the source is exactly in the middle, for even ``N`` it is on the pixel just
after the middle (index 15 of 30).  Stamps cropped or padded to a size keep
the same rule: stamp pixel ``(ny // 2, nx // 2)`` becomes cutout pixel
``(N // 2, N // 2)``.

Everything here returns ``float32`` arrays with NaN wherever there is no data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from zooprep.images.base import Cutouts

__all__ = [
    "crop_or_pad",
    "cut_around",
    "pad_to_shape",
    "pixel_index",
    "section_around",
    "stack_cutouts",
]

#: A function returning the image pixels ``[ys, xs]`` (both slices in range).
SectionReader = Callable[[slice, slice], np.ndarray]


def pixel_index(value: float) -> int:
    """Return the 0-based pixel whose centre is nearest ``value`` (halves round up).

    Parameters
    ----------
    value : float
        A 0-based pixel coordinate.

    Returns
    -------
    int
        ``floor(value + 0.5)``.

    Examples
    --------
    >>> pixel_index(10.49), pixel_index(10.5), pixel_index(-0.5)
    (10, 11, 0)
    """
    return math.floor(value + 0.5)


def cut_around(
    read: SectionReader,
    shape: tuple[int, int],
    x: float,
    y: float,
    size: int,
) -> tuple[np.ndarray, bool]:
    """Cut a ``size`` x ``size`` cutout centred on ``(x, y)``, padded with NaN.

    Parameters
    ----------
    read : callable
        ``read(ys, xs)`` returns the image pixels in those (in-range) slices;
        only the overlapping section is ever asked for.
    shape : tuple of int
        ``(ny, nx)`` of the whole image.
    x, y : float
        0-based pixel position of the source.
    size : int
        Side of the cutout in pixels.

    Returns
    -------
    cutout : numpy.ndarray
        ``float32`` array of shape ``(size, size)``, NaN outside the image.
    padded : bool
        True when the cutout reaches past the image edge.

    Examples
    --------
    >>> image = np.arange(25.0).reshape(5, 5)
    >>> cut, padded = cut_around(lambda ys, xs: image[ys, xs], image.shape, 0, 0, 3)
    >>> padded, float(cut[1, 1]), bool(np.isnan(cut[0, 0]))
    (True, 0.0, True)
    """
    if size < 1:
        raise ValueError(f"cutout size must be positive, got {size}")
    ny, nx = shape
    x0 = pixel_index(x) - size // 2
    y0 = pixel_index(y) - size // 2
    xa, xb = max(x0, 0), min(x0 + size, nx)
    ya, yb = max(y0, 0), min(y0 + size, ny)
    padded = xa > x0 or ya > y0 or xb < x0 + size or yb < y0 + size
    if not padded:  # wholly inside: the section is the cutout
        inside = np.asarray(read(slice(ya, yb), slice(xa, xb)))
        if inside.dtype == np.float32 and inside.flags.owndata:
            return inside, False
        return inside.astype(np.float32), False
    out = np.full((size, size), np.nan, dtype=np.float32)
    if xa < xb and ya < yb:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = read(slice(ya, yb), slice(xa, xb))
    return out, padded


def section_around(
    shape: tuple[int, int], x: float, y: float, size: int
) -> tuple[slice, slice] | None:
    """Return the in-image ``(ys, xs)`` slices `cut_around` reads, or None.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the whole image.
    x, y : float
        0-based pixel position of the source.
    size : int
        Side of the cutout in pixels.

    Returns
    -------
    tuple of slice or None
        The section of the image under the cutout; None when they do not overlap.
    """
    ny, nx = shape
    x0 = pixel_index(x) - size // 2
    y0 = pixel_index(y) - size // 2
    xa, xb = max(x0, 0), min(x0 + size, nx)
    ya, yb = max(y0, 0), min(y0 + size, ny)
    if xa < xb and ya < yb:
        return slice(ya, yb), slice(xa, xb)
    return None


def crop_or_pad(
    stamp: np.ndarray, size: int | tuple[int, int]
) -> tuple[np.ndarray, bool]:
    """Crop or NaN-pad a stamp about its centre pixel to ``size``.

    Parameters
    ----------
    stamp : numpy.ndarray
        A 2-D image whose source sits on pixel ``(ny // 2, nx // 2)``.
    size : int or tuple of int
        The side of the square result, or its ``(ny, nx)`` shape.

    Returns
    -------
    cutout : numpy.ndarray
        ``float32`` array of the requested shape.
    padded : bool
        True when NaN pixels were added.
    """
    ty, tx = (size, size) if isinstance(size, int) else size
    ny, nx = stamp.shape
    out = np.full((ty, tx), np.nan, dtype=np.float32)
    y0 = ny // 2 - ty // 2
    x0 = nx // 2 - tx // 2
    ya, yb = max(y0, 0), min(y0 + ty, ny)
    xa, xb = max(x0, 0), min(x0 + tx, nx)
    padded = ya > y0 or xa > x0 or yb < y0 + ty or xb < x0 + tx
    if ya < yb and xa < xb:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = stamp[ya:yb, xa:xb]
    return out, padded


def pad_to_shape(arrays: Sequence[np.ndarray]) -> tuple[list[np.ndarray], bool]:
    """Pad arrays about their centre pixels with NaN to their common largest shape.

    Parameters
    ----------
    arrays : sequence of numpy.ndarray
        2-D arrays, possibly of different shapes.

    Returns
    -------
    arrays : list of numpy.ndarray
        ``float32`` arrays, all of the same shape.
    padded : bool
        True when any array had to be padded.
    """
    ty = max(a.shape[0] for a in arrays)
    tx = max(a.shape[1] for a in arrays)
    out: list[np.ndarray] = []
    padded = False
    for a in arrays:
        if a.shape == (ty, tx):
            out.append(np.asarray(a, dtype=np.float32))
        else:
            b, _ = crop_or_pad(a, (ty, tx))
            out.append(b)
            padded = True
    return out, padded


def stack_cutouts(cutouts: Cutouts) -> dict[int, np.ndarray]:
    """Stack each size's three cutouts into one ``float32`` array.

    Parameters
    ----------
    cutouts : Cutouts
        The cutouts of one source.

    Returns
    -------
    dict of int to numpy.ndarray
        Maps each cutout's height in pixels to an array of shape ``(3, ny, nx)``
        ordered template, science, difference, NaN where there is no data
        (ready for `numpy.save` / `numpy.savez`).
    """
    return {
        int(t.shape[0]): np.stack([t.template, t.science, t.difference]).astype(
            np.float32, copy=False
        )
        for t in cutouts.rows
    }
