"""What every image source gives the render stage: cutouts around sources.

Pixel convention (as in numpy and astropy): arrays are indexed ``[y, x]``,
pixel centres are at integer coordinates, and the first pixel is 0 (FITS
``CRPIX`` is 1-based; the catalogue ``x``/``y`` of a Rubin DiaSource are
0-based, like ours).  Cutouts are ``float32``; pixels with no data (outside
the image, or masked as NaN in the file) are NaN, so the renderer can draw
them in one fixed colour.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Cutouts", "Failed", "ImageSource", "Triplet"]


@dataclass(frozen=True)
class Triplet:
    """Template, science and difference cutouts of one size, same shape."""

    template: np.ndarray
    science: np.ndarray
    difference: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """The ``(ny, nx)`` shape shared by the three cutouts."""
        ny, nx = self.science.shape
        return ny, nx


@dataclass(frozen=True)
class Cutouts:
    """All cutouts of one source: one `Triplet` per requested size.

    Parameters
    ----------
    source_id : int
        The source's 64-bit id.
    rows : list of Triplet
        One triplet per size, in the order the sizes were asked for.
    pixel_scale : float or None
        Pixel scale in arcsec per pixel (for the 1-arcsec scale bar), when known.
    padded : bool
        True when any cutout reached past the image edge and was padded with NaN.
    notes : dict
        Extra facts a renderer may show, e.g. ``{"difference_sign": "ref-sci"}``,
        ``"instrument"``, or ``{"resampled": "template"}`` when those images
        were resampled onto the science cutout's pixels (`zooprep.images.cutting`).
    """

    source_id: int
    rows: list[Triplet]
    pixel_scale: float | None = None
    padded: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    """A source whose cutouts could not be made, and why (one line)."""

    source_id: int
    reason: str


@runtime_checkable
class ImageSource(Protocol):
    """Where the pixels come from (FITS path templates, a Butler, alert stamps).

    Implementations are small picklable objects: the render stage sends them
    to worker processes.  Rows are plain mappings of the source's columns
    (the run state's ``row``), and ``source_id`` is the run's id of the row.
    """

    def check(self, columns: Sequence[str]) -> None:
        """Raise `~zooprep.errors.InputError` before any work if rows lack a needed column."""
        ...

    def group_key(self, row: Mapping[str, Any]) -> Hashable:
        """Rows with the same key share images; the render stage groups by it."""
        ...

    def cutouts(
        self,
        rows: Sequence[tuple[int, Mapping[str, Any]]],
        sizes: Sequence[int],
        use_footprint: bool = False,
    ) -> Iterator[Cutouts | Failed]:
        """Yield one `Cutouts` or `Failed` per ``(source_id, row)``, in order.

        ``sizes`` may be empty for sources that carry their own stamps (alert
        packets): each stamp is then returned whole at its native size.
        """
        ...


@runtime_checkable
class FileImages(ImageSource, Protocol):
    """An image source whose images are files zooprep reads itself (FITS, Butler).

    The ones `zooprep fakes` can inject into: it reads the images the rows
    name (`paths`), and render cuts them with the fakes of each image added
    (``injection``, set per task).
    """

    #: The fakes to add to the science and difference images being cut.
    injection: Any

    def paths(self, row: Mapping[str, Any]) -> tuple[str, str, str]:
        """The science, template and difference image of ``row``."""
        ...


def column_listing(columns: Sequence[str]) -> str:
    """The columns, sorted and comma-separated, for an error message."""
    return ", ".join(sorted(map(str, columns))) or "(none)"


def consecutive_groups(
    rows: Iterable[tuple[int, Mapping[str, Any]]],
    key: Callable[[Mapping[str, Any]], Hashable],
) -> Iterator[tuple[Hashable, list[tuple[int, Mapping[str, Any]]]]]:
    """Yield ``(key, batch)`` for each run of consecutive rows sharing a key."""
    batch: list[tuple[int, Mapping[str, Any]]] = []
    current: Hashable = None
    for source_id, row in rows:
        k = key(row)
        if batch and k != current:
            yield current, batch
            batch = []
        current = k
        batch.append((source_id, row))
    if batch:
        yield current, batch
