"""Placing sources on images and cutting them: shared by the FITS and Butler sources.

`cut_group` cuts the rows of one image group from its science, template and
difference images (`~zooprep.images.fitsimage.FitsImage`, opened through an
`ImageOpener` such as `~zooprep.images.fits.ImageCache`).  Where a source is on each image follows
the ``position`` rule (see `zooprep.images.fits` and `Position`): catalogue
``x``/``y`` on a shared pixel grid (offset by each image's LSST ``XY0``), or
``ra``/``dec`` through each image's celestial WCS.  Placed by ``ra``/``dec``,
a template or difference image turned or mirrored by more than
`MAX_ROTATION_DEG` relative to the science image (e.g. a Rubin
``template_coadd`` on its tract's grid) is resampled onto the science
cutout's pixel grid (`resample_onto`): each cutout pixel's sky position
through the science WCS, its position on the other image through that
image's WCS, and bilinear interpolation there; NaN (and ``padded``) off the
other image, as for cutouts over an edge.  The cutouts then say so in
``notes['resampled']`` (e.g. ``"template"``).  Sections of remote images
(`zooprep.images.remote`) are fetched together before cutting, for
resampled images the section under the turned footprint.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from zooprep.errors import InputError
from zooprep.images.base import Cutouts, Failed, Triplet, column_listing
from zooprep.images.cutout import (
    SectionReader,
    cut_around,
    pixel_index,
    section_around,
)
from zooprep.images.fitsimage import FitsImage, log_warnings
from zooprep.images.injected import Injection, inject
from zooprep.images.remote import pool
from zooprep.vocabulary import POSITIONS, Position

__all__ = [
    "POSITIONS",
    "ROLES",
    "ImageOpener",
    "Position",
    "check_position_columns",
    "cut_group",
    "resample_onto",
]

if TYPE_CHECKING:
    from astropy.wcs import WCS

log = logging.getLogger(__name__)


class ImageOpener(Protocol):
    """Opens images by path (`zooprep.images.fits.ImageCache` keeps them)."""

    def get_many(self, paths: Sequence[str]) -> list[FitsImage]:
        """The images at ``paths``, in order; InputError for the first failure."""
        ...


#: Orientations of template/difference and science may differ by this much
#: before the other image is resampled onto the science image's pixel grid.
MAX_ROTATION_DEG = 2.0


def check_position_columns(position: Position, columns: Sequence[str]) -> None:
    """Raise InputError when ``columns`` lack what ``position`` places sources by."""
    have = set(columns)
    need = {
        "xy": [("x", "y")],
        "radec": [("ra", "dec")],
        "auto": [("x", "y"), ("ra", "dec")],
    }[position]
    if not any(all(c in have for c in pair) for pair in need):
        wanted = " or ".join("/".join(pair) for pair in need)
        raise InputError(
            f"position {position!r} needs columns {wanted}; available"
            f" columns: {column_listing(columns)}"
        )


def _finite(row: Mapping[str, Any], *names: str) -> bool:
    """Whether the row has finite numbers in all these columns."""
    for name in names:
        value = row.get(name)
        try:
            if value is None or not math.isfinite(float(value)):
                return False
        except (TypeError, ValueError):
            return False
    return True


def _orientation(wcs: WCS) -> tuple[float, float]:
    """Return the parity (+1/-1) and the angle (deg) of the pixel x axis on the sky."""
    m = wcs.pixel_scale_matrix
    parity = float(np.sign(np.linalg.det(m)))
    return parity, math.degrees(math.atan2(m[1, 0], m[0, 0]))


def _orientation_problem(science: FitsImage, other: FitsImage, role: str) -> str | None:
    """Say how ``other`` is not oriented like ``science``, or None when it is."""
    sw, ow = science.wcs, other.wcs
    if sw is None or ow is None:
        return None
    sp, sa = _orientation(sw)
    op, oa = _orientation(ow)
    if sp != op:
        return f"{role} {other.path} is mirrored relative to science {science.path}"
    diff = abs((oa - sa + 180.0) % 360.0 - 180.0)
    if diff > MAX_ROTATION_DEG:
        return (
            f"{role} {other.path} is rotated by {diff:.1f} deg relative to science"
            f" {science.path}"
        )
    return None


#: Celestial projections whose pixel scale `_cd_pixel_scale` reads off the CD
#: matrix (the CTYPE after ``RA---``/``DEC--``).
_CD_PROJECTIONS = ("TAN", "TPV", "TAN-SIP", "SIN", "ZEA", "ARC", "STG")
_CD_KEYS = ("CD1_1", "CD1_2", "CD2_1", "CD2_2")
#: Keywords that make astropy (wcslib) read more than the CD matrix.
_NOT_CD_ONLY = ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CROTA1", "CROTA2")


def _cd_pixel_scale(header: Any) -> float | None:
    """The pixel scale of a plain RA/Dec CD-matrix WCS, from its header alone.

    For a 2-D image whose celestial WCS is ``RA---P``/``DEC--P`` (P one of
    `_CD_PROJECTIONS`) with all four ``CDi_j`` in degrees and nothing else
    that scales the axes (no PC or CROTA, CDELT absent or 1), this is the value astropy gives (the CD matrix is
    its ``pixel_scale_matrix``; the same arithmetic follows), without
    parsing the header into a WCS (astropy.wcs alone takes ~0.5 s to import
    and ~8 ms per header).  None for any other header: then astropy's WCS
    is read.
    """
    try:
        if int(header.get("NAXIS", 0)) != 2 or int(header.get("WCSAXES", 2)) != 2:
            return None
        ra = str(header.get("CTYPE1", ""))
        dec = str(header.get("CTYPE2", ""))
        if not (ra.startswith("RA---") and dec.startswith("DEC--")):
            return None
        if ra[5:] != dec[5:] or ra[5:] not in _CD_PROJECTIONS:
            return None
        if any(k in header for k in _NOT_CD_ONLY) or not all(
            k in header for k in _CD_KEYS
        ):
            return None
        if any(
            str(header.get(k, "deg")).strip() != "deg" for k in ("CUNIT1", "CUNIT2")
        ):
            return None
        if any(float(header.get(k, 1.0)) != 1.0 for k in ("CDELT1", "CDELT2")):
            return None  # (CDELT 1 beside CD, as DECam writes, changes nothing)
        cd = np.array([float(header[k]) for k in _CD_KEYS]).reshape(2, 2)
    except (TypeError, ValueError, KeyError):
        return None
    if not np.isfinite(cd).all() or np.linalg.det(cd) == 0:
        return None
    scales = np.sqrt((cd**2).sum(axis=0, dtype=float))
    return float(np.mean([s * 3600.0 for s in scales]))


def pixel_scale(image: FitsImage) -> float | None:
    """Return the image's mean pixel scale in arcsec/pixel, or None without a WCS."""
    fast = _cd_pixel_scale(image.header)
    if fast is not None:
        return fast
    wcs = image.wcs
    if wcs is None:
        return None
    from astropy import units as u
    from astropy.wcs.utils import proj_plane_pixel_scales

    scales = proj_plane_pixel_scales(wcs)
    units = [u.Unit(cu) if str(cu) else u.deg for cu in wcs.wcs.cunit]
    arcsec = [(s * un).to_value(u.arcsec) for s, un in zip(scales, units, strict=True)]
    return float(np.mean(arcsec))


