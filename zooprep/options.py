"""The settings of every stage: one frozen dataclass each, the one owner of them.

=====================  =====================  ==============================
class                  ``zooprep.toml``       stage and command
=====================  =====================  ==============================
`SelectOptions`        ``[select]``           ``zooprep select``
`RenderOptions`        ``[render]``           ``zooprep render`` (its image
                                              part: `ImageOptions`)
`ManifestOptions`      ``[manifest]``         ``zooprep manifest``
`UploadOptions`        ``[upload]``           ``zooprep upload``
`ResultsOptions`       ``[results]``          ``zooprep results``
`FakesOptions`         ``[fakes]``            ``zooprep fakes``
=====================  =====================  ==============================

Each field is made with `setting`, which records what the command line and
the run directory need to know of it: its flag, its help line, its default,
its choices, whether it is saved in ``zooprep.toml``.  The ``zooprep``
command builds its flags from these (``--help`` shows the defaults given
here), and ``tests/test_options.py`` checks that every flag is a field and
every field with a flag is on the command line.

A field is **unset** (`UNSET`) unless it is given, so an options object
says only what its caller chose.  A stage merges it over what the run saved
(`Options.merge`) and fills the rest with the defaults (`Options.resolved`);
an object and a mapping with the same content therefore do the same thing.
Every value is checked when the object is made, and a bad one raises
`~zooprep.errors.InputError` with the line the command line prints.

`Run.settings <zooprep.run.Run.settings>` gives the saved sections back as
these classes (`Settings`), so one stage reads another's settings as
attributes: ``run.settings.select.kind``, ``run.settings.upload.project``.

Examples
--------
>>> options = RenderOptions(sizes=(32, 64), annotate=True)
>>> options
RenderOptions(sizes=(32, 64), annotate=True)
>>> options.numpy is UNSET, options.resolved().numpy
(True, False)
>>> RenderOptions(numpy=True).merge(options) == RenderOptions(
...     numpy=True, sizes=(32, 64), annotate=True)
True
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from typing import Any, ClassVar, Literal, TypeVar

from zooprep.errors import InputError
from zooprep.manifest_format import LAYOUTS as MANIFEST_LAYOUTS
from zooprep.viewers import SUBJECT_VIEWERS
from zooprep.vocabulary import (
    BUTLER_DATASET_TYPES,
    POSITIONS,
    PRODUCTION,
    STRATEGIES,
    Position,
    refuse_secret_query,
)

__all__ = [
    "LAYOUTS",
    "MANIFEST_LAYOUTS",
    "MAX_FILE_BYTES",
    "MAX_SIZE",
    "MESSAGE_FIELDS",
    "MIN_SIZE",
    "PSF_CHOICES",
    "UNSET",
    "FakesOptions",
    "ImageOptions",
    "ManifestOptions",
    "Options",
    "RenderOptions",
    "ResultsOptions",
    "SelectOptions",
    "Settings",
    "UploadOptions",
    "parse_stratify",
    "setting",
]

#: Most concurrent upload threads (Zooniverse asks uploaders to be gentle).
MAX_WORKERS = 64
#: Smallest and largest cutout size in pixels.
MIN_SIZE, MAX_SIZE = 3, 1024
#: The choices of `RenderOptions.difference_stretch`.
STRETCHES = ("zscale", "asinh-central")
#: Picture layouts of ``zooprep render --layout``.
LAYOUTS = ("triplet", "frames", "both")
#: Light-curve modes of ``zooprep render --lightcurve``.
LIGHTCURVES = ("flux", "mag")
#: Where ``zooprep render`` runs.
EXECUTORS = ("local", "dask")
#: How ``zooprep upload`` sends subjects.
VIAS = ("direct", "import")
#: The largest media file Zooniverse accepts (its web front end refuses more).
MAX_FILE_BYTES = 1_000_000


class _Unset(enum.Enum):
    """The value of a field nobody gave."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


#: A field that was not given (false in a condition, like None).
UNSET: Any = _Unset.UNSET


def setting(
    default: Any = None,
    *,
    help: str = "",
    flag: str | None = "",
    saved: bool = True,
    choices: Sequence[str] = (),
    picture: bool = False,
    shown_default: str | None = None,
    convert: Callable[[Any], Any] | None = None,
) -> Any:
    """A field of an options class: unset unless given.

    Parameters
    ----------
    default : object
        The value used when the field is neither given nor saved.
    help : str
        The flag's help line (``--help`` adds the default).
    flag : str or None
        The command-line flag; ``""`` derives it from the name
        (``chunk_size`` is ``--chunk-size``); None: no flag (a value the
        stage records, such as ``[select] source``).
    saved : bool
        Written to the stage's section of ``zooprep.toml``.
    choices : sequence of str
        The values allowed (checked, and listed by ``--help``).
    picture : bool
        Render only: changing it on a rendered run needs ``force``.
    shown_default : str or None
        What ``--help`` says the default is, when not ``str(default)``;
        ``""`` says nothing.
    convert : callable, optional
        Normalises a given value (e.g. a list from TOML into a tuple).
    """
    return field(
        default=UNSET,
        metadata={
            "default": default,
            "help": help,
            "flag": flag,
            "saved": saved,
            "choices": tuple(choices),
            "picture": picture,
            "shown_default": shown_default,
            "convert": convert,
        },
    )


OptionsT = TypeVar("OptionsT", bound="Options")


def _tuple(value: Any) -> tuple[Any, ...] | None:
    """A sequence as a tuple; None and empty stay None."""
    if isinstance(value, str):
        return (value,)
    return tuple(value) if value else None


def _paths(value: Any) -> tuple[str, ...] | None:
    """Run directories as absolute paths (so a saved list compares equal)."""
    listed = _tuple(value)
    return tuple(os.path.abspath(os.fspath(p)) for p in listed) if listed else None


def _as_tuple(value: Any) -> tuple[Any, ...]:
    """A sequence (or one text) as a tuple; empty stays empty."""
    return (value,) if isinstance(value, str) else tuple(value)


def _plain(value: Any) -> Any:
    """A value as TOML can hold it (tuples as lists, paths as text)."""
    if isinstance(value, Options):
        return value.to_toml()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


