"""Cutouts from the three stamps stored inside alert packets.

`AlertStamps` is the image source of a run selected with ``--alerts``.  The
select stage stores each alert with three bookkeeping columns:
``_alert_path`` (the ``.avro`` file), ``_alert_index`` (0-based record index in
that file) and ``_alert_format`` (``'ztf'`` or ``'rubin'``; guessed from the
record when absent).

* ZTF packets: ``cutoutScience``/``cutoutTemplate``/``cutoutDifference`` are
  records ``{fileName, stampData}`` whose ``stampData`` is a gzipped single-HDU
  FITS file, 63x63 without WCS (pixel scale 1.01 arcsec/px).  A ZTF difference
  is kept as stored; when ``candidate.isdiffpos`` is ``'f'`` it is reference
  minus science and ``notes['difference_sign']`` says so.
* Rubin packets: the three fields are raw FITS bytes; HDU 0 holds the image
  (nJy), HDU 1 the variance and HDU 2 the PSF.  The pixel scale comes from the
  stamp's ``PC``/``CDELT`` (a TAN projection in degrees, whose missing
  ``CTYPE`` keywords are supplied).

With no ``sizes`` each stamp is returned whole at its native size (stamps at
detector edges can be smaller or not square: the three are then NaN-padded to
a common shape about their centre pixels).  With sizes, each stamp is cropped
or NaN-padded about its centre pixel ``(ny // 2, nx // 2)``, which becomes
pixel ``N // 2`` of an ``N``-pixel cutout (see `zooprep.images.cutout`).

Records are read with `zooprep.avro.read_records`: a raw Kafka payload in the
Confluent wire format can be read only when the matching writer schema is
given (``schema=``); otherwise its rows fail with a reason saying so.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from astropy.io import fits

from zooprep.avro import read_records as read_alert_records
from zooprep.errors import InputError
from zooprep.images.base import (
    Cutouts,
    Failed,
    Triplet,
    column_listing,
    consecutive_groups,
)
from zooprep.images.cutout import crop_or_pad, pad_to_shape
from zooprep.images.cutoutdata import CutoutError, read_cutout
from zooprep.photometry import negative_difference

__all__ = ["AlertStamps", "cut_stamps", "read_alert_records", "stamp_pixel_scale"]

log = logging.getLogger(__name__)

#: ZTF stamps carry no WCS; the camera's pixel scale in arcsec/px.
ZTF_PIXEL_SCALE = 1.01
#: Fallback for Rubin stamps whose header gives no scale.
RUBIN_PIXEL_SCALE = 0.2
FIELDS = ("cutoutTemplate", "cutoutScience", "cutoutDifference")
REQUIRED = ("_alert_path", "_alert_index")


def cut_stamps(
    source_id: int,
    stamps: Sequence[np.ndarray],
    sizes: Sequence[int],
    row: Mapping[str, Any],
    use_footprint: bool,
) -> tuple[list[Triplet], bool] | str:
    """Crop or pad three stamps (template, science, difference) to each size.

    With no ``sizes`` the stamps are kept whole, NaN-padded to a common shape.
    Returns ``(triplets, padded)``, or the reason (``"cutoutScience is all
    NaN"``) when a stamp holds no data.
    """
    padded = False
    if sizes:
        bbox = row.get("bboxSize") if use_footprint else None
        try:
            grow = int(np.ceil(float(bbox))) if bbox is not None else 0
        except (TypeError, ValueError):
            grow = 0
        triplets = []
        for size in sizes:
            n = max(int(size), grow if grow > 0 else 0)
            cut = []
            for stamp in stamps:
                array, pad = crop_or_pad(stamp, n)
                padded |= pad
                cut.append(array)
            triplets.append(Triplet(*cut))
    else:
        same, padded = pad_to_shape(list(stamps))
        triplets = [Triplet(*same)]
    for t in triplets:
        for name, array in zip(
            FIELDS, (t.template, t.science, t.difference), strict=True
        ):
            if not np.isfinite(array).any():
                return f"{name} is all NaN"
    return triplets, padded


def stamp_pixel_scale(header: fits.Header) -> float:
    """The pixel scale (arcsec/px) of a Rubin stamp from its PC/CDELT.

    Rubin stamps give ``CRVAL``, ``PC`` and ``CDELT`` but no ``CTYPE``: the
    projection (TAN, degrees) is supplied.  0.2 when the header has none.
    """
    h = header.copy()
    if "CRVAL1" not in h:
        return RUBIN_PIXEL_SCALE
    h.setdefault("CTYPE1", "RA---TAN")
    h.setdefault("CTYPE2", "DEC--TAN")
    if not str(h["CTYPE1"]).strip():
        h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        wcs = WCS(h, naxis=2)
    if not wcs.has_celestial:
        return RUBIN_PIXEL_SCALE
    return float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)


def _guess_format(record: Mapping[str, Any]) -> str:
    """Tell a ZTF record (stamps are records) from a Rubin one (stamps are bytes)."""
    for name in FIELDS:
        if isinstance(record.get(name), Mapping):
            return "ztf"
    return "rubin" if "diaSource" in record else "ztf"


class AlertStamps:
    """The template, science and difference stamps stored in alert packets.

    Parameters
    ----------
    schema : str, os.PathLike, mapping or None
        Writer schema for Confluent wire-format payloads (Avro container files
        need none).

    Examples
    --------
    >>> AlertStamps().group_key({"_alert_path": "/a/b.avro", "_alert_index": 0})
    '/a/b.avro'
    """

    def __init__(
        self, schema: str | os.PathLike[str] | Mapping[str, Any] | None = None
    ) -> None:
        self.schema = (
            schema
            if schema is None or isinstance(schema, Mapping)
            else (os.fspath(schema))
        )

    def check(self, columns: Sequence[str]) -> None:
        """Raise InputError unless rows carry ``_alert_path`` and ``_alert_index``.

        Parameters
        ----------
        columns : sequence of str
            The columns of the rows to render.

        Raises
        ------
        InputError
            Naming the missing column and listing the available ones.
        """
        for name in REQUIRED:
            if name not in columns:
                raise InputError(
                    f"alert stamps need column {name!r} (rows selected with --alerts);"
                    f" available columns: {column_listing(columns)}"
                )

    def group_key(self, row: Mapping[str, Any]) -> str:
        """Return the alert file's path: its records are read in one pass."""
        return str(row.get("_alert_path"))

    def cutouts(
        self,
        rows: Sequence[tuple[int, Mapping[str, Any]]],
        sizes: Sequence[int],
        use_footprint: bool = False,
    ) -> Iterator[Cutouts | Failed]:
        """Yield one `Cutouts` or `Failed` per ``(source_id, row)``, in order.

        Parameters
        ----------
        rows : sequence of (int, mapping)
            ``(source_id, row)`` pairs, best grouped by `group_key`.
        sizes : sequence of int
            Cutout sizes; empty means each stamp whole at its native size.
        use_footprint : bool
            Grow each size to the row's ``bboxSize`` when that is larger.

        Yields
        ------
        Cutouts or Failed
        """
        for _, batch in consecutive_groups(rows, self.group_key):
            yield from self._cut_file(batch, sizes, use_footprint)

    def _cut_file(
        self,
        batch: Sequence[tuple[int, Mapping[str, Any]]],
        sizes: Sequence[int],
        use_footprint: bool,
    ) -> Iterator[Cutouts | Failed]:
        """Read one alert file once and cut the stamps of its rows."""
        path = self.group_key(batch[0][1])
        wanted: dict[int, dict[str, Any]] = {}
        for _, row in batch:
            try:
                wanted[int(row["_alert_index"])] = {}
            except (KeyError, TypeError, ValueError):
                continue
        count = 0
        error: str | None = None
        try:
            last = max(wanted, default=-1)
            for index, record in enumerate(read_alert_records(path, self.schema)):
                count = index + 1
                if index in wanted:
                    wanted[index] = {k: record.get(k) for k in FIELDS}
                    wanted[index]["_format"] = _guess_format(record)
                    candidate = record.get("candidate")
                    if isinstance(candidate, Mapping):
                        wanted[index]["isdiffpos"] = candidate.get("isdiffpos")
                if index >= last:
                    break
        except InputError as exc:
            error = str(exc)
        for source_id, row in batch:
            if error is not None:
                yield Failed(source_id, error)
                continue
            try:
                index = int(row["_alert_index"])
            except (KeyError, TypeError, ValueError):
                yield Failed(source_id, f"{path}: row has no valid _alert_index")
                continue
            record = wanted.get(index, {})
            if not record:
                yield Failed(
                    source_id,
                    f"{path}: no alert record {index} (the file holds {count})",
                )
                continue
            yield self._cut_record(
                source_id, row, record, path, index, sizes, use_footprint
            )

    def _cut_record(
        self,
        source_id: int,
        row: Mapping[str, Any],
        record: Mapping[str, Any],
        path: str,
        index: int,
        sizes: Sequence[int],
        use_footprint: bool,
    ) -> Cutouts | Failed:
        """Decode and cut the three stamps of one alert record."""
        kind = str(row.get("_alert_format") or record["_format"]).lower()
        stamps: list[np.ndarray] = []
        header: fits.Header | None = None
        for name in FIELDS:
            value = record.get(name)
            if isinstance(value, Mapping):
                value = value.get("stampData")
            if value is None:
                return Failed(source_id, f"{path}: alert {index} has no {name}")
            try:
                image, h = read_cutout(value)
            except CutoutError as exc:
                return Failed(
                    source_id, f"{path}: alert {index} has an unreadable {name} ({exc})"
                )
            if name == "cutoutScience":
                header = h
            stamps.append(image)
        cut = cut_stamps(source_id, stamps, sizes, row, use_footprint)
        if isinstance(cut, str):
            return Failed(source_id, f"{path}: alert {index} {cut}")
        triplets, padded = cut
        notes: dict[str, Any] = {}
        if kind == "ztf":
            scale = ZTF_PIXEL_SCALE
            if negative_difference(record.get("isdiffpos")):
                notes["difference_sign"] = "reference - science"
        else:
            scale = (
                stamp_pixel_scale(header) if header is not None else RUBIN_PIXEL_SCALE
            )
        return Cutouts(
            source_id, triplets, pixel_scale=scale, padded=padded, notes=notes
        )
