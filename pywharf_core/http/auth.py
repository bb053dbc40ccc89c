"""Who a request is: HTTP basic auth (repository name + secret, or ``__token__`` + an API
token) or the browser UI's session.

Read endpoints also accept the session cookie (``pywharf_core.http.web``) when no basic auth is
sent; write endpoints take basic auth only, so no write can ride on a cookie. Secrets are
checked by :mod:`pywharf_core.http.web.secret_check` (failure limit, same work for unknown names).
"""

from __future__ import annotations

import base64
import binascii
import logging

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request

from pywharf_core.http.audit_trail import audit_event, record, record_refused_credentials
from pywharf_core.http.web import session_credentials
from pywharf_core.http.web.secret_check import check_secret, client_address, repo_name_for
from pywharf_core.service.grants import Grant
from pywharf_core.service.repository import PkgRepo
from pywharf_core.storage.backend import Permission

log = logging.getLogger(__name__)

INVALID_CREDENTIALS = "Invalid repository name or secret."
# The request scope key naming the repository the credentials opened (a configured name, never
# the URL's string): the /metrics middleware labels requests with it.
REPOSITORY_SCOPE_KEY = "pywharf.repository"


class Unauthorized(HTTPException):
    def __init__(self, detail: str = "Authentication required: use the repo name and its secret.") -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": 'Basic realm="pywharf"'})


class MalformedAuthorization(HTTPException):
    """400: a Basic header whose bytes are not base64 of UTF-8 text (a client bug, not a guess)."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(
            400, "Malformed Authorization header: Basic credentials must be base64 of UTF-8 'name:secret'."
        )
        self.reason = reason  # for the log line


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """``(name, secret)`` from the request's Basic header (:func:`parse_basic`), the malformed
    ones logged."""
    try:
        # Starlette decodes header values as latin-1: back to the bytes the client sent.
        return parse_basic(request.headers.get("authorization", "").encode("latin-1"))
    except MalformedAuthorization as exc:
        log.info("malformed Authorization header (%s) from %s", exc.reason, client_address(request))
        raise


def parse_basic(header: bytes) -> tuple[str, str] | None:
    """``(name, secret)`` of an ``Authorization`` value; None when it is not Basic, not base64
    or has no ``:`` (401, as before); :class:`MalformedAuthorization` when its bytes are not
    ASCII or the credentials are not UTF-8 (400: a client bug, not a guess). The one decoder of
    Basic credentials: the app's and the fast lane's (``pywharf_core.http.fast_lane``)."""
    scheme, _, encoded = header.partition(b" ")
    if scheme.lower() != b"basic" or not encoded:
        return None
    if not encoded.isascii():
        raise MalformedAuthorization("not ASCII")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except binascii.Error:
        return None
    except UnicodeDecodeError:
        raise MalformedAuthorization("credentials not UTF-8") from None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


async def authorize(request: Request, needed: Permission) -> PkgRepo:
    """The repository the request's credentials grant ``needed`` on, or 401/403/429."""
    repo, _ = await authorize_grant(request, needed)
    return repo


async def authorize_grant(request: Request, needed: Permission, *, action: str | None = None
                          ) -> tuple[PkgRepo, Grant]:
    """:func:`authorize`, and what exactly was granted (an API token may be limited to some
    projects: the caller checks them with :meth:`Grant.may_upload`).

    ``action``: the audit action of a write route; credentials refused there (401, 403) are
    recorded in the audit log of the repository they name (``audit_trail``)."""
    state = request.app.state.pywharf
    if state.peers is not None and state.peers.changed():
        # Another worker process of this server wrote (an upload, a yank, a revoked token):
        # see it before answering, so a client reads its own writes whichever worker it reaches.
        await anyio.to_thread.run_sync(state.follow_peers)
    credentials = basic_credentials(request)
    from_session = False
    if credentials is None and needed is Permission.READ:
        # A browser session reads only: no upload or yank can ride on a cookie (no CSRF there).
        credentials = session_credentials(request)
        from_session = credentials is not None
    if credentials is None:
        raise Unauthorized()
    name, secret = credentials
    in_url = request.path_params.get("repo")
    if in_url is not None:
        # /repos/<repo>/...: the URL names the repository, the username may be anything (or
        # __token__); a session opens only its own repository's URLs.
        if from_session and name != in_url:
            raise Unauthorized()
        name = in_url
    # A session's secret was checked at login and the cookie is signed: no guess to limit.
    repo, grant = await check_secret(request, name, secret, limited=not from_session)
    if repo is None or grant.permission is Permission.NONE:
        if action is not None:
            await record_refused_credentials(request, repo_name_for(name, secret), secret, action, 401,
                                             INVALID_CREDENTIALS, project=request.path_params.get("project", ""),
                                             filename=request.path_params.get("target", ""))
        raise Unauthorized(INVALID_CREDENTIALS)
    request.scope[REPOSITORY_SCOPE_KEY] = repo.name
    if grant.permission < needed:
        what = "token" if grant.is_token else "secret"
        refusal = f"This {what} may read but not upload: use the write secret or an upload token."
        if action is not None:
            await record(repo, audit_event(request, repo, action, 403, grant=grant, detail=refusal,
                                           project=request.path_params.get("project", ""),
                                           filename=request.path_params.get("target", "")))
        raise HTTPException(403, refusal)
    return repo, grant
