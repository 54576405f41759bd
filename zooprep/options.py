"""Settings of each stage, as frozen dataclasses that check themselves.

The CLI builds them from flags; ``zooprep.toml`` in the run directory keeps
them (as plain tables) so that a resumed stage uses the same settings.  Each
class validates its values when it is made and raises
`~zooprep.errors.InputError` with one line naming the bad value, so the
Python API refuses exactly what the command line refuses.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from zooprep.errors import InputError
from zooprep.vocabulary import POSITIONS, PRODUCTION, Position

__all__ = [
    "LAYOUTS",
    "MAX_FILE_BYTES",
    "MAX_SIZE",
    "MIN_SIZE",
    "PICTURE_OPTIONS",
    "PSF_CHOICES",
    "FakesOptions",
    "Feedback",
    "RenderOptions",
    "SelectOptions",
    "UploadOptions",
]

#: Most concurrent upload threads (Zooniverse asks uploaders to be gentle).
MAX_WORKERS = 64

#: Smallest and largest cutout size in pixels.
MIN_SIZE, MAX_SIZE = 3, 1024

#: The choices of `RenderOptions.difference_stretch`.
STRETCHES = ("zscale", "asinh-central")

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
    position: Position = "auto"
    pixel_scale: float | None = None
    instrument: str | None = None
    layout: Literal["triplet", "frames", "both"] = "triplet"
    lightcurve: Literal["flux", "mag"] | None = None
    lightcurve_json: bool = False

    def __post_init__(self) -> None:
        sizes = tuple(self.sizes)
        for size in sizes:
            if isinstance(size, bool) or not isinstance(size, int):
                raise InputError(
                    f"sizes: {size!r} is not a whole number of pixels (e.g. 30 or 32,64)"
                )
            if not MIN_SIZE <= size <= MAX_SIZE:
                raise InputError(
                    f"sizes: {size} is out of range; each size must be between "
                    f"{MIN_SIZE} and {MAX_SIZE} pixels"
                )
        object.__setattr__(self, "sizes", sizes)
        if self.chunk_size < 1:
            raise InputError(f"chunk_size must be at least 1, not {self.chunk_size}")
        if self.scale is not None and self.scale < 1:
            raise InputError(f"scale must be at least 1, not {self.scale}")
        if self.difference_stretch not in STRETCHES:
            raise InputError(
                f"difference_stretch {self.difference_stretch!r} is not one of "
                f"{', '.join(STRETCHES)}"
            )
        if self.position not in POSITIONS:
            raise InputError(
                f"position {self.position!r} is not one of {', '.join(POSITIONS)}"
            )
        if self.pixel_scale is not None and not self.pixel_scale > 0:
            raise InputError(f"pixel_scale must be positive, not {self.pixel_scale}")
        if self.layout not in LAYOUTS:
            raise InputError(
                f"layout {self.layout!r} is not one of {', '.join(LAYOUTS)}"
            )
        if self.lightcurve not in (None, "flux", "mag"):
            raise InputError(f"lightcurve {self.lightcurve!r} is not one of flux, mag")
        if self.lightcurve_json and not self.lightcurve:
            raise InputError(
                "--lightcurve-json needs --lightcurve: the JSON goes after the "
                "light-curve PNG in each subject"
            )
        _check_cmap(self.cmap)
        _check_color(self.nan_color)

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
    verify : bool
        Read every file back from the subject's public location after its
        PUT (size, and MD5 where the store gives one) before the subject
        counts as uploaded (default).  False trusts the store's 201.
    workflow : str or None
        A workflow of the project to link the subject set to (once; a
        workflow that does not exist or belongs to another project is
        refused before anything is uploaded).  The feedback rule the
        manifest's training subjects name must be defined in its task.
    training_set, training_set_id : str or None
        The subject set (by name, created when absent, or by id) the
        manifest's training subjects (``#training_subject``) go to, apart
        from the ordinary ones; needed when the manifest has any.
    """

    project: str
    subject_set_id: str | None = None
    subject_set: str | None = None
    endpoint: str = PRODUCTION
    workers: int = 8
    dry_run: bool = False
    timeout: float = 60.0
    verify: bool = True
    workflow: str | None = None
    training_set: str | None = None
    training_set_id: str | None = None

    def __post_init__(self) -> None:
        if self.training_set is not None and self.training_set_id is not None:
            raise InputError("give one of --training-set and --training-set-id")
        if bool(self.subject_set_id) == bool(self.subject_set):
            raise InputError(
                "give exactly one of subject_set_id (--subject-set-id) and "
                "subject_set (--subject-set)"
            )
        if not 1 <= self.workers <= MAX_WORKERS:
            raise InputError(
                f"workers must be from 1 to {MAX_WORKERS}, not {self.workers}"
            )
        if not self.timeout > 0:
            raise InputError(f"timeout must be positive, not {self.timeout}")