class Options:
    """What every options class can do; subclasses are frozen dataclasses.

    A subclass names its ``zooprep.toml`` section in ``SECTION`` and checks
    its values in `_check` (each value alone, and combinations that need no
    other field than those given) and in `_check_request` (what a complete
    request needs, e.g. exactly one source: not asked of a saved section).
    """

    #: The section of ``zooprep.toml`` (a table name).
    SECTION: ClassVar[str] = ""

    # -- making and checking ---------------------------------------------------

    def __post_init__(self) -> None:
        self._normalize()
        self._check()
        self._check_request()

    def _normalize(self) -> None:
        """Convert given values (``convert`` of each field)."""
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            convert = f.metadata.get("convert")
            if value is not UNSET and value is not None and convert is not None:
                object.__setattr__(self, f.name, convert(value))

    def _check(self) -> None:
        """Raise InputError for a bad value (unset fields are not checked)."""
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            set_ = value is not UNSET and value is not None
            if choices and set_ and value not in choices:
                raise InputError(
                    f"{f.name} {value!r} is not one of {', '.join(choices)}"
                )

    def _check_request(self) -> None:
        """Raise InputError when a request lacks or mixes something."""

    @classmethod
    def record(cls: type[OptionsT], **values: Any) -> OptionsT:
        """A saved section: these values, checked one by one.

        Unlike the constructor, the rules of a complete request are not
        applied: a saved ``[upload]`` holds both the subject set's id and the
        name it was given by.
        """
        return cls._build(values, request=False)

    @classmethod
    def _build(
        cls: type[OptionsT], values: Mapping[str, Any], *, request: bool
    ) -> OptionsT:
        """An instance from ``values`` (unknown names refused)."""
        names = cls.field_names()
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise TypeError(
                f"{cls.__name__} has no field {', '.join(unknown)}; "
                f"fields: {', '.join(names)}"
            )
        obj = object.__new__(cls)
        for name in names:
            object.__setattr__(obj, name, values.get(name, UNSET))
        obj._normalize()
        obj._check()
        if request:
            obj._check_request()
        return obj

    @classmethod
    def coerce(cls: type[OptionsT], options: Any, given: Mapping[str, Any]) -> OptionsT:
        """The options of one stage call: an object, a mapping, or keywords.

        One of the three: an object and a mapping with the same content do
        the same, and neither is mixed with keywords (combine them with
        `merge` first).

        Raises
        ------
        TypeError
            Options and keywords both, an unknown name.
        """
        stage = cls.SECTION
        if options is not None and given:
            raise TypeError(
                f"{stage}() takes an options object (or mapping) or keywords, not "
                f"both (got {', '.join(sorted(given))})"
            )
        if isinstance(options, cls):
            return options
        if options is None:
            return cls(**given)
        if isinstance(options, Mapping):
            return cls(**options)
        raise TypeError(
            f"{stage}() options must be a {cls.__name__} or a mapping, "
            f"not {type(options).__name__}"
        )

    # -- reading ---------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        """Every field's name, in order."""
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def spec(cls, name: str) -> Field[Any]:
        """The dataclass field ``name`` (its ``metadata`` says what `setting` did)."""
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name == name:
                return f
        raise KeyError(f"{cls.__name__} has no field {name!r}")

    @classmethod
    def default(cls, name: str) -> Any:
        """The value of ``name`` when it is neither given nor saved."""
        return cls.spec(name).metadata["default"]

    @classmethod
    def flag(cls, name: str) -> str | None:
        """The command-line flag of ``name`` (None when it has none)."""
        flag = cls.spec(name).metadata["flag"]
        if flag == "":
            return "--" + name.replace("_", "-")
        return str(flag) if flag else None

    @classmethod
    def flags(cls) -> dict[str, str]:
        """``{field name: flag}`` of the fields that have a flag."""
        out = {}
        for name in cls.field_names():
            flag = cls.flag(name)
            if flag:
                out[name] = flag
        return out

    @classmethod
    def choices(cls, name: str) -> tuple[str, ...]:
        """The values ``name`` may take (empty: any)."""
        return tuple(cls.spec(name).metadata["choices"])

    @classmethod
    def help(cls, name: str) -> str:
        """The help line of ``name``'s flag, ending with its default."""
        meta = cls.spec(name).metadata
        shown = meta["shown_default"]
        if shown is None:
            default = meta["default"]
            shown = "" if default is None or isinstance(default, bool) else default
            if isinstance(shown, tuple):
                shown = ",".join(str(v) for v in shown)
        text = str(meta["help"])
        return f"{text} [default: {shown}]" if str(shown) else text

    def given(self) -> dict[str, Any]:
        """The fields that were given (or saved), by name."""
        return {
            name: getattr(self, name)
            for name in self.field_names()
            if getattr(self, name) is not UNSET
        }

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.given().items())
        return f"{type(self).__name__}({inner})"

    # -- combining ---------------------------------------------------------------

    def merge(
        self: OptionsT,
        other: OptionsT | Mapping[str, Any] | None = None,
        /,
        **more: Any,
    ) -> OptionsT:
        """These options with the fields given in ``other`` (and ``more``) replaced.

        Parts (`RenderOptions.images`) are merged field by field.  The result
        is checked as a request.

        Examples
        --------
        >>> saved = RenderOptions(sizes=(), numpy=True)
        >>> saved.merge(RenderOptions(numpy=False))
        RenderOptions(sizes=(), numpy=False)
        """
        if other is None:
            changes: dict[str, Any] = {}
        elif isinstance(other, Options):
            changes = other.given()
        else:
            changes = dict(other)
        changes.update(more)
        values = self.given()
        for name, value in changes.items():
            old = values.get(name)
            if isinstance(old, Options) and isinstance(value, Options | Mapping):
                values[name] = old.merge(value)
            else:
                values[name] = value
        return type(self)(**values)

    def resolved(self: OptionsT) -> OptionsT:
        """Every field set: the given ones, and the defaults for the rest."""
        values: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is UNSET:
                value = f.metadata["default"]
            if isinstance(value, Options):
                value = value.resolved()
            values[f.name] = value
        return self._build(values, request=False)

    @classmethod
    def defaults(cls: type[OptionsT]) -> OptionsT:
        """Every field at its default."""
        return cls._build({}, request=False).resolved()

    # -- zooprep.toml ---------------------------------------------------------------

    def to_toml(self) -> dict[str, Any]:
        """The saved fields that are set, as plain TOML values (None left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata.get("saved") and value is not UNSET and value is not None:
                out[f.name] = _plain(value)
        return out

    @classmethod
    def from_toml(cls: type[OptionsT], table: Mapping[str, Any]) -> OptionsT:
        """A saved section read back (unknown keys are ignored)."""
        names = set(cls.field_names())
        return cls.record(**{k: v for k, v in table.items() if k in names})


# -- select ---------------------------------------------------------------------

#: The select sources: (field, flag).
SOURCES = (
    ("apdb", "--apdb"),
    ("catalog", "--catalog"),
    ("alerts", "--alerts"),
    ("apdb_config", "--apdb-config"),
    ("lasair_query", "--lasair-query"),
    ("lasair_objects", "--lasair-objects"),
    ("fink_objects", "--fink-objects"),
    ("fink_tag", "--fink-tag"),
    ("alerce_objects", "--alerce-objects"),
    ("alerce_query", "--alerce-query"),
    ("kafka", "--kafka"),
    ("tap", "--tap"),
)
#: Choices of ``SelectOptions.per_object``.
PER_OBJECT = ("all", "latest")


def _one_of_sources() -> str:
    """``give exactly one of --apdb, ... or --kafka``."""
    flags = [flag for _, flag in SOURCES]
    return f"give exactly one of {', '.join(flags[:-1])} or {flags[-1]}"


def parse_stratify(stratify: str | None) -> tuple[str | None, int]:
    """``COLUMN:BINS`` -> (column, bins); a bare COLUMN means 10 bins.

    Raises
    ------
    InputError
        When the text is not ``COLUMN[:BINS]`` with a whole BINS of at least 1.

    Examples
    --------
    >>> parse_stratify("reliability:5"), parse_stratify("band")
    (('reliability', 5), ('band', 10))
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


