"""In-memory state of the Panoptes stand-in, and read-only views for tests.

The server mutates a `Store` under its lock; tests read it through the
snapshot dataclasses (`SubjectView`, `SubjectSetView`, `RequestRecord`) that
`PanoptesStandin` returns, so they never see half-made objects.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = [
    "ImportRecord",
    "Location",
    "Project",
    "RequestRecord",
    "Store",
    "Subject",
    "SubjectSet",
    "SubjectSetView",
    "SubjectView",
    "Token",
    "User",
    "Workflow",
]


def now_iso(ts: float) -> str:
    """Format a POSIX time as Panoptes does (ISO 8601, milliseconds, Z)."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass
class User:
    """A Zooniverse account."""

    id: str
    login: str
    password: str
    email: str
    subject_limit: int
    admin: bool = False
    upload_whitelist: bool = False
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


@dataclass
class OAuthApp:
    """A registered OAuth application (client id, optional secret, owner)."""

    client_id: str
    secret: str | None
    owner_id: str | None
    grants: frozenset[str]


@dataclass
class Token:
    """An issued access token and its refresh token."""

    access: str
    refresh: str | None
    user_id: str
    client_id: str
    expires_at: float
    created_at: float
    grant: str = "password"
    revoked: bool = False


@dataclass
class Project:
    """A project (only what an uploader reads)."""

    id: str
    display_name: str
    slug: str
    owner_id: str
    collaborator_ids: set[str]
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


@dataclass
class SubjectSet:
    """A subject set; ``subject_ids`` keeps link order."""

    id: str
    display_name: str
    project_id: str
    metadata: dict[str, Any]
    subject_ids: dict[str, str] = field(default_factory=dict)  # subject id -> sms id
    # subject id -> its set_member_subject's priority (Panoptes: NUMERIC, or NULL)
    priorities: dict[str, Decimal] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


@dataclass
class Location:
    """One media location of a subject: a stored blob or an external URL."""

    mime: str
    blob_key: str | None  # e.g. "subject_location/<uuid>.png"; None when external
    external_url: str | None = None


@dataclass
class Subject:
    """A subject; inactive subjects are deleted but still count to the quota."""

    id: str
    project_id: str
    uploader_id: str
    metadata: dict[str, Any]
    locations: list[Location]
    external_id: str | None = None
    active: bool = True
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


@dataclass
class Workflow:
    """A workflow; ``subject_set_ids`` are the sets it shows, in link order."""

    id: str
    display_name: str
    project_id: str
    subject_set_ids: list[str] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    #: The workflow's tasks as the project builder saves them (``{"T0": {...}}``),
    #: with each task's ``feedback`` (``enabled``, ``rules``), and the first one.
    tasks: dict[str, Any] = field(default_factory=dict)
    first_task: str = ""
    #: The workflow's ``configuration`` (``subject_viewer``,
    #: ``training_set_ids``, ...): a free JSON object, replaced whole by an
    #: update (Panoptes stores it as one jsonb column).
    configuration: dict[str, Any] = field(default_factory=dict)
    active: bool = True


@dataclass
class ImportRecord:
    """A subject-set import and its progress."""

    id: str
    source_url: str
    subject_set_id: str
    user_id: str
    manifest_count: int
    imported_count: int = 0
    failed_count: int = 0
    failed_uuids: list[str] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class SubjectView:
    """A snapshot of one subject, for assertions in tests.

    Attributes
    ----------
    id : str
        Panoptes subject id.
    metadata : dict
        The subject's metadata, as stored.
    mimes : tuple of str
        Mime type of each location, in order.
    blobs : tuple of bytes or None
        Stored bytes of each uploaded location (``None`` if never stored or
        external).
    external_urls : tuple of str or None
        URL of each external location (``None`` for uploaded ones).
    set_ids : tuple of str
        Subject sets the subject is linked to.
    active : bool
        False once the subject was deleted.
    uploader_id, project_id : str
        Owner user and project.
    external_id : str or None
        Set by subject-set imports.
    """

    id: str
    metadata: dict[str, Any]
    mimes: tuple[str, ...]
    blobs: tuple[bytes | None, ...]
    external_urls: tuple[str | None, ...]
    set_ids: tuple[str, ...]
    active: bool
    uploader_id: str
    project_id: str
    external_id: str | None

    @property
    def broken(self) -> bool:
        """Whether an uploaded (non-external) location has no stored bytes."""
        return any(
            blob is None and url is None
            for blob, url in zip(self.blobs, self.external_urls, strict=True)
        )


