"""Settings of each stage, as frozen dataclasses.

The CLI builds them from flags; ``zooprep.toml`` in the run directory keeps
them (as plain tables) so that a resumed stage uses the same settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

__all__ = [
    "LAYOUTS",
    "MAX_FILE_BYTES",
    "PICTURE_OPTIONS",
    "RenderOptions",
    "UploadOptions",
]

#: The largest media file Zooniverse accepts (its web front end refuses more).
MAX_FILE_BYTES = 1_000_000


#: The `RenderOptions` fields that change the pictures (all but ``position``):
#: changing them on a rendered run needs ``force``.
PICTURE_OPTIONS = (
    "sizes",
    "annotate",
    "use_footprint",
    "numpy",
    "chunk_size",
    "cmap",
    "scale",
    "nan_color",
    "difference_stretch",
    "pixel_scale",
    "instrument",
    "layout",
    "lightcurve",
    "lightcurve_json",
)
#: Picture layouts of ``zooprep render --layout``.
LAYOUTS = ("triplet", "frames", "both")


@dataclass(frozen=True)
class RenderOptions:
    """How cutouts are cut and drawn.

    Parameters
    ----------
    sizes : tuple of int
        Cutout sizes in pixels, one row of three panels per size.  Empty means
        "native size" for alert stamps (and 30 for images).
    annotate : bool
        Draw the seed's metadata block (ids, fluxes, flags, RB) and scale bars.
    use_footprint : bool
        Grow each cutout to the source's footprint (``bboxSize``), with
        ``sizes`` as the minimum.
    numpy : bool
        Also save the float32 cutouts as ``.npy`` beside the PNG.
    chunk_size : int
        At most this many files per ``cutouts/`` sub-directory.
    cmap : str
        A matplotlib colour map name (``gray`` by default, ``bone`` as in the seed).
    scale : int or None
        Nearest-neighbour upscaling factor per cutout pixel; None picks one so
        that a panel is about 200 screen pixels wide.
    nan_color : str
        Colour of pixels with no data (a matplotlib colour name or ``#rrggbb``).
    difference_stretch : {'zscale', 'asinh-central'}
        ``zscale`` + linear (the seed) or min/max + asinh(a=0.1) on the central
        15x15 pixels (current lsst.analysis.ap).
    position : {'auto', 'xy', 'radec'}
        Where the source is: catalogue ``x``/``y`` (shared pixel grid), sky
        ``ra``/``dec`` through each image's WCS, or ``auto`` (x/y when present).
    pixel_scale : float or None
        Arcsec per pixel for the scale bar when no WCS gives it.
    instrument : str or None
        Instrument name for the annotation when neither the APDB nor the
        image header names it.
    layout : {'triplet', 'frames', 'both'}
        ``triplet``: one PNG of the three panels (the default); ``frames``:
        one PNG per panel (template, science, difference of each size, in
        that order) for Zooniverse's flipbook; ``both``: the triplet first,
        then the frames.
    lightcurve : {'flux', 'mag'} or None
        Also draw each source's light curve (flux in nJy, or AB magnitude).
    lightcurve_json : bool
        Also write the light curve as Zooniverse scatter-plot viewer JSON
        (needs ``lightcurve``).
    """

    sizes: tuple[int, ...] = (30,)
    annotate: bool = False
    use_footprint: bool = False
    numpy: bool = False
    chunk_size: int = 10_000
    cmap: str = "gray"
    scale: int | None = None
    nan_color: str = "#ff00ff"
    difference_stretch: Literal["zscale", "asinh-central"] = "zscale"
    position: Literal["auto", "xy", "radec"] = "auto"
    pixel_scale: float | None = None
    instrument: str | None = None
    layout: Literal["triplet", "frames", "both"] = "triplet"
    lightcurve: Literal["flux", "mag"] | None = None
    lightcurve_json: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for ``zooprep.toml`` (None values left out)."""
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()
            if v is not None
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RenderOptions:
        """Inverse of `to_dict`; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "sizes" in kwargs:
            kwargs["sizes"] = tuple(int(s) for s in kwargs["sizes"])
        return cls(**kwargs)


@dataclass(frozen=True)
class UploadOptions:
    """How subjects are sent to Zooniverse.

    Parameters
    ----------
    project : str
        Zooniverse project id.
    subject_set_id : str or None
        Existing subject set id.
    subject_set : str or None
        Subject set display name; created when absent.
    endpoint : str
        Panoptes endpoint (production by default; use
        ``https://panoptes-staging.zooniverse.org`` to rehearse).
    workers : int
        Concurrent upload threads.
    dry_run : bool
        Validate everything, upload nothing.
    timeout : float
        Seconds before any one HTTP request is abandoned.
    workflow : str or None
        A workflow of the project to link the subject set to (once; a
        workflow that does not exist or belongs to another project is
        refused before anything is uploaded).
    """

    project: str
    subject_set_id: str | None = None
    subject_set: str | None = None
    endpoint: str = "https://www.zooniverse.org"
    workers: int = 8
    dry_run: bool = False
    timeout: float = 60.0
    workflow: str | None = None