@dataclass(frozen=True, kw_only=True, repr=False)
class SelectOptions(Options):
    """Which sources `~zooprep.select` takes, and from where.

    Exactly one of ``apdb``, ``catalog``, ``alerts``, ``apdb_config``,
    ``lasair_query``, ``lasair_objects``, ``fink_objects``,
    ``alerce_objects`` or ``kafka`` is needed (or a reader object given to `~zooprep.select`, which sets
    ``kind`` and ``source``).  Catalog files need an id (``diaSourceId`` or
    ``id_column``), ``visit`` and ``detector`` (or an ``image`` column) and
    ``x``/``y`` (or ``ra``/``dec``), under DiaSource names (use ``rename``).

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
        Instrument name where the source does not name it (saved: the one
        the source gave).
    append : bool
        Add to a run that already holds sources (new ids only).
    lasair_query, lasair_objects, fink_objects, fink_tag, alerce_objects, alerce_query : str, optional
        Alert brokers as sources (README, "Brokers and streams"): object ids
        (comma-separated, or a file) of Lasair, Fink or ALeRCE, or each
        broker's query form (a Lasair query, a Fink tag, ALeRCE KEY=VALUEs).
    per_object : {'all', 'latest'}
        Broker objects give a source per diaSource with cutouts, or only the
        newest.
    lasair_endpoint, fink_endpoint : str
        The brokers' APIs.
    lasair_rate : str
        Lasair calls allowed per hour (``CALLS`` or ``CALLS/SECONDS``).
    broker_wait : float
        Seconds select may wait in all for a rate limit before stopping.
    kafka : str, optional
        ``HOST:PORT`` of a Kafka broker to read ``topic`` from.
    topic, group : str, optional
        The topic and consumer group (default: named after the run).
    max : int, optional
        Stop after this many messages.
    until_idle : float, optional
        Stop after this many seconds without a message.
    schema_registry : str, optional
        Confluent schema registry for schema ids (default lsst-alert-packet).
    kafka_config : sequence of str, optional
        Extra librdkafka settings ``KEY=VALUE`` (no secrets).
    lasair_web : str
        Where Lasair's cutouts are, for sources read from its Kafka topics.
    tap : str, optional
        A TAP service (the Rubin Science Platform) to read ``table`` or
        ``query`` from (README, "Rubin Science Platform").
    table, query : str, optional
        A table read in pages with the filters as ADQL, or ADQL run once.
    tap_mode : {'async', 'sync'}
        UWS jobs or synchronous queries.
    tap_page_size : int, optional
        Rows per page of ``table``.
    kind, source : str, optional
        Recorded by select: the reader's kind (``apdb``, ``catalog``,
        ``alerts``, ``lasair``, ``fink``, ``alerce``, ``kafka``, ...) and what
        it read, without secrets.
    next : int, optional
        Choose this many sources from what volunteers said in the
        ``learn_from`` runs (`zooprep.stages.nextbatch`).
    learn_from : sequence of path, optional
        Runs with results to learn the calibration from (their shown
        sources are left out).
    strategy : {'uncertainty', 'disagreement', 'stratified'}
        How ``next`` chooses (`zooprep.learning`).
    random_share : float
        Share of ``next`` chosen uniformly at random.
    reshow_controversial : int, optional
        List this many shown subjects with split votes to show again.
    learned : str, optional
        Recorded by select: digest of the results ``next`` learnt from.
    selected_at : str, optional
        Recorded by select: when (ISO 8601).
    history : sequence of str, optional
        Recorded by select: the earlier selections of an appended run.
    """

    SECTION: ClassVar[str] = "select"
    #: Saved fields that do not define the selection (ignored when comparing).
    NOT_COMPARED: ClassVar[tuple[str, ...]] = (
        "history",
        "instrument",
        "selected_at",
        # how long or how fast to read, not what: a stream read on with a new
        # --max, or a broker at another rate, is the same selection
        "max",
        "until_idle",
        "broker_wait",
        "lasair_rate",
        # the digest of the results --next learnt from: checked by the choice
        "learned",
    )

    kind: str | None = setting(flag=None)
    source: str | None = setting(flag=None)
    apdb: str | None = setting(
        saved=False,  # a URL may hold a password: [select] source has it without
        help="SQLAlchemy URL of a Rubin APDB, e.g. sqlite:///apdb.sqlite3 or "
        "postgresql://user@host/db (password from PGPASSWORD or ~/.pgpass).",
    )
    catalog: str | os.PathLike[str] | None = setting(
        saved=False,
        help="A catalog file: CSV, Parquet, FITS or ECSV table with DiaSource "
        "column names.",
    )
    alerts: str | os.PathLike[str] | None = setting(
        saved=False, help="ZTF or Rubin Avro alert packets, e.g. 'alerts/*.avro'."
    )
    apdb_config: str | os.PathLike[str] | None = setting(
        help="An APDB config file read through lsst-dax-apdb (optional extra)."
    )
    schema: str | None = setting(
        help="Database schema (PostgreSQL namespace) holding the APDB tables."
    )
    where: str | None = setting(
        help='Filter, e.g. \'reliability > 0.5 and band == "r" and not '
        "pixelFlags_edge'. Comparisons joined by and/or/not."
    )
    visit: Sequence[int] | None = setting(
        help="Only these visits (repeatable).", convert=_tuple
    )
    detector: Sequence[int] | None = setting(
        help="Only these detectors (repeatable).", convert=_tuple
    )
    band: Sequence[str] | None = setting(
        help="Only these bands (repeatable).", convert=_tuple
    )
    reliability_min: float | None = setting(help="Keep reliability >= this.")
    reliability_max: float | None = setting(help="Keep reliability <= this.")
    limit: int | None = setting(help="At most N sources.")
    sample: int | None = setting(
        help="A random sample of N sources (reproducible with --seed)."
    )
    seed: int | None = setting(help="Random seed for --sample and --next.")
    stratify: str | None = setting(
        help="Spread --sample evenly over BINS bins of COLUMN, e.g. reliability:10."
    )
    id_column: str | None = setting(
        help="Column holding the source id.",
        shown_default="diaSourceId, or candid for ZTF",
    )
    rename: Mapping[str, str] | None = setting(
        help="Rename a catalog column to its DiaSource name (repeatable).",
        convert=lambda v: dict(v) or None,
    )
    instrument: str | None = setting(
        help="Instrument name, when the source does not say."
    )
    append: bool = setting(
        False,
        saved=False,
        help="Add new sources to an existing run (ids already there are kept).",
    )
    lasair_query: str | None = setting(
        saved=False,
        help="Sources of the Lasair objects a query finds: 'SELECT ... FROM "
        "tables WHERE ...', a watchlist ('watchlist:42') or conditions on "
        "objects ('nDiaSources > 5'). Extra 'zooprep[brokers]'; token from "
        "LASAIR_TOKEN.",
    )
    lasair_objects: str | None = setting(
        saved=False,
        help="Sources of these Lasair objects: comma-separated diaObjectIds or "
        "a file of them (one per line, or a CSV with a diaObjectId column). "
        "Token from LASAIR_TOKEN.",
    )
    fink_objects: str | None = setting(
        saved=False,
        help="Sources of these Fink (LSST) objects: ids or a file, as "
        "--lasair-objects.",
    )
    fink_tag: str | None = setting(
        saved=False,
        help="Sources of the objects of the latest alerts Fink gave this tag "
        "(its /api/v1/tags).",
    )
    alerce_objects: str | None = setting(
        saved=False,
        help="Sources of these ALeRCE (LSST) objects: ids or a file, as "
        "--lasair-objects. Extra 'zooprep[brokers]'.",
    )
    alerce_query: str | None = setting(
        saved=False,
        help="Sources of the ALeRCE objects its query_objects finds, e.g. "
        "'classifier=stamp_classifier class_name=SN probability=0.7'.",
    )
    per_object: str = setting(
        "all",
        choices=PER_OBJECT,
        help="Broker objects: a source for every diaSource with cutouts (all) "
        "or only the newest (latest).",
    )
    lasair_endpoint: str = setting(
        "https://api.lasair.lsst.ac.uk/api", help="The Lasair API."
    )
    lasair_rate: str = setting(
        "100",
        help="Lasair calls allowed per hour (CALLS or CALLS/SECONDS); 100 for "
        "an ordinary token, 10000 for a power user.",
    )
    fink_endpoint: str = setting(
        "https://api.lsst.fink-portal.org",
        help="The Fink (LSST) API, for sources and cutouts.",
    )
    broker_wait: float = setting(
        3600.0,
        help="Longest a select waits in all for a broker's rate limit; past "
        "it, it stops cleanly (run the same command to continue).",
    )
    kafka: str | None = setting(
        saved=False,
        help="Read alerts from this Kafka broker (HOST:PORT) and --topic: "
        "Rubin (Confluent wire format), Fink Avro or Lasair JSON. Extra "
        "'zooprep[kafka]'; SASL from KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD.",
    )
    topic: str | None = setting(help="The Kafka topic.")
    group: str | None = setting(
        help="Kafka consumer group; the default is named after the run, so "
        "the same command continues where it stopped.",
    )
    max: int | None = setting(help="Stop after N Kafka messages.")
    until_idle: float | None = setting(
        help="Stop when no Kafka message came for S seconds (default: run "
        "until stopped, e.g. Ctrl-C)."
    )
    schema_registry: str | None = setting(
        help="A Confluent schema registry URL for the alerts' schema ids "
        "(default: the schemas of lsst-alert-packet)."
    )
    kafka_config: Sequence[str] | None = setting(
        help="A librdkafka setting KEY=VALUE (repeatable; no secrets).",
        convert=_tuple,
    )
    lasair_web: str = setting(
        "https://lasair.lsst.ac.uk",
        help="Where Lasair serves cutouts (for sources from Lasair's Kafka).",
    )
    next: int | None = setting(
        help="Choose the next batch of N sources from what volunteers said in "
        "the --learn-from runs (sources they showed are left out)."
    )
    learn_from: Sequence[str] | None = setting(
        help="A run whose results --next learns from (repeatable).",
        convert=_paths,
    )
    strategy: str = setting(
        "uncertainty",
        choices=STRATEGIES,
        help="How --next chooses: where the calibration is most uncertain "
        "(uncertainty), where it disagrees most with the score (disagreement), "
        "or over score bins weighted by its error (stratified).",
    )
    random_share: float = setting(
        0.2,
        help="Share of --next drawn at random from all candidates (rounded "
        "half up), to keep the calibration unbiased.",
    )
    reshow_controversial: int | None = setting(
        help="With --learn-from: list the K shown subjects whose votes are "
        "most split in RUN/controversial.csv, to show again (experts or more "
        "votes).",
    )
    learned: str | None = setting(flag=None)
    tap: str | None = setting(
        help="Read sources from this TAP service, e.g. the Rubin Science "
        "Platform's https://data.lsst.cloud/api/tap, with --table or --query. "
        "Extra 'zooprep[rsp]'; token from RSP_TOKEN (sent as a bearer token).",
    )
    table: str | None = setting(
        help="The TAP table to read, e.g. dp1.DiaSource: the filters "
        "(--where, --band, --visit, ...) become ADQL and it is read in pages "
        "by diaSourceId.",
    )
    query: str | None = setting(
        help="ADQL to run on --tap instead of --table; it must select "
        "diaSourceId, visit, detector and ra, dec. Its result is kept in the run.",
    )
    tap_mode: str = setting(
        "async",
        choices=("async", "sync"),
        help="Run TAP queries as asynchronous (UWS) jobs or synchronously.",
    )
    tap_page_size: int | None = setting(
        help="Rows per TAP page.",
        shown_default="50000, or the service's row limit if lower",
    )
    selected_at: str | None = setting(flag=None)
    history: Sequence[str] | None = setting(flag=None, convert=_tuple)

    def _check(self) -> None:
        super()._check()
        given = [flag for name, flag in SOURCES if self.given().get(name)]
        if len(given) > 1:
            raise InputError(f"{_one_of_sources()} (got {', '.join(given)})")
        for name in ("limit", "sample", "max"):
            value = getattr(self, name)
            if value is not UNSET and value is not None and value < 1:
                raise InputError(f"--{name} must be at least 1, not {value}")
        parse_stratify(self.stratify or None)
        for name in ("next", "reshow_controversial"):
            value = getattr(self, name)
            if value is not UNSET and value is not None and value < 1:
                raise InputError(
                    f"--{name.replace('_', '-')} must be at least 1, not {value}"
                )
        share = self.random_share
        if share is not UNSET and not 0.0 <= float(share) <= 1.0:
            raise InputError(f"--random-share must be within 0 and 1, not {share}")

    def _check_request(self) -> None:
        self._check_learning()
        given = [flag for name, flag in SOURCES if getattr(self, name)]
        if not given and not self.source:
            raise InputError(_one_of_sources())
        if self.kafka and not self.topic:
            raise InputError("--kafka needs --topic T")
        stream_only = ("topic", "group", "max", "until_idle", "schema_registry")
        for name in stream_only:
            if getattr(self, name) and not (self.kafka or self.kind == "kafka"):
                raise InputError(f"--{name.replace('_', '-')} applies to --kafka only")
        if (self.kafka or self.kind == "kafka") and (self.sample or self.limit):
            raise InputError(
                "--sample and --limit do not apply to a stream; use --max N"
            )
        if self.rename and not self.catalog:
            raise InputError("--rename applies to --catalog files only")
        if self.schema and not (self.apdb or self.apdb_config or self.kind == "apdb"):
            raise InputError("--schema applies to --apdb databases only")
        if self.stratify and not self.sample:
            raise InputError("--stratify needs --sample N")
        if self.tap and bool(self.table) == bool(self.query):
            raise InputError("--tap needs exactly one of --table T or --query ADQL")
        if (self.table or self.query) and not (self.tap or self.kind == "tap"):
            raise InputError("--table and --query apply to --tap only")

    def _check_learning(self) -> None:
        """``--next`` and ``--learn-from`` go together, without the blind choices."""
        if self.reshow_controversial and not self.learn_from:
            raise InputError("--reshow-controversial needs --learn-from RUN")
        if bool(self.next) != bool(self.learn_from):
            raise InputError(
                "--next N needs --learn-from RUN"
                if self.next
                else "--learn-from needs --next N (how many sources to choose)"
            )
        if not self.next:
            return
        for name in ("sample", "limit", "stratify", "append", "kafka"):
            if getattr(self, name) or (name == "kafka" and self.kind == "kafka"):
                raise InputError(
                    f"--next chooses the batch itself; leave out --{name} (a batch "
                    "is a new run: choose a new run directory)"
                    if name == "append"
                    else f"--next chooses the batch itself; leave out --{name}"
                )

    def request(self) -> dict[str, Any]:
        """The saved fields that define the selection (to compare two of them)."""
        return {k: v for k, v in self.to_toml().items() if k not in self.NOT_COMPARED}