@dataclass(frozen=True)
class SubjectSetView:
    """A snapshot of one subject set (``subject_ids`` in link order)."""

    id: str
    display_name: str
    project_id: str
    metadata: dict[str, Any]
    subject_ids: tuple[str, ...]


@dataclass(frozen=True)
class RequestRecord:
    """One request the stand-in answered (or dropped).

    Attributes
    ----------
    method, path, query : str
        As received (path without the query string).
    status : int
        Status answered; 0 if the connection was dropped.
    fault : str or None
        Kind of the fault that fired on this request, if any.
    started, duration : float
        POSIX start time and seconds spent (including latency and faults).
    """

    method: str
    path: str
    query: str
    status: int
    fault: str | None
    started: float
    duration: float


class Store:
    """All state of one stand-in server; every access holds ``lock``."""

    def __init__(self, default_subject_limit: int) -> None:
        self.lock = threading.RLock()
        self.default_subject_limit = default_subject_limit
        self._ids = {
            kind: itertools.count(start)
            for kind, start in (
                ("users", 1),
                ("projects", 1),
                ("subject_sets", 1),
                ("subjects", 1001),
                ("set_member_subjects", 1),
                ("subject_set_imports", 1),
                ("workflows", 1),
            )
        }
        self.users: dict[str, User] = {}
        self.apps: dict[str, OAuthApp] = {}
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, Token] = {}
        self.sessions: dict[str, dict[str, str]] = {}  # cookie -> {"csrf", "user_id"}
        self.projects: dict[str, Project] = {}
        self.subject_sets: dict[str, SubjectSet] = {}
        self.workflows: dict[str, Workflow] = {}
        self.subjects: dict[str, Subject] = {}
        self.uploads: dict[str, int] = {}  # user id -> subjects ever created
        self.blobs: dict[str, tuple[str, bytes]] = {}  # key -> (content type, bytes)
        self.imports: dict[str, ImportRecord] = {}
        self.files: dict[str, bytes] = {}  # registered files served under /files/
        self.requests: list[RequestRecord] = []

    def next_id(self, kind: str) -> str:
        """Return the next id (a string, as Panoptes sends them) of a kind."""
        return str(next(self._ids[kind]))

    def workflow_ids_of(self, set_id: str) -> list[str]:
        """Ids of the workflows a subject set is linked to."""
        return [w.id for w in self.workflows.values() if set_id in w.subject_set_ids]

    def uploaded_count(self, user_id: str) -> int:
        """Subjects the user ever created, deleted ones included."""
        return self.uploads.get(user_id, 0)

    def add_subject(self, subject: Subject) -> None:
        """Store a new subject and count it against its uploader's quota."""
        self.subjects[subject.id] = subject
        self.uploads[subject.uploader_id] = self.uploads.get(subject.uploader_id, 0) + 1

    def subject_limit(self, user: User) -> int:
        """The user's subject quota."""
        return user.subject_limit

    def set_ids_of(self, subject_id: str) -> list[str]:
        """Ids of the sets a subject is linked to."""
        return [s.id for s in self.subject_sets.values() if subject_id in s.subject_ids]

    def etag(self, kind: str, obj: Any) -> str:
        """A strong ETag that changes whenever the object is updated."""
        key = f"{kind}/{obj.id}-{obj.updated_at!r}"
        return '"' + hashlib.md5(key.encode()).hexdigest() + '"'

    def view(self, subject: Subject) -> SubjectView:
        """Snapshot one subject."""
        blobs: list[bytes | None] = []
        for loc in subject.locations:
            stored = self.blobs.get(loc.blob_key) if loc.blob_key else None
            blobs.append(stored[1] if stored else None)
        return SubjectView(
            id=subject.id,
            metadata=dict(subject.metadata),
            mimes=tuple(loc.mime for loc in subject.locations),
            blobs=tuple(blobs),
            external_urls=tuple(loc.external_url for loc in subject.locations),
            set_ids=tuple(self.set_ids_of(subject.id)),
            active=subject.active,
            uploader_id=subject.uploader_id,
            project_id=subject.project_id,
            external_id=subject.external_id,
        )

    @staticmethod
    def new_secret() -> str:
        """A random url-safe token."""
        return secrets.token_urlsafe(24)
