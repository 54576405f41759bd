"""A loopback HTTP server that behaves like Panoptes for an uploader.

`PanoptesStandin` runs a `http.server.ThreadingHTTPServer` in a thread on
``127.0.0.1`` (ephemeral port by default) and answers, with the shapes the
Rails server ``zooniverse/panoptes`` uses:

* ``GET/POST /users/sign_in`` (CSRF token header + ``_Panoptes_session``
  cookie), ``DELETE /users/sign_out``;
* ``POST /oauth/token`` with ``password`` (session cookie or login/password),
  ``client_credentials`` and ``refresh_token`` grants, expiring tokens;
* the JSON:API under ``/api`` (``Accept: application/vnd.api+json;
  version=1`` required, else 404): ``/me``, ``/users``, ``/projects``,
  ``/subject_sets`` (+ ``/links/subjects``), ``/subjects`` (also many at
  once: ``/subjects?id=1,2,3`` and ``/subjects/1,2,3``),
  ``/set_member_subjects``, ``/subject_set_imports``, ``/workflows`` (+
  ``/links/subject_sets``; ``PUT`` of its ``configuration`` with
  ``If-Match``) and ``/projects/<id>/classifications_export``;
* subjects of several locations, each with its content type (``image/png``,
  ``application/json`` ...) and its own signed PUT URL;
* signed blob PUT URLs (``/blob/...``, Azure-like: ``x-ms-blob-type:
  BlockBlob``, 201, 1 MiB limit) and public media GETs (``/media/...``);
* ``/files/<name>`` for CSVs a test registers for subject-set imports;
* ``GET /_standin/summary`` (not Panoptes: counts for a benchmark running the
  stand-in in another process).

Faults are armed through ``standin.faults`` (see `faults`); what clients did
is inspected through the methods of `PanoptesStandin`.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import hmac
import io
import json
import logging
import math
import mimetypes
import re
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import formatdate
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .faults import Fault, Faults
from .store import (
    ImportRecord,
    Location,
    OAuthApp,
    Project,
    RequestRecord,
    Store,
    Subject,
    SubjectSet,
    SubjectSetView,
    SubjectView,
    Token,
    User,
    Workflow,
    now_iso,
)

__all__ = ["DEFAULT_CLIENT_IDS", "PanoptesStandin"]

logger = logging.getLogger(__name__)

#: Client ids panoptes-client sends when none is configured (production and
#: staging); the stand-in accepts them for the password grant.
DEFAULT_CLIENT_IDS = (
    "ce310d45f951de68c4cc8ef46ca38cc0a008f607a2026680295757bfef99f43c",
    "e094b63362fdef0548e0bbcc6e6cb5996c422d3a770074ef972432d57d41049c",
)

API_ACCEPT = "application/vnd.api+json; version=1"
JSON_API_TYPE = "application/vnd.api+json; version=1; charset=utf-8"
SESSION_COOKIE = "_Panoptes_session"
SCOPES = "public user project group collection classification subject medium organization translation"
ALLOWED_MIME_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/svg+xml",
        "audio/mpeg",
        "audio/mp4",
        "video/mp4",
        "video/mpeg",
        "text/plain",
        "application/json",
    }
)
_NONSTANDARD_MIME = {"audio/mp3": "audio/mpeg", "audio/x-m4a": "audio/mp4"}
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif"}
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_BLOB_CONTAINER = "subject-uploads"
_DEFAULT_PAGE_SIZE = 20
_MAX_PAGE_SIZE = 100


class HttpError(Exception):
    """An error answer: status, JSON:API message, optional extra headers."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Request:
    """What a route handler sees of a request."""

    method: str
    path: str
    query: str
    params: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    fault: Fault | None
    cookies: dict[str, str]

    def json(self) -> Any:
        """The body parsed as JSON (400 if it is not)."""
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise HttpError(
                400, f"Error occurred while parsing request parameters: {exc}"
            ) from exc

    def form(self) -> dict[str, str]:
        """The body as form fields (or a JSON object), for /oauth/token."""
        ctype = self.headers.get("content-type", "")
        if "json" in ctype:
            data = self.json()
            return {k: str(v) for k, v in (data or {}).items()}
        pairs = urllib.parse.parse_qsl(self.body.decode("utf-8", "replace"))
        return dict(pairs)


