"""``/tokens/``: create, list and revoke a repository's API tokens from the browser.

Only a session logged in with the repository's **write secret** manages tokens (as over
``/_/tokens/<repo>``): a read session or a session logged in with a token gets a 403 page, a
browser without a session goes to the login form. The secret in the session is re-checked on
every request (``check_secret``, as every page does), so a changed write secret ends this too.

These are the only browser forms that change something with the session cookie, so each
carries three locks: the CSRF token (``csrf.py``, checked before anything else), the
``CrossSiteWriteGuard`` middleware (``Sec-Fetch-Site`` / ``Origin``), and the cookie's own
``SameSite=Lax`` (a browser does not send it on another site's POST).

The new token is in the body of the answer to ``POST /tokens/`` and nowhere else: never in a
URL, a redirect, a cookie or a log line (the store keeps only its sha256). Reloading that page
asks the browser to post again, which would make another token; it never shows the same one.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pywharf_core.http.audit_trail import WRITE_SECRET, audit_event, record, token_detail
from pywharf_core.http.public_url import repo_index_url
from pywharf_core.http.web.csrf import CSRF_FIELD, CsrfGuard
from pywharf_core.http.web.secret_check import client_address, session_grant, write_secret_refusal
from pywharf_core.http.web.session import current_session, session_codec
from pywharf_core.model.api_tokens import (
    MAX_DESCRIPTION_CHARS,
    SCOPES,
    TOKEN_USERNAME,
    TokenRecord,
    is_token_id,
    parse_projects,
)
from pywharf_core.model.errors import InvalidName
from pywharf_core.service.repository import PkgRepo
from pywharf_core.service.tokens import DEFAULT_EXPIRES_IN, MAX_EXPIRES_IN, TokenError, TokenStore

if TYPE_CHECKING:
    from pywharf_core.http.web.routes import WebUI

log = logging.getLogger(__name__)

DEFAULT_DAYS = DEFAULT_EXPIRES_IN // 86400
MAX_DAYS = MAX_EXPIRES_IN // 86400
_LOGIN = "/login/?next=%2Ftokens%2F"
_FORM_FIELDS = ("scope", "projects", "expires_days", "description", "form_id", CSRF_FIELD)
# A reload of the "New API token" page sends its POST again: the create form carries a fresh id,
# and a created token adds that id to this cookie (the last few: several tabs), so the same form
# is not turned into a second token. Stateless (any worker or server with the session key sees the browser's cookie).
SUBMITTED_COOKIE = "pywharf_token_form"
_MAX_FORM_ID_CHARS = 64
_REMEMBERED_FORMS = 8  # the last forms sent (several tabs), in the cookie as "id.id.id"
_MAX_FORM_BYTES = 16 * 1024


def _when(timestamp: int) -> dict[str, str]:
    return {"iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp)),
            "text": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))}


def token_row(record: TokenRecord) -> dict[str, Any]:
    """What the list shows of one token (never its digest)."""
    projects = (", ".join(record.projects) or "all projects") if record.scope == "upload" else "n/a (read only)"
    return {"id": record.token_id, "scope": record.scope, "projects": projects, "description": record.description,
            "created": _when(record.created), "expires": _when(record.expires)}


def usage_lines(index_url: str, token: str, scope: str) -> dict[str, str]:
    """Copyable commands using the new token as the password of ``__token__``."""
    parts = urlsplit(index_url)
    with_credentials = urlunsplit(parts._replace(netloc=f"{TOKEN_USERNAME}:{token}@{parts.netloc}"))
    lines = {"pip": f"pip install --index-url {with_credentials} PACKAGE"}
    if scope == "upload":
        lines["twine"] = f"twine upload --repository-url {index_url} -u {TOKEN_USERNAME} -p {token} dist/*"
    return lines


class TokenPages:
    """The routes of the tokens page; pages are rendered by the :class:`WebUI` they belong to."""

    def __init__(self, ui: WebUI) -> None:
        self.ui = ui

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/tokens/", self.show, methods=["GET", "HEAD"]),
            Route("/tokens/", self.create, methods=["POST"]),
            Route("/tokens/{token_id}/revoke", self.revoke, methods=["POST"]),
        ]

    # -- checks ----------------------------------------------------------------------------------

    async def _manager(self, request: Request, action: str | None = None) -> tuple[PkgRepo, TokenStore] | Response:
        """The session's repository and token store when its secret is the write secret; else
        the answer to send (login redirect, 403 or 501 page; a 403 to a change, ``action``, is
        recorded in the audit log)."""
        found = await session_grant(request, _LOGIN)
        if isinstance(found, Response):
            return found
        repo, grant = found
        refusal = write_secret_refusal(grant, "Managing API tokens")
        if refusal is not None:
            if action is not None:
                await record(repo, audit_event(request, repo, action, 403, grant=grant, detail=refusal))
            return self.ui.error_page(request, repo.name, 403, "Write secret needed", refusal)
        if repo.tokens is None:
            return self.ui.error_page(request, repo.name, 501, "No API tokens here",
                                      f"The backend of {repo.name!r} keeps no documents: it cannot store API tokens.")
        return repo, repo.tokens

    def _csrf_ok(self, request: Request, submitted: object) -> bool:
        return CsrfGuard(session_codec(request).keys.csrf).verify(request, submitted)

    def _csrf_refused(self, request: Request) -> Response:
        session = current_session(request)
        return self.ui.error_page(request, session.repo if session is not None else "", 403, "Form expired",
                                  "This form has expired or your browser did not send its cookie: "
                                  "reload the tokens page and try again.")

    @staticmethod
    async def _form(request: Request) -> dict[str, str]:
        async with request.form(max_files=0, max_fields=len(_FORM_FIELDS) + 2, max_part_size=_MAX_FORM_BYTES) as form:
            values = {name: form.get(name) for name in _FORM_FIELDS}
        return {name: value if isinstance(value, str) else "" for name, value in values.items()}

    # -- pages -----------------------------------------------------------------------------------

    async def _list_page(self, request: Request, repo: PkgRepo, store: TokenStore, *, status: int = 200,
                         error: str = "", notice: str = "", form: dict[str, str] | None = None) -> Response:
        try:
            records = await anyio.to_thread.run_sync(store.list)
        except TokenError as exc:
            records = []
            error, status = error or str(exc), status if status != 200 else exc.status
        values = {"scope": "upload", "projects": "", "expires_days": str(DEFAULT_DAYS), "description": "",
                  **(form or {})}
        context = {
            "repo_name": repo.name, "title": f"API tokens of {repo.name}", "tokens": [token_row(r) for r in records],
            "error": error, "notice": notice, "form": values, "scopes": SCOPES, "max_days": MAX_DAYS,
            "max_description": MAX_DESCRIPTION_CHARS, "form_id": secrets.token_urlsafe(16),
        }
        return self.ui._page(request, "tokens.html", context, status=status)

    async def show(self, request: Request) -> Response:
        manager = await self._manager(request)
        if isinstance(manager, Response):
            return manager
        revoked = request.query_params.get("revoked", "")
        notice = f"Token {revoked} is revoked: it is refused from now on." if is_token_id(revoked) else ""
        return await self._list_page(request, *manager, notice=notice)

    async def create(self, request: Request) -> Response:
        fields = await self._form(request)
        if not self._csrf_ok(request, fields.pop(CSRF_FIELD)):
            return self._csrf_refused(request)
        manager = await self._manager(request, "token-create")
        if isinstance(manager, Response):
            return manager
        repo, store = manager
        form_id = fields["form_id"][:_MAX_FORM_ID_CHARS]
        if not re.fullmatch(r"[A-Za-z0-9_-]+", form_id):
            form_id = ""  # not one this page made (a script's POST): nothing to remember
        submitted = request.cookies.get(SUBMITTED_COOKIE, "").split(".")[-_REMEMBERED_FORMS:]
        if form_id and form_id in submitted:  # ids, not secrets
            return await self._list_page(
                request, repo, store, status=409,
                error="This form was already sent (the page was reloaded?): the token it created is in the list "
                      "below, and its secret was shown once. Fill in the form again to create another.")
        scope = fields["scope"] or "upload"
        description = fields["description"].strip()
        try:
            projects = parse_projects(fields["projects"])
            days = int(fields["expires_days"].strip() or DEFAULT_DAYS)
            if not 1 <= days <= MAX_DAYS:
                raise ValueError
        except InvalidName as exc:
            return await self._list_page(request, repo, store, status=400, error=f"Projects: {exc}", form=fields)
        except ValueError:
            return await self._list_page(request, repo, store, status=400, form=fields,
                                         error=f"The expiry must be a whole number of days from 1 to {MAX_DAYS}.")
        try:
            new = await anyio.to_thread.run_sync(lambda: store.create(
                scope, projects=projects, expires_in=days * 86400, description=description))
        except TokenError as exc:
            await record(repo, audit_event(request, repo, "token-create", exc.status, grant=WRITE_SECRET,
                                           detail=f"browser UI: {exc}"))
            return await self._list_page(request, repo, store, status=exc.status, error=str(exc), form=fields)
        created = new.record
        log.info("repo %r: token %s created in the browser UI (scope %s, projects %s, expires %d) from %s", repo.name,
                 created.token_id, created.scope, ",".join(created.projects) or "all", created.expires,
                 client_address(request))
        await record(repo, audit_event(request, repo, "token-create", 201, grant=WRITE_SECRET,
                                       detail=f"browser UI: {token_detail(created)}"))
        row = token_row(created)
        context = {"repo_name": repo.name, "title": "New API token", "token": new.token, "row": row,
                   "lines": usage_lines(repo_index_url(request, repo.name), new.token, created.scope)}
        response = self.ui._page(request, "token_created.html", context)
        if form_id:
            remembered = ".".join([*submitted, form_id][-_REMEMBERED_FORMS:])
            response.set_cookie(SUBMITTED_COOKIE, remembered, path="/tokens/", httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")
        return response

    async def revoke(self, request: Request) -> Response:
        fields = await self._form(request)
        if not self._csrf_ok(request, fields[CSRF_FIELD]):
            return self._csrf_refused(request)
        manager = await self._manager(request, "token-revoke")
        if isinstance(manager, Response):
            return manager
        repo, store = manager
        token_id = request.path_params["token_id"]
        try:
            found = await anyio.to_thread.run_sync(repo.revoke_token, token_id)
        except TokenError as exc:
            return await self._list_page(request, repo, store, status=exc.status, error=str(exc))
        if found is None:
            return await self._list_page(request, repo, store, status=404,
                                         error=f"There is no token {token_id[:32]!r} in repository {repo.name!r}.")
        log.info("repo %r: token %s revoked in the browser UI from %s", repo.name, found.token_id,
                 client_address(request))
        await record(repo, audit_event(request, repo, "token-revoke", 200, grant=WRITE_SECRET,
                                       detail=f"browser UI: {token_detail(found)}"))
        return RedirectResponse(f"/tokens/?revoked={found.token_id}", status_code=303,
                                headers={"Cache-Control": "no-store"})
