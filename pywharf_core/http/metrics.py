"""``GET /metrics``: Prometheus metrics, through the official ``prometheus_client``.

Off unless asked for (``--metrics``, or a ``--metrics_token``): the text names every repository
and shows its traffic, and a server that does not serve it pays nothing per request (the
middleware is not installed). With a token, a scrape must send ``Authorization: Bearer
<token>`` (compared in constant time; 401 otherwise).

What is measured, and where:

- per request (:class:`MetricsMiddleware`, raw ASGI, outermost): a counter by *route class*,
  repository and status, and a latency histogram by route class. Route classes (``page``,
  ``file``, ``metadata``, ``json``, ``upload``, ``yank``, ``api``, ``oidc``, ``ui``,
  ``health``, ``admin``, ``metrics``, ``other``) come from the endpoint Starlette routed to,
  never the raw path, so the number of series is bounded by the code, not by clients. The
  repository label is the name :func:`pywharf_core.http.auth.authorize_grant` resolved (a
  configured repository the credentials opened; "" before or without authentication), never a
  string from the URL: ``/repos/<anything>/`` cannot create series;
- downloads (count, and bytes as sent: body bytes counted as they go out) in the same
  middleware, for the ``file`` class; uploads (count and bytes of each stored file) by the
  upload route, through :meth:`Metrics.uploaded`;
- per repository at scrape time, from ``ServerState.repos`` (:class:`RepositoryCollector`):
  index files and projects, seconds since the last successful sync, whether the last sync
  failed, failed syncs since start. Nothing of this is computed per request.

Several worker processes (issue 17): each holds its own counters, and a scrape reaches one of
them. They would be summed through prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, one set of mmap files per process, ``MultiProcessCollector`` at
scrape): :meth:`Metrics.flush` is the one place to change, folding each batch into
``Counter`` / ``Histogram`` objects (which that mode writes to the files) instead of the plain
dicts, so the per-request path stays an append. The repository gauges stay as they are,
computed at scrape time by whichever process answers (every worker serves the same
repositories and syncs the same store).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Awaitable, Iterable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pywharf_core.http.auth import REPOSITORY_SCOPE_KEY
from pywharf_core.http.security_headers import secure_response_start
from pywharf_core.service.server_state import ServerState
from pywharf_core.storage.shared_secrets import secret_matches

# Cached pages answer in well under a millisecond; uploads and big downloads take minutes.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0, 300.0)
# Download responses: served by this server (200, 206) or by the store it redirects to (302).
_DOWNLOAD_STATUSES = frozenset({200, 206, 302})
OTHER = "other"
# Requests recorded before they are folded into the counters (a scrape folds them first).
FLUSH_EVERY = 256


class _Latency:
    """One histogram series: observations per bucket (not cumulative), their sum and count."""

    __slots__ = ("per_bucket", "total")

    def __init__(self) -> None:
        self.per_bucket = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.per_bucket[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bound >= seconds
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        buckets, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), self.per_bucket, strict=True):
            running += count
            buckets.append((floatToGoString(bound), running))
        return buckets


class Metrics(Collector):
    """The server's traffic counters, exported at scrape time with the repositories' state.

    The request path only appends one tuple to :attr:`pending`; :meth:`flush` folds them into
    the counters every :data:`FLUSH_EVERY` requests and before each scrape. Why: the middleware
    is on every request, and a cached page costs ~40-55 us of CPU in all. Updating
    ``prometheus_client``'s ``Counter`` / ``Histogram`` per request (a lock per update, a
    histogram two) added ~10 us to it; plain dicts updated per request ~5-6 us (cold caches
    between requests); this, with one ``send`` wrapper, ~4 us (benchmarks/README.md, "Metrics").
    No lock is needed: every update and the scrape run on the event loop's thread (the
    middleware, the async routes; waitress runs the app through a2wsgi's single loop too).

    The registry is the app's own (tests and several apps in one process never share series).
    """

    def __init__(self, state: ServerState) -> None:
        # (route class, repository, status, seconds, bytes sent or -1 when not a download)
        self.pending: list[tuple[str, str, int, float, int]] = []
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, _Latency] = {}
        self.uploads: dict[str, list[int]] = {}  # repository -> [count, bytes]
        self.downloads: dict[str, list[int]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.registry.register(RepositoryCollector(state))

    def flush(self) -> None:
        """Fold the pending requests into the counters (the list object stays: the middleware
        holds it)."""
        batch = self.pending[:]
        self.pending.clear()
        requests, latency = self.requests, self.latency
        for route, repository, status, seconds, sent in batch:
            key = (route, repository, status)
            requests[key] = requests.get(key, 0) + 1
            series = latency.get(route)
            if series is None:
                series = latency[route] = _Latency()
            series.observe(seconds)
            if sent >= 0:
                _add(self.downloads, repository, sent)

    def page_answered(self, repository: str, seconds: float) -> None:
        """A cached page the protocol's fast lane answered (``pywharf_core.http.fast_lane``):
        counted as the middleware counts a page it saw."""
        self.pending.append(("page", repository, 200, seconds, -1))
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()

    def uploaded(self, repository: str, size: int) -> None:
        """An upload stored a new file of ``size`` bytes in ``repository`` (a configured name)."""
        _add(self.uploads, repository, size)

    def collect(self) -> Iterable[Metric]:
        self.flush()
        requests = CounterMetricFamily("pywharf_http_requests",
                                       "HTTP requests answered, by route class, repository and status.",
                                       labels=["route", "repository", "status"])
        for (route, repository, status), count in sorted(self.requests.items()):
            requests.add_metric([route, repository, str(status)], count)
        latency = HistogramMetricFamily("pywharf_http_request_duration_seconds",
                                        "Time from request start to the last byte sent, by route class.",
                                        labels=["route"])
        for route, series in sorted(self.latency.items()):
            latency.add_metric([route], series.cumulative(), sum_value=series.total)
        families = [requests, latency]
        for name, what, table in (
            ("pywharf_uploads", "Uploads that stored a new file, and their bytes.", self.uploads),
            ("pywharf_downloads", "Distribution file downloads (GET answered 200, 206, or 302 to the store), "
                                  "and the bytes this server sent.", self.downloads),
        ):
            count = CounterMetricFamily(name, what, labels=["repository"])
            size = CounterMetricFamily(f"{name[:-1]}_bytes", what, labels=["repository"])
            for repository, (number, sent) in sorted(table.items()):
                count.add_metric([repository], number)
                size.add_metric([repository], sent)
            families += [count, size]
        return families

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _add(table: dict[str, list[int]], repository: str, size: int) -> None:
    totals = table.get(repository)
    if totals is None:
        totals = table[repository] = [0, 0]
    totals[0] += 1
    totals[1] += size


class RepositoryCollector(Collector):
    """Per-repository state, read at scrape time from the repositories being served."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        labels = ["repository"]
        files = GaugeMetricFamily("pywharf_index_files", "Files the repository's index lists.", labels=labels)
        projects = GaugeMetricFamily("pywharf_index_projects", "Projects the repository's index lists.",
                                     labels=labels)
        last = GaugeMetricFamily("pywharf_sync_last_success_timestamp_seconds",
                                 "Unix time of the last successful index sync (absent before the first).",
                                 labels=labels)
        age = GaugeMetricFamily("pywharf_sync_age_seconds",
                                "Seconds since the last successful index sync (absent before the first).",
                                labels=labels)
        failing = GaugeMetricFamily("pywharf_sync_failing", "1 while the last index sync attempt failed.",
                                    labels=labels)
        failures = CounterMetricFamily("pywharf_sync_failures", "Failed index syncs since the server started.",
                                       labels=labels)
        now = time.time()
        for name, repo in self.state.repos.items():
            snapshot = repo.snapshot
            files.add_metric([name], len(snapshot.files))
            projects.add_metric([name], len(snapshot.projects))
            if repo.last_sync is not None:
                last.add_metric([name], repo.last_sync)
                age.add_metric([name], max(0.0, now - repo.last_sync))
            failing.add_metric([name], 1 if repo.last_sync_error else 0)
            failures.add_metric([name], repo.sync_failures)
        return [files, projects, last, age, failing, failures]