# -- render ----------------------------------------------------------------------


def _sizes(value: Any) -> tuple[Any, ...]:
    """Sizes as a tuple (a single number counts as one size)."""
    if isinstance(value, int | float | str):
        return (value,)
    return tuple(value)


@dataclass(frozen=True, kw_only=True, repr=False)
class ImageOptions(Options):
    """Where render finds the pixels: FITS path templates or a Butler (``[render.images]``).

    Path templates are Python format strings over the source's columns
    (``images/{visit}/{detector}/diff.fits``); they may be URLs.  A template
    may name environment variables as ``{env:NAME}``: expanded when images
    are read, saved as written, so a signed URL's token stays out of
    ``zooprep.toml``.  A template whose query holds a signature or token is
    refused.

    Parameters
    ----------
    science, template, difference : str, optional
        Path templates of the three images.
    butler : str, optional
        A Butler repository (optional extra ``zooprep[butler]``).
    collections : sequence of str, optional
        Butler collections to search, in order.
    science_type, template_type, difference_type : str, optional
        Butler dataset type names (None: the current Rubin names,
        `~zooprep.vocabulary.BUTLER_DATASET_TYPES`).
    soda : str, optional
        An SIAv2 query URL: images found there, cut by SODA
        (`zooprep.images.soda`).
    """

    SECTION: ClassVar[str] = "images"

    science: str | None = setting(
        help="Path template of science images, e.g. 'data/{visit}/{detector}/"
        "calexp.fits' (Python format over the source's columns; {env:NAME} is "
        "the environment variable NAME, read when the images are). May be a URL "
        "(s3://, https://, gs://, ...; extra 'zooprep[cloud]'): only the bytes "
        "under the cutouts are read; credentials from the store's usual "
        "environment variables and files.",
    )
    template: str | None = setting(help="Path template of template (reference) images.")
    difference: str | None = setting(help="Path template of difference images.")
    butler: str | None = setting(
        help="A Butler repository (optional extra 'zooprep[butler]'); remote "
        "datastores are read by byte ranges (extra 'zooprep[cloud]')."
    )
    collections: Sequence[str] | None = setting(
        help="Butler collections to search (repeatable).", convert=_tuple
    )
    science_type: str | None = setting(
        help="Butler dataset type of science images.",
        shown_default=BUTLER_DATASET_TYPES["science"],
    )
    template_type: str | None = setting(
        help="Butler dataset type of templates.",
        shown_default=BUTLER_DATASET_TYPES["template"],
    )
    difference_type: str | None = setting(
        help="Butler dataset type of differences.",
        shown_default=BUTLER_DATASET_TYPES["difference"],
    )
    soda: str | None = setting(
        help="Cut images through the Rubin Science Platform's services: the "
        "SIAv2 query URL that finds each source's visit_image, template_coadd "
        "and difference_image (e.g. https://data.lsst.cloud/api/sia/dp1/query); "
        "cutouts by SODA. Default for a run selected with --tap: the SIA next to "
        "its TAP service. Token from RSP_TOKEN; extra 'zooprep[rsp]'.",
    )

    def _check(self) -> None:
        super()._check()
        for role in ("science", "template", "difference"):
            value = getattr(self, role)
            if isinstance(value, str):
                refuse_secret_query(value, f"--{role}")

    def templates(self) -> tuple[str, str, str] | None:
        """The three path templates, or None when none is given.

        Raises
        ------
        InputError
            When only some of the three are given.
        """
        paths = [self.science, self.template, self.difference]
        if not any(paths):
            return None
        if not all(paths):
            raise InputError("give all three of --science, --template and --difference")
        return str(paths[0]), str(paths[1]), str(paths[2])


