"""Talking to the Zooniverse Panoptes API: the one module that imports panoptes_client.

Each upload worker thread owns a `PanoptesAPI` (its own HTTP session, an
explicit endpoint, a timeout on every request); all workers share one
`TokenManager`, which signs in once and refreshes the bearer token on its own
terms.  Errors of requests and panoptes-client are turned into
`zooprep.errors` classes here and nowhere else.

`download_classification_export` fetches a project's classification export
for the results stage: the API call and the storage download are both
retried on transient failures and have a timeout.

Where zooprep works around panoptes-client (see ``docs/panoptes-api.md``,
facts about the API gathered for this project):

* Importing panoptes_client calls ``logging.basicConfig`` (a global side
  effect that would print every zooprep log line twice): `_panoptes_client`
  imports it with the root logger's handlers and level put back afterwards.
* ``Panoptes.__init__`` signs in at once, through a session without timeouts,
  with credentials it reads from the environment by itself.  `_SignIn`
  subclasses it without calling that constructor: it gets our session (with
  timeouts) and our credentials, then uses panoptes-client's own CSRF sign-in
  (``login``) and token request (``get_bearer_token``).
* ``get_bearer_token``'s refresh path crashes on OAuth errors (it reads
  ``access_token`` from an ``{"error": ...}`` answer) and refresh tokens are
  single use.  `TokenManager` refreshes itself, ahead of expiry, under a
  lock, and signs in again when a refresh is refused.
* ``Subject.save`` re-POSTs a subject after a 5xx (duplicates) and never
  reports failed media PUTs; no request has a timeout.  `PanoptesAPI` never
  retries a create: it raises `CreateUncertain` so that the caller reconciles
  with the subject set first.  Blob PUTs are checked for 201 and retried.
* A 201 from the store does not prove the file is kept (a proxy, a
  misconfigured bucket, a CDN that has not got it).  `PanoptesAPI.check_media`
  reads each file back from the subject's public location (HEAD: size, and
  the content MD5 where the store gives one).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from zooprep.deadlines import Deadline
from zooprep.errors import AuthError, InputError, PanoptesError, QuotaError
from zooprep.files import atomic_file
from zooprep.vocabulary import PRODUCTION, STAGING

__all__ = [
    "PRODUCTION",
    "STAGING",
    "CreateUncertain",
    "Credentials",
    "PanoptesAPI",
    "RequestDeadlines",
    "RetryPolicy",
    "TokenManager",
    "check_endpoint",
    "download_classification_export",
]

logger = logging.getLogger(__name__)


#: The Accept header without which some Panoptes routes answer 404.
API_ACCEPT = "application/vnd.api+json; version=1"

T = TypeVar("T")

#: Resources per page of an index request (the Panoptes maximum).
_PAGE = 100


def _panoptes_client() -> Any:
    """Import panoptes_client.panoptes without letting it configure logging."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        from panoptes_client import panoptes
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return panoptes


class CreateUncertain(PanoptesError):
    """A subject create got no clear answer (5xx, timeout, dropped connection).

    The subject may or may not exist: reconcile with the subject set before
    creating it again.
    """


# -- endpoint and credentials --------------------------------------------------


def check_endpoint(endpoint: str) -> str:
    """Validate a Panoptes endpoint and return it without a trailing slash.

    Parameters
    ----------
    endpoint : str
        ``https://www.zooniverse.org`` (production),
        ``https://panoptes-staging.zooniverse.org`` (staging), or a loopback
        ``http://127.0.0.1:PORT`` for tests.

    Returns
    -------
    str
        The endpoint, normalised.

    Raises
    ------
    InputError
        If it is not a URL, or is plain HTTP to a non-loopback host.
    """
    url = endpoint.strip().rstrip("/")
    if url.endswith("/api"):
        url = url[: -len("/api")]
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InputError(f"endpoint {endpoint!r} is not an http(s) URL")
    if parsed.scheme == "http" and not _is_loopback(parsed.hostname):
        raise InputError(
            f"endpoint {endpoint!r} must use HTTPS (plain HTTP is only "
            "allowed for loopback addresses)"
        )
    return url