ROLES = ("science", "template", "difference")


def cut_group(
    cache: ImageOpener,
    paths: tuple[str, str, str],
    rows: Sequence[tuple[int, Mapping[str, Any]]],
    sizes: Sequence[int],
    use_footprint: bool = False,
    position: Position = "auto",
    injection: Injection | None = None,
) -> Iterator[Cutouts | Failed]:
    """Cut the rows of one group from its three images.

    Parameters
    ----------
    cache : ImageOpener
        Where the images are opened (once) and kept: an
        `~zooprep.images.fits.ImageCache`.
    paths : tuple of str
        The science, template and difference files.
    rows : sequence of (int, mapping)
        ``(source_id, row)`` pairs.
    sizes : sequence of int
        Cutout sizes; empty means ``(30,)``.
    use_footprint : bool
        Grow each size to the row's ``bboxSize`` when that is larger.
    position : {'auto', 'xy', 'radec'}
        Where the source is (see the module docstring).
    injection : Injection, optional
        Fakes to add to the science and difference images
        (`zooprep.images.injected`); never to the template.

    Yields
    ------
    Cutouts or Failed
        One per row, in order.
    """
    sizes = tuple(sizes) or (30,)
    try:
        images: Sequence[Any] = inject(cache.get_many(paths), injection)
    except (InputError, ValueError) as exc:
        for source_id, _ in rows:
            yield Failed(source_id, str(exc))
        return
    science = images[0]
    scale = pixel_scale(science)
    modes = [_mode(row, position) for _, row in rows]
    pixels = _pixel_positions(images, [r for _, r in rows], modes)
    turned: set[int] = set()  # images resampled onto the science grid (by ra/dec)
    if "radec" in modes:
        for k, role in ((1, "template"), (2, "difference")):
            problem = _orientation_problem(science, images[k], role)
            if problem is not None:
                log.debug("%s; resampling it onto the science grid", problem)
                turned.add(k)
    prefetch_failed = _prefetch(
        images, rows, pixels, sizes, use_footprint, turned, modes
    )
    instrument = str(science.header.get("INSTRUME", "")).strip()
    notes = {"instrument": instrument} if instrument else {}
    for i, (source_id, row) in enumerate(rows):
        mode = modes[i]
        where = pixels[i]
        if prefetch_failed is not None:
            yield Failed(source_id, prefetch_failed)
            continue
        if isinstance(where, str):
            yield Failed(source_id, where)
            continue
        resampled = turned if mode == "radec" else set()
        result: Cutouts | Failed
        try:
            result = _cut_row(
                source_id,
                row,
                images,
                where,
                sizes,
                use_footprint,
                scale,
                notes,
                resampled,
            )
        except InputError as exc:  # a remote read failed after its retries
            result = Failed(source_id, str(exc))
        yield result


