"""Cutouts from the images of a Rubin data Butler repository (optional extra).

`ButlerImages` is the image source of ``zooprep render --butler REPO
--collections C``.  It needs ``lsst-daf-butler`` (``pip install
'zooprep[butler]'``), which is imported only when a `ButlerImages` is used, so
zooprep itself imports without it.  No ``lsst.afw`` is needed: the Butler only
resolves each dataset's file (`lsst.daf.butler.Butler.getURI`, data id
``instrument``/``visit``/``detector`` from the source's row), and the file is
read with astropy by the code of `zooprep.images.fits` (LSST exposures are
multi-extension FITS, possibly tile-compressed, whose ``IMAGE`` HDU is used).
Files of a remote datastore (``s3://``, ``gs://``, ``https://``, signed URLs
included) are read by byte ranges, only the parts under the cutouts
(`zooprep.images.remote`, optional extra ``cloud``), not downloaded whole.

Dataset type names
------------------
The defaults are the current Rubin pipeline names:

=============  ===========================  ===========================================
image          default                      older names
=============  ===========================  ===========================================
science        ``preliminary_visit_image``  ``calexp`` (before 2025); ``visit_image``
                                            is the final (not prompt) science image
template       ``template_matched``         ``goodSeeingDiff_templateExp``,
                                            ``deepDiff_templateExp``, and the
                                            ``*_warpedExp`` names of some pipelines
difference     ``difference_image``         ``goodSeeingDiff_differenceExp``,
                                            ``deepDiff_differenceExp``
=============  ===========================  ===========================================

Pass the names your repository uses (``science=``, ``template=``,
``difference=``).  Templates warped to the science frame share its pixel grid,
so the DiaSource ``x``/``y`` serve all three images (``position='auto'``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

from zooprep.errors import InputError
from zooprep.images.base import (
    Cutouts,
    Failed,
    column_listing,
    consecutive_groups,
)
from zooprep.images.cutting import (
    POSITIONS,
    Position,
    check_position_columns,
    cut_group,
)
from zooprep.images.fits import DEFAULT_CACHE_BYTES, CachedImages
from zooprep.vocabulary import BUTLER_DATASET_TYPES

__all__ = ["ButlerImages"]

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "reading a Butler repository needs the optional 'butler' extra:"
    " pip install 'zooprep[butler]' (lsst-daf-butler)"
)


def _butler_class() -> Any:
    """Import and return `lsst.daf.butler.Butler`, or raise InputError."""
    try:
        from lsst.daf.butler import Butler
    except ImportError as exc:
        raise InputError(f"{INSTALL_HINT}; import failed: {exc}") from exc
    return Butler


class ButlerImages(CachedImages):
    """Science, template and difference images of a Butler repository.

    Parameters
    ----------
    repo : str or os.PathLike
        The Butler repository (a path, a ``butler.yaml`` or a repository alias).
    collections : sequence of str or str
        Collections to search, in order.
    science, template, difference : str
        Dataset type names of the three images (see the module docstring for
        older names).
    instrument : str or None
        Instrument name for rows without an ``instrument`` column; when None
        and the rows have none, the repository's only instrument is used.
    position : {'auto', 'xy', 'radec'}
        As in `~zooprep.images.fits.FitsImages`.
    cache_bytes : int
        Bound (bytes) of the per-process cache of opened images.

    Raises
    ------
    InputError
        When ``lsst-daf-butler`` is not installed.
    """

    def __init__(
        self,
        repo: str | os.PathLike[str],
        collections: Sequence[str] | str,
        science: str = BUTLER_DATASET_TYPES["science"],
        template: str = BUTLER_DATASET_TYPES["template"],
        difference: str = BUTLER_DATASET_TYPES["difference"],
        instrument: str | None = None,
        position: Position = "auto",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        _butler_class()
        if position not in POSITIONS:
            raise InputError(f"position must be one of {POSITIONS}, got {position!r}")
        self.repo = os.fspath(repo)
        self.collections = (
            [collections] if isinstance(collections, str) else list(collections)
        )
        self.science = science
        self.template = template
        self.difference = difference
        self.instrument = instrument
        self.position: Position = position
        self.cache_bytes = int(cache_bytes)
        self._butler: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_butler"] = None  # each process opens its own Butler
        return state

    @property
    def butler(self) -> Any:
        """The read-only `~lsst.daf.butler.Butler` of this process (opened on use)."""
        if self._butler is None:
            butler_class = _butler_class()
            try:
                self._butler = butler_class.from_config(
                    self.repo, collections=self.collections, writeable=False
                )
            except Exception as exc:  # the Butler raises many kinds here
                raise InputError(
                    f"cannot open Butler repository {self.repo}: {exc}"
                ) from exc
        return self._butler

    def check(self, columns: Sequence[str]) -> None:
        """Raise InputError when rows lack the data id or position columns.

        Parameters
        ----------
        columns : sequence of str
            The columns of the rows to render.

        Raises
        ------
        InputError
            Naming the missing column and listing the available ones.
        """
        for name in ("visit", "detector"):
            if name not in columns:
                raise InputError(
                    f"Butler images need column {name!r} for the data id;"
                    f" available columns: {column_listing(columns)}"
                )
        check_position_columns(self.position, columns)

    def _default_instrument(self) -> str:
        """Return the instrument to use for rows without one."""
        if self.instrument is None:
            records = list(self.butler.registry.queryDimensionRecords("instrument"))
            if len(records) != 1:
                names = ", ".join(sorted(r.name for r in records)) or "none"
                raise InputError(
                    f"Butler repository {self.repo} has instruments {names}; give"
                    " instrument= or an 'instrument' column"
                )
            self.instrument = str(records[0].name)
        return self.instrument

    def group_key(self, row: Mapping[str, Any]) -> Hashable:
        """Return the data id ``(instrument, visit, detector)`` of the row."""
        return (row.get("instrument"), row.get("visit"), row.get("detector"))

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
            Cutout sizes in pixels; empty means 30.
        use_footprint : bool
            Grow each size to the row's ``bboxSize`` when that is larger.

        Yields
        ------
        Cutouts or Failed
        """
        for _, batch in consecutive_groups(rows, self.group_key):
            yield from self._cut(batch, sizes, use_footprint)

    def _data_id(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Return the Butler data id of a row."""
        instrument = row.get("instrument") or self._default_instrument()
        try:
            return {
                "instrument": str(instrument),
                "visit": int(row["visit"]),
                "detector": int(row["detector"]),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"no valid visit/detector in the row ({exc!r})") from exc

    def _cut(
        self,
        batch: Sequence[tuple[int, Mapping[str, Any]]],
        sizes: Sequence[int],
        use_footprint: bool,
    ) -> Iterator[Cutouts | Failed]:
        """Resolve one data id's three files and cut its rows from them."""
        try:
            paths = self.paths(batch[0][1])
        except InputError as exc:
            for source_id, _ in batch:
                yield Failed(source_id, str(exc))
            return
        yield from cut_group(
            self.cache,
            (paths[0], paths[1], paths[2]),
            batch,
            sizes,
            use_footprint,
            self.position,
            self.injection,
        )

    def paths(self, row: Mapping[str, Any]) -> tuple[str, str, str]:
        """The science, template and difference files of a row's data id.

        Local paths, or URLs for a remote datastore (S3, GCS, signed HTTPS
        URLs), which are read by byte ranges, never copied whole.

        Raises
        ------
        InputError
            When a dataset is not in the repository.
        """
        data_id = self._data_id(row)
        uris = [
            self._uri(name, data_id)
            for name in (self.science, self.template, self.difference)
        ]
        found = [uri.ospath if uri.isLocal else uri.geturl() for uri in uris]
        return found[0], found[1], found[2]

    def _uri(self, dataset_type: str, data_id: Mapping[str, Any]) -> Any:
        """Return the URI of one dataset, or raise InputError naming it."""
        where = ", ".join(f"{k}={v}" for k, v in data_id.items())
        try:
            return self.butler.getURI(
                dataset_type, dataId=dict(data_id), collections=self.collections
            )
        except InputError:
            raise
        except Exception as exc:  # DatasetNotFoundError, MissingDatasetTypeError, ...
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(
                f"no {dataset_type} for {where} in collections"
                f" {', '.join(self.collections)} of {self.repo} ({first})"
            ) from exc
