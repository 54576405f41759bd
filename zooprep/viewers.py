"""Which Zooniverse classifier viewer shows which subject, by its locations.

Facts about Zooniverse's current classifier (zooniverse/front-end-monorepo,
``packages/lib-classifier``, read at commit 43a43fe, August 2026), written
down once so upload can check a workflow and render can choose subject kinds:

- a workflow's ``configuration.subject_viewer`` must be one of
  `SUBJECT_VIEWERS`, spelled exactly so (any other value, ``lightCurve``
  included, stops the workflow from loading);
- when it is unset, the classifier guesses a viewer from the subject's
  locations (`automatic_viewer`); a subject of images plus a JSON file gets
  none, so nothing is drawn;
- each viewer draws some locations, hides others and draws some as a blank
  or broken frame (`draws`); `viewers_showing` lists the values that show
  every location of a subject, `viewer_to_set` the one value to set for a
  whole run and `viewer_problem` what is wrong with a workflow's value.

Locations are given as their content types, in subject order
(``["image/png", "application/json"]``).  Paths below are relative to
``packages/lib-classifier/src/``.  ``tools/classifier_check.py`` loads a
run's subjects into that classifier in headless Chromium and compares what
it draws with `draws` (CONTRIBUTING.md); the last run agreed on every
subject kind and viewer value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "CHART_VIEWERS",
    "SUBJECT_VIEWERS",
    "Drawing",
    "automatic_viewer",
    "draws",
    "location_accepted",
    "subject_model",
    "viewer_problem",
    "viewer_to_set",
    "viewers_showing",
]

#: The values ``configuration.subject_viewer`` may take, exactly as spelled
#: in the ``subjectViewer`` enumeration of
#: ``store/WorkflowStore/Workflow/WorkflowConfiguration/WorkflowConfiguration.js``
#: (a ``types.maybe(types.enumeration(...))``: anything else fails the
#: workflow's snapshot and the workflow does not load).
SUBJECT_VIEWERS: tuple[str, ...] = (
    "dataImage",
    "flipbook",
    "geoMap",
    "jsonData",
    "lightcurve",
    "multiFrame",
    "scatterPlot",
    "singleImage",
    "subjectGroup",
    "variableStar",
)

#: Values that all draw the same component, ``JSONDataViewer``
#: (``components/Classifier/components/SubjectViewer/helpers/getViewer/getViewer.js``
#: maps ``jsonData``, ``lightCurve``, ``scatterPlot`` and ``variableStar`` to
#: it); it picks the chart by the JSON's data model
#: (``store/JSONData/index.js``: a ``DataSeriesPlot``, which zooprep writes,
#: is drawn by ``ScatterPlotViewer`` whichever of these is set), and draws no
#: image.
CHART_VIEWERS: tuple[str, ...] = (
    "jsonData",
    "scatterPlot",
    "lightcurve",
    "variableStar",
)

#: Content types a subject location may have, with the file name endings the
#: classifier accepts for each (``fileExtensions`` in
#: ``store/subjects/Subject/SubjectLocation/SubjectLocation.js``; a location
#: of another type, ``image/svg+xml`` for one, makes the subject invalid).
ACCEPTED_CONTENT_TYPES: dict[str, tuple[str, ...]] = {
    "application/json": (".json",),
    "audio/mp3": (".mp3",),
    "audio/m4a": (".m4a",),
    "audio/mpeg": (".mp3", ".mpga"),
    "audio/wav": (".wav",),
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "image/gif": (".gif",),
    "text/plain": (".txt",),
    "video/mp4": (".mp4",),
    "video/mpeg": (".mpeg",),
    "video/x-m4v": (".m4v",),
}


def location_accepted(content_type: str, name: str) -> bool:
    """True when the classifier accepts a location of this type and file name.

    The type must be one of `ACCEPTED_CONTENT_TYPES` and the name (or URL)
    end, in any case, with one of its extensions (``validateSubjectLocation``
    in ``SubjectLocation.js``).

    Examples
    --------
    >>> location_accepted("image/png", "cutout.PNG")
    True
    >>> location_accepted("image/svg+xml", "cutout.svg")
    False
    >>> location_accepted("application/json", "curve.txt")
    False
    """
    endings = ACCEPTED_CONTENT_TYPES.get(content_type)
    return endings is not None and name.lower().endswith(endings)


def _kind(content_type: str) -> str:
    """``image``, ``json``, ``text``, ``audio``, ``video`` or ``other``.

    As ``helpers/createLocationCounts/createLocationCounts.js`` counts them:
    the part before the slash, with ``application`` counted as JSON; only
    accepted types count.
    """
    if content_type not in ACCEPTED_CONTENT_TYPES:
        return "other"
    major = content_type.split("/", 1)[0]
    return {"application": "json", "video": "video", "audio": "audio"}.get(major, major)


def _counts(mime_types: Sequence[str]) -> dict[str, int]:
    kinds = [_kind(m) for m in mime_types]
    return {k: kinds.count(k) for k in ("image", "json", "text", "audio", "video")}


def subject_model(mime_types: Sequence[str]) -> str | None:
    """The classifier's subject model these locations make, or None.

    The subject store builds each subject as the first of the single-subject
    models whose rule it meets (``store/SubjectStore/SubjectType/SubjectType.js``,
    the models in ``store/subjects/``); a subject meeting none, or with a
    location of a type the classifier does not accept, is logged as "not a
    valid subject" and never shown (``SubjectStore.append``).

    Examples
    --------
    >>> subject_model(["image/png", "image/png"])
    'ImageSubject'
    >>> subject_model(["image/png", "application/json"])
    'SingleJSONSubject'
    >>> print(subject_model(["image/png", "application/json", "application/json"]))
    None
    """
    if not mime_types or any(_kind(m) == "other" for m in mime_types):
        return None
    n = len(mime_types)
    c = _counts(mime_types)
    if n == 2 and c["audio"] == 1 and c["image"] == 1:
        return "AudioSpectrogramSubject"
    if n > 1 and c["image"] == n:
        return "ImageSubject"
    if c["image"] >= 1 and c["text"] >= 1 and n == c["image"] + c["text"]:
        return "ImageAndTextSubject"
    if c["image"] >= 1 and c["video"] >= 1 and n == c["image"] + c["video"]:
        return "ImageAndVideoSubject"
    if n == 1 and c["audio"] == 1:
        return "SingleAudioSubject"
    if n == 1 and c["image"] == 1:
        return "SingleImageSubject"
    if c["json"] == 1:
        return "SingleJSONSubject"
    if n == 1 and c["text"] == 1:
        return "SingleTextSubject"
    if n == 1 and c["video"] == 1:
        return "SingleVideoSubject"
    if c["text"] > 0:
        return "TextSubject"
    return None


def automatic_viewer(mime_types: Sequence[str]) -> str | None:
    """The viewer the classifier picks when the workflow sets none, or None.

    The ``viewer`` view of ``store/subjects/Subject/Subject.js``: one location
    gets the single viewer of its kind (an image ``singleImage``, a JSON file
    ``jsonData``); several images (and videos) get ``flipbook``; an audio
    file and an image ``audioSpectrogram``; images and text
    ``imageAndText``; anything else (images plus JSON, for one) no viewer at
    all, and the subject area stays empty.  (A project-level volumetric
    viewer, not used for images, is left out.)

    Examples
    --------
    >>> automatic_viewer(["image/png"])
    'singleImage'
    >>> automatic_viewer(["image/png", "image/png", "image/png"])
    'flipbook'
    >>> automatic_viewer(["application/json"])
    'jsonData'
    >>> print(automatic_viewer(["image/png", "application/json"]))
    None
    """
    if subject_model(mime_types) is None:
        return None
    n = len(mime_types)
    c = _counts(mime_types)
    if n == 1:
        kind = _kind(mime_types[0])
        return {
            "audio": "singleAudio",
            "image": "singleImage",
            "video": "singleVideo",
            "json": "jsonData",
            "text": "singleText",
        }.get(kind)
    viewer = None
    if n == 2 and c["audio"] == 1 and c["image"] == 1:
        viewer = "audioSpectrogram"
    if c["image"] >= 1 and c["text"] >= 1 and n == c["image"] + c["text"]:
        viewer = "imageAndText"
    if n == c["image"] + c["video"]:
        viewer = "flipbook"
    return viewer


@dataclass(frozen=True)
class Drawing:
    """What one viewer draws of one subject.

    Attributes
    ----------
    viewer : str or None
        The viewer (a `SUBJECT_VIEWERS` value, or the automatic choice);
        None when no viewer is drawn at all.
    images : tuple of int
        Locations drawn as images (by index; a flipbook's frames all count).
    chart : int or None
        The location drawn as a chart, if any.
    hidden : tuple of int
        Locations the viewer ignores: volunteers never see them.
    broken : tuple of int
        Locations drawn as a blank frame, a broken image or an error.
    one_box : bool
        The images are a flipbook drawn in the box of its first frame
        (``FlipbookViewer.jsx`` sizes the viewer from the default frame), so
        frames of another pixel size are letterboxed.
    empty_area : bool
        ``dataImage`` draws a chart beside an image column, and one of them
        has nothing to show (no image: an empty column; no JSON location:
        empty axes, and the images are not drawn either).
    """

    viewer: str | None
    images: tuple[int, ...] = ()
    chart: int | None = None
    hidden: tuple[int, ...] = ()
    broken: tuple[int, ...] = ()
    one_box: bool = False
    empty_area: bool = False

    @property
    def shows_all(self) -> bool:
        """Every location is drawn, none broken (and a viewer is drawn)."""
        return self.viewer is not None and not self.hidden and not self.broken

    @property
    def charts(self) -> int:
        """Charts drawn with data (0 or 1)."""
        return int(self.chart is not None)


def draws(viewer: str | None, mime_types: Sequence[str]) -> Drawing:
    """What ``viewer`` (None: the workflow sets none) draws of these locations.

    Read from each viewer's component under
    ``components/Classifier/components/SubjectViewer/components/``:

    - ``singleImage`` (``SingleImageViewerContainer.jsx``) draws location 0
      (the store's frame), broken when it is not an image; the rest hidden.
    - ``flipbook`` (``FlipbookViewer.jsx``) flips through every location:
      images and videos are drawn, any other frame is blank (and has no
      thumbnail button); all in the box of the first frame.
    - ``multiFrame`` (``MultiFrameViewerContainer.jsx``) has a frame
      carousel of every location and draws the chosen one as an image (a JSON
      frame is a broken image); each at its own size.
    - ``dataImage`` (``DataImageViewer.jsx``, ``useDataImageSubject.js``)
      draws the first JSON (or text) location as a scatter plot beside the
      images (one image alone, several as a flipbook); with no JSON location
      the chart's axes are empty and, the JSON hook having put the viewer in
      its error state, the images are "Something went wrong." instead.
    - `CHART_VIEWERS` (``JSONDataViewer.jsx``, ``hooks/useSubjectJSON.js``)
      draw the first JSON (or text) location as a chart and no image; with
      none they show the error "No JSON url found for this subject".
    - ``subjectGroup`` (``SubjectGroupViewerContainer.jsx``, made for
      server-made groups of subjects) fetches every location as an image
      and draws them in a grid of equal cells; one location that is not an
      image fails the whole subject ("Something went wrong.", seen in the
      classifier by ``tools/classifier_check.py``).
    - ``geoMap`` draws only GeoJSON on a map: none of zooprep's files.

    A subject no subject model accepts (`subject_model`) is not shown at all.

    Examples
    --------
    >>> d = draws("dataImage", ["image/png", "image/png", "application/json"])
    >>> d.images, d.chart, d.shows_all, d.one_box
    ((0, 1), 2, True, True)
    >>> d = draws("scatterPlot", ["image/png", "application/json"])
    >>> d.hidden, d.chart, d.shows_all
    ((0,), 1, False)
    >>> draws("flipbook", ["image/png", "application/json"]).broken
    (1,)
    >>> draws(None, ["image/png", "application/json"]).viewer is None
    True
    """
    everything = tuple(range(len(mime_types)))
    if viewer is None:
        viewer = automatic_viewer(mime_types)
        if viewer is None:
            return Drawing(None, hidden=everything)
    if subject_model(mime_types) is None:
        return Drawing(None, hidden=everything)
    kinds = [_kind(m) for m in mime_types]
    images = tuple(i for i, k in enumerate(kinds) if k == "image")
    charts = [i for i, k in enumerate(kinds) if k in ("json", "text")]
    first_chart = charts[0] if charts else None

    def others(*shown: int) -> tuple[int, ...]:
        return tuple(i for i in everything if i not in shown)

    if viewer in ("singleImage", "singleAudio", "singleVideo", "singleText"):
        wanted = viewer.removeprefix("single").lower()
        if kinds and kinds[0] == wanted:
            drawn = (0,) if wanted == "image" else ()
            return Drawing(viewer, images=drawn, hidden=others(0))
        return Drawing(viewer, broken=(0,), hidden=others(0))
    if viewer in ("flipbook", "multiFrame"):
        allowed = ("image", "video") if viewer == "flipbook" else ("image",)
        shown = tuple(i for i, k in enumerate(kinds) if k in allowed)
        return Drawing(
            viewer,
            images=tuple(i for i in shown if kinds[i] == "image"),
            broken=others(*shown),
            one_box=viewer == "flipbook" and len(shown) > 1,
        )
    if viewer == "dataImage":
        if first_chart is None:
            # useSubjectJSON throws "No JSON url found", its onError puts the
            # subject viewer store in the error state, and the image column
            # says "Something went wrong." beside empty axes (seen in the
            # classifier by tools/classifier_check.py).
            return Drawing(
                viewer, broken=images, hidden=others(*images), empty_area=True
            )
        return Drawing(
            viewer,
            images=images,
            chart=first_chart,
            hidden=others(*images, first_chart),
            one_box=len(images) > 1,
            empty_area=not images,
        )
    if viewer in (*CHART_VIEWERS, "lightCurve"):
        if first_chart is None:
            return Drawing(viewer, broken=everything)
        return Drawing(viewer, chart=first_chart, hidden=others(first_chart))
    if viewer == "subjectGroup":
        if len(images) == len(kinds):
            return Drawing(viewer, images=images)
        return Drawing(viewer, broken=everything)
    if viewer == "imageAndText":
        return Drawing(viewer, images=images, hidden=others(*images, *charts))
    # geoMap, audioSpectrogram (and anything unknown): none of
    # zooprep's files is drawn.
    return Drawing(viewer, hidden=everything)


def _rank(viewer: str, drawing: Drawing) -> tuple[int, int]:
    """Sort key: charts and images drawn with nothing empty first."""
    preferred = (
        *("dataImage", "singleImage", "flipbook", "multiFrame"),
        *CHART_VIEWERS,
        "subjectGroup",
    )
    return (int(drawing.empty_area), preferred.index(viewer))


def viewers_showing(mime_types: Sequence[str]) -> tuple[str, ...]:
    """The `SUBJECT_VIEWERS` values that show every one of these locations.

    Best first: one that leaves no chart area empty, then ``dataImage``,
    ``singleImage``, ``flipbook``, ``multiFrame``, the chart viewers and
    ``subjectGroup``.  Images only: ``flipbook``, ``multiFrame`` and
    ``subjectGroup``'s grid (one image: also ``singleImage``), never
    ``dataImage``; images and one JSON file:
    ``dataImage`` alone; one JSON file alone: the chart viewers, and
    ``dataImage`` (no image beside the chart).

    Examples
    --------
    >>> viewers_showing(["image/png", "image/png"])
    ('flipbook', 'multiFrame', 'subjectGroup')
    >>> viewers_showing(["image/png", "application/json"])
    ('dataImage',)
    >>> viewers_showing(["application/json"])
    ('jsonData', 'scatterPlot', 'lightcurve', 'variableStar', 'dataImage')
    >>> viewers_showing(["image/png", "application/json", "application/json"])
    ()
    """
    found = [(v, draws(v, mime_types)) for v in SUBJECT_VIEWERS]
    good = [(v, d) for v, d in found if d.shows_all]
    return tuple(v for v, d in sorted(good, key=lambda vd: _rank(*vd)))


def viewer_to_set(subject_kinds: Iterable[Sequence[str]]) -> str | None:
    """The one ``subject_viewer`` value that shows every subject of a run.

    ``subject_kinds`` are the distinct location lists of the run's subjects
    (the first the most common, which decides between equals).  None when no
    single value shows them all.

    Examples
    --------
    >>> viewer_to_set([["image/png"] * 3])
    'flipbook'
    >>> viewer_to_set([["image/png", "application/json"], ["application/json"]])
    'dataImage'
    >>> print(viewer_to_set([["image/png", "application/json"], ["image/png"]]))
    None
    """
    kinds = [list(k) for k in subject_kinds]
    if not kinds:
        return None
    common = [v for v in viewers_showing(kinds[0])]
    for kind in kinds[1:]:
        able = set(viewers_showing(kind))
        common = [v for v in common if v in able]
    return common[0] if common else None


def viewer_problem(
    configured: str | None, subject_kinds: Iterable[Sequence[str]]
) -> str | None:
    """Why a workflow's ``subject_viewer`` cannot show a run's subjects, or None.

    ``configured`` is the workflow's value (None or ``""``: unset, the
    automatic choice applies per subject).  The answer is one sentence for a
    one-line error; it names the value to set when there is one.

    Examples
    --------
    >>> viewer_problem(None, [["image/png", "image/png"]]) is None
    True
    >>> print(viewer_problem(None, [["image/png", "application/json"]]))
    subject_viewer is unset, so the classifier draws no viewer for subjects of image/png + application/json; set it to dataImage
    >>> print(viewer_problem("scatterPlot", [["image/png", "application/json"]]))
    subject_viewer scatterPlot does not show every file of subjects of image/png + application/json (hides 1); set it to dataImage
    >>> print(viewer_problem("dataImage", [["image/png", "application/json"], ["image/png"]]))
    subject_viewer dataImage does not show every file of subjects of image/png (1 drawn blank or broken); no single subject_viewer shows every kind (image/png + application/json: dataImage; image/png: singleImage): upload each kind to its own subject set and workflow, or remove the odd ones in review
    >>> print(viewer_problem("lightCurve", [["application/json"]]))
    subject_viewer 'lightCurve' is not one the classifier accepts (the workflow does not load); set it to jsonData
    """
    kinds = [list(k) for k in subject_kinds]
    wanted = viewer_to_set(kinds)
    if wanted:
        fix = f"; set it to {wanted}"
    else:
        each = "; ".join(
            f"{' + '.join(k)}: {(viewers_showing(k) or ('none',))[0]}" for k in kinds
        )
        fix = (
            f"; no single subject_viewer shows every kind ({each}): upload each "
            "kind to its own subject set and workflow, or remove the odd ones "
            "in review"
        )
    if configured and configured not in SUBJECT_VIEWERS:
        return (
            f"subject_viewer {configured!r} is not one the classifier accepts "
            f"(the workflow does not load){fix}"
        )
    for kind in kinds:
        drawing = draws(configured or None, kind)
        if drawing.shows_all:
            continue
        what = " + ".join(kind) or "no files"
        if not configured:
            if drawing.viewer is None:
                why = "so the classifier draws no viewer"
            else:
                why = f"so the classifier's {drawing.viewer} viewer does not show every file"
            return f"subject_viewer is unset, {why} for subjects of {what}{fix}"
        lost = []
        if drawing.hidden:
            lost.append(f"hides {len(drawing.hidden)}")
        if drawing.broken:
            lost.append(f"{len(drawing.broken)} drawn blank or broken")
        return (
            f"subject_viewer {configured} does not show every file of subjects "
            f"of {what} ({', '.join(lost)}){fix}"
        )
    return None
