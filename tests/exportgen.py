"""Realistic Zooniverse classification exports for tests (and demos).

The CSV follows Panoptes' own export formatter (``lib/formatter/csv/
classification.rb`` in zooniverse/panoptes) and real exports such as the one
in panoptes-aggregation's test data:

- columns ``classification_id, user_name, user_id, user_ip, workflow_id,
  workflow_name, workflow_version, created_at, gold_standard, expert,
  metadata, annotations, subject_data, subject_ids``;
- logged-out volunteers: empty ``user_id``, ``user_name`` is
  ``not-logged-in-<user_ip>``, ``user_ip`` a 20-hex-digit hash, and the
  classifier ``session`` (64 hex digits) in ``metadata``;
- ``workflow_version`` is ``major.minor``, ``created_at`` is
  ``YYYY-MM-DD HH:MM:SS UTC``, ``gold_standard`` is ``true`` or empty,
  ``expert`` is the expert role or empty;
- question annotations carry the answer *label* (``"value": "Real"``), a list
  of labels for multiple-choice questions;
- ``subject_data`` is ``{"<subject id>": {"retired": {...} | null, ...the
  subject's metadata}}``, the retirement as it was when the export was made.

`ExportBuilder` writes rows one by one and keeps a plain record of each
(`Row`), so a test can compute what the answer must be without the code under
test.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = [
    "classification_id",
    "user_name",
    "user_id",
    "user_ip",
    "workflow_id",
    "workflow_name",
    "workflow_version",
    "created_at",
    "gold_standard",
    "expert",
    "metadata",
    "annotations",
    "subject_data",
    "subject_ids",
]

USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/121.0.0.0 Safari/537.36"
)


@dataclass
class Volunteer:
    """Someone who classifies: logged in (``user_id``) or not."""

    user_name: str
    user_id: int | None
    user_ip: str
    session: str


@dataclass
class Row:
    """What one generated export row says, in plain Python."""

    classification_id: int
    volunteer: Volunteer
    workflow_id: int
    workflow_version: str
    created_at: datetime
    subject_id: int
    annotations: list[dict[str, Any]]
    gold_standard: bool = False
    expert: str = ""
    malformed: bool = False
    subject_metadata: dict[str, Any] = field(default_factory=dict)
    feedback: dict[str, Any] | None = None

    def answer(self, task: str = "T0") -> Any:
        """The value given to ``task`` (None when the task is absent)."""
        for a in self.annotations:
            if a["task"] == task:
                return a["value"]
        return None


class ExportBuilder:
    """Builds a classification export row by row.

    Parameters
    ----------
    seed : int
        Seed of the generator for hashes, sessions and timings.
    start : datetime
        Time of the first classification.
    """

    def __init__(
        self,
        seed: int = 0,
        start: datetime = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC),
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.rows: list[Row] = []
        self.clock = start
        self.next_id = 612_000_000
        self.subjects: dict[int, dict[str, Any]] = {}
        self.retired: dict[int, dict[str, Any] | None] = {}
        self.workflow_names: dict[int, str] = {}
        self.task_labels: dict[str, str] = {
            "T0": "Is this a real astrophysical source?",
            "T1": "Which artefacts do you see?",
        }

    def _hex(self, n: int) -> str:
        """``n`` random hex digits."""
        return "".join(f"{int(b):x}" for b in self.rng.integers(0, 16, n))

    def volunteer(self, name: str | None = None, logged_in: bool = True) -> Volunteer:
        """A new volunteer (logged-out ones are named after their IP hash)."""
        ip = self._hex(20)
        if logged_in:
            uid = int(self.rng.integers(1_000_000, 3_000_000))
            return Volunteer(name or f"volunteer{uid}", uid, ip, self._hex(64))
        return Volunteer(f"not-logged-in-{ip}", None, ip, self._hex(64))

    def same_ip(self, other: Volunteer) -> Volunteer:
        """Another logged-out volunteer behind ``other``'s IP (a new session)."""
        return Volunteer(other.user_name, None, other.user_ip, self._hex(64))

    def subject(
        self,
        subject_id: int,
        metadata: dict[str, Any],
        retired_after: int | None = None,
        workflow_id: int = 0,
    ) -> None:
        """Declare a subject's metadata; retired (by count) when ``retired_after``."""
        self.subjects[subject_id] = metadata
        if retired_after is None:
            self.retired[subject_id] = None
        else:
            self.retired[subject_id] = {
                "id": int(self.rng.integers(100_000_000, 200_000_000)),
                "workflow_id": workflow_id,
                "classifications_count": retired_after,
                "created_at": "2025-03-01T10:00:00.000Z",
                "updated_at": "2025-03-02T10:00:00.000Z",
                "retired_at": "2025-03-02T10:00:00.000Z",
                "subject_id": subject_id,
                "retirement_reason": "classification_count",
            }

    def classify(
        self,
        volunteer: Volunteer,
        subject_id: int,
        answer: Any,
        *,
        workflow_id: int = 101,
        workflow_name: str = "Real or bogus?",
        version: str = "4.2",
        task: str = "T0",
        extra: list[dict[str, Any]] | None = None,
        gold_standard: bool = False,
        expert: str = "",
        malformed: bool = False,
        at: datetime | None = None,
        feedback: dict[str, Any] | None = None,
    ) -> Row:
        """Add one classification; ``answer=None`` leaves ``task`` out."""
        self.clock += timedelta(seconds=int(self.rng.integers(3, 90)))
        annotations = []
        if answer is not None:
            annotations.append(
                {
                    "task": task,
                    "task_label": self.task_labels.get(task),
                    "value": answer,
                }
            )
        annotations += extra or []
        self.workflow_names[workflow_id] = workflow_name
        row = Row(
            classification_id=self.next_id,
            volunteer=volunteer,
            workflow_id=workflow_id,
            workflow_version=version,
            created_at=at or self.clock,
            subject_id=subject_id,
            annotations=annotations,
            gold_standard=gold_standard,
            expert=expert,
            malformed=malformed,
            subject_metadata=self.subjects.get(subject_id, {}),
            feedback=feedback,
        )
        self.next_id += int(self.rng.integers(1, 40))
        self.rows.append(row)
        return row

    def _cells(self, row: Row) -> list[str]:
        """The CSV cells of one row."""
        v = row.volunteer
        started = row.created_at - timedelta(seconds=int(self.rng.integers(2, 60)))
        metadata = {
            "source": "api",
            "session": v.session,
            "viewport": {"width": 1710, "height": 948},
            "started_at": started.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "user_agent": USER_AGENT,
            "utc_offset": "0",
            "finished_at": row.created_at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "live_project": True,
            "interventions": {"opt_in": False, "messageShown": False},
            "user_language": "en",
            "subject_dimensions": [
                {
                    "clientWidth": 558,
                    "clientHeight": 186,
                    "naturalWidth": 900,
                    "naturalHeight": 300,
                }
            ],
            "subject_selection_state": {
                "retired": False,
                "selected_at": started.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "already_seen": False,
                "selection_state": "normal",
                "finished_workflow": False,
                "user_has_finished_workflow": False,
            },
            "workflow_version": row.workflow_version,
        }
        if row.feedback is not None:  # the classifier's record of shown feedback
            metadata["feedback"] = row.feedback
        subject_data = {
            str(row.subject_id): {
                "retired": self.retired.get(row.subject_id),
                **self.subjects.get(row.subject_id, {}),
            }
        }
        annotations = json.dumps(row.annotations, separators=(",", ":"))
        if row.malformed:
            annotations = annotations[: len(annotations) // 2]  # a cut-off blob
        return [
            str(row.classification_id),
            v.user_name,
            "" if v.user_id is None else str(v.user_id),
            v.user_ip,
            str(row.workflow_id),
            self.workflow_names[row.workflow_id],
            row.workflow_version,
            row.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "true" if row.gold_standard else "",
            row.expert,
            json.dumps(metadata, separators=(",", ":")),
            annotations,
            json.dumps(subject_data, separators=(",", ":")),
            str(row.subject_id),
        ]

    def write(self, path: Path) -> Path:
        """Write the export (rows in classification id order, as Panoptes does)."""
        with open(path, "w", encoding="utf-8", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(COLUMNS)
            for row in sorted(self.rows, key=lambda r: r.classification_id):
                out.writerow(self._cells(row))
        return path


def simulate(
    builder: ExportBuilder,
    subjects: dict[int, float],
    *,
    volunteers: int = 40,
    per_subject: tuple[int, int] = (3, 12),
    logged_out: float = 0.3,
    labels: tuple[str, str] = ("Real", "Bogus"),
    version: str = "4.2",
    workflow_id: int = 101,
) -> None:
    """Volunteers answering a real/bogus question on each subject.

    ``subjects`` maps subject id to the probability that a volunteer answers
    ``labels[0]`` (real).  Each subject gets a random number of volunteers in
    ``per_subject``; a share ``logged_out`` of the crowd is not logged in.
    """
    rng = builder.rng
    crowd = [
        builder.volunteer(logged_in=bool(rng.random() >= logged_out))
        for _ in range(volunteers)
    ]
    for sid, p_real in subjects.items():
        n = int(rng.integers(per_subject[0], per_subject[1] + 1))
        for k in rng.choice(len(crowd), size=min(n, len(crowd)), replace=False):
            answer = labels[0] if rng.random() < p_real else labels[1]
            builder.classify(
                crowd[int(k)], sid, answer, version=version, workflow_id=workflow_id
            )


@dataclass
class SimVolunteer:
    """A simulated volunteer of known skill.

    On a real subject of magnitude ``m`` they say real with probability
    ``detect * curve(m)``; on a bogus one with probability ``false_alarm``;
    on an unknown (ordinary) subject as on a real one half the time.
    """

    volunteer: Volunteer
    detect: float
    false_alarm: float

    def p_real(self, truth: bool | None, mag: float | None, curve: Any) -> float:
        """Probability of answering real."""
        if truth is False:
            return self.false_alarm
        shape = float(curve(mag)) if mag is not None else 1.0
        p = self.detect * shape
        return p if truth is True else 0.5 * (p + self.false_alarm)


@dataclass
class SimSubject:
    """A subject of a simulation: its id, source, known answer and magnitude."""

    subject_id: int
    source_id: int
    truth: bool | None
    mag: float | None = None
    training: bool = False
    voters: list[tuple[SimVolunteer, bool]] = field(default_factory=list)


def simulate_known(
    builder: ExportBuilder,
    subjects: list[SimSubject],
    volunteers: list[SimVolunteer],
    curve: Any,
    *,
    per_subject: tuple[int, int] = (5, 9),
    labels: tuple[str, str] = ("Real", "Bogus"),
    rule_id: str = "fake-check",
) -> None:
    """Volunteers of known skill classify subjects of known truth.

    Each subject gets a random set of volunteers; each answer is drawn from
    the volunteer's `SimVolunteer.p_real`, and recorded (volunteer, answer)
    on the subject so a test can compute what the results must be.  The
    subject's metadata carries ``#zooprep_id`` (as a subject uploaded from a
    zooprep manifest by another tool would); training subjects' classifications
    carry the classifier's ``metadata.feedback``.
    """
    rng = builder.rng
    for s in subjects:
        builder.subject(s.subject_id, {"#zooprep_id": f"id:{s.source_id}"})
        n = int(rng.integers(per_subject[0], per_subject[1] + 1))
        for k in rng.choice(
            len(volunteers), size=min(n, len(volunteers)), replace=False
        ):
            v = volunteers[int(k)]
            said_real = bool(rng.random() < v.p_real(s.truth, s.mag, curve))
            s.voters.append((v, said_real))
            feedback = None
            if s.training:
                answer = "0" if s.truth else "1"
                feedback = {
                    "T0": [
                        {
                            "id": rule_id,
                            "answer": answer,
                            "strategy": "singleAnswerQuestion",
                            "successEnabled": True,
                            "failureEnabled": True,
                            "success": said_real == bool(s.truth),
                        }
                    ]
                }
            builder.classify(
                v.volunteer,
                s.subject_id,
                labels[0] if said_real else labels[1],
                feedback=feedback,
            )
