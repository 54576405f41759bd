"""The classifier's viewer rules, as zooprep encodes them (`zooprep.viewers`).

Each case is a subject zooprep can make and what Zooniverse's classifier
(front-end-monorepo ``lib-classifier``) does with it; the paths are in
`zooprep.viewers`' docstrings.
"""

from __future__ import annotations

import pytest

from zooprep.viewers import (
    SUBJECT_VIEWERS,
    automatic_viewer,
    draws,
    location_accepted,
    subject_model,
    viewer_problem,
    viewer_to_set,
    viewers_showing,
)
from zooprep.vocabulary import CONTENT_TYPES

PNG, JSON = "image/png", "application/json"


def test_the_strict_list_is_the_classifiers_enumeration() -> None:
    assert (
        *("dataImage", "flipbook", "geoMap", "jsonData", "lightcurve"),
        *("multiFrame", "scatterPlot", "singleImage", "subjectGroup"),
        "variableStar",
    ) == SUBJECT_VIEWERS
    assert "lightCurve" not in SUBJECT_VIEWERS


@pytest.mark.parametrize(
    ("locations", "automatic"),
    [
        ([PNG], "singleImage"),
        ([PNG, PNG, PNG], "flipbook"),
        ([JSON], "jsonData"),
        ([PNG, JSON], None),
        ([PNG, PNG, PNG, JSON], None),
        (["image/svg+xml"], None),
    ],
)
def test_a_workflow_without_subject_viewer_gets_the_automatic_choice(
    locations: list[str], automatic: str | None
) -> None:
    assert automatic_viewer(locations) == automatic


def test_images_with_a_light_curve_need_data_image_and_nothing_else_shows_both():
    subject = [PNG, PNG, PNG, JSON]
    assert viewers_showing(subject) == ("dataImage",)
    drawing = draws("dataImage", subject)
    assert drawing.images == (0, 1, 2)
    assert drawing.chart == 3
    assert drawing.one_box  # several images are one flipbook
    # scatterPlot draws only the chart: the cutouts are hidden.
    assert draws("scatterPlot", subject).hidden == (0, 1, 2)
    # A JSON frame in a flipbook or multiFrame is blank or broken.
    assert draws("flipbook", subject).broken == (3,)
    assert draws("multiFrame", subject).broken == (3,)


def test_only_the_first_location_is_shown_by_single_image() -> None:
    drawing = draws("singleImage", [PNG, PNG])
    assert drawing.images == (0,)
    assert drawing.hidden == (1,)
    assert draws("singleImage", [JSON, PNG]).broken == (0,)


def test_two_json_files_make_no_valid_subject() -> None:
    assert subject_model([PNG, JSON, JSON]) is None
    assert viewers_showing([PNG, JSON, JSON]) == ()


def test_data_image_without_a_json_file_shows_no_image() -> None:
    """The JSON hook's error puts the viewer in its error state (seen in the classifier)."""
    drawing = draws("dataImage", [PNG, PNG])
    assert drawing.broken == (0, 1)
    assert drawing.empty_area
    assert "dataImage" not in viewers_showing([PNG])


def test_a_run_with_and_without_light_curves_has_no_single_viewer() -> None:
    assert viewer_to_set([[PNG, JSON], [PNG]]) is None
    problem = viewer_problem("dataImage", [[PNG, JSON], [PNG]])
    assert problem is not None
    assert "no single subject_viewer shows every kind" in problem
    assert "image/png + application/json: dataImage; image/png: singleImage" in problem
    assert viewer_problem(None, [[PNG], [PNG, JSON]]) is not None


def test_a_wrong_spelling_is_refused_naming_the_right_value() -> None:
    problem = viewer_problem("lightCurve", [[JSON]])
    assert problem is not None
    assert "'lightCurve' is not one the classifier accepts" in problem
    assert problem.endswith("set it to jsonData")


def test_every_content_type_zooprep_uploads_is_one_the_classifier_accepts():
    for ext, kind in CONTENT_TYPES.items():
        if ext != ".svg":  # dropped by issue 21 (the classifier refuses it)
            assert location_accepted(kind, f"file{ext}"), ext
    assert not location_accepted("image/svg+xml", "file.svg")