def _is_loopback(host: str) -> bool:
    """True for localhost and loopback IP addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, repr=False)
class Credentials:
    """Zooniverse credentials, read from the environment only.

    Their ``repr`` and ``str`` never show the secrets.

    Parameters
    ----------
    username, password : str or None
        A Zooniverse account (``PANOPTES_USERNAME`` / ``PANOPTES_PASSWORD``).
    client_id, client_secret : str or None
        An OAuth application (``PANOPTES_CLIENT_ID`` /
        ``PANOPTES_CLIENT_SECRET``); used when no username is given.
    """

    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    client_secret: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials | None:
        """Credentials from ``PANOPTES_*`` variables, or None when there are none.

        Raises
        ------
        AuthError
            If only half of a pair is set.
        """
        env = os.environ if env is None else env
        creds = cls(
            username=env.get("PANOPTES_USERNAME") or None,
            password=env.get("PANOPTES_PASSWORD") or None,
            client_id=env.get("PANOPTES_CLIENT_ID") or None,
            client_secret=env.get("PANOPTES_CLIENT_SECRET") or None,
        )
        if bool(creds.username) != bool(creds.password):
            raise AuthError(
                "set both PANOPTES_USERNAME and PANOPTES_PASSWORD (only one is set)"
            )
        if creds.username:
            return creds
        if creds.client_secret and creds.client_id:
            return creds
        if creds.client_secret or creds.client_id:
            raise AuthError(
                "set both PANOPTES_CLIENT_ID and PANOPTES_CLIENT_SECRET "
                "(only one is set)"
            )
        return None

    @property
    def kind(self) -> str:
        """``'password'`` or ``'client_credentials'``."""
        return "password" if self.username else "client_credentials"

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in (self.password, self.client_secret):
            if secret:
                text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        who = self.username or self.client_id or "?"
        return f"Credentials({self.kind} for {who!r})"

    __str__ = __repr__


# -- HTTP session with timeouts --------------------------------------------------


class _TimeoutSession(requests.Session):
    """A requests session that puts a timeout on every request."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout
        self.trust_env = True
        self.headers["User-Agent"] = "zooprep (panoptes-client)"

    def request(self, method: Any, url: Any, **kw: Any) -> Any:  # type: ignore[override]
        """Send, with the session's timeout unless one is given."""
        kw.setdefault("timeout", self.timeout)
        return super().request(method, url, **kw)


# -- tokens ------------------------------------------------------------------


class TokenManager:
    """Signs in once and keeps a fresh bearer token for all worker threads.

    Parameters
    ----------
    endpoint : str
        The Panoptes endpoint (checked with `check_endpoint`).
    credentials : Credentials
        Who signs in.
    timeout : float
        Seconds before a sign-in or token request is abandoned.
    refresh_margin : float
        Refresh when the token has fewer than this many seconds left (or a
        tenth of its lifetime, whichever is smaller).
    """

    def __init__(
        self,
        endpoint: str,
        credentials: Credentials,
        *,
        timeout: float = 60.0,
        refresh_margin: float = 300.0,
    ) -> None:
        self.endpoint = check_endpoint(endpoint)
        self._creds = credentials
        self._timeout = timeout
        self._margin = refresh_margin
        self._lock = threading.Lock()
        self._session: _TimeoutSession | None = None
        self._access: str | None = None
        self._refresh: str | None = None
        self._client_id: str | None = None
        self._expires = 0.0
        self._lifetime = 0.0
        self.user_id: str | None = None
        self.refreshes = 0
        self.sign_ins = 0

    def login(self) -> None:
        """Sign in and get a first token.

        Raises
        ------
        AuthError
            If the credentials are refused.
        PanoptesError
            If the server cannot be reached.
        """
        with self._lock:
            self._sign_in()

    def token(self) -> str:
        """A bearer token valid for a while yet (refreshing it if needed)."""
        with self._lock:
            if self._access is None:
                self._sign_in()
            elif time.monotonic() >= self._expires - self._margin_now():
                self._renew()
            assert self._access is not None
            return self._access

    def rejected(self, token: str) -> None:
        """The server answered 401 to ``token``: get a new one (once per token)."""
        with self._lock:
            if token == self._access:
                logger.info("access token rejected by the server; renewing it")
                self._renew()

    def _margin_now(self) -> float:
        """Seconds before expiry at which to refresh."""
        return min(self._margin, self._lifetime / 10)

    def _renew(self) -> None:
        """Refresh the token, or sign in again when the refresh is refused."""
        if self._refresh:
            try:
                self._token_request(
                    {
                        "grant_type": "refresh_token",
                        "refresh_token": self._refresh,
                        "client_id": self._client_id or "",
                    }
                )
                self.refreshes += 1
                logger.info("access token refreshed")
                return
            except AuthError:
                logger.info("token refresh refused; signing in again")
        self._sign_in()

    def _sign_in(self) -> None:
        """Sign in through panoptes-client's CSRF flow (or client credentials)."""
        pc = _panoptes_client()
        self._session = _TimeoutSession(self._timeout)
        client = _sign_in_client(pc.Panoptes, self.endpoint, self._creds, self._session)
        self._client_id = client.client_id
        try:
            if self._creds.kind == "password":
                if not client.login():
                    raise AuthError(f"sign-in to {self.endpoint} failed")
                self.user_id = str(client.logged_in_user_id)
                self._token_request(
                    {"grant_type": "password", "client_id": client.client_id}
                )
            else:
                self._token_request(
                    {
                        "grant_type": "client_credentials",
                        "client_id": self._creds.client_id or "",
                        "client_secret": self._creds.client_secret or "",
                    }
                )
        except pc.PanoptesAPIException as exc:
            raise AuthError(
                self._creds.scrub(f"sign-in to {self.endpoint} refused: {exc}")
            ) from None
        except (KeyError, ValueError) as exc:
            raise AuthError(
                f"sign-in to {self.endpoint} failed: unexpected answer ({exc})"
            ) from None
        except requests.RequestException as exc:
            raise PanoptesError(
                self._creds.scrub(f"cannot reach {self.endpoint} to sign in: {exc}")
            ) from None
        self.sign_ins += 1

    def _token_request(self, form: dict[str, str]) -> None:
        """POST /oauth/token and keep the answer."""
        assert self._session is not None
        try:
            answer = self._session.post(
                self.endpoint + "/oauth/token",
                data=form,
                headers={"Accept": "application/json"},
            )
        except requests.RequestException as exc:
            raise PanoptesError(
                f"cannot reach {self.endpoint}/oauth/token: {type(exc).__name__}"
            ) from None
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if answer.status_code != 200 or "access_token" not in body:
            what = body.get("error_description") or body.get("error") or "no token"
            raise AuthError(
                self._creds.scrub(
                    f"token request ({form.get('grant_type')}) to {self.endpoint} "
                    f"refused with HTTP {answer.status_code}: {what}"
                )
            )
        self._access = str(body["access_token"])
        self._refresh = body.get("refresh_token") or None
        self._lifetime = float(body.get("expires_in", 7200))
        self._expires = time.monotonic() + self._lifetime
        if self.user_id is None and body.get("resource_owner_id") is not None:
            self.user_id = str(body["resource_owner_id"])