def _images(value: Any) -> ImageOptions:
    """A mapping of image settings as `ImageOptions`."""
    if isinstance(value, ImageOptions):
        return value
    return ImageOptions(**dict(value))


@dataclass(frozen=True, kw_only=True, repr=False)
class RenderOptions(Options):
    """How cutouts are cut and drawn, and where the work runs.

    Parameters
    ----------
    images : ImageOptions or mapping, optional
        Where the pixels are (saved as ``[render.images]``).
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
        ``ra``/``dec`` through each image's WCS (a template or difference
        turned or mirrored relative to the science image is then resampled
        onto the science cutout's pixels), or ``auto`` (x/y when present).
    pixel_scale : float or None
        Arcsec per pixel for the scale bar when no WCS gives it.
    instrument : str or None
        Instrument name for the annotation when neither the APDB nor the
        image header names it.
    layout : {'triplet', 'frames', 'both'}
        ``triplet``: one PNG of the three panels (the default); ``frames``:
        one PNG per panel (template, science, difference of each size, in
        that order) for Zooniverse's flipbook; ``both`` is refused by
        render (the triplet and the frames differ in size) and only read
        back from runs rendered before.
    lightcurve : {'flux', 'mag'} or None
        Also draw each source's light curve (flux, in the unit that keeps its
        ticks below 1000, or AB magnitude).
    lightcurve_json : bool
        Write the light curve as the chart JSON of Zooniverse's ``dataImage``
        viewer instead of its PNG (needs ``lightcurve``).
    jobs : int or None
        Worker processes (None: all cores; 1 renders in this process).
    executor : {'local', 'dask'}
        Where the work runs (an `~zooprep.executors.Executor` object can be
        given to `~zooprep.render` instead).
    scheduler : str or None
        Dask scheduler address; a LocalCluster when None.
    force : bool
        Re-render sources already rendered (needed after changing a picture
        setting).  Uploaded sources are never re-rendered.

    Examples
    --------
    >>> RenderOptions(sizes=(2000,))
    Traceback (most recent call last):
    ...
    zooprep.errors.InputError: sizes: 2000 is out of range; each size must be between 3 and 1024 pixels
    """

    SECTION: ClassVar[str] = "render"

    images: ImageOptions = setting(ImageOptions.record(), flag=None, convert=_images)
    position: Position = setting(
        "auto",
        choices=POSITIONS,
        help="Locate sources by catalog x/y (images share a pixel grid) or by "
        "ra/dec through each image's WCS (a template or difference rotated or "
        "mirrored relative to the science image is then resampled onto its "
        "pixels). auto: x/y when present.",
    )
    sizes: Sequence[int] = setting(
        (30,),
        picture=True,
        convert=_sizes,
        shown_default="30; alert stamps: their native size",
        help="Cutout size(s) in pixels; several give one row each.",
    )
    annotate: bool = setting(
        False,
        picture=True,
        help="Add the metadata block (ids, fluxes, flags, RB) and a labelled "
        "scale bar (a round length, 10-35 % of the panel).  Refused on a run "
        "with injected fakes whose real sources have an RB score (the fakes "
        "have none).",
    )
    use_footprint: bool = setting(
        False,
        picture=True,
        help="Grow each cutout to the source's footprint (bboxSize).",
    )
    numpy: bool = setting(
        False,
        picture=True,
        help="Also save the float32 cutouts as .npy beside each PNG.",
    )
    chunk_size: int = setting(
        10_000,
        picture=True,
        help="At most this many files per cutouts/ sub-directory.",
    )
    cmap: str = setting(
        "gray", picture=True, help="Matplotlib colour map; the seed uses bone."
    )
    scale: int | None = setting(
        picture=True,
        shown_default="about 200 px per panel",
        help="Screen pixels per cutout pixel.",
    )
    nan_color: str = setting(
        "#ff00ff", picture=True, help="Colour of pixels with no data."
    )
    difference_stretch: Literal["zscale", "asinh-central"] = setting(
        "zscale",
        picture=True,
        choices=STRETCHES,
        help="zscale + linear (the seed) or min/max + asinh on the central "
        "15x15 pixels.",
    )
    pixel_scale: float | None = setting(
        picture=True,
        help="Arcsec per pixel for the scale bar when images have no WCS.",
    )
    instrument: str | None = setting(
        picture=True, help="Instrument name for the annotation."
    )
    layout: Literal["triplet", "frames", "both"] = setting(
        "triplet",
        picture=True,
        choices=LAYOUTS,
        help="triplet: one PNG of the three panels; frames: one PNG per panel "
        "(template, science, difference per size), all one size, for blinking "
        "in a flipbook.  (both is refused: the triplet and the frames differ in "
        "size, and a flipbook shrinks every image into the first one's box.)",
    )
    lightcurve: Literal["flux", "mag"] | None = setting(
        picture=True,
        choices=LIGHTCURVES,
        help="Also draw each source's light curve from its object's history "
        "(alerts: prv_candidates / prvDiaSources; APDB: DiaSource and "
        "DiaForcedSource): flux (flux, when given alone; in nJy, µJy, mJy or Jy, "
        "whichever keeps it below 1000) or AB magnitude (mag).  A PNG beside a "
        "triplet, at its size; see --lightcurve-json.  Refused on a run with "
        "injected fakes (a fake has no history).",
    )
    lightcurve_json: bool = setting(
        False,
        picture=True,
        help="Write the light curve as the chart JSON of Zooniverse's dataImage "
        "viewer (drawn beside the images) instead of its PNG (needs "
        "--lightcurve).",
    )
    jobs: int | None = setting(
        saved=False, shown_default="all cores", help="Worker processes."
    )
    executor: Literal["local", "dask"] = setting(
        "local",
        saved=False,
        choices=EXECUTORS,
        help="Where rendering runs: local processes or Dask.",
    )
    scheduler: str | None = setting(
        saved=False,
        help="Dask scheduler address (tcp://host:8786); a LocalCluster when absent.",
    )
    force: bool = setting(
        False,
        saved=False,
        help="Re-render everything, e.g. after changing picture settings.",
    )

    @classmethod
    def picture_fields(cls) -> list[str]:
        """The fields that change the pictures (changing one needs ``force``)."""
        return [n for n in cls.field_names() if cls.spec(n).metadata["picture"]]

    def _check(self) -> None:
        super()._check()
        for size in self.sizes or ():
            if isinstance(size, bool) or not isinstance(size, int):
                raise InputError(
                    f"sizes: {size!r} is not a whole number of pixels (e.g. 30 or 32,64)"
                )
            if not MIN_SIZE <= size <= MAX_SIZE:
                raise InputError(
                    f"sizes: {size} is out of range; each size must be between "
                    f"{MIN_SIZE} and {MAX_SIZE} pixels"
                )
        if self.chunk_size is not UNSET and self.chunk_size < 1:
            raise InputError(f"chunk_size must be at least 1, not {self.chunk_size}")
        if (self.scale and self.scale < 1) or self.scale == 0:
            raise InputError(f"scale must be at least 1, not {self.scale}")
        pixel_scale = self.pixel_scale
        if pixel_scale is not UNSET and pixel_scale is not None and pixel_scale <= 0:
            raise InputError(f"pixel_scale must be positive, not {pixel_scale}")
        if self.jobs is not UNSET and self.jobs is not None and self.jobs < 1:
            raise InputError(f"jobs must be at least 1, not {self.jobs}")
        if (
            self.lightcurve_json
            and self.lightcurve is not UNSET
            and not self.lightcurve
        ):
            # (unset: the saved light curve, if any, decides once merged)
            raise _needs_lightcurve()
        if self.cmap:
            _check_cmap(self.cmap)
        if self.nan_color:
            _check_color(self.nan_color)

    def with_images(self, images: ImageOptions | Mapping[str, Any]) -> RenderOptions:
        """These options with image settings given apart (``render(images=...)``).

        A mapping holds the command line's words: the `ImageOptions` fields and
        ``position``.

        Raises
        ------
        TypeError
            When these options already give images or the position.
        """
        values = dict(images.given() if isinstance(images, ImageOptions) else images)
        position = values.pop("position", UNSET)
        twice = [
            name
            for name, value in (("images", values), ("position", position))
            if value is not UNSET and value != {} and getattr(self, name) is not UNSET
        ]
        if twice:
            raise TypeError(
                f"render() got {', '.join(twice)} both in options and in images"
            )
        changes: dict[str, Any] = {"images": ImageOptions(**values)}
        if position is not UNSET:
            changes["position"] = position
        return self.merge(changes)

    def to_toml(self) -> dict[str, Any]:
        """``{"options": {...}, "images": {...}}``: ``[render.options]`` and ``[render.images]``."""
        flat = super().to_toml()
        images = flat.pop("images", None)
        out: dict[str, Any] = {"options": flat}
        if images:
            out["images"] = images
        return out

    @classmethod
    def from_toml(cls, table: Mapping[str, Any]) -> RenderOptions:
        """``[render]`` read back, also as older zooprep wrote it.

        Older runs kept ``chunk_size`` also at the top of ``[render]`` and
        could keep ``position`` in ``[render.images]``, where it was the one
        used.
        """
        names = set(cls.field_names())
        values = {k: v for k, v in (table.get("options") or {}).items() if k in names}
        if "chunk_size" in table and "chunk_size" not in values:
            values["chunk_size"] = table["chunk_size"]
        images = dict(table.get("images") or {})
        if "position" in images:
            values["position"] = images.pop("position")
        known = set(ImageOptions.field_names())
        values["images"] = ImageOptions.record(
            **{k: v for k, v in images.items() if k in known}
        )
        return cls.record(**values)


