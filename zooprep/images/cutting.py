"""Placing sources on images and cutting them: shared by the FITS and Butler sources.

`cut_group` cuts the rows of one image group from its science, template and
difference images (`~zooprep.images.fitsimage.FitsImage`, opened through an
`ImageOpener` such as `~zooprep.images.fits.ImageCache`).  Where a source is on each image follows
the ``position`` rule (see `zooprep.images.fits` and `Position`): catalogue
``x``/``y`` on a shared pixel grid (offset by each image's LSST ``XY0``), or
``ra``/``dec`` through each image's celestial WCS, whose orientation must
then agree with the science image's within `MAX_ROTATION_DEG`.  Sections of
remote images (`zooprep.images.remote`) are fetched together before cutting.
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
from zooprep.images.cutout import cut_around, pixel_index, section_around
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
]

if TYPE_CHECKING:
    from astropy.wcs import WCS

log = logging.getLogger(__name__)


class ImageOpener(Protocol):
    """Opens images by path (`zooprep.images.fits.ImageCache` keeps them)."""

    def get_many(self, paths: Sequence[str]) -> list[FitsImage]:
        """The images at ``paths``, in order; InputError for the first failure."""
        ...


#: Orientations of template/difference and science may differ by this much.
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
    orientation: str | None = None
    if "radec" in modes:
        orientation = _orientation_problem(science, images[1], "template") or (
            _orientation_problem(science, images[2], "difference")
        )
    prefetch_failed = _prefetch(images, rows, pixels, sizes, use_footprint)
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
        if mode == "radec" and orientation:
            yield Failed(source_id, orientation)
            continue
        result: Cutouts | Failed
        try:
            result = _cut_row(
                source_id, row, images, where, sizes, use_footprint, scale, notes
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
) -> str | None:
    """Fetch, concurrently, the sections of remote images the rows will need.

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
    for (_, row), where in zip(rows, pixels, strict=True):
        if isinstance(where, str):
            continue
        n = max(max(int(s) for s in sizes), _grow(row, use_footprint))
        for k in remote:
            x, y = where[k]
            if math.isfinite(x) and math.isfinite(y):
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
) -> Cutouts | Failed:
    """Cut one source's cutouts of every size from its three images.

    ``notes`` (the science image's instrument) are shared by the group's
    rows: each `Cutouts` gets its own copy.
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
        for image, (x, y), role, shape in zip(
            images, pixels, ROLES, shapes, strict=True
        ):
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
    return Cutouts(
        source_id, triplets, pixel_scale=scale, padded=padded, notes=dict(notes)
    )
