"""A query of a repository's audit log over HTTP: its parameters, its bounds and its answer,
shared by ``GET /_/audit/<repo>`` (``audit.py``) and the browser's ``/audit/`` page.

Bounds: ``since`` at most ``MAX_SINCE_DAYS`` back, ``limit`` at most
``pywharf_core.service.audit.MAX_LIMIT`` events, a page reads a bounded number of entries and
days (``AuditLog.read``), and at most :data:`MAX_CONCURRENT_READS` queries run at once per
server (429 beyond): reading is the one thing here a client can make the store do in bulk.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request

from pywharf_core.http.app_singletons import app_singleton
from pywharf_core.model.audit import iso_time, parse_since
from pywharf_core.service.audit import DEFAULT_LIMIT, MAX_LIMIT, AuditCursor, AuditPage
from pywharf_core.service.repository import PkgRepo

MAX_CONCURRENT_READS = 4
DEFAULT_SINCE = "1d"


def read_slots(conn: HTTPConnection) -> threading.BoundedSemaphore:
    return app_singleton(conn, "pywharf_audit_read_slots", lambda settings: threading.BoundedSemaphore(
        MAX_CONCURRENT_READS))


def page_query(request: Request) -> tuple[float, int, AuditCursor | None]:
    """``since``, ``limit`` and ``cursor`` from the query string; 400 naming a bad one."""
    params = request.query_params
    try:
        since = parse_since(params.get("since") or DEFAULT_SINCE, time.time())
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        limit = int(params.get("limit") or DEFAULT_LIMIT)
    except ValueError:
        raise HTTPException(400, f"limit must be a number from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise HTTPException(400, f"limit must be a number from 1 to {MAX_LIMIT}")
    cursor_text = params.get("cursor")
    try:
        cursor = AuditCursor.parse(cursor_text[:64]) if cursor_text else None
    except ValueError as exc:
        raise HTTPException(400, f"cursor: {exc}") from None
    return since, limit, cursor


async def read_page(conn: HTTPConnection, repo: PkgRepo, since: float, limit: int,
                    cursor: AuditCursor | None) -> AuditPage:
    """One page of ``repo``'s audit log, or 429 while :data:`MAX_CONCURRENT_READS` are running."""
    assert repo.audit is not None
    slots = read_slots(conn)
    if not slots.acquire(blocking=False):
        raise HTTPException(429, "Too many audit log reads at once: retry in a second.", headers={"Retry-After": "1"})
    try:
        return await anyio.to_thread.run_sync(lambda: repo.audit.read(since, limit=limit, cursor=cursor))  # type: ignore[union-attr]
    finally:
        slots.release()


def page_body(page: AuditPage, since: float) -> dict[str, Any]:
    return {"since": iso_time(since), "events": [e.to_dict() for e in page.events],
            "next": str(page.next) if page.next is not None else None, "skipped": page.skipped}