def _check_cmap(name: str) -> None:
    """Refuse a colour map matplotlib does not have, naming the valid ones."""
    import matplotlib

    if name in matplotlib.colormaps:
        return
    names = sorted(
        (n for n in matplotlib.colormaps if not n.endswith("_r")), key=str.lower
    )
    raise InputError(
        f"cmap {name!r} is not a matplotlib colour map; valid choices: "
        f"{', '.join(names)} (each also reversed with _r)"
    )


def _check_color(color: str) -> None:
    """Refuse a colour matplotlib cannot read."""
    from matplotlib.colors import is_color_like

    if not is_color_like(color):
        raise InputError(
            f"nan_color {color!r} is not a colour; valid choices: a matplotlib "
            "colour name (magenta, black, tab:red...), '#rrggbb' or '#rgb'"
        )


#: The select sources: (field, flag).
_SOURCES = (
    ("apdb", "--apdb"),
    ("catalog", "--catalog"),
    ("alerts", "--alerts"),
    ("apdb_config", "--apdb-config"),
)


def parse_stratify(stratify: str | None) -> tuple[str | None, int]:
    """``COLUMN:BINS`` -> (column, bins); a bare COLUMN means 10 bins.

    Raises
    ------
    InputError
        When the text is not ``COLUMN[:BINS]`` with a whole BINS of at least 1.
    """
    if not stratify:
        return None, 0
    column, sep, bins_text = stratify.partition(":")
    column = column.strip()
    if not column:
        raise InputError(
            f"--stratify {stratify!r}: use COLUMN:BINS, e.g. reliability:10"
        )
    if not sep:
        return column, 10
    try:
        bins = int(bins_text)
    except ValueError:
        raise InputError(
            f"--stratify {stratify!r}: BINS must be a whole number, e.g. reliability:10"
        ) from None
    if bins < 1:
        raise InputError(f"--stratify {stratify!r}: BINS must be at least 1")
    return column, bins


def _tuple(value: Sequence[Any] | None) -> tuple[Any, ...] | None:
    """A sequence as a tuple; None and empty stay None."""
    return tuple(value) if value else None