@dataclass
class Response:
    """An answer to send."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(
    status: int,
    payload: Any,
    headers: dict[str, str] | None = None,
    ctype: str = JSON_API_TYPE,
) -> Response:
    """Serialise a payload as a JSON answer."""
    body = json.dumps(payload).encode()
    out = {"Content-Type": ctype}
    out.update(headers or {})
    return Response(status, body, out)


def _error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """A JSON:API error answer ``{"errors": [{"message": ...}]}``."""
    return _json_response(status, {"errors": [{"message": message}]}, headers)


def _azure_error(status: int, code: str, message: str) -> Response:
    """An Azure blob storage error answer (XML)."""
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Error>'
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()
    return Response(
        status, body, {"Content-Type": "application/xml", "x-ms-error-code": code}
    )


_PROXY_PAGES = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Time-out"}


def _fault_response(status: int) -> Response:
    """What a client sees when a fault answers ``status`` (HTML for proxy errors)."""
    if status in _PROXY_PAGES:
        text = f"{status} {_PROXY_PAGES[status]}"
        body = f"<html><head><title>{text}</title></head><body><h1>{text}</h1></body></html>"
        return Response(status, body.encode(), {"Content-Type": "text/html"})
    if status == 409:
        return _error_response(409, "Attempted to update a stale object: SubjectSet.")
    return _error_response(status, "Internal Server Error")


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying a reference to its stand-in."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], standin: PanoptesStandin) -> None:
        self.standin = standin
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, lets the stand-in answer it, writes the answer."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Send the access log to logging, not stderr."""
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        """Answer a GET."""
        self._handle("GET")

    def do_HEAD(self) -> None:
        """Answer a HEAD."""
        self._handle("HEAD")

    def do_POST(self) -> None:
        """Answer a POST."""
        self._handle("POST")

    def do_PUT(self) -> None:
        """Answer a PUT."""
        self._handle("PUT")

    def do_DELETE(self) -> None:
        """Answer a DELETE."""
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        """Answer a PATCH."""
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        """Read the body, dispatch, and write the answer."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        cookies: dict[str, str] = {}
        if "cookie" in headers:
            jar = SimpleCookie()
            jar.load(headers["cookie"])
            cookies = {k: m.value for k, m in jar.items()}
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        req = Request(method, path, query, params, headers, body, None, cookies)
        resp = self.server.standin._answer(req)
        if resp is None:  # a dropped connection ("hang" with process=False)
            self.close_connection = True
            return
        try:
            self.send_response(resp.status)
            for name, value in resp.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(resp.body)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The client gave up (its timeout ran out during a hang): nothing to answer.
            logger.debug(
                "client went away before the answer to %s %s: %s", method, path, exc
            )
            self.close_connection = True


Route = tuple[str, re.Pattern[str], Callable[..., Response]]


class PanoptesStandin:
    """A local Panoptes for tests: start it, point a client at `url`, inspect.

    Parameters
    ----------
    port : int
        TCP port on 127.0.0.1; 0 (default) picks a free one.
    latency : float
        Seconds added before every request is processed (e.g. 0.05 for the
        upload benchmark). Can be changed while running.
    token_lifetime : float
        Seconds an access token lives (Panoptes: 7200). Can be changed while
        running; applies to tokens issued afterwards.
    subject_limit : int
        Default subject quota of new users (Panoptes' project-wide default for
        non-privileged users is 10,000; deleted subjects still count).
    max_blob_bytes : int
        Largest media file the blob storage accepts (413 above it).
    max_hang : float
        Upper bound on the sleep of ``hang`` faults, so a test cannot wedge.
    import_row_limit : int
        Largest subject-set import manifest (Panoptes: 10,000 rows).
    import_row_delay : float
        Seconds a subject-set import spends per row (so polling sees progress).
    link_conflicts : bool
        Answer 409 to a link request on a subject set while another link
        request on the same set is still in flight (as Panoptes can under
        concurrent updates).
    blob_url_lifetime : float
        Seconds a signed blob PUT URL stays valid.
    seed : int
        Seed for probabilistic faults.

    Examples
    --------
    >>> with PanoptesStandin.with_defaults() as standin:  # doctest: +SKIP
    ...     standin.faults.add("error_after", method="POST", path=r"^/api/subjects$")
    ...     ...  # run an uploader against standin.url
    ...     assert not standin.orphans()
    """

    def __init__(
        self,
        *,
        port: int = 0,
        latency: float = 0.0,
        token_lifetime: float = 7200.0,
        subject_limit: int = 10_000,
        max_blob_bytes: int = 1024 * 1024,
        max_hang: float = 60.0,
        import_row_limit: int = 10_000,
        import_row_delay: float = 0.0,
        link_conflicts: bool = False,
        blob_url_lifetime: float = 1200.0,
        seed: int = 0,
    ) -> None:
        self.latency = latency
        self.token_lifetime = token_lifetime
        self.max_blob_bytes = max_blob_bytes
        self.max_hang = max_hang
        self.import_row_limit = import_row_limit
        self.import_row_delay = import_row_delay
        self.link_conflicts = link_conflicts
        self.blob_url_lifetime = blob_url_lifetime
        self.faults = Faults(seed)
        self.store = Store(subject_limit)
        self._port = port
        self._secret = Store.new_secret().encode()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        self._linking: set[str] = set()
        self._routes = self._build_routes()
        for client_id in DEFAULT_CLIENT_IDS:
            self.add_oauth_client(client_id, None, grants=("password", "refresh_token"))
        # Filled in by with_defaults():
        self.username = ""
        self.password = ""
        self.user_id = ""
        self.client_id = ""
        self.client_secret = ""
        self.project_id = ""
        self.subject_set_id = ""

    # ------------------------------------------------------------------ setup

    @classmethod
    def with_defaults(cls, **kwargs: Any) -> PanoptesStandin:
        """A stand-in holding the standard test world (not started).

        It has a user (`username`/`password`, id `user_id`), a confidential
        OAuth client (`client_id`/`client_secret`, acting as that user) that
        may use every grant, project ``"1"`` owned by the user (`project_id`)
        and an empty subject set in it (`subject_set_id`).

        Parameters
        ----------
        **kwargs
            Passed to `PanoptesStandin`.

        Returns
        -------
        PanoptesStandin
            The configured server; call `start` or use it as a context manager.
        """
        standin = cls(**kwargs)
        standin.username = "zooprep-tester"
        standin.password = "correct horse battery staple"
        standin.user_id = standin.add_user(standin.username, standin.password)
        standin.client_id = "zooprep-test-client"
        standin.client_secret = "zooprep-test-secret"
        standin.add_oauth_client(
            standin.client_id, standin.client_secret, owner_id=standin.user_id
        )
        standin.project_id = standin.add_project(
            "zooprep test project", owner_id=standin.user_id
        )
        standin.subject_set_id = standin.add_subject_set(
            standin.project_id, "existing set"
        )
        return standin

    def add_user(
        self,
        login: str,
        password: str,
        *,
        subject_limit: int | None = None,
        email: str | None = None,
        admin: bool = False,
    ) -> str:
        """Create a user account and return its id.

        Parameters
        ----------
        login, password : str
            Credentials for sign-in.
        subject_limit : int, optional
            This user's subject quota (default: the server's).
        email : str, optional
            Defaults to ``<login>@example.org``.
        admin : bool
            Admins have no quota (as in Panoptes, when in admin mode).

        Returns
        -------
        str
            The new user's id.
        """
        with self.store.lock:
            uid = self.store.next_id("users")
            limit = (
                self.store.default_subject_limit
                if subject_limit is None
                else subject_limit
            )
            self.store.users[uid] = User(
                uid, login, password, email or f"{login}@example.org", limit, admin
            )
            return uid

    def add_oauth_client(
        self,
        client_id: str,
        secret: str | None,
        *,
        owner_id: str | None = None,
        grants: Iterable[str] = ("password", "client_credentials", "refresh_token"),
    ) -> None:
        """Register an OAuth application.

        Parameters
        ----------
        client_id : str
            Its client id.
        secret : str or None
            Its secret (needed for ``client_credentials``).
        owner_id : str, optional
            The user that ``client_credentials`` tokens act as (Panoptes gives
            such tokens the application owner as resource owner).
        grants : iterable of str
            Grant types the application may use (others answer 422).
        """
        with self.store.lock:
            self.store.apps[client_id] = OAuthApp(
                client_id, secret, owner_id, frozenset(grants)
            )

    def add_project(
        self, display_name: str, *, owner_id: str, slug: str | None = None
    ) -> str:
        """Create a project owned by ``owner_id`` and return its id."""
        with self.store.lock:
            pid = self.store.next_id("projects")
            owner = self.store.users[owner_id]
            slug = (
                slug
                or f"{owner.login}/{re.sub(r'[^a-z0-9]+', '-', display_name.lower())}"
            )
            self.store.projects[pid] = Project(
                pid, display_name, slug, owner_id, {owner_id}
            )
            return pid

    def add_subject_set(
        self, project_id: str, display_name: str, metadata: dict[str, Any] | None = None
    ) -> str:
        """Create a subject set in a project and return its id."""
        with self.store.lock:
            sid = self.store.next_id("subject_sets")
            self.store.subject_sets[sid] = SubjectSet(
                sid, display_name, project_id, metadata or {}
            )
            return sid

    def add_workflow(self, project_id: str, display_name: str = "Classify") -> str:
        """Create a workflow in a project and return its id."""
        with self.store.lock:
            wid = self.store.next_id("workflows")
            self.store.workflows[wid] = Workflow(wid, display_name, project_id)
            return wid

    def set_workflow_tasks(
        self, workflow_id: str | int, tasks: dict[str, Any], first_task: str = "T0"
    ) -> None:
        """Give a workflow its tasks, as the project builder saves them.

        A question task is ``{"type": "single", "question": ..., "answers":
        [{"label": ...}], "feedback": {"enabled": bool, "rules": [...]}}``;
        each rule has ``id``, ``strategy`` (``singleAnswerQuestion``),
        ``successEnabled``/``failureEnabled`` and the default messages.
        """
        with self.store.lock:
            w = self.store.workflows[str(workflow_id)]
            w.tasks = json.loads(json.dumps(tasks))
            w.first_task = first_task
            w.updated_at = time.time()

    def set_workflow_configuration(
        self, workflow_id: str | int, configuration: dict[str, Any]
    ) -> None:
        """Give a workflow its ``configuration``, as the project builder saves it."""
        with self.store.lock:
            w = self.store.workflows[str(workflow_id)]
            w.configuration = json.loads(json.dumps(configuration))
            w.updated_at = time.time()

    def workflow_configuration(self, workflow_id: str | int) -> dict[str, Any]:
        """A copy of a workflow's ``configuration``."""
        with self.store.lock:
            w = self.store.workflows[str(workflow_id)]
            return json.loads(json.dumps(w.configuration))

    def workflow_sets(self, workflow_id: str | int) -> tuple[str, ...]:
        """The subject set ids linked to a workflow, in link order."""
        with self.store.lock:
            return tuple(self.store.workflows[str(workflow_id)].subject_set_ids)

    def set_subject_limit(self, user_id: str, limit: int) -> None:
        """Change one user's subject quota."""
        with self.store.lock:
            self.store.users[user_id].subject_limit = limit

    def register_file(self, name: str, data: bytes) -> str:
        """Serve ``data`` at ``<url>/files/<name>`` and return that URL.

        Use it for subject-set import manifests (the stand-in fetches only
        loopback URLs).
        """
        with self.store.lock:
            self.store.files[name] = data
        return f"{self.url}/files/{urllib.parse.quote(name)}"

    def expire_tokens(self) -> int:
        """Expire every access token issued so far; return how many were live."""
        now = time.time()
        with self.store.lock:
            live = [t for t in self.store.tokens.values() if t.expires_at > now]
            for tok in live:
                tok.expires_at = now
            return len(live)

    # -------------------------------------------------------------- lifecycle

    def start(self) -> PanoptesStandin:
        """Bind 127.0.0.1 and serve in a background thread; return self."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"panoptes-standin-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hung requests and running imports are woken up."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for worker in self._workers:
            worker.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> PanoptesStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port served (after `start`)."""
        if self._server is None:
            raise RuntimeError("the stand-in is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The endpoint to give clients, ``http://127.0.0.1:PORT`` (no /api)."""
        return f"http://127.0.0.1:{self.port}"

    def client_env(self, credentials: str = "password") -> dict[str, str]:
        """Environment variables pointing a subprocess at this stand-in.

        Parameters
        ----------
        credentials : {'password', 'client', 'none'}
            Which credentials to put in the environment:
            ``PANOPTES_USERNAME``/``PANOPTES_PASSWORD``, or
            ``PANOPTES_CLIENT_ID``/``PANOPTES_CLIENT_SECRET``, or neither.

        Returns
        -------
        dict
            ``PANOPTES_ENDPOINT`` (read by panoptes-client), the credentials,
            and ``NO_PROXY`` for loopback. Merge it into a copy of
            ``os.environ``.
        """
        env = {
            "PANOPTES_ENDPOINT": self.url,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        if credentials == "password":
            env["PANOPTES_USERNAME"] = self.username
            env["PANOPTES_PASSWORD"] = self.password
        elif credentials == "client":
            env["PANOPTES_CLIENT_ID"] = self.client_id
            env["PANOPTES_CLIENT_SECRET"] = self.client_secret
        elif credentials != "none":
            raise ValueError(
                f"credentials must be 'password', 'client' or 'none', not {credentials!r}"
            )
        return env

    # ------------------------------------------------------------- inspection

    def subjects(self, *, include_deleted: bool = False) -> list[SubjectView]:
        """Snapshots of the subjects created, by id (deleted ones on request)."""
        with self.store.lock:
            return [
                self.store.view(s)
                for s in self.store.subjects.values()
                if s.active or include_deleted
            ]

    def subject(self, subject_id: str | int) -> SubjectView:
        """Snapshot of one subject (KeyError if unknown)."""
        with self.store.lock:
            return self.store.view(self.store.subjects[str(subject_id)])

    def subject_set(self, set_id: str | int) -> SubjectSetView:
        """Snapshot of one subject set (KeyError if unknown)."""
        with self.store.lock:
            s = self.store.subject_sets[str(set_id)]
            return SubjectSetView(
                s.id,
                s.display_name,
                s.project_id,
                dict(s.metadata),
                tuple(s.subject_ids),
            )

    def subject_sets(self) -> list[SubjectSetView]:
        """Snapshots of every subject set."""
        with self.store.lock:
            ids = list(self.store.subject_sets)
        return [self.subject_set(i) for i in ids]

    def set_subjects(self, set_id: str | int) -> list[SubjectView]:
        """Snapshots of the subjects linked to one set, in link order."""
        with self.store.lock:
            s = self.store.subject_sets[str(set_id)]
            return [self.store.view(self.store.subjects[i]) for i in s.subject_ids]

    def orphans(self) -> list[SubjectView]:
        """Live subjects that are in no subject set."""
        return [s for s in self.subjects() if not s.set_ids]

    def broken(self) -> list[SubjectView]:
        """Live subjects with an uploaded location whose bytes were never stored."""
        return [s for s in self.subjects() if s.broken]

    def duplicates(self, key: str = "#zooprep_id") -> dict[str, list[str]]:
        """Metadata values of ``key`` carried by more than one live subject.

        Returns
        -------
        dict
            ``{value: [subject ids]}`` for each value seen more than once.
        """
        seen: dict[str, list[str]] = {}
        for s in self.subjects():
            if key in s.metadata:
                seen.setdefault(str(s.metadata[key]), []).append(s.id)
        return {value: ids for value, ids in seen.items() if len(ids) > 1}

    def uploaded_count(self, user_id: str | None = None) -> int:
        """Subjects a user ever created, deleted included (default user: `user_id`)."""
        with self.store.lock:
            return self.store.uploaded_count(user_id or self.user_id)

    def issued_grants(self) -> list[str]:
        """Grant type of each access token issued, in order (``"refresh_token"``...)."""
        with self.store.lock:
            tokens = sorted(self.store.tokens.values(), key=lambda t: t.created_at)
            return [t.grant for t in tokens]

    def imports(self) -> list[ImportRecord]:
        """The subject-set imports created (live records; read only)."""
        with self.store.lock:
            return list(self.store.imports.values())

    def requests(
        self, method: str | None = None, path: str | None = None
    ) -> list[RequestRecord]:
        """Requests answered so far, optionally filtered.

        Parameters
        ----------
        method : str, optional
            Keep only this HTTP method.
        path : str, optional
            Keep only paths in which this regular expression is found.
        """
        regex = re.compile(path) if path else None
        with self.store.lock:
            records = list(self.store.requests)
        return [
            r
            for r in records
            if (method is None or r.method == method.upper())
            and (regex is None or regex.search(r.path))
        ]

    def count_requests(self, method: str | None = None, path: str | None = None) -> int:
        """How many requests matched (see `requests`)."""
        return len(self.requests(method, path))

    def summary(self) -> dict[str, Any]:
        """Counts of what the server holds (also served at ``/_standin/summary``)."""
        subjects = self.subjects()
        return {
            "subjects": len(subjects),
            "subjects_including_deleted": len(self.subjects(include_deleted=True)),
            "orphans": len([s for s in subjects if not s.set_ids]),
            "broken": len([s for s in subjects if s.broken]),
            "duplicates": len(self.duplicates()),
            "subject_sets": {v.id: len(v.subject_ids) for v in self.subject_sets()},
            "requests": self.count_requests(),
            "faults_fired": self._faults_fired(),
        }

    def _faults_fired(self) -> dict[str, int]:
        """How often each kind of armed fault fired."""
        fired: dict[str, int] = {}
        for fault in self.faults.armed:
            fired[fault.kind] = fired.get(fault.kind, 0) + fault.fired
        return fired

    # --------------------------------------------------------------- dispatch

    def _answer(self, req: Request) -> Response | None:
        """Apply latency and faults, route, and log one request."""
        started = time.time()
        fault = self.faults.take(req.method, req.path, req.query)
        req.fault = fault
        link_key = self._link_key(req)
        if link_key is not None:
            with self.store.lock:
                busy = link_key in self._linking
                self._linking.add(link_key)
            if busy:  # another link request on this set is in flight: stale object
                self._stopping.wait(self.latency)
                conflict = _fault_response(409)
                self._log(req, conflict.status, fault, started)
                return conflict
        try:
            response = self._answer_with_faults(req, fault)
        finally:
            if link_key is not None:
                with self.store.lock:
                    self._linking.discard(link_key)
        self._log(req, response.status if response else 0, fault, started)
        return response

    def _answer_with_faults(self, req: Request, fault: Fault | None) -> Response | None:
        """Sleep as asked, then let a fault or the route answer."""
        if self.latency > 0:
            self._stopping.wait(self.latency)
        kind = fault.kind if fault else None
        if fault is not None and kind in ("hang", "delay"):
            self._stopping.wait(min(fault.delay, self.max_hang))
            if kind == "hang" and not fault.process:
                return None
        if fault is not None and kind in ("error", "conflict"):
            return _fault_response(fault.status)
        if fault is not None and kind == "quota":
            with self.store.lock:
                user = self.store.users.get(self._token_user_id(req) or "")
                count = self.store.uploaded_count(user.id) if user else 0
                limit = user.subject_limit if user else self.store.default_subject_limit
            return _error_response(
                403, f"User has uploaded {count} subjects of {limit} maximum"
            )
        if kind == "expire_token":
            token = self._bearer(req)
            with self.store.lock:
                if token in self.store.tokens:
                    self.store.tokens[token].expires_at = time.time()
        try:
            response = self._route(req)
        except HttpError as exc:
            response = _error_response(exc.status, exc.message, exc.headers)
        except Exception:  # a stand-in bug: answer 500 as Rails would, and say so
            logger.exception("stand-in failed on %s %s", req.method, req.path)
            response = _error_response(500, "Internal Server Error")
        if fault is not None and kind == "error_after":
            return _fault_response(fault.status)
        return response

    def _route(self, req: Request) -> Response:
        """Find the handler of a request and call it."""
        path = req.path
        is_api = path == "/api" or path.startswith("/api/")
        if is_api:
            accept = req.headers.get("accept", "")
            if "application/vnd.api+json" not in accept or "version=1" not in accept:
                raise HttpError(404, "Not Found")
            path = path[len("/api") :]
            if req.method in ("POST", "PUT", "PATCH"):
                ctype = req.headers.get("content-type", "").split(";")[0].strip()
                if req.body and ctype not in (
                    "application/json",
                    "application/vnd.api+json",
                ):
                    raise HttpError(
                        415,
                        "Only requests with Content-Type: application/json or "
                        "application/vnd.api+json are allowed",
                    )
        for method, regex, handler in self._routes[is_api]:
            m = regex.fullmatch(path)
            if m is not None and (
                method == req.method or (method, req.method) == ("GET", "HEAD")
            ):
                with self.store.lock:
                    return handler(req, *m.groups())
        raise HttpError(404, "Not Found")

    def _build_routes(self) -> dict[bool, list[Route]]:
        """The route tables (API paths are relative to /api)."""
        api: list[tuple[str, str, Callable[..., Response]]] = [
            ("GET", r"/me", self._get_me),
            ("GET", r"/users", self._list_users),
            ("GET", r"/users/(\d+)", self._get_user),
            ("GET", r"/projects", self._list_projects),
            ("GET", r"/projects/(\d+)", self._get_project),
            ("GET", r"/projects/(\d+)/classifications_export", self._get_export),
            ("POST", r"/projects/(\d+)/classifications_export", self._create_export),
            ("GET", r"/subject_sets", self._list_sets),
            ("POST", r"/subject_sets", self._create_set),
            ("GET", r"/subject_sets/(\d+)", self._get_set),
            ("PUT", r"/subject_sets/(\d+)", self._update_set),
            ("DELETE", r"/subject_sets/(\d+)", self._delete_set),
            ("POST", r"/subject_sets/(\d+)/links/subjects", self._link_subjects),
            (
                "DELETE",
                r"/subject_sets/(\d+)/links/subjects/([\d,]+)",
                self._unlink_subjects,
            ),
            ("GET", r"/subjects", self._list_subjects),
            ("POST", r"/subjects", self._create_subject),
            ("GET", r"/subjects/(\d+)", self._get_subject),
            ("GET", r"/subjects/(\d+(?:,\d+)+)", self._get_subjects),
            ("PUT", r"/subjects/(\d+)", self._update_subject),
            ("DELETE", r"/subjects/(\d+)", self._delete_subject),
            ("GET", r"/set_member_subjects", self._list_sms),
            ("GET", r"/set_member_subjects/(\d+)", self._get_sms),
            ("PUT", r"/set_member_subjects/(\d+)", self._update_sms),
            ("GET", r"/workflows", self._list_workflows),
            ("GET", r"/workflows/(\d+)", self._get_workflow),
            ("PUT", r"/workflows/(\d+)", self._update_workflow),
            (
                "POST",
                r"/workflows/(\d+)/links/subject_sets",
                self._link_workflow_sets,
            ),
            ("GET", r"/subject_set_imports", self._list_imports),
            ("POST", r"/subject_set_imports", self._create_import),
            ("GET", r"/subject_set_imports/(\d+)", self._get_import),
        ]
        site: list[tuple[str, str, Callable[..., Response]]] = [
            ("GET", r"/users/sign_in", self._sign_in_form),
            ("POST", r"/users/sign_in", self._sign_in),
            ("DELETE", r"/users/sign_out", self._sign_out),
            ("POST", r"/oauth/token", self._oauth_token),
            ("PUT", r"/blob/" + _BLOB_CONTAINER + r"/(.+)", self._put_blob),
            ("GET", r"/media/(.+)", self._get_media),
            ("GET", r"/files/(.+)", self._get_file),
            ("GET", r"/exports/(.+)", self._get_file),
            ("GET", r"/_standin/summary", self._get_summary),
        ]
        return {
            True: [(m, re.compile(p), h) for m, p, h in api],
            False: [(m, re.compile(p), h) for m, p, h in site],
        }

    def _link_key(self, req: Request) -> str | None:
        """The set id of a link request, when link conflicts are simulated."""
        if not self.link_conflicts or req.method not in ("POST", "DELETE"):
            return None
        m = re.fullmatch(r"/api/subject_sets/(\d+)/links/subjects(/[\d,]+)?", req.path)
        return m.group(1) if m else None

    def _log(
        self, req: Request, status: int, fault: Fault | None, started: float
    ) -> None:
        """Append one record to the request log."""
        record = RequestRecord(
            req.method,
            req.path,
            req.query,
            status,
            fault.kind if fault else None,
            started,
            time.time() - started,
        )
        with self.store.lock:
            self.store.requests.append(record)

    # ----------------------------------------------------------- auth helpers

    @staticmethod
    def _bearer(req: Request) -> str | None:
        """The bearer token of a request, if any."""
        header = req.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        return None

    def _token_user_id(self, req: Request) -> str | None:
        """The user id behind a request's bearer token, valid or not."""
        tok = self.store.tokens.get(self._bearer(req) or "")
        return tok.user_id if tok else None

    def _user_from_token(self, req: Request, *, required: bool) -> User | None:
        """The user a request acts as; 401 for a bad/expired token or none when required."""
        token = self._bearer(req)
        if token is None:
            if required:
                raise HttpError(401, "You must be logged in to access this resource.")
            return None
        tok = self.store.tokens.get(token)
        if tok is None or tok.revoked:
            raise HttpError(
                401,
                "The access token is invalid",
                _www_auth("The access token is invalid"),
            )
        if tok.expires_at <= time.time():
            raise HttpError(
                401, "The access token expired", _www_auth("The access token expired")
            )
        return self.store.users[tok.user_id]

    def _session(self, req: Request) -> tuple[str, dict[str, str]]:
        """The session of a request's cookie (a new one if absent/unknown)."""
        sid = req.cookies.get(SESSION_COOKIE)
        if sid is None or sid not in self.store.sessions:
            sid = Store.new_secret()
            self.store.sessions[sid] = {"csrf": Store.new_secret()}
        return sid, self.store.sessions[sid]

    @staticmethod
    def _session_headers(sid: str, session: dict[str, str]) -> dict[str, str]:
        """Set-Cookie and CSRF headers Panoptes sends from sessions#new/create."""
        return {
            "Set-Cookie": f"{SESSION_COOKIE}={sid}; path=/; HttpOnly; SameSite=Lax",
            "X-CSRF-Param": "authenticity_token",
            "X-CSRF-Token": session["csrf"],
        }

    def _can_edit(self, user: User, project_id: str) -> bool:
        """Whether a user may add subjects/sets to a project."""
        project = self.store.projects.get(project_id)
        return project is not None and (
            user.admin or user.id in project.collaborator_ids
        )

    # --------------------------------------------------------- sign-in, OAuth

    def _sign_in_form(self, req: Request) -> Response:
        """GET /users/sign_in: a CSRF token and a session cookie."""
        sid, session = self._session(req)
        return _json_response(
            200,
            {"login": "/users/sign_in"},
            self._session_headers(sid, session),
            "application/json",
        )

    def _sign_in(self, req: Request) -> Response:
        """POST /users/sign_in: check CSRF and credentials, sign the session in."""
        sid, session = self._session(req)
        data = req.json() or {}
        if not hmac.compare_digest(
            str(data.get("authenticity_token", "")), session["csrf"]
        ):
            msg = "Can't verify CSRF token authenticity."
            return _json_response(
                422,
                {"error": msg, "errors": [{"message": msg}]},
                ctype="application/json",
            )
        creds = data.get("user") or {}
        login = str(creds.get("login", ""))
        user = self._find_user(login)
        if user is None or not hmac.compare_digest(
            str(creds.get("password", "")), user.password
        ):
            msg = "Invalid login or password."
            return _json_response(
                401,
                {"error": msg, "errors": [{"message": msg}]},
                ctype="application/json",
            )
        # Devise rotates the session on sign-in.
        del self.store.sessions[sid]
        sid = Store.new_secret()
        session = {"csrf": Store.new_secret(), "user_id": user.id}
        self.store.sessions[sid] = session
        body = {"users": [self._user_json(user, private=True)], "links": {}, "meta": {}}
        return _json_response(
            200, body, self._session_headers(sid, session), "application/json"
        )

    def _sign_out(self, req: Request) -> Response:
        """DELETE /users/sign_out: forget the session."""
        sid = req.cookies.get(SESSION_COOKIE)
        if sid:
            self.store.sessions.pop(sid, None)
        return Response(204)

    def _find_user(self, login: str) -> User | None:
        """A user by login or e-mail (case-insensitive)."""
        login = login.lower()
        for user in self.store.users.values():
            if login in (user.login.lower(), user.email.lower()):
                return user
        return None

    def _oauth_token(self, req: Request) -> Response:
        """POST /oauth/token: password, client_credentials and refresh_token grants."""
        form = req.form()
        grant = form.get("grant_type", "")
        app = self.store.apps.get(form.get("client_id", ""))
        if app is None:
            return _oauth_error(
                401,
                "invalid_client",
                "Client authentication failed due to unknown client, no client "
                "authentication included, or unsupported authentication method.",
            )
        if grant not in app.grants:
            return Response(
                422
            )  # Panoptes' TokensController: head :unprocessable_entity
        user: User | None
        refresh = True
        if grant == "password":
            if form.get("login"):
                user = self._find_user(form["login"])
                if user is not None and not hmac.compare_digest(
                    form.get("password", ""), user.password
                ):
                    user = None
            else:
                sid = req.cookies.get(SESSION_COOKIE, "")
                uid = self.store.sessions.get(sid, {}).get("user_id")
                user = self.store.users.get(uid) if uid else None
            if user is None:
                return _oauth_error(401, "invalid_grant", _INVALID_GRANT)
        elif grant == "client_credentials":
            if app.secret is None or not hmac.compare_digest(
                form.get("client_secret", ""), app.secret
            ):
                return _oauth_error(
                    401, "invalid_client", "Client authentication failed."
                )
            user = self.store.users.get(app.owner_id or "")
            if user is None:
                return _oauth_error(401, "invalid_client", "Client has no owner.")
            refresh = False  # Doorkeeper issues no refresh token for this grant
        elif grant == "refresh_token":
            old = self.store.refresh_tokens.get(form.get("refresh_token", ""))
            if old is None or old.revoked or old.client_id != app.client_id:
                return _oauth_error(401, "invalid_grant", _INVALID_GRANT)
            old.revoked = (
                True  # the refresh token is single use; the access token lives on
            )
            del self.store.refresh_tokens[old.refresh or ""]
            user = self.store.users[old.user_id]
        else:
            return _oauth_error(
                400,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            )
        now = time.time()
        tok = Token(
            access=Store.new_secret(),
            refresh=Store.new_secret() if refresh else None,
            user_id=user.id,
            client_id=app.client_id,
            expires_at=now + self.token_lifetime,
            created_at=now,
            grant=grant,
        )
        self.store.tokens[tok.access] = tok
        body: dict[str, Any] = {
            "access_token": tok.access,
            "token_type": "Bearer",
            "expires_in": max(1, round(self.token_lifetime)),
            "scope": SCOPES,
            "created_at": int(now),
        }
        if tok.refresh:
            self.store.refresh_tokens[tok.refresh] = tok
            body["refresh_token"] = tok.refresh
        return _json_response(
            200,
            body,
            {"Cache-Control": "no-store", "Pragma": "no-cache"},
            "application/json; charset=utf-8",
        )

    # ------------------------------------------------------------ serialisers

    def _user_json(self, user: User, *, private: bool) -> dict[str, Any]:
        """A user as UserSerializer renders it (me-only attributes if private)."""
        out: dict[str, Any] = {
            "id": user.id,
            "login": user.login,
            "display_name": user.login,
            "credited_name": user.login,
            "created_at": now_iso(user.created_at),
            "updated_at": now_iso(user.updated_at),
            "type": "users",
            "href": f"/users/{user.id}",
            "private_profile": True,
            "avatar_src": None,
            "links": {},
        }
        if private:
            out.update(
                {
                    "email": user.email,
                    "languages": ["en"],
                    "uploaded_subjects_count": self.store.uploaded_count(user.id),
                    "subject_limit": user.subject_limit,
                    "admin": user.admin,
                    "upload_whitelist": user.upload_whitelist,
                    "login_prompt": False,
                    "zooniverse_id": None,
                    "valid_email": True,
                    "banned": False,
                    "confirmed_at": now_iso(user.created_at),
                }
            )
        return out

    def _project_json(self, p: Project) -> dict[str, Any]:
        """A project (the attributes an uploader reads)."""
        return {
            "id": p.id,
            "display_name": p.display_name,
            "slug": p.slug,
            "live": False,
            "private": True,
            "launch_approved": False,
            "configuration": {},
            "subjects_count": sum(
                len(s.subject_ids)
                for s in self.store.subject_sets.values()
                if s.project_id == p.id
            ),
            "created_at": now_iso(p.created_at),
            "updated_at": now_iso(p.updated_at),
            "href": f"/projects/{p.id}",
            "links": {
                "owner": {
                    "id": p.owner_id,
                    "display_name": self.store.users[p.owner_id].login,
                    "type": "users",
                    "href": f"/users/{p.owner_id}",
                },
                "subject_sets": [
                    s.id
                    for s in self.store.subject_sets.values()
                    if s.project_id == p.id
                ],
                "workflows": [
                    w.id for w in self.store.workflows.values() if w.project_id == p.id
                ],
                "active_workflows": [],
            },
        }

    def _set_json(self, s: SubjectSet) -> dict[str, Any]:
        """A subject set as SubjectSetSerializer renders it."""
        return {
            "id": s.id,
            "display_name": s.display_name,
            "set_member_subjects_count": len(s.subject_ids),
            "metadata": s.metadata,
            "created_at": now_iso(s.created_at),
            "updated_at": now_iso(s.updated_at),
            "href": f"/subject_sets/{s.id}",
            "completeness": {},
            "links": {
                "project": s.project_id,
                "workflows": self.store.workflow_ids_of(s.id),
            },
        }

    def _subject_json(self, s: Subject, url_format: str) -> dict[str, Any]:
        """A subject; ``url_format`` 'put' gives signed upload URLs (create/update)."""
        locations = []
        for loc in s.locations:
            if loc.external_url is not None:
                url = loc.external_url
            elif url_format == "put":
                url = self._signed_put_url(loc)
            else:
                url = f"{self.url}/media/{loc.blob_key}"
            locations.append({loc.mime: url})
        return {
            "id": s.id,
            "metadata": s.metadata,
            "locations": locations,
            "zooniverse_id": None,
            "external_id": s.external_id,
            "created_at": now_iso(s.created_at),
            "updated_at": now_iso(s.updated_at),
            "href": f"/subjects/{s.id}",
            "links": {
                "project": s.project_id,
                "collections": [],
                "subject_sets": self.store.set_ids_of(s.id),
            },
        }

    def _sms_json(self, set_id: str, subject_id: str, sms_id: str) -> dict[str, Any]:
        """A set_member_subject (the link between a set and a subject)."""
        s = self.store.subject_sets[set_id]
        return {
            "id": sms_id,
            "created_at": now_iso(s.updated_at),
            "updated_at": now_iso(s.updated_at),
            # Rails renders a NUMERIC column as a string ("3.0")
            "priority": None
            if subject_id not in s.priorities
            else str(s.priorities[subject_id]),
            "href": f"/set_member_subjects/{sms_id}",
            "links": {
                "subject_set": set_id,
                "subject": subject_id,
                "retired_workflows": [],
            },
        }

    def _import_json(self, imp: ImportRecord) -> dict[str, Any]:
        """A subject_set_import and its progress."""
        progress = (
            0.0
            if imp.manifest_count == 0
            else min(1.0, imp.imported_count / imp.manifest_count)
        )
        return {
            "id": imp.id,
            "href": f"/subject_set_imports/{imp.id}",
            "created_at": now_iso(imp.created_at),
            "updated_at": now_iso(imp.updated_at),
            "source_url": imp.source_url,
            "imported_count": imp.imported_count,
            "manifest_count": imp.manifest_count,
            "failed_count": imp.failed_count,
            "failed_uuids": list(imp.failed_uuids),
            "progress": progress,
            "links": {"subject_set": imp.subject_set_id, "user": imp.user_id},
        }

    def _signed_put_url(self, loc: Location) -> str:
        """An Azure-like signed PUT URL for a blob, valid `blob_url_lifetime` s."""
        expiry = str(int(time.time() + self.blob_url_lifetime))
        sig = self._sign(loc.blob_key or "", expiry, loc.mime)
        query = urllib.parse.urlencode(
            {"sp": "cw", "sr": "b", "se": expiry, "rsct": loc.mime, "sig": sig}
        )
        return f"{self.url}/blob/{_BLOB_CONTAINER}/{loc.blob_key}?{query}"

    def _sign(self, key: str, expiry: str, mime: str) -> str:
        """HMAC signature of a blob URL."""
        msg = f"{key}|{expiry}|{mime}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    # ---------------------------------------------------------------- paging

    def _page(
        self,
        req: Request,
        kind: str,
        items: list[Any],
        filters: dict[str, str],
        links: dict[str, Any] | None = None,
        sort: str | None = None,
        render: Callable[[Any], dict[str, Any]] | None = None,
    ) -> Response:
        """A JSON:API index answer with RestPack's meta and hrefs."""
        try:
            page_size = int(req.params.get("page_size", _DEFAULT_PAGE_SIZE))
            page = int(req.params.get("page", 1))
        except ValueError as exc:
            raise HttpError(400, f"invalid paging parameter: {exc}") from exc
        if page_size <= 0:
            raise HttpError(
                422,
                "Current page was incalculable. Perhaps you supplied 'page_size: 0' as a param?",
            )
        page_size = min(page_size, _MAX_PAGE_SIZE)
        page = max(page, 1)
        count = len(items)
        page_count = math.ceil(count / page_size)
        chunk = items[(page - 1) * page_size : page * page_size]
        if render is not None:
            chunk = [render(item) for item in chunk]
        previous_page = page - 1 if page > 1 else None
        next_page = page + 1 if page < page_count else None

        def href(n: int | None) -> str | None:
            if n is None:
                return None
            parts = []
            if n != 1:
                parts.append(f"page={n}")
            if page_size != _DEFAULT_PAGE_SIZE:
                parts.append(f"page_size={page_size}")
            if sort:
                parts.append(f"sort={sort}")
            parts.extend(
                f"{k}={urllib.parse.quote(str(v))}" for k, v in sorted(filters.items())
            )
            return f"/{kind}" + ("?" + "&".join(parts) if parts else "")

        meta = {
            "page": page,
            "page_size": page_size,
            "count": count,
            "include": [],
            "page_count": page_count,
            "previous_page": previous_page,
            "next_page": next_page,
            "first_href": href(1),
            "previous_href": href(previous_page),
            "next_href": href(next_page),
            "last_href": href(page_count or 1),
        }
        payload = {kind: chunk, "links": links or {}, "meta": {kind: meta}}
        body = json.dumps(payload).encode()
        etag = '"' + hashlib.md5(body).hexdigest() + '"'
        return Response(200, body, {"Content-Type": JSON_API_TYPE, "ETag": etag})

    def _one(
        self, kind: str, obj: Any, payload: dict[str, Any], status: int = 200
    ) -> Response:
        """A single-resource answer with its ETag."""
        body = {kind: [payload], "links": {}}
        return _json_response(
            status,
            body,
            {
                "ETag": self.store.etag(kind, obj),
                "Last-Modified": _http_date(obj.updated_at),
            },
        )

    def _check_if_match(self, req: Request, kind: str, obj: Any) -> None:
        """428 without If-Match, 412 when it is stale (updates and deletes)."""
        given = req.headers.get("if-match")
        if not given:
            raise HttpError(428, "Request requires If-Match header to be present")
        current = self.store.etag(kind, obj)
        if given.startswith("W/"):
            current = "W/" + current
        if given != current:
            raise HttpError(412, "Precondition Failed")

    @staticmethod
    def _resource_body(req: Request, kind: str) -> dict[str, Any]:
        """The ``{"<kind>": {...}}`` object of a create/update body (422 if absent)."""
        data = req.json()
        if not isinstance(data, dict) or not isinstance(data.get(kind), dict):
            raise HttpError(422, f"param is missing or the value is empty: {kind}")
        return data[kind]

    # ----------------------------------------------------------------- users

    def _get_me(self, req: Request) -> Response:
        """GET /api/me: the signed-in user with quota attributes."""
        user = self._user_from_token(req, required=True)
        assert user is not None
        return self._one("users", user, self._user_json(user, private=True))

    def _get_user(self, req: Request, uid: str) -> Response:
        """GET /api/users/<id>."""
        me = self._user_from_token(req, required=False)
        user = self.store.users.get(uid)
        if user is None:
            raise HttpError(404, f"Could not find users with id='{uid}'")
        private = me is not None and (me.id == user.id or me.admin)
        return self._one("users", user, self._user_json(user, private=private))

    def _list_users(self, req: Request) -> Response:
        """GET /api/users?login=..."""
        me = self._user_from_token(req, required=False)
        users = list(self.store.users.values())
        filters = {}
        if "login" in req.params:
            wanted = {v.lower() for v in req.params["login"].split(",")}
            users = [u for u in users if u.login.lower() in wanted]
            filters["login"] = req.params["login"]
        items = [
            self._user_json(u, private=me is not None and me.id == u.id) for u in users
        ]
        return self._page(req, "users", items, filters)

    # -------------------------------------------------------------- projects

    def _get_project(self, req: Request, pid: str) -> Response:
        """GET /api/projects/<id>."""
        self._user_from_token(req, required=False)
        project = self.store.projects.get(pid)
        if project is None:
            raise HttpError(404, f"Could not find project with id='{pid}'")
        return self._one("projects", project, self._project_json(project))

    def _list_projects(self, req: Request) -> Response:
        """GET /api/projects (filters id, slug)."""
        self._user_from_token(req, required=False)
        projects = list(self.store.projects.values())
        filters: dict[str, str] = {}
        for key in ("id", "slug"):
            if key in req.params:
                wanted = set(req.params[key].split(","))
                projects = [p for p in projects if getattr(p, key) in wanted]
                filters[key] = req.params[key]
        return self._page(
            req, "projects", [self._project_json(p) for p in projects], filters
        )

    def _get_export(self, req: Request, pid: str) -> Response:
        """GET /api/projects/<id>/classifications_export: the latest export medium."""
        user = self._user_from_token(req, required=True)
        assert user is not None
        if pid not in self.store.projects:
            raise HttpError(404, f"Could not find project with id='{pid}'")
        name = f"project-{pid}-classifications.csv"
        if name not in self.store.files:
            raise HttpError(404, "No export exists for this project")
        return self._export_json(pid, name)

    def _create_export(self, req: Request, pid: str) -> Response:
        """POST /api/projects/<id>/classifications_export: make a (header-only) export.

        A test can put real content there first with
        ``register_file("project-<id>-classifications.csv", data)``.
        """
        user = self._user_from_token(req, required=True)
        assert user is not None
        if not self._can_edit(user, pid):
            raise HttpError(
                403, "You are not authorized to create an export for this project"
            )
        name = f"project-{pid}-classifications.csv"
        self.store.files.setdefault(
            name,
            b"classification_id,user_name,user_id,user_ip,workflow_id,workflow_name,"
            b"workflow_version,created_at,gold_standard,expert,metadata,annotations,"
            b"subject_data,subject_ids\n",
        )
        return self._export_json(pid, name, status=201)

    def _export_json(self, pid: str, name: str, status: int = 200) -> Response:
        """A ``media`` answer describing a finished export."""
        media = {
            "id": pid,
            "href": f"/projects/{pid}/classifications_export",
            "src": f"{self.url}/exports/{urllib.parse.quote(name)}",
            "content_type": "text/csv",
            "media_type": "project_classifications_export",
            "external_link": False,
            "created_at": now_iso(time.time()),
            "updated_at": now_iso(time.time()),
            "metadata": {"state": "ready"},
            "links": {
                "linked": {"id": pid, "type": "projects", "href": f"/projects/{pid}"}
            },
        }
        return _json_response(status, {"media": [media], "links": {}, "meta": {}})

    # ---------------------------------------------------------- subject sets

    def _find_set(self, set_id: str) -> SubjectSet:
        """A subject set or 404."""
        s = self.store.subject_sets.get(set_id)
        if s is None:
            raise HttpError(404, f"Could not find subject_sets with id='{set_id}'")
        return s

    def _list_sets(self, req: Request) -> Response:
        """GET /api/subject_sets (filters project_id, display_name, id)."""
        self._user_from_token(req, required=False)
        sets = sorted(self.store.subject_sets.values(), key=lambda s: int(s.id))
        filters = {}
        if "project_id" in req.params:
            wanted = set(req.params["project_id"].split(","))
            sets = [s for s in sets if s.project_id in wanted]
            filters["project_id"] = req.params["project_id"]
        if "display_name" in req.params:
            sets = [s for s in sets if s.display_name == req.params["display_name"]]
            filters["display_name"] = req.params["display_name"]
        if "id" in req.params:
            wanted = set(req.params["id"].split(","))
            sets = [s for s in sets if s.id in wanted]
            filters["id"] = req.params["id"]
        links = {
            "subject_sets.project": {
                "href": "/projects/{subject_sets.project}",
                "type": "projects",
            }
        }
        return self._page(
            req, "subject_sets", [self._set_json(s) for s in sets], filters, links
        )

    def _get_set(self, req: Request, set_id: str) -> Response:
        """GET /api/subject_sets/<id>."""
        self._user_from_token(req, required=False)
        s = self._find_set(set_id)
        return self._one("subject_sets", s, self._set_json(s))

    def _create_set(self, req: Request) -> Response:
        """POST /api/subject_sets."""
        user = self._user_from_token(req, required=True)
        assert user is not None
        body = self._resource_body(req, "subject_sets")
        name = body.get("display_name")
        project_id = str((body.get("links") or {}).get("project", ""))
        if not isinstance(name, str) or not name:
            raise HttpError(
                422,
                "The property '#/' did not contain a required property of 'display_name'",
            )
        if not project_id:
            raise HttpError(
                422,
                "The property '#/links' did not contain a required property of 'project'",
            )
        if not self._can_edit(user, project_id):
            raise HttpError(422, "Couldn't find linked project for current user")
        set_id = self.add_subject_set(
            project_id, name, dict(body.get("metadata") or {})
        )
        s = self.store.subject_sets[set_id]
        return self._one("subject_sets", s, self._set_json(s), status=201)

    def _update_set(self, req: Request, set_id: str) -> Response:
        """PUT /api/subject_sets/<id> (display_name, metadata; If-Match required)."""
        user = self._user_from_token(req, required=True)
        assert user is not None
        s = self._find_set(set_id)
        if not self._can_edit(user, s.project_id):
            raise HttpError(403, "You are not authorized to update this subject set")
        self._check_if_match(req, "subject_sets", s)
        body = self._resource_body(req, "subject_sets")
        if "display_name" in body:
            s.display_name = str(body["display_name"])
        if "metadata" in body:
            s.metadata = dict(body["metadata"] or {})
        s.updated_at = time.time()
        return self._one("subject_sets", s, self._set_json(s))

    def _delete_set(self, req: Request, set_id: str) -> Response:
        """DELETE /api/subject_sets/<id> (If-Match required)."""
        user = self._user_from_token(req, required=True)
        assert user is not None
        s = self._find_set(set_id)
        if not self._can_edit(user, s.project_id):
            raise HttpError(403, "You are not authorized to delete this subject set")
        self._check_if_match(req, "subject_sets", s)
        del self.store.subject_sets[set_id]
        return Response(204)

    def _link_subjects(self, req: Request, set_id: str) -> Response:
        """POST /api/subject_sets/<id>/links/subjects {"subjects": [ids]}."""
        user = self._user_from_token(req, required=True)
        assert user is not None
        s = self._find_set(set_id)
        if not self._can_edit(user, s.project_id):
            raise HttpError(403, "You are not authorized to update this subject set")
        data = req.json()
        ids = data.get("subjects") if isinstance(data, dict) else None
        if ids is None:
            raise HttpError(422, "Link relation subjects must match body key")
        ids = [str(i) for i in (ids if isinstance(ids, list) else [ids])]
        active = {
            i
            for i in ids
            if i in self.store.subjects
            and self.store.subjects[i].active
            and self._can_edit(user, self.store.subjects[i].project_id)
        }
        # Panoptes counts the distinct active subjects against the ids sent, so a
        # repeated id (or an unknown/deleted one) fails the whole request.
        if len(active) != len(ids):
            raise HttpError(
                422, "Error: check the subject set and all the subjects exist."
            )
        added = []
        for sid in ids:
            if sid not in s.subject_ids:
                s.subject_ids[sid] = self.store.next_id("set_member_subjects")
                added.append(sid)
        # SubjectMetadataWorker, run for the links this request made: the
        # subject's '#priority' metadata, CAST AS NUMERIC, becomes the priority.
        for sid in added:
            value = self.store.subjects[sid].metadata.get("#priority")
            if value is not None:
                s.priorities[sid] = Decimal(str(value))
        s.updated_at = time.time()
        return self._one("subject_sets", s, self._set_json(s))

    def _unlink_subjects(self, req: Request, set_id: str, ids: str) -> Response:
        """DELETE /api/subject_sets/<id>/links/subjects/<id,id,...>."""
        user = self._user_from_token(req, required=True)
        assert user is not None
        s = self._find_set(set_id)
        if not self._can_edit(user, s.project_id):
            raise HttpError(403, "You are not authorized to update this subject set")
        for sid in ids.split(","):
            s.subject_ids.pop(sid, None)
        s.updated_at = time.time()
        return Response(204)

    def _workflow_json(self, w: Workflow) -> dict[str, Any]:
        """A workflow (the attributes an uploader reads)."""
        return {
            "id": w.id,
            "display_name": w.display_name,
            "active": w.active,
            "configuration": json.loads(json.dumps(w.configuration)),
            "created_at": now_iso(w.created_at),
            "updated_at": now_iso(w.updated_at),
            "href": f"/workflows/{w.id}",
            "links": {"project": w.project_id, "subject_sets": list(w.subject_set_ids)},
            **self._workflow_tasks_json(w),
        }

    @staticmethod
    def _workflow_tasks_json(w: Workflow) -> dict[str, Any]:
        """The workflow's tasks, as Panoptes serialises them (copies)."""
        return {"tasks": json.loads(json.dumps(w.tasks)), "first_task": w.first_task}

    def _find_workflow(self, workflow_id: str) -> Workflow:
        """A workflow or 404."""
        w = self.store.workflows.get(workflow_id)
        if w is None:
            raise HttpError(404, f"Could not find workflows with id='{workflow_id}'")
        return w

    def _list_workflows(self, req: Request) -> Response:
        """GET /api/workflows (filter project_id)."""
        self._user_from_token(req, required=False)
        flows = sorted(self.store.workflows.values(), key=lambda w: int(w.id))
        filters = {}
        if "project_id" in req.params:
            wanted = set(req.params["project_id"].split(","))
            flows = [w for w in flows if w.project_id in wanted]
            filters["project_id"] = req.params["project_id"]
        return self._page(
            req, "workflows", [self._workflow_json(w) for w in flows], filters
        )

    def _get_workflow(self, req: Request, workflow_id: str) -> Response:
        """GET /api/workflows/<id>."""
        self._user_from_token(req, required=False)
        w = self._find_workflow(workflow_id)
        return self._one("workflows", w, self._workflow_json(w))

    #: What ``PUT /api/workflows/<id>`` may change (Panoptes'
    #: ``app/schemas/workflow_update_schema.rb``: ``additional_properties
    #: false``, so anything else, ``links.project`` included, is a 422).
    _WORKFLOW_UPDATE_KEYS = frozenset(
        {
            *("display_order_position", "pairwise", "grouped", "active"),
            *("mobile_friendly", "public_gold_standard", "retirement"),
            *("prioritized", "display_name", "first_task", "tasks", "steps"),
            *("configuration", "links"),
        }
    )
    _WORKFLOW_UPDATE_LINKS = frozenset(
        {"tutorial_subject", "subject_sets", "tutorials", "published_version"}
    )

    def _update_workflow(self, req: Request, workflow_id: str) -> Response:
        """PUT /api/workflows/<id> (If-Match required).

        As Panoptes' ``WorkflowsController#update``: the project's
        collaborators only (403), the ETag of the last read in ``If-Match``
        (428 without, 412 when the workflow changed since), the body checked
        against the update schema (422 for a key it does not list or a
        ``configuration`` that is not an object).  Each attribute given
        replaces the stored one whole: a ``configuration`` sent without a
        key loses that key.
        """
        user = self._user_from_token(req, required=True)
        assert user is not None
        w = self._find_workflow(workflow_id)
        if not self._can_edit(user, w.project_id):
            raise HttpError(403, "You are not authorized to update this workflow")
        self._check_if_match(req, "workflows", w)
        body = self._resource_body(req, "workflows")
        for key in body:
            if key not in self._WORKFLOW_UPDATE_KEYS:
                raise HttpError(
                    422, f'#: failed schema #: "{key}" is not a permitted key.'
                )
        links = body.get("links") or {}
        if not isinstance(links, dict):
            raise HttpError(422, "#/links: failed schema: links is not an object.")
        for key in links:
            if key not in self._WORKFLOW_UPDATE_LINKS:
                raise HttpError(
                    422, f'#/links: failed schema: "{key}" is not a permitted key.'
                )
        for key in ("configuration", "tasks", "retirement"):
            if key in body and not isinstance(body[key], dict):
                raise HttpError(422, f"#/{key}: failed schema: {key} is not an object.")
        if "display_name" in body:
            w.display_name = str(body["display_name"])
        if "configuration" in body:
            w.configuration = json.loads(json.dumps(body["configuration"]))
        if "tasks" in body:
            w.tasks = json.loads(json.dumps(body["tasks"]))
        if "first_task" in body:
            w.first_task = str(body["first_task"])
        if "active" in body:
            w.active = bool(body["active"])
        w.updated_at = time.time()
        return self._one("workflows", w, self._workflow_json(w))

    def _link_workflow_sets(self, req: Request, workflow_id: str) -> Response:
        """POST /api/workflows/<id>/links/subject_sets {"subject_sets": [ids]}.

        Sets of another project are refused (422); a set already linked is a
        422 as well (the link table is unique per workflow and set), so a
        careful client checks the workflow's links first.
        """
        user = self._user_from_token(req, required=True)
        assert user is not None
        w = self._find_workflow(workflow_id)
        if not self._can_edit(user, w.project_id):
            raise HttpError(403, "You are not authorized to update this workflow")
        data = req.json()
        ids = data.get("subject_sets") if isinstance(data, dict) else None
        if ids is None:
            raise HttpError(422, "Link relation subject_sets must match body key")
        ids = [str(i) for i in (ids if isinstance(ids, list) else [ids])]
        for set_id in ids:
            s = self.store.subject_sets.get(set_id)
            if s is None or s.project_id != w.project_id:
                raise HttpError(
                    422, "Error: check the workflow and all the subject sets exist."
                )
            if set_id in w.subject_set_ids or ids.count(set_id) > 1:
                raise HttpError(
                    422, "Validation failed: Subject set has already been taken"
                )
        w.subject_set_ids.extend(ids)
        w.updated_at = time.time()
        return self._one("workflows", w, self._workflow_json(w))

    def _list_sms(self, req: Request) -> Response:
        """GET /api/set_member_subjects (filters subject_set_id, subject_id)."""
        self._user_from_token(req, required=False)
        items = []
        filters = {}
        set_filter = req.params.get("subject_set_id")
        subject_filter = req.params.get("subject_id")
        if set_filter:
            filters["subject_set_id"] = set_filter
        if subject_filter:
            filters["subject_id"] = subject_filter
        for s in sorted(self.store.subject_sets.values(), key=lambda s: int(s.id)):
            if set_filter and s.id not in set_filter.split(","):
                continue
            for subject_id, sms_id in s.subject_ids.items():
                if subject_filter and subject_id not in subject_filter.split(","):
                    continue
                items.append(self._sms_json(s.id, subject_id, sms_id))
        items.sort(key=lambda i: int(i["id"]))
        return self._page(req, "set_member_subjects", items, filters)

    def _get_sms(self, req: Request, sms_id: str) -> Response:
        """GET /api/set_member_subjects/<id>."""
        self._user_from_token(req, required=False)
        for s in self.store.subject_sets.values():
            for subject_id, sid in s.subject_ids.items():
                if sid == sms_id:
                    body = {
                        "set_member_subjects": [
                            self._sms_json(s.id, subject_id, sms_id)
                        ],
                        "links": {},
                    }
                    return _json_response(
                        200, body, {"ETag": self.store.etag("subject_sets", s)}
                    )
        raise HttpError(404, f"Could not find set_member_subjects with id='{sms_id}'")

    def _update_sms(self, req: Request, sms_id: str) -> Response:
        """PUT /api/set_member_subjects/<id> (priority; If-Match required)."""
        user = self._user_from_token(req, required=True)
        assert user is not None
        for s in self.store.subject_sets.values():
            for subject_id, sid in s.subject_ids.items():
                if sid != sms_id:
                    continue
                if not self._can_edit(user, s.project_id):
                    raise HttpError(
                        403, "You are not authorized to update this set_member_subject"
                    )
                self._check_if_match(req, "subject_sets", s)
                body = self._resource_body(req, "set_member_subjects")
                unknown = set(body) - {"priority", "links"}
                if unknown:
                    raise HttpError(
                        422, f"found unpermitted parameter: {sorted(unknown)[0]}"
                    )
                if "priority" in body:
                    value = body["priority"]
                    if value is None:
                        s.priorities.pop(subject_id, None)
                    else:
                        s.priorities[subject_id] = Decimal(str(value))
                return _json_response(
                    200,
                    {
                        "set_member_subjects": [
                            self._sms_json(s.id, subject_id, sms_id)
                        ],
                        "links": {},
                    },
                    {"ETag": self.store.etag("subject_sets", s)},
                )
        raise HttpError(404, f"Could not find set_member_subjects with id='{sms_id}'")

    # -------------------------------------------------------------- subjects

    def _find_subject(self, subject_id: str) -> Subject:
        """A live subject or 404."""
        s = self.store.subjects.get(subject_id)
        if s is None or not s.active:
            raise HttpError(404, f"Could not find subjects with id='{subject_id}'")
        return s

    def _list_subjects(self, req: Request) -> Response:
        """GET /api/subjects (filters subject_set_id, project_id, id; sorted by id)."""
        self._user_from_token(req, required=False)
        subjects: Iterable[Subject] = (
            s for s in self.store.subjects.values() if s.active
        )
        filters = {}
        if req.params.get("subject_set_id"):
            set_ids = req.params["subject_set_id"].split(",")
            members = {
                i
                for sid in set_ids
                if sid in self.store.subject_sets
                for i in self.store.subject_sets[sid].subject_ids
            }
            subjects = (s for s in subjects if s.id in members)
            filters["subject_set_id"] = req.params["subject_set_id"]
        if req.params.get("project_id"):
            wanted = set(req.params["project_id"].split(","))
            subjects = (s for s in subjects if s.project_id in wanted)
            filters["project_id"] = req.params["project_id"]
        if req.params.get("id"):
            wanted = set(req.params["id"].split(","))
            subjects = (s for s in subjects if s.id in wanted)
            filters["id"] = req.params["id"]
        ordered = sorted(subjects, key=lambda s: int(s.id))
        links = {
            "subjects.project": {
                "href": "/projects/{subjects.project}",
                "type": "projects",
            },
            "subjects.subject_sets": {
                "href": "/subject_sets/{subjects.subject_sets}",
                "type": "subject_sets",
            },
        }
        return self._page(
            req,
            "subjects",
            ordered,
            filters,
            links,
            sort=req.params.get("sort", "id"),
            render=lambda subject: self._subject_json(subject, "get"),
        )

    def _get_subjects(self, req: Request, subject_ids: str) -> Response:
        """GET /api/subjects/<id,id,...>: Panoptes' show of several ids.

        ``ResourceIds.from`` splits the id on commas and the policy scope
        keeps the active subjects among them; panoptes-client's
        ``Subject.where(id="1,2")`` asks this route.  Answered as the index
        filtered by those ids (paged); 404 when none is found.
        """
        params = {**req.params, "id": subject_ids}
        found = dataclasses.replace(req, params=params)
        response = self._list_subjects(found)
        if not any(
            self.store.subjects[i].active
            for i in subject_ids.split(",")
            if i in self.store.subjects
        ):
            raise HttpError(404, f"Could not find subjects with ids='{subject_ids}'")
        return response

    def _get_subject(self, req: Request, subject_id: str) -> Response:
        """GET /api/subjects/<id>."""
        self._user_from_token(req, required=False)
        s = self._find_subject(subject_id)
        return self._one("subjects", s, self._subject_json(s, "get"))

    def _parse_locations(self, raw: Any) -> list[Location]:
        """Locations of a create/update: mime strings (upload) or {mime: url} (external)."""
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise HttpError(
                422,
                "The property '#/locations' of type object did not match the following type: array",
            )
        out = []
        for item in raw:
            if isinstance(item, str):
                mime = _NONSTANDARD_MIME.get(item, item)
                ext = _EXTENSIONS.get(mime) or (
                    mimetypes.guess_extension(mime) or ".bin"
                ).lstrip(".")
                loc = Location(mime, f"subject_location/{uuid.uuid4()}.{ext}")
            elif isinstance(item, dict) and len(item) == 1:
                ((given, url),) = item.items()
                loc = Location(
                    _NONSTANDARD_MIME.get(str(given), str(given)), None, str(url)
                )
            else:
                raise HttpError(
                    422, "The property '#/locations' contains an invalid location"
                )
            if loc.mime not in ALLOWED_MIME_TYPES:
                raise HttpError(
                    400,
                    f"Validation failed: Locations content type {loc.mime} is not allowed",
                )
            out.append(loc)
        return out

    def _create_subject(self, req: Request) -> Response:
        """POST /api/subjects: quota check, create, optional links to sets."""
        user = self._user_from_token(req, required=True)
        assert user is not None
        count = self.store.uploaded_count(user.id)
        if not (user.admin or user.upload_whitelist) and count >= user.subject_limit:
            raise HttpError(
                403,
                f"User has uploaded {count} subjects of {user.subject_limit} maximum",
            )
        body = self._resource_body(req, "subjects")
        links = body.get("links") or {}
        project_id = str(links.get("project", ""))
        if not project_id:
            raise HttpError(
                422,
                "The property '#/links' did not contain a required property of 'project'",
            )
        if not self._can_edit(user, project_id):
            raise HttpError(422, "Couldn't find linked project for current user")
        set_ids = links.get("subject_sets") or []
        set_ids = [
            str(i) for i in (set_ids if isinstance(set_ids, list) else [set_ids])
        ]
        for set_id in set_ids:
            s = self.store.subject_sets.get(set_id)
            if s is None or not self._can_edit(user, s.project_id):
                raise HttpError(
                    422, "Couldn't find linked subject_sets for current user"
                )
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise HttpError(
                422,
                "The property '#/metadata' did not match the following type: object",
            )
        metadata = {
            (k.lower() if k.lower() == "#priority" else k): v
            for k, v in metadata.items()
        }
        locations = self._parse_locations(body.get("locations"))
        subject = Subject(
            id=self.store.next_id("subjects"),
            project_id=project_id,
            uploader_id=user.id,
            metadata=metadata,
            locations=locations,
        )
        self.store.add_subject(subject)
        for set_id in set_ids:
            s = self.store.subject_sets[set_id]
            s.subject_ids.setdefault(
                subject.id, self.store.next_id("set_member_subjects")
            )
            s.updated_at = time.time()
        return self._one(
            "subjects", subject, self._subject_json(subject, "put"), status=201
        )

    def _update_subject(self, req: Request, subject_id: str) -> Response:
        """PUT /api/subjects/<id> (metadata, locations; If-Match required)."""
        user = self._user_from_token(req, required=True)
        assert user is not None
        s = self._find_subject(subject_id)
        if not self._can_edit(user, s.project_id):
            raise HttpError(403, "You are not authorized to update this subject")
        self._check_if_match(req, "subjects", s)
        body = self._resource_body(req, "subjects")
        if "metadata" in body:
            s.metadata = dict(body["metadata"] or {})
        url_format = "get"
        if body.get("locations"):
            s.locations = self._parse_locations(body["locations"])
            url_format = "put"
        s.updated_at = time.time()
        return self._one("subjects", s, self._subject_json(s, url_format))

    def _delete_subject(self, req: Request, subject_id: str) -> Response:
        """DELETE /api/subjects/<id>: deactivate (still counts to the quota)."""
        user = self._user_from_token(req, required=True)
        assert user is not None
        s = self._find_subject(subject_id)
        if not self._can_edit(user, s.project_id):
            raise HttpError(403, "You are not authorized to delete this subject")
        self._check_if_match(req, "subjects", s)
        s.active = False
        s.updated_at = time.time()
        for subject_set in self.store.subject_sets.values():
            subject_set.subject_ids.pop(s.id, None)
        return Response(204)

    # ----------------------------------------------------------- blob, media

    def _put_blob(self, req: Request, key: str) -> Response:
        """PUT a media file to its signed URL (Azure block blob semantics)."""
        se, sig, mime = (
            req.params.get("se", ""),
            req.params.get("sig", ""),
            req.params.get("rsct", ""),
        )
        if not hmac.compare_digest(sig, self._sign(key, se, mime)):
            return _azure_error(403, "AuthenticationFailed", "Signature did not match.")
        if not se.isdigit() or int(se) < time.time():
            return _azure_error(
                403, "AuthenticationFailed", "Signed expiry time has passed."
            )
        if req.headers.get("x-ms-blob-type") != "BlockBlob":
            return _azure_error(
                400, "MissingRequiredHeader", "x-ms-blob-type must be BlockBlob."
            )
        ctype = req.headers.get("content-type", "").split(";")[0].strip()
        if ctype != mime:
            return _azure_error(
                400, "InvalidHeaderValue", f"Content-Type {ctype!r} is not {mime!r}."
            )
        if len(req.body) > self.max_blob_bytes:
            return _azure_error(
                413, "RequestBodyTooLarge", "The request body is too large."
            )
        if not (req.fault is not None and req.fault.kind == "not_stored"):
            self.store.blobs[key] = (ctype, req.body)
        md5 = hashlib.md5(req.body).hexdigest()
        return Response(
            201,
            b"",
            {
                "ETag": f'"0x{md5[:16].upper()}"',
                "x-ms-request-server-encrypted": "true",
            },
        )

    def _get_media(self, req: Request, key: str) -> Response:
        """GET a stored media file (404 BlobNotFound if never stored)."""
        stored = self.store.blobs.get(key)
        if stored is None:
            return _azure_error(
                404, "BlobNotFound", "The specified blob does not exist."
            )
        md5 = base64.b64encode(hashlib.md5(stored[1]).digest()).decode()
        # Azure computes Content-MD5 for a blob stored by one PUT.
        return Response(200, stored[1], {"Content-Type": stored[0], "Content-MD5": md5})

    def _get_file(self, req: Request, name: str) -> Response:
        """GET a file a test registered (manifests, exports)."""
        data = self.store.files.get(urllib.parse.unquote(name))
        if data is None:
            return Response(404, b"not found", {"Content-Type": "text/plain"})
        return Response(200, data, {"Content-Type": "text/csv"})

    def _get_summary(self, req: Request) -> Response:
        """GET /_standin/summary: counts, for tools running in other processes."""
        return _json_response(200, self.summary(), ctype="application/json")

    # ------------------------------------------------------- subject imports

    def _get_import(self, req: Request, import_id: str) -> Response:
        """GET /api/subject_set_imports/<id>: poll progress."""
        self._user_from_token(req, required=True)
        imp = self.store.imports.get(import_id)
        if imp is None:
            raise HttpError(
                404, f"Could not find subject_set_imports with id='{import_id}'"
            )
        return self._one("subject_set_imports", imp, self._import_json(imp))

    def _list_imports(self, req: Request) -> Response:
        """GET /api/subject_set_imports (filter subject_set_id)."""
        self._user_from_token(req, required=True)
        imps = list(self.store.imports.values())
        filters = {}
        if req.params.get("subject_set_id"):
            imps = [i for i in imps if i.subject_set_id == req.params["subject_set_id"]]
            filters["subject_set_id"] = req.params["subject_set_id"]
        return self._page(
            req, "subject_set_imports", [self._import_json(i) for i in imps], filters
        )

    def _create_import(self, req: Request) -> Response:
        """POST /api/subject_set_imports: count the manifest, import in the background."""
        user = self._user_from_token(req, required=True)
        assert user is not None
        body = self._resource_body(req, "subject_set_imports")
        source_url = str(body.get("source_url", ""))
        set_id = str((body.get("links") or {}).get("subject_set", ""))
        s = self.store.subject_sets.get(set_id)
        if s is None or not self._can_edit(user, s.project_id):
            raise HttpError(422, "Couldn't find linked subject_set for current user")
        parsed = urllib.parse.urlparse(source_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise HttpError(422, "Source url is malformed")
        data = self._fetch_manifest(source_url)
        if data is None:
            raise HttpError(422, f"Failed to download manifest: {source_url}")
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
        if len(rows) > self.import_row_limit and not user.admin:
            raise HttpError(
                403,
                f"Manifest row count ({len(rows)}) exceeds the limit ({self.import_row_limit}) "
                "and can not be imported",
            )
        imp = ImportRecord(
            self.store.next_id("subject_set_imports"),
            source_url,
            set_id,
            user.id,
            len(rows),
        )
        self.store.imports[imp.id] = imp
        worker = threading.Thread(
            target=self._run_import, args=(imp, rows), daemon=True
        )
        self._workers.append(worker)
        worker.start()
        return self._one("subject_set_imports", imp, self._import_json(imp), status=201)

    def _fetch_manifest(self, url: str) -> bytes | None:
        """Read an import manifest from a registered file or a loopback URL only."""
        parsed = urllib.parse.urlparse(url)
        if parsed.hostname not in _LOOPBACK:
            return None  # the stand-in never reaches the network
        if parsed.port == self.port and parsed.path.startswith("/files/"):
            return self.store.files.get(
                urllib.parse.unquote(parsed.path[len("/files/") :])
            )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=10) as answer:
                return bytes(answer.read())
        except OSError as exc:
            logger.info("stand-in could not fetch manifest %s: %s", url, exc)
            return None

    def _run_import(self, imp: ImportRecord, rows: list[dict[str, str]]) -> None:
        """Find-or-create each row's subject by external_id within the set."""
        for row in rows:
            if (
                self._stopping.wait(self.import_row_delay)
                if self.import_row_delay
                else self._stopping.is_set()
            ):
                return
            with self.store.lock:
                self._import_row(imp, row)
                imp.imported_count += 1
                imp.updated_at = time.time()

    def _import_row(self, imp: ImportRecord, row: dict[str, str]) -> None:
        """Import one manifest row (failures are counted, not raised)."""
        external_id = row.get("external_id") or ""
        locations: list[Location] = []
        metadata: dict[str, Any] = {}
        for header, value in row.items():
            kind, _, key = (header or "").partition(":")
            if kind == "location" and value:
                mime = mimetypes.guess_type(urllib.parse.urlparse(value).path)[0] or ""
                locations.append(Location(mime, None, value))
            elif kind == "metadata":
                metadata[key] = value
        if not locations or any(
            loc.mime not in ALLOWED_MIME_TYPES for loc in locations
        ):
            imp.failed_count += 1
            imp.failed_uuids.append(external_id)
            return
        s = self.store.subject_sets.get(imp.subject_set_id)
        if s is None:
            imp.failed_count += 1
            imp.failed_uuids.append(external_id)
            return
        existing = next(
            (
                self.store.subjects[i]
                for i in s.subject_ids
                if self.store.subjects[i].external_id == external_id
                and self.store.subjects[i].active
            ),
            None,
        )
        if existing is None:
            existing = Subject(
                self.store.next_id("subjects"), s.project_id, imp.user_id, {}, []
            )
            existing.external_id = external_id
            self.store.add_subject(existing)
            s.subject_ids[existing.id] = self.store.next_id("set_member_subjects")
        existing.metadata = metadata
        existing.locations = locations
        existing.updated_at = time.time()
        s.updated_at = time.time()


_INVALID_GRANT = (
    "The provided authorization grant is invalid, expired, revoked, does not match "
    "the redirection URI used in the authorization request, or was issued to another client."
)


def _oauth_error(status: int, error: str, description: str) -> Response:
    """A Doorkeeper error answer."""
    return _json_response(
        status,
        {"error": error, "error_description": description},
        ctype="application/json; charset=utf-8",
    )


def _www_auth(description: str) -> dict[str, str]:
    """The WWW-Authenticate header Doorkeeper sends with a bad token."""
    return {
        "WWW-Authenticate": (
            f'Bearer realm="Panoptes", error="invalid_token", error_description="{description}"'
        )
    }


def _http_date(ts: float) -> str:
    """An HTTP date (Last-Modified)."""
    return formatdate(ts, usegmt=True)
