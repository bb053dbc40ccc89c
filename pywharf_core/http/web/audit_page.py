"""``/audit/``: a repository's audit log in the browser, for a session logged in with the
write secret (as ``GET /_/audit/<repo>``; a read session or a token's session gets a 403 page,
a browser without a session goes to the login form).

Read-only (a GET, no form that changes anything), with the query's bounds of
``pywharf_core.http.audit_query``: one page of at most ``limit`` events, a "Next events" link
carrying the cursor.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pywharf_core.http.audit_query import DEFAULT_SINCE, page_query, read_page
from pywharf_core.http.web.secret_check import session_grant, write_secret_refusal
from pywharf_core.model.audit import iso_time

if TYPE_CHECKING:
    from pywharf_core.http.web.routes import WebUI

_LOGIN = "/login/?next=%2Faudit%2F"


class AuditPage:
    """The route of the audit page; rendered by the :class:`WebUI` it belongs to."""

    def __init__(self, ui: WebUI) -> None:
        self.ui = ui

    def routes(self) -> list[BaseRoute]:
        return [Route("/audit/", self.show, methods=["GET", "HEAD"])]

    async def show(self, request: Request) -> Response:
        found = await session_grant(request, _LOGIN)
        if isinstance(found, Response):
            return found
        repo, grant = found
        refusal = write_secret_refusal(grant, "Reading the audit log")
        if refusal is not None:
            return self.ui.error_page(request, repo.name, 403, "Write secret needed", refusal)
        if repo.audit is None:
            return self.ui.error_page(request, repo.name, 501, "No audit log here",
                                      f"The backend of {repo.name!r} keeps no documents: it keeps no audit log.")
        since_text = request.query_params.get("since", DEFAULT_SINCE)[:40]
        context = {"repo_name": repo.name, "title": f"Audit log of {repo.name}", "since_text": since_text,
                   "events": [], "next_url": "", "error": "", "since_iso": iso_time(time.time() - 86400)}
        try:
            since, limit, cursor = page_query(request)
        except HTTPException as exc:
            return self.ui._page(request, "audit.html", {**context, "error": exc.detail}, status=exc.status_code)
        page = await read_page(request, repo, since, limit, cursor)
        context.update(events=[event.to_dict() for event in page.events], since_iso=iso_time(since))
        if page.next is not None:
            query = {"since": since_text, "limit": limit, "cursor": str(page.next)}
            context["next_url"] = "/audit/?" + urlencode(query)
        return self.ui._page(request, "audit.html", context)