def _sign_in_client(base: Any, endpoint: str, creds: Credentials, session: Any) -> Any:
    """A panoptes-client ``Panoptes`` set up without its constructor's side effects."""

    class SignIn(base):
        def __init__(self) -> None:
            self.session = session
            self.endpoint = endpoint
            self.logged_in = False
            self.logged_in_user_id = None
            self.bearer_token = None
            self.refresh_token = None
            self.admin = False
            self.username = creds.username
            self.password = creds.password
            self.redirect_url = None
            self.client_secret = creds.client_secret
            self.client_id = creds.client_id or base._endpoint_client_ids.get(
                endpoint, base._endpoint_client_ids["default"]
            )
            self.logger = logging.getLogger("panoptes_client")

    return SignIn()


# -- retries -----------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently safe requests are retried.

    Parameters
    ----------
    attempts : int
        Tries in all (first one included).
    initial, maximum : float
        Bounds in seconds of the randomised exponential wait between tries.
    """

    attempts: int = 5
    initial: float = 0.25
    maximum: float = 8.0


class _Transient(Exception):
    """A retryable failure (5xx, 409, timeout, dropped connection)."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Answer:
    """One API answer: status, decoded JSON body and ETag."""

    status: int
    body: dict[str, Any]
    etag: str | None