@dataclass(frozen=True)
class SelectOptions:
    """Which sources `~zooprep.select` takes, and from where.

    Exactly one of ``apdb``, ``catalog``, ``alerts`` or ``apdb_config`` is
    needed.  Catalog files need an id (``diaSourceId`` or ``id_column``),
    ``visit`` and ``detector`` (or an ``image`` column) and ``x``/``y`` (or
    ``ra``/``dec``), under DiaSource names (use ``rename``).

    Parameters
    ----------
    apdb : str, optional
        SQLAlchemy URL of a Rubin APDB (``sqlite:///path``, ``postgresql://...``).
    catalog : str or os.PathLike, optional
        CSV, Parquet, FITS or ECSV table.
    alerts : str or os.PathLike, optional
        Glob of ZTF / Rubin Avro alert packets (or a directory or one file).
    apdb_config : str or os.PathLike, optional
        An APDB config file, read with lsst-dax-apdb (optional dependency).
    schema : str, optional
        Database schema (PostgreSQL namespace) of the APDB tables.
    where : str, optional
        Filter such as ``'reliability > 0.5 and band == "r"'`` (see
        `zooprep.readers.where`).
    visit, detector, band : sequence, optional
        Keep only these visits, detectors, bands.
    reliability_min, reliability_max : float, optional
        Keep ``reliability`` within these bounds (inclusive).
    limit : int, optional
        At most this many sources: the smallest ids (after sampling).
    sample : int, optional
        A random sample of this many sources.
    seed : int, optional
        Seed for ``sample`` (drawn and saved when None).
    stratify : str, optional
        ``COLUMN:BINS``: spread the sample evenly over bins of COLUMN.
    id_column : str, optional
        Id column (``diaSourceId`` by default).
    rename : mapping of str to str, optional
        Catalog column renames ``{old: new}``.
    instrument : str, optional
        Instrument name where the source does not name it.
    append : bool
        Add to a run that already holds sources (new ids only).
    """

    apdb: str | None = None
    catalog: str | os.PathLike[str] | None = None
    alerts: str | os.PathLike[str] | None = None
    apdb_config: str | os.PathLike[str] | None = None
    schema: str | None = None
    where: str | None = None
    visit: Sequence[int] | None = None
    detector: Sequence[int] | None = None
    band: Sequence[str] | None = None
    reliability_min: float | None = None
    reliability_max: float | None = None
    limit: int | None = None
    sample: int | None = None
    seed: int | None = None
    stratify: str | None = None
    id_column: str | None = None
    rename: Mapping[str, str] | None = None
    instrument: str | None = None
    append: bool = False

    def __post_init__(self) -> None:
        for name in ("visit", "detector", "band"):
            object.__setattr__(self, name, _tuple(getattr(self, name)))
        object.__setattr__(self, "rename", dict(self.rename) if self.rename else None)
        given = [flag for name, flag in _SOURCES if getattr(self, name)]
        if len(given) != 1:
            raise InputError(
                "give exactly one of --apdb, --catalog, --alerts or --apdb-config"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.rename and self.catalog is None:
            raise InputError("--rename applies to --catalog files only")
        if self.schema and not (self.apdb or self.apdb_config):
            raise InputError("--schema applies to --apdb databases only")
        for name in ("limit", "sample"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name} must be at least 1, not {value}")
        if self.stratify and not self.sample:
            raise InputError("--stratify needs --sample N")
        parse_stratify(self.stratify)


#: ``zooprep fakes --psf`` choices: the first usable of a PSF image, an
#: effective PSF and a Gaussian of the seeing, or one of them
#: (see `zooprep.injection`).
PSF_CHOICES = ("auto", "psfimage", "epsf", "gaussian")


def parse_mag_range(text: str) -> tuple[float, float]:
    """``"20:25"`` as ``(20.0, 25.0)``, or InputError.

    Examples
    --------
    >>> parse_mag_range("20:24.5")
    (20.0, 24.5)
    """
    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise InputError(
            f"--mag {text!r} is not BRIGHT:FAINT in AB magnitudes (e.g. 20:25)"
        ) from None
    return low, high


@dataclass(frozen=True)
class FakesOptions:
    """Which known answers ``zooprep fakes`` adds to a run.

    Parameters
    ----------
    count : int or None
        Fakes to inject, spread over the run's images in proportion to their
        sources (None with ``truth_column``).
    mag : tuple of float
        ``(bright, faint)`` AB magnitudes; fakes are uniform in magnitude.
    seed : int
        Seed of every random choice (positions, magnitudes, noise, streams):
        the same seed gives the same fakes.
    training : float
        Share of the known answers that are training subjects (feedback,
        their own subject set); the rest are blind (no feedback, mixed into
        the ordinary set).  Chosen per fake.
    psf : {'auto', 'psfimage', 'epsf', 'gaussian'}
        How each image's PSF is had (`zooprep.injection`).
    zeropoint : float or None
        AB magnitude of one count, for images whose header gives none.
    gain : float or None
        Electrons per count, for images whose header gives none (use the
        effective gain of a stack: gain times the number of exposures averaged).
    separation : float or None
        Least distance in pixels from a fake to another fake or to any of the
        run's sources (default: half the diagonal of the largest cutout, and
        far enough that two fakes' stamps never overlap).
    truth_column : str or None
        Instead of injecting: the column that says which sources are known
        real (true, 1, ``real``, ``injected``) or known bogus (``bogus``,
        ``artefact``); other values (false, 0, empty) leave a source unknown.
    truth_mag : str or None
        With ``truth_column``: the column of the injected magnitude.
    """

    count: int | None = None
    mag: tuple[float, float] = (20.0, 25.0)
    seed: int = 0
    training: float = 0.0
    psf: str = "auto"
    zeropoint: float | None = None
    gain: float | None = None
    separation: float | None = None
    truth_column: str | None = None
    truth_mag: str | None = None

    def __post_init__(self) -> None:
        if self.truth_column is None:
            if self.count is None:
                raise InputError(
                    "give --count N (fakes to inject) or --truth-column COL"
                )
            if self.count < 1:
                raise InputError(f"--count must be at least 1, not {self.count}")
        elif self.count is not None:
            raise InputError(
                "--count injects fakes, --truth-column marks sources already "
                "there: give one of them"
            )
        if self.truth_mag is not None and self.truth_column is None:
            raise InputError("--truth-mag goes with --truth-column")
        low, high = (float(v) for v in self.mag)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise InputError(
                f"--mag {low:g}:{high:g}: give BRIGHT:FAINT with BRIGHT < FAINT"
            )
        object.__setattr__(self, "mag", (low, high))
        if not 0.0 <= self.training <= 1.0:
            raise InputError(f"--training must be between 0 and 1, not {self.training}")
        if self.psf not in PSF_CHOICES:
            raise InputError(
                f"--psf must be one of {', '.join(PSF_CHOICES)}, not {self.psf!r}"
            )
        for name in ("zeropoint", "gain", "separation"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"--{name} must be a positive number, not {value}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain table (for ``zooprep.toml``)."""
        out = asdict(self)
        out["mag"] = list(self.mag)
        return out


#: The fields a feedback message may name, filled per subject.
MESSAGE_FIELDS = ("mag", "snr")


@dataclass(frozen=True)
class Feedback:
    """The Zooniverse feedback rule the manifest writes on training subjects.

    Parameters
    ----------
    rule : str
        The rule's id, as defined in the workflow task's feedback section.
    real_answer : int
        Zero-based index of the task's answer that means real.
    bogus_answer : int or None
        Index of the answer that means bogus (needed when known-bogus
        subjects are training subjects).
    success, failure : str or None
        Messages of this subject's rule (the workflow's defaults otherwise);
        ``{mag}`` and ``{snr}`` are replaced by the fake's magnitude and S/N.
    """

    rule: str
    real_answer: int
    bogus_answer: int | None = None
    success: str | None = None
    failure: str | None = None

    def __post_init__(self) -> None:
        import string

        if not str(self.rule).strip():
            raise InputError("--feedback needs the rule id defined in the workflow")
        if self.real_answer < 0:
            raise InputError(
                f"--real-answer is the answer's index from 0, not {self.real_answer}"
            )
        if self.bogus_answer is not None and (
            self.bogus_answer < 0 or self.bogus_answer == self.real_answer
        ):
            raise InputError(
                f"--bogus-answer {self.bogus_answer} must be another answer's index "
                "from 0"
            )
        for flag, text in (
            ("--success-message", self.success),
            ("--failure-message", self.failure),
        ):
            if not text:
                continue
            try:
                names = [
                    f for _, f, _, _ in string.Formatter().parse(text) if f is not None
                ]
            except ValueError as exc:
                raise InputError(f"{flag} {text!r}: {exc}") from None
            bad = [n for n in names if n.split(":")[0] not in MESSAGE_FIELDS]
            if bad:
                raise InputError(
                    f"{flag} names {{{bad[0]}}}; a message may name "
                    + ", ".join(f"{{{f}}}" for f in MESSAGE_FIELDS)
                )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain table (for ``zooprep.toml``)."""
        return asdict(self)