def _needs_lightcurve() -> InputError:
    """The error of --lightcurve-json without --lightcurve."""
    return InputError(
        "--lightcurve-json needs --lightcurve: the JSON goes after the "
        "light-curve PNG in each subject"
    )


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


# -- manifest --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, repr=False)
class ManifestOptions(Options):
    """What `~zooprep.manifest` writes, and what it recorded (``[manifest]``).

    Choices not given are those of the last manifest written (its saved
    section), then the defaults.

    Parameters
    ----------
    url_root : str, optional
        Where the run directory's files will be hosted: locations become
        ``URL_ROOT/cutouts/<chunk>/<id>.png`` (a query string is kept at the
        end).
    output : str or os.PathLike, optional
        Write here instead of ``RUN/manifest.csv``.
    metadata : sequence of str, optional
        Catalog columns to include (``id`` is the source id column).
    hidden, talk_only, index : sequence of str, optional
        Columns hidden from volunteers (``#``), shown only in Talk (``!``),
        or index fields of the subject set (``%``).
    split : int, optional
        Also write numbered parts of at most this many rows.
    layout : {'import', 'panoptes-cli'}
        The column layout (`zooprep.manifest_format`).
    keys, id_column, rows, sha256, sha256_pending, written
        Recorded by manifest: the metadata keys with their prefixes, the id
        column, the rows written, the file's SHA-256 (and that of a file
        being written), when.
    """

    SECTION: ClassVar[str] = "manifest"

    url_root: str | None = setting(
        help="Where you will host the PNGs; locations become URL_ROOT/cutouts/..."
    )
    output: str | os.PathLike[str] | None = setting(
        help="Write here instead of RUN/manifest.csv."
    )
    metadata: Sequence[str] | None = setting(
        convert=_as_tuple,
        help="Catalog columns to include as subject metadata ('id' is the source id).",
        shown_default="id,visit,detector,band,ra,dec,reliability,snr",
    )
    hidden: Sequence[str] | None = setting(
        convert=_as_tuple,
        help="Columns hidden from volunteers ('#' prefix; ids, reliability, S/N "
        "and flags are hidden by default).",
    )
    talk_only: Sequence[str] | None = setting(
        convert=_as_tuple,
        help="Columns hidden in the classifier but shown in Talk ('!' prefix).",
        shown_default="visit,detector,ra,dec",
    )
    index: Sequence[str] | None = setting(
        convert=_as_tuple, help="Index fields of the subject set ('%')."
    )
    split: int | None = setting(
        help="Also write numbered parts of at most N rows (10000 for "
        "Zooniverse's server-side import)."
    )
    layout: Literal["import", "panoptes-cli"] = setting(
        "import",
        choices=MANIFEST_LAYOUTS,
        help="Column layout: import, or panoptes-cli (for 'panoptes subject-set "
        "upload-subjects').",
    )
    feedback: str | None = setting(
        help="Id of the workflow task's feedback rule: write Zooniverse's "
        "feedback keys (#feedback_1_id, #feedback_1_answer) on the run's training "
        "subjects (zooprep fakes --training), never on blind fakes."
    )
    real_answer: int | None = setting(
        help="With --feedback: index (from 0) of the task's answer that means real."
    )
    bogus_answer: int | None = setting(
        help="With --feedback: index of the answer that means bogus (for "
        "known-bogus training subjects)."
    )
    success_message: str | None = setting(
        help="With --feedback: this subject's success message ({mag} and {snr} "
        "are the fake's); the workflow rule's default otherwise."
    )
    failure_message: str | None = setting(
        help="With --feedback: this subject's failure message, likewise."
    )
    truth_metadata: bool = setting(
        True,
        shown_default="truth-metadata",
        help="Write the known answers as hidden metadata (#known_answer, "
        "#fake_mag, #fake_snr, #training_subject). Hidden keys are not shown in "
        "the classifier but the API returns them; results read the truth from "
        "the run, so --no-truth-metadata keeps it off Zooniverse.",
    )
    keys: Sequence[str] | None = setting(flag=None, convert=_as_tuple)
    id_column: str | None = setting(flag=None)
    rows: int | None = setting(flag=None)
    sha256: str | None = setting(flag=None)
    sha256_pending: str | None = setting(flag=None)
    written: str | None = setting(flag=None)

    def _check(self) -> None:
        if self.layout and self.layout not in MANIFEST_LAYOUTS:
            raise InputError(
                f"--layout must be one of {', '.join(MANIFEST_LAYOUTS)}, "
                f"not {self.layout!r}"
            )
        super()._check()
        if self.split is not UNSET and self.split is not None and int(self.split) < 1:
            raise InputError(f"--split must be at least 1, not {self.split}")
        self._check_feedback()

    def _check_feedback(self) -> None:
        """The feedback flags go together and name answers by index."""
        import string

        if self.feedback is not UNSET and self.feedback is not None:
            if not str(self.feedback).strip():
                raise InputError("--feedback needs the rule id defined in the workflow")
            if self.real_answer is UNSET or self.real_answer is None:
                raise InputError(
                    "--feedback needs --real-answer K: the index (from 0) of the "
                    "task's answer that means real"
                )
        for name in ("real_answer", "bogus_answer"):
            value = getattr(self, name)
            if value is not UNSET and value is not None and int(value) < 0:
                raise InputError(
                    f"--{name.replace('_', '-')} is an answer's index from 0, not {value}"
                )
        if (
            self.bogus_answer not in (UNSET, None)
            and self.bogus_answer == self.real_answer
        ):
            raise InputError("--bogus-answer must be another answer than --real-answer")
        for name in ("success_message", "failure_message"):
            text = getattr(self, name)
            if not text:
                continue
            flag = "--" + name.replace("_", "-")
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


