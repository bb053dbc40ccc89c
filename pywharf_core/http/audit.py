"""``GET /_/audit/<repo>``: read a repository's audit log (``pywharf_core.service.audit``;
``audit_trail.py`` records the events, ``audit_query.py`` bounds the query).

Reading takes what managing tokens takes: the repository's write secret (basic auth, or a
browser session logged in with it); an upload token may upload, not read who did what.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from pywharf_core.http.audit_query import page_body, page_query, read_page
from pywharf_core.http.auth import INVALID_CREDENTIALS, Unauthorized, basic_credentials
from pywharf_core.http.web import session_credentials
from pywharf_core.http.web.secret_check import check_secret
from pywharf_core.service.repository import PkgRepo

NO_STORE = {"Cache-Control": "no-store"}


async def _reader(request: Request) -> PkgRepo:
    """The repository in the path, if the request carries its write secret (basic auth or a
    browser session logged in with it); else 401/403."""
    name = request.path_params["repo"]
    credentials = basic_credentials(request)
    limited = credentials is not None
    if credentials is None:
        credentials = session_credentials(request)
        if credentials is not None and credentials[0] != name:
            credentials = None
    if credentials is None:
        raise Unauthorized("Authentication required: the repository name and its write secret.")
    repo, grant = await check_secret(request, name, credentials[1], limited=limited)
    if repo is None or repo.name != name:
        raise Unauthorized(INVALID_CREDENTIALS)
    if not grant.manages_tokens:
        raise HTTPException(403, "Reading the audit log takes the repository's write secret "
                                 "(not a token, not the read secret).")
    if repo.audit is None:
        raise HTTPException(501, f"The backend of {name!r} keeps no documents: it keeps no audit log.")
    return repo


async def read_audit(request: Request) -> Response:
    """``GET /_/audit/<repo>?since=7d&limit=100&cursor=...``: JSON (``format=json`` or an
    ``Accept`` naming JSON; else plain text, one event a line)."""
    repo = await _reader(request)
    since, limit, cursor = page_query(request)
    page = await read_page(request, repo, since, limit, cursor)
    wants_json = request.query_params.get("format") == "json" or "json" in request.headers.get("accept", "")
    if wants_json:
        return JSONResponse(page_body(page, since), headers=NO_STORE)
    lines = [event.line() for event in page.events]
    if page.next is not None:
        lines.append(f"# more: cursor={page.next}")
    return PlainTextResponse("".join(f"{line}\n" for line in lines), headers=NO_STORE)
