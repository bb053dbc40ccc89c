"""Cached project pages answered by the protocol itself, before any ASGI machinery runs.

A resolver asks for one ``/simple/<project>/`` page per requirement, hundreds per install, and
a CI fleet asks for the same few thousand pages all day. Such a request, when its answer is
already known, needs three dictionary lookups; the ASGI path around them (an asyncio task, the
middleware and routing layers, two ``Request`` objects, header parsing) cost several times more
(benchmarks/README.md, bench_workers). So the HTTP protocol (``pywharf_core.http.transport``)
offers every complete ``GET`` head to :meth:`FastLane.answer` first, which returns the whole
response, byte for byte what the application would send, only when nothing can differ:

- the path is ``/simple/<project>/`` or ``/repos/<repo>/simple/<project>/``, without a query,
  with the project in normal form and known from memory: held by a hosted repository, in a
  proxy's fresh page, or for a group in the member the group's memory names (the same
  non-blocking lookups the application makes first);
- Basic credentials whose verdict the repository has cached as READ or better
  (``PkgRepo.cached_grant``: the same cache the application fills), and the address has not used
  up its failure budget (the application's own limiter);
- the rendered page is cached for the snapshot being served, in the negotiated type;
- nothing that changes the answer is in the head: no ``If-None-Match``, ``Expect`` or
  ``Upgrade``, no ``X-Forwarded-*`` (the proxy-headers layer would rewrite the client); the
  connection stays open (HTTP/1.1 keep-alive, checked by the protocol); and no other worker
  process has written since this one last caught up.

Anything else, including every failure, goes the usual way (``None``), so the fast lane never
answers differently; tests/test_fast_lane.py compares both byte for byte. It is off when the
access log is on (every request must be logged there).
"""

from __future__ import annotations

import re
import time
from typing import Any

from pywharf_core.http.auth import MalformedAuthorization, parse_basic
from pywharf_core.http.negotiation import choose_content_type
from pywharf_core.http.page_cache import pages_of
from pywharf_core.http.page_response import page_wire
from pywharf_core.http.web.secret_check import AUTH_LIMITER, failure_key
from pywharf_core.model.api_tokens import TOKEN_USERNAME
from pywharf_core.service.server_state import ServerState
from pywharf_core.storage.backend import Permission

_NORMAL_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")  # PEP 503 normal form
_MAX_CREDENTIALS = 4096  # decoded Authorization headers kept (one per client credential)
_SKIP = frozenset({b"if-none-match", b"expect", b"x-forwarded-for", b"x-forwarded-proto", b"forwarded",
                   b"range", b"if-range", b"upgrade"})


class FastLane:
    """See the module docstring; one per application."""

    def __init__(self, app_state: Any) -> None:
        # The Starlette app's ``state`` as its dict: its attribute lookup raises (and formats a
        # message) for a missing key, e.g. the failure limiter before the first failure.
        self.app_state: dict[str, Any] = app_state._state
        self._credentials: dict[bytes, tuple[str, str] | None] = {}
        self._server_headers_of: list[tuple[bytes, bytes]] | None = None  # the server's default headers...
        self._server_headers = b""  # ...as header lines

    def answer(self, url: bytes, headers: list[tuple[bytes, bytes]], client: str,
               default_headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """The whole HTTP/1.1 response to ``GET url`` with ``headers``, or None (answer it the usual way)."""
        started = time.perf_counter()
        parts = url.split(b"/")
        # b"/simple/p/" -> ['', 'simple', 'p', '']; b"/repos/r/simple/p/" -> ['', 'repos', 'r', 'simple', 'p', '']
        if len(parts) == 4 and parts[1] == b"simple" and parts[3] == b"":
            in_url, project_bytes = None, parts[2]
        elif len(parts) == 6 and parts[1] == b"repos" and parts[3] == b"simple" and parts[5] == b"":
            in_url, project_bytes = parts[2], parts[4]
        else:
            return None
        if b"%" in url or b"?" in url:
            return None
        authorization = accept = accept_encoding = None
        for name, value in headers:
            if name == b"authorization":
                if authorization is not None:
                    return None  # two: the application reads the first; no room for doubt here
                authorization = value
            elif name == b"accept":
                accept = value if accept is None else accept  # the first, as the application reads
            elif name == b"accept-encoding":
                accept_encoding = value if accept_encoding is None else accept_encoding
            elif name in _SKIP:
                return None
        credentials = self._basic(authorization or b"")
        if credentials is None:
            return None
        username, secret = credentials
        state: ServerState = self.app_state["pywharf"]
        if state.peers is not None and state.peers.changed():
            return None
        try:
            name = in_url.decode("ascii") if in_url is not None else username
        except UnicodeDecodeError:
            return None
        if name == TOKEN_USERNAME:
            return None  # the token names its repository: the usual path resolves it
        repo = state.repos.get(name)
        if repo is None or not secret:
            return None
        limiter = self.app_state.get(AUTH_LIMITER)  # built at the first failure
        if limiter is not None and limiter.retry_after(failure_key(client, name)) > 0:
            return None
        grant = repo.cached_grant(secret)
        if grant is None or grant.permission < Permission.READ:
            return None
        project = project_bytes.decode("ascii", "replace")
        if _NORMAL_NAME.fullmatch(project) is None:
            return None  # the usual path redirects it to its normal form
        answering = repo
        if repo.group is not None:  # the member that answers, when memory can tell (as the app asks)
            try:
                cached = repo.group.cached_member(project)
            except Exception:  # a member still loading (503) or anything else: the usual path
                return None
            if cached is None or cached[0] is None:
                return None
            answering = cached[0]
        try:
            content_type = choose_content_type(accept.decode("latin-1") if accept is not None else None)
        except ValueError:
            return None
        if content_type is None:
            return None
        if answering.mirror is not None:  # a proxy's page, while it is fresh in memory
            fresh = answering.mirror.fresh_page(project)
            if fresh is None or fresh[0] is None:
                return None
            page = pages_of(answering).records_page(project, fresh[0], content_type)
        else:
            snapshot = answering.snapshot
            if project not in snapshot.projects and project not in snapshot.statuses:
                return None  # unknown: 404, a redirect or 503, the usual path decides
            page = pages_of(answering).project_page(snapshot, project, content_type)
            if page is None:
                return None
        body, head = page_wire(page, content_type, (accept_encoding or b"").decode("latin-1"),
                               state.settings.page_max_age)
        if default_headers is not self._server_headers_of:  # uvicorn renews the list (its Date) each second
            self._server_headers_of = default_headers
            self._server_headers = b"".join(name + b": " + value + b"\r\n" for name, value in default_headers)
        metrics = self.app_state.get("metrics")
        if metrics is not None:  # /metrics counts it like a page the application answered
            metrics.page_answered(repo.name, time.perf_counter() - started)
        return b"".join((b"HTTP/1.1 200 OK\r\n", self._server_headers, head, b"\r\n", body))

    def _basic(self, header: bytes) -> tuple[str, str] | None:
        """``(username, secret)`` of a Basic header (decoded once per distinct header)."""
        if not header:
            return None
        if header in self._credentials:
            return self._credentials[header]
        try:
            found = parse_basic(header)
        except MalformedAuthorization:
            found = None  # the application answers it (400)
        if len(self._credentials) >= _MAX_CREDENTIALS:
            self._credentials.clear()
        self._credentials[header] = found
        return found