def _grow(row: Mapping[str, Any], use_footprint: bool) -> int:
    """The row's footprint size in pixels when cutouts grow to it, else 0."""
    bbox = row.get("bboxSize") if use_footprint else None
    if bbox is None or not _finite(row, "bboxSize"):
        return 0
    return math.ceil(float(bbox))


def _prefetch(
    images: Sequence[FitsImage],
    rows: Sequence[tuple[int, Mapping[str, Any]]],
    pixels: Sequence[list[tuple[float, float]] | str],
    sizes: Sequence[int],
    use_footprint: bool,
    turned: set[int] = frozenset(),  # type: ignore[assignment]
    modes: Sequence[str] = (),
) -> str | None:
    """Fetch, concurrently, the sections of remote images the rows will need.

    Images in ``turned`` are resampled for the rows placed by ra/dec (per
    ``modes``): for those, the section under the science cutout's footprint.
    Returns the failure reason when a fetch fails (the rows then fail with it).
    """
    remote: dict[int, int] = {}  # image index -> first index of the same pixels
    for k, image in enumerate(images):
        if hasattr(image.pixels, "prefetch"):
            same = [j for j in remote if images[j].pixels is image.pixels]
            remote[k] = same[0] if same else k
    if not remote:
        return None
    sections: dict[int, list[tuple[slice, slice]]] = {k: [] for k in remote}
    for i, ((_, row), where) in enumerate(zip(rows, pixels, strict=True)):
        if isinstance(where, str):
            continue
        n = max(max(int(s) for s in sizes), _grow(row, use_footprint))
        radec = i < len(modes) and modes[i] == "radec"
        for k in remote:
            x, y = where[k]
            sx, sy = where[0]
            if radec and k in turned:
                section = _footprint(images[0], images[k], sx, sy, n)
                if section is not None:
                    sections[remote[k]].append(section)
            elif math.isfinite(x) and math.isfinite(y):
                section = section_around(images[k].shape, x, y, n)
                if section is not None:
                    sections[remote[k]].append(section)
    futures = [
        pool("open").submit(images[k].pixels.prefetch, sections[k])
        for k in remote
        if sections[k]
    ]
    for future in futures:
        try:
            future.result()
        except InputError as exc:
            return str(exc)
    return None


def _mode(row: Mapping[str, Any], position: Position) -> str:
    """Decide how this row's source is placed on the images."""
    if position == "auto":
        return "xy" if _finite(row, "x", "y") else "radec"
    return position


def _pixel_positions(
    images: Sequence[FitsImage], rows: Sequence[Mapping[str, Any]], modes: Sequence[str]
) -> list[list[tuple[float, float]] | str]:
    """Return each row's (x, y) on each image, or a failure reason."""
    out: list[list[tuple[float, float]] | str] = [[] for _ in rows]
    sky = [i for i, m in enumerate(modes) if m == "radec"]
    for i, mode in enumerate(modes):
        if mode != "xy":
            continue
        if not _finite(rows[i], "x", "y"):
            out[i] = f"no finite x/y for the source on {images[0].path}"
            continue
        x, y = float(rows[i]["x"]), float(rows[i]["y"])
        for image in images:
            x0, y0 = image.origin
            out[i].append((x - x0, y - y0))  # type: ignore[union-attr]
    good = [i for i in sky if _finite(rows[i], "ra", "dec")]
    good_set = set(good)
    for i in sky:
        if i not in good_set:
            out[i] = f"no finite x/y or ra/dec for the source on {images[0].path}"
    if not good:
        return out
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    coords = SkyCoord(
        [float(rows[i]["ra"]) for i in good] * u.deg,
        [float(rows[i]["dec"]) for i in good] * u.deg,
        frame="icrs",
    )
    for image in images:
        wcs = image.wcs
        if wcs is None:
            for i in good:
                out[i] = f"{image.path}: no celestial WCS to place the source by ra/dec"
            return out
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            xs, ys = wcs.world_to_pixel(coords)
        log_warnings(caught, image.path)
        for k, i in enumerate(good):
            if isinstance(out[i], list):
                out[i].append((float(xs[k]), float(ys[k])))  # type: ignore[union-attr]
    return out