class RequestDeadlines:
    """The per-request deadlines of one upload, shared by all its threads.

    One `~zooprep.deadlines.Deadline` per kind of request, as each has its
    own latency: ``api`` (Panoptes calls), ``upload`` (file PUTs to the signed
    storage URLs, scaled by the file's size) and ``readback`` (HEADs of the
    stored files).  All are bounded by ``timeout``.

    Parameters
    ----------
    timeout : float
        The upper bound of every deadline (``--timeout``).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = float(timeout)
        self.api = Deadline(self.timeout)
        self.upload = Deadline(self.timeout)
        self.readback = Deadline(self.timeout)


# -- the API client of one worker ---------------------------------------------


class PanoptesAPI:
    """The Panoptes calls an uploader makes, for one thread.

    Parameters
    ----------
    tokens : TokenManager
        Shared bearer-token source (already logged in).
    timeout : float
        Seconds before any one request is abandoned.
    retry : RetryPolicy, optional
        Retries of safe requests (GET, blob PUT, link, subject update).
    deadlines : RequestDeadlines, optional
        Per-request deadlines shared with the other threads of the upload
        (by default this client's own).  A safe request is given its
        deadline and retried when it runs out; a subject create, which cannot
        be repeated safely, is always given the whole ``timeout``.
    """

    def __init__(
        self,
        tokens: TokenManager,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        deadlines: RequestDeadlines | None = None,
    ) -> None:
        self.tokens = tokens
        self.endpoint = tokens.endpoint
        self.session = _TimeoutSession(timeout)
        self.retry = retry or RetryPolicy()
        self.deadlines = deadlines or RequestDeadlines(timeout)
        self._attempt = 1  # try number of the request being retried (this thread)

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    # -- low level --------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        etag: str | None = None,
        what: str = "",
        whole_timeout: bool = False,
    ) -> Answer:
        """One API request (no retries except one after a rejected token).

        It is given the API deadline of its try (see `RequestDeadlines`), or
        the whole timeout with ``whole_timeout``.

        Raises
        ------
        _Transient
            On a 5xx, 409, timeout or connection failure.
        PanoptesError, QuotaError, AuthError
            On other error answers.
        """
        url = self.endpoint + "/api" + path
        what = what or f"{method} {path}"
        for attempt in (1, 2):
            token = self.tokens.token()
            headers = {
                "Accept": API_ACCEPT,
                "Authorization": f"Bearer {token}",
            }
            if json is not None:
                headers["Content-Type"] = "application/json"
            if etag:
                headers["If-Match"] = etag
            deadline = self.deadlines.api
            limit = (
                self.session.timeout
                if whole_timeout
                else deadline.timeout(attempt=self._attempt)
            )
            started = time.monotonic()
            try:
                answer = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=headers,
                    timeout=limit,
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                raise _no_answer(exc, what, limit) from None
            deadline.observe(time.monotonic() - started)
            if answer.status_code == 401 and attempt == 1:
                self.tokens.rejected(token)
                continue
            return _decode(answer, what)
        raise AssertionError("unreachable")  # pragma: no cover

    def _retrying(self, fn: Callable[[], T], what: str) -> T:
        """Call ``fn`` with retries on transient failures; raise PanoptesError at the end."""
        policy = self.retry

        def log(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            logger.info(
                "%s; retry %d of %d", exc, state.attempt_number, policy.attempts - 1
            )

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, _Transient)),
            stop=stop_after_attempt(policy.attempts),
            wait=wait_random_exponential(multiplier=policy.initial, max=policy.maximum),
            before_sleep=log,
            reraise=True,
        )
        tries = 0
        outer = self._attempt

        def counted() -> T:
            # Each try after one that ran out of time gets a longer deadline.
            nonlocal tries
            tries += 1
            self._attempt = tries
            return fn()

        try:
            return retrying(counted)
        except _Transient as exc:
            raise PanoptesError(
                f"{exc} (gave up after {policy.attempts} tries)", exc.status
            ) from None
        finally:
            self._attempt = outer

    def _create(self, kind: str, resource: dict[str, Any], what: str) -> dict[str, Any]:
        """POST one resource to ``/kind`` once (not retried) and return it."""
        try:
            answer = self.request("POST", f"/{kind}", json={kind: resource}, what=what)
        except _Transient as exc:
            raise PanoptesError(str(exc), exc.status) from None
        return dict(answer.body[kind][0])

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Answer:
        """GET with retries."""
        return self._retrying(
            lambda: self.request("GET", path, params=params), f"GET {path}"
        )

    def paginate(
        self, kind: str, params: Mapping[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Every resource of an index route, 100 per page."""
        page = 1
        while True:
            answer = self.get(f"/{kind}", {**params, "page_size": _PAGE, "page": page})
            yield from answer.body.get(kind, [])
            meta = answer.body.get("meta", {}).get(kind, {})
            if not meta.get("next_page") and not meta.get("next_href"):
                return
            page += 1

    # -- users, sets -------------------------------------------------------

    def me(self) -> dict[str, Any]:
        """The signed-in user (with ``subject_limit`` and ``uploaded_subjects_count``)."""
        users = self.get("/me").body.get("users") or [{}]
        return dict(users[0])

    def subject_set(self, set_id: str) -> dict[str, Any]:
        """One subject set, by id (`PanoptesError` with status 404 when there is none)."""
        return self._one("subject_sets", "subject set", set_id)

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        """One workflow, by id (`PanoptesError` with status 404 when there is none)."""
        return self._one("workflows", "workflow", workflow_id)

    def _one(self, kind: str, name: str, resource_id: str) -> dict[str, Any]:
        """One resource of ``kind`` by id; a missing one is a 404 naming it."""
        try:
            found = self.get(f"/{kind}/{resource_id}").body.get(kind) or []
        except PanoptesError as exc:
            if exc.status == 404:
                raise PanoptesError(f"{name} {resource_id} not found", 404) from None
            raise
        if not found:
            raise PanoptesError(f"{name} {resource_id} not found", 404)
        return dict(found[0])

    def link_workflow(self, workflow_id: str, subject_set: str) -> bool:
        """Link a subject set to a workflow unless it already is; True if linked now.

        The workflow's links are read first, so a resumed upload (or a link
        made by hand) never sends a second link request.
        """
        what = f"link subject set {subject_set} to workflow {workflow_id}"

        def attempt() -> bool:
            links = self.workflow(workflow_id).get("links") or {}
            if str(subject_set) in {str(s) for s in links.get("subject_sets") or []}:
                return False
            self.request(
                "POST",
                f"/workflows/{workflow_id}/links/subject_sets",
                json={"subject_sets": [str(subject_set)]},
                what=what,
            )
            return True

        return self._retrying(attempt, what)

    def set_subject_viewer(self, workflow_id: str, viewer: str) -> bool:
        """Make ``viewer`` the workflow's ``configuration.subject_viewer``.

        The workflow is read with its ETag and, unless it already has that
        value, PUT back with the rest of its configuration unchanged and the
        ETag in ``If-Match`` (Panoptes replaces ``configuration`` whole).  A
        412 (the workflow changed between the read and the PUT) reads it
        again and retries.  True when this call changed it.
        """
        what = f"set subject_viewer of workflow {workflow_id}"

        def attempt() -> bool:
            got = self.request("GET", f"/workflows/{workflow_id}", what=what)
            found = (got.body.get("workflows") or [{}])[0]
            configuration = dict(found.get("configuration") or {})
            if configuration.get("subject_viewer") == viewer:
                return False
            configuration["subject_viewer"] = viewer
            try:
                self.request(
                    "PUT",
                    f"/workflows/{workflow_id}",
                    json={"workflows": {"configuration": configuration}},
                    etag=got.etag,
                    what=what,
                )
            except PanoptesError as exc:
                if exc.status == 412:
                    raise _Transient(str(exc), 412) from None
                raise
            return True

        return self._retrying(attempt, what)

    def find_subject_set(self, project: str, name: str) -> dict[str, Any] | None:
        """The project's subject set with this display name, or None."""
        for found in self.paginate(
            "subject_sets", {"project_id": project, "display_name": name}
        ):
            if found.get("display_name") == name:
                return dict(found)
        return None

    def create_subject_set(self, project: str, name: str) -> dict[str, Any]:
        """Create a subject set (not retried: check `find_subject_set` first)."""
        return self._create(
            "subject_sets",
            {"display_name": name, "links": {"project": str(project)}},
            f"create subject set {name!r}",
        )

    def set_index_fields(self, set_id: str, names: list[str]) -> None:
        """Make ``names`` the subject set's ``indexFields`` (as panoptes-cli does)."""
        wanted = ",".join(names)

        def attempt() -> None:
            got = self.request("GET", f"/subject_sets/{set_id}")
            metadata = dict(got.body["subject_sets"][0].get("metadata") or {})
            if metadata.get("indexFields") == wanted:
                return
            metadata["indexFields"] = wanted
            self.request(
                "PUT",
                f"/subject_sets/{set_id}",
                json={"subject_sets": {"metadata": metadata}},
                etag=got.etag,
                what=f"set index fields of subject set {set_id}",
            )

        self._retrying(attempt, f"set index fields of subject set {set_id}")

    # -- subjects ------------------------------------------------------------

    def create_subject(
        self,
        project: str,
        subject_set: str | None,
        metadata: Mapping[str, Any],
        n_files: int,
        *,
        label: str = "",
        content_types: Sequence[str] | None = None,
    ) -> tuple[str, list[str], bool]:
        """Create a subject, never retried after an unclear answer.

        ``content_types`` gives each file's type in location order (e.g.
        ``image/png`` then ``application/json``); ``n_files`` PNGs without it.

        Returns
        -------
        subject_id : str
        put_urls : list of str
            Signed upload URLs, one per file, in order.
        linked : bool
            Whether the subject is already in ``subject_set``.

        Raises
        ------
        CreateUncertain
            On 5xx, timeout or dropped connection: reconcile before retrying.
        QuotaError
            If the user's subject quota is exhausted.
        """
        links: dict[str, Any] = {"project": str(project)}
        if subject_set:
            links["subject_sets"] = [str(subject_set)]
        body = {
            "subjects": {
                "locations": _locations(n_files, content_types),
                "metadata": dict(metadata),
                "links": links,
            }
        }
        what = f"create subject for {label}" if label else "create subject"
        try:
            answer = self.request(
                "POST", "/subjects", json=body, what=what, whole_timeout=True
            )
        except _Transient as exc:
            # 5xx, timeout, dropped connection, or 409 (a stale subject set:
            # rolled back in Panoptes, but reconciling costs little and is safe).
            raise CreateUncertain(str(exc), exc.status) from None
        subject = answer.body["subjects"][0]
        urls = _put_urls(subject)
        linked = str(subject_set) in {
            str(s) for s in subject.get("links", {}).get("subject_sets") or []
        }
        return str(subject["id"]), urls, linked

    def fresh_upload_urls(
        self,
        subject_id: str,
        n_files: int,
        *,
        content_types: Sequence[str] | None = None,
    ) -> list[str]:
        """New signed PUT URLs for a subject's media (replaces its locations).

        Panoptes gives signed upload URLs only in the answer to a create or
        to an update that sets ``locations``: GET the subject for its ETag,
        then PUT ``locations`` back with ``If-Match``.
        """

        def attempt() -> list[str]:
            got = self.request("GET", f"/subjects/{subject_id}")
            answer = self.request(
                "PUT",
                f"/subjects/{subject_id}",
                json={"subjects": {"locations": _locations(n_files, content_types)}},
                etag=got.etag,
                what=f"renew upload URLs of subject {subject_id}",
            )
            return _put_urls(answer.body["subjects"][0])

        return self._retrying(attempt, f"renew upload URLs of subject {subject_id}")

    def delete_subject(self, subject_id: str) -> None:
        """Delete a subject (a 404 means it is already gone)."""

        def attempt() -> None:
            try:
                got = self.request("GET", f"/subjects/{subject_id}")
                self.request("DELETE", f"/subjects/{subject_id}", etag=got.etag)
            except PanoptesError as exc:
                if exc.status != 404:
                    raise

        self._retrying(attempt, f"delete subject {subject_id}")

    def put_blob(
        self,
        url: str,
        data: bytes,
        *,
        label: str = "",
        content_type: str = "image/png",
    ) -> None:
        """PUT one file to its signed URL and check the 201 (retried)."""
        what = f"upload of {label}" if label else "media upload"

        deadline = self.deadlines.upload

        def attempt() -> None:
            limit = deadline.timeout(len(data), self._attempt)
            started = time.monotonic()
            try:
                answer = self.session.put(
                    url,
                    data=data,
                    headers={
                        "Content-Type": content_type,
                        "x-ms-blob-type": "BlockBlob",
                    },
                    timeout=limit,
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                raise _no_answer(exc, what, limit) from None
            deadline.observe(time.monotonic() - started, len(data))
            if answer.status_code == 201:
                return
            if answer.status_code >= 500:
                raise _Transient(
                    f"{what}: storage answered HTTP {answer.status_code}",
                    answer.status_code,
                )
            raise PanoptesError(
                f"{what}: storage answered HTTP {answer.status_code} "
                f"{_azure_code(answer.text)}",
                answer.status_code,
            )

        self._retrying(attempt, what)

    def media_locations(self, subject_id: str) -> list[str]:
        """The public URLs of a subject's media files, in order."""
        subjects = self.get(f"/subjects/{subject_id}").body.get("subjects") or [{}]
        return _put_urls(subjects[0])

    def media_locations_of(self, subject_ids: Sequence[str]) -> dict[str, list[str]]:
        """The public media URLs of many subjects, read in one request per 100.

        ``GET /subjects?id=1,2,3`` (Panoptes filters an index by a
        comma-separated ``id``; at most 100 per page).  A subject that is not
        in the answer (deleted, or never created) is not in the result.

        Parameters
        ----------
        subject_ids : sequence of str
            The subjects whose files were just PUT.

        Returns
        -------
        dict
            ``{subject id: [public URL of each file, in order]}``.
        """
        found: dict[str, list[str]] = {}
        ids = list(dict.fromkeys(str(i) for i in subject_ids))
        for start in range(0, len(ids), _PAGE):
            chunk = ids[start : start + _PAGE]
            for subject in self.paginate("subjects", {"id": ",".join(chunk)}):
                found[str(subject["id"])] = _put_urls(subject)
        return found

    def check_media(self, subject_id: str, data: list[bytes]) -> list[str]:
        """Read a subject's stored files back; return what is wrong (empty: all good).

        Each file's public location is asked (HEAD, or a one-byte ranged GET
        where HEAD is refused) for its size, which must equal the uploaded
        file's, and for its MD5 where the store reports one (``Content-MD5``,
        or an ``ETag`` that is an MD5, as S3 gives).

        Parameters
        ----------
        subject_id : str
            The subject whose media were just PUT.
        data : list of bytes
            The files' contents, in the subject's location order.

        Returns
        -------
        list of str
            One line per file that is missing or differs, e.g.
            ``file 1 of 1 not found at https://...png (HTTP 404)``.
        """
        return self.check_files(subject_id, self.media_locations(subject_id), data)

    def check_files(
        self, subject_id: str, urls: Sequence[str], data: Sequence[bytes]
    ) -> list[str]:
        """Read files back from their public ``urls``; what is wrong (empty: all good).

        `check_media` with the locations already known (e.g. from
        `media_locations_of`).
        """
        if len(urls) != len(data):
            return [f"subject {subject_id} has {len(urls)} files, not {len(data)}"]
        problems = []
        for n, (url, blob) in enumerate(zip(urls, data, strict=True), start=1):
            why = self._retrying(
                functools.partial(self._check_one, url, blob), f"read back {url}"
            )
            if why:
                problems.append(f"file {n} of {len(data)} {why}")
        return problems

    def _check_one(self, url: str, blob: bytes) -> str:
        """Why the file at ``url`` is not ``blob`` ('' when it is)."""
        deadline = self.deadlines.readback
        limit = deadline.timeout(attempt=self._attempt)
        started = time.monotonic()
        try:
            answer = self.session.head(url, allow_redirects=True, timeout=limit)
            if answer.status_code in (403, 405, 501):  # no HEAD here: ask for 1 byte
                answer = self.session.get(
                    url,
                    headers={"Range": "bytes=0-0"},
                    allow_redirects=True,
                    timeout=limit,
                )
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise _no_answer(exc, f"read back {url}", limit) from None
        deadline.observe(time.monotonic() - started)
        status = answer.status_code
        if status >= 500 or status == 429:
            raise _Transient(f"read back {url}: HTTP {status}", status)
        if status not in (200, 206):
            return f"not found at {url} (HTTP {status})"
        size = _stored_size(answer)
        if size is not None and size != len(blob):
            return f"at {url} has {size} bytes, not {len(blob)}"
        digest = hashlib.md5(blob, usedforsecurity=False)
        md5 = answer.headers.get("Content-MD5")
        if md5 and status == 200 and md5 != base64.b64encode(digest.digest()).decode():
            return f"at {url} has other content (Content-MD5 differs)"
        etag = (answer.headers.get("ETag") or "").removeprefix("W/").strip('"')
        is_md5 = len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower())
        if is_md5 and etag.lower() != digest.hexdigest():
            return f"at {url} has other content (ETag differs)"
        return ""

    def unlink(self, subject_set: str, subject_ids: list[str]) -> None:
        """Remove subjects from a set (they stay in the project; retried)."""
        ids = ",".join(dict.fromkeys(str(i) for i in subject_ids))
        if not ids:
            return

        def attempt() -> None:
            try:
                self.request(
                    "DELETE",
                    f"/subject_sets/{subject_set}/links/subjects/{ids}",
                    what=f"unlink subjects {ids} from set {subject_set}",
                )
            except PanoptesError as exc:
                if exc.status != 404:
                    raise

        self._retrying(attempt, f"unlink from set {subject_set}")

    def link(self, subject_set: str, subject_ids: list[str]) -> None:
        """Link subjects to a set (idempotent; retried on 409 and 5xx)."""
        ids = list(dict.fromkeys(str(i) for i in subject_ids))  # no duplicate ids
        if not ids:
            return
        self._retrying(
            lambda: self.request(
                "POST",
                f"/subject_sets/{subject_set}/links/subjects",
                json={"subjects": ids},
                what=f"link {len(ids)} subjects to set {subject_set}",
            ),
            f"link to set {subject_set}",
        )

    def set_priorities(self, subject_set: str, wanted: Mapping[str, int]) -> int:
        """Give the set's members these priorities (``{subject id: priority}``).

        Panoptes copies a subject's ``#priority`` metadata into its priority
        in a set only when it is linked with ``POST /subject_sets/ID/links/
        subjects`` (its ``SubjectMetadataWorker``), not when it is created
        already linked; so each member whose priority differs is updated with
        ``PUT /set_member_subjects/ID`` (``If-Match``).  Idempotent: returns
        how many were changed.
        """
        changed = 0
        members = self.paginate("set_member_subjects", {"subject_set_id": subject_set})
        for sms in list(members):
            subject = str((sms.get("links") or {}).get("subject"))
            want = wanted.get(subject)
            have = sms.get("priority")
            if want is None or (have is not None and float(have) == float(want)):
                continue
            path = f"/set_member_subjects/{sms['id']}"

            def attempt(path: str = path, want: int = want) -> None:
                got = self.request("GET", path)
                self.request(
                    "PUT",
                    path,
                    json={"set_member_subjects": {"priority": want}},
                    etag=got.etag,
                    what=f"set the priority of {path}",
                )

            self._retrying(attempt, f"set the priority of {path}")
            changed += 1
        return changed

    def set_subjects(self, subject_set: str) -> Iterator[dict[str, Any]]:
        """Every subject of a set, with its metadata."""
        return self.paginate("subjects", {"subject_set_id": subject_set})

    # -- imports -----------------------------------------------------------

    def create_import(self, subject_set: str, source_url: str) -> dict[str, Any]:
        """Start a server-side subject-set import of a CSV at ``source_url``."""
        return self._create(
            "subject_set_imports",
            {"source_url": source_url, "links": {"subject_set": str(subject_set)}},
            f"import {source_url} into set {subject_set}",
        )

    def get_import(self, import_id: str) -> dict[str, Any]:
        """One subject-set import, with its progress."""
        body = self.get(f"/subject_set_imports/{import_id}").body
        return dict(body["subject_set_imports"][0])


# -- classification exports ---------------------------------------------------


def download_classification_export(
    endpoint: str,
    project: str,
    target: os.PathLike[str] | str,
    *,
    timeout: float = 60.0,
    retry: RetryPolicy | None = None,
) -> None:
    """Fetch a project's latest classification export into ``target``.

    Signs in with the credentials of the environment, asks the API for the
    export's signed storage URL and downloads it (without the bearer token)
    into ``target``, replaced whole or not at all.  Both requests are retried
    on 5xx answers, timeouts and dropped connections.

    Parameters
    ----------
    endpoint : str
        The Panoptes endpoint (checked with `check_endpoint`).
    project : str
        Zooniverse project id.
    target : path-like
        Where to write the CSV.
    timeout : float
        Seconds before one request (or one read of the download) is abandoned
        and retried.
    retry : RetryPolicy, optional
        Retries of both requests.

    Raises
    ------
    AuthError
        No or wrong credentials.
    InputError
        The project has no export yet.
    PanoptesError
        The API or the storage answered an error, or kept failing.
    """
    endpoint = check_endpoint(endpoint)
    creds = Credentials.from_env()
    if creds is None:
        raise AuthError(
            "no Panoptes credentials for --download: set PANOPTES_USERNAME and "
            "PANOPTES_PASSWORD (or PANOPTES_CLIENT_ID and PANOPTES_CLIENT_SECRET)"
        )
    tokens = TokenManager(endpoint, creds, timeout=timeout)
    tokens.login()
    api = PanoptesAPI(tokens, timeout=timeout, retry=retry)
    try:
        try:
            answer = api.get(f"/projects/{project}/classifications_export")
        except PanoptesError as exc:
            if exc.status == 404:
                raise InputError(
                    f"project {project} has no classification export yet; request "
                    "one on the project's Lab > Data Exports page and run again "
                    "when it is ready"
                ) from None
            raise
        media = answer.body.get("media") or [{}]
        src = str(media[0].get("src") or "")
        if not src:
            raise PanoptesError(f"project {project}: the export answer has no file URL")
        parsed = urllib.parse.urlparse(src)
        if parsed.scheme != "https":
            check_endpoint(f"{parsed.scheme}://{parsed.netloc}")  # loopback only
        what = f"downloading the export of project {project}"

        def attempt() -> None:
            # A signed storage URL: no Authorization header goes there.
            try:
                with api.session.get(src, stream=True) as got:
                    if got.status_code >= 500:
                        raise _Transient(
                            f"{what}: HTTP {got.status_code}", got.status_code
                        )
                    if got.status_code != 200:
                        raise PanoptesError(
                            f"{what}: HTTP {got.status_code}", got.status_code
                        )
                    with atomic_file(target) as fh:
                        for chunk in got.iter_content(1 << 20):
                            fh.write(chunk)
            except (requests.Timeout, requests.ConnectionError) as exc:
                raise _no_answer(exc, what) from None
            except requests.RequestException as exc:
                raise PanoptesError(f"{what} failed: {type(exc).__name__}") from None

        api._retrying(attempt, what)
    finally:
        api.close()


def _no_answer(
    exc: requests.RequestException, what: str, limit: float | None = None
) -> _Transient:
    """The retryable failure of a request that timed out or lost its connection."""
    if isinstance(exc, requests.Timeout):
        within = f" ({limit:.3g} s)" if limit is not None else ""
        return _Transient(f"{what}: no answer in time{within}", None)
    return _Transient(f"{what}: connection failed ({type(exc).__name__})", None)


def _stored_size(answer: requests.Response) -> int | None:
    """Size of the stored file from a HEAD or ranged GET answer (None if unsaid)."""
    total = answer.headers.get("Content-Range", "").rpartition("/")[2]
    if answer.status_code == 206 and total.isdigit():
        return int(total)
    length = answer.headers.get("Content-Length")
    if answer.status_code == 200 and length and length.isdigit():
        return int(length)
    return None


def _locations(n_files: int, content_types: Sequence[str] | None) -> list[str]:
    """The ``locations`` of a create or update: one content type per file."""
    if content_types is None:
        return ["image/png"] * n_files
    if len(content_types) != n_files:
        raise ValueError(f"{len(content_types)} content types for {n_files} files")
    return [str(t) for t in content_types]


def _put_urls(subject: Mapping[str, Any]) -> list[str]:
    """The signed PUT URL of each location of a created/updated subject."""
    urls = []
    for loc in subject.get("locations") or []:
        ((_, url),) = dict(loc).items()
        urls.append(str(url))
    return urls


def _azure_code(text: str) -> str:
    """The <Code> of an Azure storage error body, if any."""
    start = text.find("<Code>")
    end = text.find("</Code>")
    return f"({text[start + 6 : end]})" if 0 <= start < end else ""


def _decode(answer: requests.Response, what: str) -> Answer:
    """Turn an HTTP answer into an `Answer` or the matching zooprep error."""
    status = answer.status_code
    try:
        body = answer.json() if answer.content else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if status < 400:
        return Answer(status, body, answer.headers.get("ETag"))
    messages = [
        str(e.get("message", ""))
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]
    message = "; ".join(m for m in messages if m) or str(body.get("error") or "")
    text = f"{what}: HTTP {status}" + (f": {message}" if message else "")
    if status >= 500 or status == 409:
        raise _Transient(text, status)
    if status == 401:
        raise AuthError(f"{what}: not signed in or token refused (HTTP 401)")
    if status == 403 and "subjects of" in message and "maximum" in message:
        raise QuotaError(f"{what}: {message}")
    raise PanoptesError(text, status)