class MetricsMiddleware:
    """Counts and times every HTTP request; the route class is read from the endpoint Starlette
    routed to (``scope["endpoint"]``, set on the shared scope by the router) once the response
    is sent.

    It also adds the security headers (``security_headers.secure_response_start``) and takes
    :class:`~pywharf_core.http.security_headers.SecurityHeadersMiddleware`'s place in the
    stack: a second wrapper of ``send`` measured ~2 us a request, half of what metrics cost
    (benchmarks/README.md, "Metrics")."""

    def __init__(self, app: ASGIApp, metrics: Metrics, route_classes: Mapping[object, str]) -> None:
        self.app = app
        self.metrics = metrics
        self.pending = metrics.pending
        self.route_classes = route_classes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self._observed(scope, receive, send)

    async def _observed(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception with nothing sent
        sent = 0  # body bytes of any response (a length per message: cheaper than asking which route first)
        start_headers: Iterable[tuple[bytes, bytes]] = ()

        def send_observed(message: Message) -> Awaitable[None]:
            nonlocal status, sent, start_headers
            kind = message["type"]
            if kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif kind == "http.response.start":
                status = message["status"]
                secure_response_start(scope, message)  # in place of SecurityHeadersMiddleware
                start_headers = message["headers"]
            elif kind == "http.response.pathsend":  # the ASGI server sends the file itself
                sent += _content_length(start_headers)
            return send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            # As little as possible: one append (see Metrics); this runs for every request.
            route = self.route_classes.get(scope.get("endpoint"), OTHER)
            download = -1  # not a download
            if route == "file":
                if scope["path"].endswith(".metadata"):
                    route = "metadata"
                elif status in _DOWNLOAD_STATUSES and scope["method"] == "GET":
                    download = sent
            pending = self.pending
            pending.append((route, scope.get(REPOSITORY_SCOPE_KEY, ""), status, time.perf_counter() - started,
                            download))
            if len(pending) >= FLUSH_EVERY:
                self.metrics.flush()


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name.lower() == b"content-length" and value.isdigit():
            return int(value)
    return 0


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: the Prometheus text format; with ``--metrics_token``, for its bearer only."""
    metrics: Metrics = request.app.state.metrics
    token = request.app.state.pywharf.settings.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret_matches(given.strip(), token):
            return PlainTextResponse("Authentication required: Authorization: Bearer <--metrics_token>.",
                                     status_code=401, headers={"WWW-Authenticate": 'Bearer realm="pywharf metrics"'})
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