def _cut_row(
    source_id: int,
    row: Mapping[str, Any],
    images: Sequence[FitsImage],
    pixels: Sequence[tuple[float, float]],
    sizes: Sequence[int],
    use_footprint: bool,
    scale: float | None,
    notes: Mapping[str, str],
    resampled: set[int] = frozenset(),  # type: ignore[assignment]
) -> Cutouts | Failed:
    """Cut one source's cutouts of every size from its three images.

    ``notes`` (the science image's instrument) are shared by the group's
    rows: each `Cutouts` gets its own copy.  The images whose index is in
    ``resampled`` are resampled onto the science cutout's grid.
    """
    shapes = [image.shape for image in images]
    for image, (x, y), role, (ny, nx) in zip(
        images, pixels, ROLES, shapes, strict=True
    ):
        if not (math.isfinite(x) and math.isfinite(y)):
            return Failed(
                source_id, f"source has no pixel position on {role} {image.path}"
            )
        if not (0 <= pixel_index(x) < nx and 0 <= pixel_index(y) < ny):
            return Failed(
                source_id,
                f"source at x={x:.1f}, y={y:.1f} is off the {role} image {image.path}"
                f" ({nx}x{ny} pixels)",
            )
    bbox = row.get("bboxSize") if use_footprint else None
    grow = (
        math.ceil(float(bbox)) if bbox is not None and _finite(row, "bboxSize") else 0
    )
    padded = False
    triplets = []
    for size in sizes:
        n = max(int(size), grow)
        cut: dict[str, np.ndarray] = {}
        for k, (image, (x, y), role, shape) in enumerate(
            zip(images, pixels, ROLES, shapes, strict=True)
        ):
            if k in resampled:
                sx, sy = pixels[0]
                array, pad = resample_onto(
                    images[0].wcs, image.wcs, image.read, shape, sx, sy, n
                )
            else:
                array, pad = cut_around(image.read, shape, x, y, n)
            # The middle pixel is the source's: finite there is the usual case.
            if not math.isfinite(array[n // 2, n // 2]) and not (
                np.isfinite(array).any()
            ):
                return Failed(
                    source_id, f"all-NaN {n}x{n} {role} cutout from {image.path}"
                )
            padded |= pad
            cut[role] = array
        triplets.append(Triplet(cut["template"], cut["science"], cut["difference"]))
    out_notes: dict[str, Any] = dict(notes)
    if resampled:
        out_notes["resampled"] = ", ".join(ROLES[k] for k in sorted(resampled))
    return Cutouts(
        source_id, triplets, pixel_scale=scale, padded=padded, notes=out_notes
    )


def _grid_on(
    science: WCS, other: WCS, x: float, y: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Where the pixels of the science cutout centred on ``(x, y)`` fall on ``other``.

    Returns the other image's 0-based ``(u, v)`` pixel coordinates, each of
    shape ``(size, size)`` indexed ``[row, column]`` like the cutout.
    """
    x0 = pixel_index(x) - size // 2
    y0 = pixel_index(y) - size // 2
    xs, ys = np.meshgrid(
        np.arange(x0, x0 + size, dtype=np.float64),
        np.arange(y0, y0 + size, dtype=np.float64),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # off-sky pixels come back NaN
        lon, lat = science.pixel_to_world_values(xs, ys)
        u, v = other.world_to_pixel_values(lon, lat)
    return np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)


def _footprint(
    science: FitsImage, other: FitsImage, x: float, y: float, size: int
) -> tuple[slice, slice] | None:
    """The section of ``other`` under the science cutout's pixels, or None."""
    sw, ow = science.wcs, other.wcs
    if sw is None or ow is None or not (math.isfinite(x) and math.isfinite(y)):
        return None
    u, v = _grid_on(sw, ow, x, y, size)
    return _section(other.shape, u, v)


def _section(
    shape: tuple[int, int], u: np.ndarray, v: np.ndarray
) -> tuple[slice, slice] | None:
    """The in-image ``(ys, xs)`` slices holding every pixel bilinear needs at u, v."""
    ok = np.isfinite(u) & np.isfinite(v)
    if not ok.any():
        return None
    ny, nx = shape
    xa = max(math.floor(float(u[ok].min())), 0)
    xb = min(math.floor(float(u[ok].max())) + 2, nx)
    ya = max(math.floor(float(v[ok].min())), 0)
    yb = min(math.floor(float(v[ok].max())) + 2, ny)
    if xa < xb and ya < yb:
        return slice(ya, yb), slice(xa, xb)
    return None


def resample_onto(
    science: WCS,
    other: WCS,
    read: SectionReader,
    shape: tuple[int, int],
    x: float,
    y: float,
    size: int,
) -> tuple[np.ndarray, bool]:
    """Resample another image onto the science cutout centred on ``(x, y)``.

    Each cutout pixel (laid out as `~zooprep.images.cutout.cut_around` lays
    out the science cutout) is taken to the sky through ``science``, then to
    the other image through ``other``, and the other image is interpolated
    there bilinearly.

    Parameters
    ----------
    science, other : astropy.wcs.WCS
        Celestial WCSs of the science image and of the image resampled.
    read : callable
        ``read(ys, xs)`` returns the other image's pixels in those (in-range)
        slices; one section, the one under the cutout, is asked for.
    shape : tuple of int
        ``(ny, nx)`` of the other image.
    x, y : float
        0-based pixel position of the source on the science image.
    size : int
        Side of the cutout in pixels.

    Returns
    -------
    cutout : numpy.ndarray
        ``float32`` array of shape ``(size, size)``; NaN off the other image
        (and where a neighbour used is NaN).
    padded : bool
        True when some cutout pixel is off the other image.

    Examples
    --------
    A mirrored copy of the image (its transpose) comes back as the image:

    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2)
    >>> w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crval, w.wcs.crpix = [10.0, 0.0], [3.0, 3.0]
    >>> w.wcs.cd = [[-1e-4, 0.0], [0.0, 1e-4]]
    >>> t = WCS(naxis=2)
    >>> t.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> t.wcs.crval, t.wcs.crpix = [10.0, 0.0], [3.0, 3.0]
    >>> t.wcs.cd = [[0.0, -1e-4], [1e-4, 0.0]]  # axes swapped: mirrored
    >>> image = np.arange(25.0).reshape(5, 5)
    >>> got, padded = resample_onto(
    ...     w, t, lambda ys, xs: image.T[ys, xs], (5, 5), 2.0, 2.0, 3
    ... )
    >>> bool(np.allclose(got, image[1:4, 1:4])), padded
    (True, False)
    """
    if size < 1:
        raise ValueError(f"cutout size must be positive, got {size}")
    u, v = _grid_on(science, other, x, y, size)
    ny, nx = shape
    # Within a millionth of a pixel of a pixel centre is on it: exact copies
    # for turns by multiples of 90 degrees.
    for a in (u, v):
        near = np.rint(a)
        snap = np.abs(a - near) < 1e-6
        a[snap] = near[snap]
    inside = (
        np.isfinite(u)
        & np.isfinite(v)
        & (u >= -0.5)
        & (u <= nx - 0.5)
        & (v >= -0.5)
        & (v <= ny - 0.5)
    )
    out = np.full((size, size), np.nan, dtype=np.float32)
    padded = not bool(inside.all())
    section = _section(shape, np.where(inside, u, np.nan), np.where(inside, v, np.nan))
    if section is None:
        return out, padded
    ys, xs = section
    data = np.asarray(read(ys, xs), dtype=np.float64)
    # The half pixel along the edge takes the edge pixel's value.
    uc = np.clip(u[inside], 0.0, nx - 1.0) - xs.start
    vc = np.clip(v[inside], 0.0, ny - 1.0) - ys.start
    hx, hy = data.shape[1] - 1, data.shape[0] - 1
    i0 = np.clip(np.floor(uc).astype(np.intp), 0, hx)
    j0 = np.clip(np.floor(vc).astype(np.intp), 0, hy)
    fx, fy = uc - i0, vc - j0
    i1, j1 = np.minimum(i0 + 1, hx), np.minimum(j0 + 1, hy)
    # A neighbour of zero weight (on a pixel row or column) adds nothing,
    # not even its NaN.
    value = np.zeros(uc.shape, dtype=np.float64)
    for jj, ii, w in (
        (j0, i0, (1 - fx) * (1 - fy)),
        (j0, i1, fx * (1 - fy)),
        (j1, i0, (1 - fx) * fy),
        (j1, i1, fx * fy),
    ):
        value += np.where(w > 0, data[jj, ii] * w, 0.0)
    out[inside] = value
    return out, padded