# -- upload ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, repr=False)
class UploadOptions(Options):
    """How subjects are sent to Zooniverse (``[upload]`` keeps where they went).

    Parameters
    ----------
    project : str
        Zooniverse project id.
    subject_set_id : str or None
        Existing subject set id (saved: the set used).
    subject_set : str or None
        Subject set display name; created when absent.
    endpoint : str
        Panoptes endpoint (production by default; use
        ``https://panoptes-staging.zooniverse.org`` to rehearse).
    workers : int
        Concurrent Panoptes API requests (as many threads PUT the files and
        as many read them back).
    dry_run : bool
        Validate everything, upload nothing.
    timeout : float
        Upper bound in seconds of any one HTTP request; each is given a
        deadline learned from the run's answers (`zooprep.deadlines`) and
        retried when it runs out; a subject create gets the whole timeout.
    verify : bool
        Read every file back from the subject's public location after its
        PUT (size, and MD5 where the store gives one) before the subject
        counts as uploaded (default).  False trusts the store's 201.
    workflow : str or None
        A workflow of the project to link the subject set to (once; a
        workflow that does not exist or belongs to another project is
        refused before anything is uploaded).  Its
        ``configuration.subject_viewer`` must show the run's subjects
        (`zooprep.viewers`), or nothing is uploaded.
    subject_viewer : str or None
        Set the workflow's ``configuration.subject_viewer`` to this value
        (one of `zooprep.viewers.SUBJECT_VIEWERS`, spelled exactly; the rest
        of its configuration kept), once: recorded in the run, not sent
        again on resume.  Needs ``workflow``.
    via : {'direct', 'import'}
        ``direct``: create subjects and PUT their files.  ``import``: a
        server-side subject-set import per 10,000 rows of a manifest written
        with ``url_root`` (the files must already be on the web).
    training_set, training_set_id : str or None
        The subject set (by name, created when absent, or by id; saved: the
        one used) the manifest's training subjects (``#training_subject``)
        go to, apart from the ordinary ones; needed when it has any.
    """

    SECTION: ClassVar[str] = "upload"

    project: str = setting(help="Zooniverse project id.")
    subject_set_id: str | None = setting(help="An existing subject set's id.")
    subject_set: str | None = setting(
        help="A subject set's display name; created if the project has none."
    )
    endpoint: str = setting(
        PRODUCTION,
        help="Panoptes endpoint; rehearse on https://panoptes-staging.zooniverse.org.",
    )
    workers: int = setting(
        8,
        saved=False,
        help="Concurrent Panoptes API requests (1 to 64); as many threads PUT "
        "the files and as many read them back.",
    )
    timeout: float = setting(
        60.0,
        saved=False,
        help="Upper bound in seconds of any one HTTP request. Each request is "
        "given a deadline learned from this run's answers (10 times their "
        "recent 99th percentile, at least 2 s, more for a larger file, doubled "
        "on each retry) and is retried when it runs out, so a hung request "
        "costs seconds; a subject create, which cannot be repeated safely, "
        "always gets the whole timeout.",
    )
    dry_run: bool = setting(
        False,
        saved=False,
        help="Check manifest, files, login and quota; upload nothing.",
    )
    verify: bool = setting(
        True,
        saved=False,
        shown_default="verify",
        help="Read each file back from the subject's public location after its "
        "PUT (size, and MD5 where the store gives one) before the subject counts "
        "as uploaded; a missing file is PUT again. --no-verify trusts the "
        "store's 201.",
    )
    workflow: str | None = setting(
        saved=False,
        help="Link the subject set to this workflow of the project (once; a "
        "missing workflow, one of another project, or one whose "
        "subject_viewer cannot show the subjects is refused before "
        "uploading).  Also checks the subjects' feedback rule ids (manifest "
        "--feedback) against the feedback rules of the workflow's task.",
    )
    subject_viewer: str | None = setting(
        saved=False,
        choices=SUBJECT_VIEWERS,
        help="Set the workflow's configuration.subject_viewer to this viewer "
        "(exact spelling; the rest of its configuration kept), once; without "
        "it a workflow whose viewer cannot show the subjects is refused, "
        "naming the value to set. Needs --workflow.",
    )
    via: Literal["direct", "import"] = setting(
        "direct",
        choices=VIAS,
        help="direct: create subjects and put PNGs; import: a server-side "
        "import of a manifest written with --url-root (PNGs hosted by you).",
    )
    training_set: str | None = setting(
        help="The subject set (display name; created if absent) for the "
        "manifest's training subjects (#training_subject true), apart from the "
        "ordinary ones: name it in the workflow's training_set_ids."
    )
    training_set_id: str | None = setting(
        help="An existing subject set's id for the training subjects."
    )
    controversial_set: str | None = setting(
        saved=False,
        help="Add the shown subjects select --reshow-controversial listed "
        "(RUN/controversial.csv) to this subject set (made when absent), for "
        "experts or more votes: the subjects themselves, not copies.",
    )

    def _check(self) -> None:
        if self.via and self.via not in VIAS:
            raise InputError(f"via must be 'direct' or 'import', not {self.via!r}")
        super()._check()
        if self.workers is not UNSET and not 1 <= self.workers <= MAX_WORKERS:
            raise InputError(
                f"workers must be from 1 to {MAX_WORKERS}, not {self.workers}"
            )
        if self.timeout is not UNSET and not self.timeout > 0:
            raise InputError(f"timeout must be positive, not {self.timeout}")

    def _check_request(self) -> None:
        if self.training_set and self.training_set_id:
            raise InputError("give one of --training-set and --training-set-id")
        if not self.project:
            raise InputError("give the Zooniverse project id (--project)")
        if bool(self.subject_set_id) == bool(self.subject_set):
            raise InputError(
                "give exactly one of subject_set_id (--subject-set-id) and "
                "subject_set (--subject-set)"
            )
        if self.subject_viewer and not self.workflow:
            raise InputError(
                "--subject-viewer needs --workflow ID (the workflow to set)"
            )


# -- results ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, repr=False)
class ResultsOptions(Options):
    """Which classifications `~zooprep.results` joins, and how (``[results]``).

    Parameters
    ----------
    classifications : str or os.PathLike, optional
        The classification export CSV (saved: the file read, absolute).
        Required unless ``download``.
    workflow_id : str, optional
        The workflow to use (saved: the one used).
    task : str
        The question task to reduce.
    real_answer : str, optional
        The answer that means "real" (saved: the answer's slug used).
    workflow_version : str
        ``latest`` (every minor version of the latest major), ``all``, a
        major (``12``) or an exact version (``12.3``).
    download : bool
        Fetch the project's latest classification export first.
    endpoint : str
        Panoptes endpoint for ``download``.
    timeout : float
        Seconds before one request of ``download`` is abandoned and retried.
    force : bool
        Overwrite earlier results.
    reliability_threshold : float
        The score at which the pipeline says real, for its completeness and
        purity on the run's known answers (``zooprep fakes``).
    """

    SECTION: ClassVar[str] = "results"

    classifications: str | os.PathLike[str] | None = setting(
        help="A classification export (project Data Exports)."
    )
    workflow_id: str | None = setting(
        convert=str, help="Only this workflow's classifications."
    )
    task: str = setting("T0", help="The question task to reduce.")
    real_answer: str | None = setting(
        help="The answer that means 'real'.",
        shown_default="an answer containing 'real' or 'yes'",
    )
    workflow_version: str = setting(
        "latest",
        help="Workflow versions to use: all, latest (every minor version of the "
        "latest major one; a major version change means the tasks changed), "
        "MAJOR or MAJOR.MINOR.",
    )
    download: bool = setting(
        False,
        saved=False,
        help="Fetch the export through the API (needs upload credentials).",
    )
    endpoint: str = setting(PRODUCTION, saved=False, help="Panoptes endpoint.")
    timeout: float = setting(
        60.0,
        saved=False,
        help="Seconds before one --download request is abandoned and retried.",
    )
    force: bool = setting(False, saved=False, help="Overwrite earlier results.")
    reliability_threshold: float = setting(
        0.5,
        help="The pipeline score at which the pipeline says real (its "
        "completeness and purity on the known answers of zooprep fakes).",
    )

    def _check(self) -> None:
        super()._check()
        if self.timeout is not UNSET and not self.timeout > 0:
            raise InputError(f"timeout must be positive, not {self.timeout}")
        threshold = self.reliability_threshold
        if threshold is not UNSET and not math.isfinite(float(threshold)):
            raise InputError(
                f"--reliability-threshold must be a number, not {threshold}"
            )

    def _check_request(self) -> None:
        if not self.classifications and not self.download:
            raise InputError(
                "give the classification export with --classifications, or "
                "fetch it with --download"
            )


# -- fakes -------------------------------------------------------------------------

#: ``zooprep fakes --psf`` choices: the first usable of a PSF image, an
#: effective PSF and a Gaussian of the seeing, or one of them
#: (see `zooprep.injection`).
PSF_CHOICES = ("auto", "psfimage", "epsf", "gaussian")
#: The fields a feedback message may name, filled per subject.
MESSAGE_FIELDS = ("mag", "snr")


def _mag_range(value: Any) -> tuple[float, float]:
    """``"20:25"`` (or a pair) as ``(20.0, 25.0)``, or InputError."""
    if isinstance(value, str):
        parts = value.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            return float(parts[0]), float(parts[1])
        except ValueError:
            raise InputError(
                f"--mag {value!r} is not BRIGHT:FAINT in AB magnitudes (e.g. 20:25)"
            ) from None
    try:
        low, high = value
        return float(low), float(high)
    except (TypeError, ValueError):
        raise InputError(f"--mag {value!r} is not BRIGHT:FAINT") from None


@dataclass(frozen=True, kw_only=True, repr=False)
class FakesOptions(Options):
    """Which known answers `~zooprep.fakes` adds to a run (``[fakes]``).

    Parameters
    ----------
    count : int or None
        Fakes to inject, spread over the run's images in proportion to their
        sources (not with ``truth_column``).
    mag : tuple of float
        ``(bright, faint)`` AB magnitudes; fakes are uniform in magnitude.
    seed : int
        Seed of every random choice (positions, magnitudes, noise, streams,
        places in the run's order): one seed gives the same fakes.
    training : float
        Share of the known answers that are training subjects (feedback,
        their own subject set); the rest are blind (no feedback, mixed into
        the ordinary set).  Chosen per fake.
    psf : {'auto', 'psfimage', 'epsf', 'gaussian'}
        How each image's PSF is had (`zooprep.injection`).
    zeropoint : float or None
        AB magnitude of one count, instead of the header's.
    gain : float or None
        Electrons per count, instead of the VARIANCE plane's or the header's
        (a stack's effective gain: the gain times the exposures averaged).
    separation : float or None
        Least distance in pixels from a fake to another fake or to the run's
        sources (default: half the diagonal of the largest cutout, and far
        enough that two fakes' stamps never overlap).
    truth_column : str or None
        Inject nothing: the column that says which sources are known real
        (true, 1, real, injected: the pipeline's own injections matched to
        DiaSources) or known bogus (bogus, artefact: an expert's labels);
        false, 0 or empty leave a source unknown.
    truth_mag : str or None
        With ``truth_column``: the column of the injected magnitude.
    force : bool
        Replace fakes made with other settings (refused once one is uploaded).
    """

    SECTION: ClassVar[str] = "fakes"

    count: int | None = setting(
        help="Fakes to inject, spread over the run's images in proportion to "
        "their sources."
    )
    mag: tuple[float, float] = setting(
        (20.0, 25.0),
        convert=_mag_range,
        shown_default="20:25",
        help="BRIGHT:FAINT AB magnitudes; fakes are uniform in magnitude.",
    )
    seed: int = setting(
        0, help="Seed of every random choice: one seed, one set of fakes."
    )
    training: float = setting(
        0.0,
        help="Share of the known answers that are training subjects (feedback, "
        "their own subject set); the rest are blind.",
    )
    psf: str = setting(
        "auto",
        choices=PSF_CHOICES,
        help="PSF of each image: auto (the science file's PSFIMAGE, else an "
        "effective PSF from its stars, else a Gaussian of the measured seeing), "
        "or one of them.",
    )
    zeropoint: float | None = setting(
        help="AB magnitude of one count (instead of the header's MAGZERO, "
        "PHOTZP, FLUXMAG0 or BUNIT nJy)."
    )
    gain: float | None = setting(
        help="Electrons per count (instead of the VARIANCE plane's, else the "
        "header's GAIN; a stack: the gain times the exposures averaged)."
    )
    separation: float | None = setting(
        help="Least pixels from a fake to another fake or to a source of the run.",
        shown_default="half the largest cutout's diagonal",
    )
    truth_column: str | None = setting(
        help="Inject nothing: known answers from this column (true/1/real: the "
        "pipeline's injected sources; bogus/artefact: an expert's labels)."
    )
    truth_mag: str | None = setting(
        help="With --truth-column: the column of the injected AB magnitude."
    )
    force: bool = setting(
        False, saved=False, help="Replace fakes made with other settings."
    )

    def _check(self) -> None:
        super()._check()
        if self.count is not UNSET and self.count is not None and self.count < 1:
            raise InputError(f"--count must be at least 1, not {self.count}")
        if self.mag is not UNSET:
            low, high = self.mag
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise InputError(
                    f"--mag {low:g}:{high:g}: give BRIGHT:FAINT with BRIGHT < FAINT"
                )
        if self.training is not UNSET and not 0.0 <= float(self.training) <= 1.0:
            raise InputError(f"--training must be from 0 to 1, not {self.training}")
        for name in ("zeropoint", "gain", "separation"):
            value = getattr(self, name)
            if (
                value is not UNSET
                and value is not None
                and not (math.isfinite(value) and value > 0)
            ):
                raise InputError(f"--{name} must be a positive number, not {value}")

    def _check_request(self) -> None:
        column = self.truth_column not in (UNSET, None)
        count = self.count not in (UNSET, None)
        if not column and not count:
            raise InputError("give --count N (fakes to inject) or --truth-column COL")
        if column and count:
            raise InputError(
                "--count injects fakes, --truth-column marks sources already there: "
                "give one of them"
            )
        if self.truth_mag not in (UNSET, None) and not column:
            raise InputError("--truth-mag goes with --truth-column")


# -- the sections of a run ---------------------------------------------------------

#: Every stage's options class, by its section of ``zooprep.toml``.
SECTIONS: dict[str, type[Options]] = {
    cls.SECTION: cls
    for cls in (
        SelectOptions,
        RenderOptions,
        ManifestOptions,
        UploadOptions,
        ResultsOptions,
        FakesOptions,
    )
}


@dataclass(frozen=True)
class Settings:
    """The saved sections of a run's ``zooprep.toml``, typed (None: never saved).

    Each section is resolved: a field the file does not hold has its default.

    Attributes
    ----------
    select, render, manifest, upload, results, fakes
        The sections of the stages that ran.
    sections : tuple of str
        Every section in the file, in order (other tools may add their own).
    """

    select: SelectOptions | None = None
    render: RenderOptions | None = None
    manifest: ManifestOptions | None = None
    upload: UploadOptions | None = None
    results: ResultsOptions | None = None
    fakes: FakesOptions | None = None
    sections: tuple[str, ...] = ()

    @classmethod
    def from_toml(cls, document: Mapping[str, Any]) -> Settings:
        """The typed sections of a parsed ``zooprep.toml``.

        Raises
        ------
        InputError
            A section holds a bad value: ``[render] sizes: ...``.
        """
        found: dict[str, Any] = {}
        for name, options in SECTIONS.items():
            table = document.get(name)
            if not isinstance(table, Mapping):
                continue
            try:
                found[name] = options.from_toml(table).resolved()
            except (InputError, TypeError, ValueError) as exc:
                raise InputError(f"[{name}] {exc}") from None
        return cls(**found, sections=tuple(document))
