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

Several worker processes (``--workers N``, issue 17): each worker counts the requests it
answers, and a scrape reaches one of them; the counters must still be the whole server's, and
never go down. So in a worker (``ServerState.peers`` set), :class:`Metrics` also writes its
folded counters to a file of its own under ROOT (``pywharf_core.http.metric_tally``): from a
timer on the event loop every :data:`WRITE_EVERY` seconds while requests come in, and when it
answers a scrape. Not per batch of :data:`FLUSH_EVERY` requests: a write costs ~0.3-0.4 ms
(encoding, a file, a rename), ~1.5 us a request at one per batch, a third of what counting
costs, growing with traffic; the timer's one write a second is constant. The worker that
answers a scrape folds and writes its own counters, then adds every other worker's file (a
missing file: a worker that has counted nothing yet; a damaged one is left out, with a warning,
never a 500). A replacement worker starts from its slot's file. What a worker counted since its
last write (at most :data:`WRITE_EVERY` seconds) shows once it writes, or is lost if it dies.
Not ``prometheus_client``'s multiprocess mode: it needs ``PROMETHEUS_MULTIPROC_DIR`` set before
the library is imported, and its ``Counter`` objects updated per request (a lock, an mmap
write) instead of one append. The repository gauges are not summed: whichever worker answers
computes them at scrape time (every worker serves the same repositories and syncs the same
store). A single-process server writes no file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pywharf_core.http.auth import REPOSITORY_SCOPE_KEY
from pywharf_core.http.metric_tally import Latency, Tally, TallyFiles
from pywharf_core.http.security_headers import secure_response_start
from pywharf_core.service.server_state import ServerState
from pywharf_core.service.worker_peers import WorkerPeers
from pywharf_core.storage.shared_secrets import secret_matches

log = logging.getLogger(__name__)

# Download responses: served by this server (200, 206) or by the store it redirects to (302).
_DOWNLOAD_STATUSES = frozenset({200, 206, 302})
OTHER = "other"
# Requests recorded before they are folded into the counters (a scrape folds them first).
FLUSH_EVERY = 256
# Seconds between a worker's writes of its counters while requests come in (--workers N): how
# far behind a scrape may show another worker's traffic.
WRITE_EVERY = 1.0


class Metrics(Collector):
    """The server's traffic counters, exported at scrape time with the repositories' state.

    The request path only appends one tuple to :attr:`pending` and compares its length with
    :attr:`flush_at`; :meth:`recorded` folds them into the counters every :data:`FLUSH_EVERY`
    requests, and :meth:`collect` before each scrape. Why: the middleware is on every request,
    and a cached page costs ~40-55 us of CPU in all. Updating ``prometheus_client``'s
    ``Counter`` / ``Histogram`` per request (a lock per update, a histogram two) added ~10 us to
    it; plain dicts updated per request ~5-6 us (cold caches between requests); this, with one
    ``send`` wrapper, ~4 us (benchmarks/README.md, "Metrics"). No lock is needed: every update,
    the write timer and the scrape run on the event loop's thread (the middleware, the async
    routes; waitress runs the app through a2wsgi's single loop too).

    In a worker of ``--workers N`` the counters are also written to the worker's tally file
    (module docstring). The object is made before the workers are forked, so it finds out
    lazily, at its first :meth:`recorded` (``flush_at`` starts at 1 for that) or scrape, whether
    it runs in a worker, and which one.

    The registry is the app's own (tests and several apps in one process never share series).
    """

    def __init__(self, state: ServerState) -> None:
        self.state = state
        # (route class, repository, status, seconds, bytes sent or -1 when not a download)
        self.pending: list[tuple[str, str, int, float, int]] = []
        self.tally = Tally()
        # The request path calls recorded() once pending holds this many: FLUSH_EVERY, or 1 while
        # this process has not looked whether it is a worker, or a worker's write timer is off.
        self.flush_at = 1
        self._peers: WorkerPeers | None = None  # the state.peers _worker_files() last looked at
        self._files: TallyFiles | None = None  # a worker's tally files; None in a single process
        self._timer: asyncio.TimerHandle | None = None
        self._unwritten = 0  # folds and uploads since the worker last wrote its tally
        self._write_failing = False
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.registry.register(RepositoryCollector(state))

    def flush(self) -> None:
        """Fold the pending requests into the counters (the list object stays: the middleware
        holds it)."""
        if not self.pending:
            return
        batch = self.pending[:]
        self.pending.clear()
        self._unwritten += 1
        requests, latency, downloads = self.tally.requests, self.tally.latency, self.tally.downloads
        for route, repository, status, seconds, sent in batch:
            key = (route, repository, status)
            requests[key] = requests.get(key, 0) + 1
            series = latency.get(route)
            if series is None:
                series = latency[route] = Latency()
            series.observe(seconds)
            if sent >= 0:
                _add(downloads, repository, sent)

    def recorded(self) -> None:
        """:attr:`pending` reached :attr:`flush_at` (the request path's only call into here)."""
        if self.flush_at < FLUSH_EVERY:  # this process's first request, or a worker's first since idle
            self.flush_at = FLUSH_EVERY
            if self._worker_files() is not None:
                self._arm()
            if len(self.pending) < FLUSH_EVERY:
                return
        self.flush()
        if self._timer is None:  # a worker without an event loop (none is armed): written per batch
            self._write()

    def page_answered(self, repository: str, seconds: float) -> None:
        """A cached page the protocol's fast lane answered (``pywharf_core.http.fast_lane``):
        counted as the middleware counts a page it saw."""
        self.pending.append(("page", repository, 200, seconds, -1))
        if len(self.pending) >= self.flush_at:
            self.recorded()

    def uploaded(self, repository: str, size: int) -> None:
        """An upload stored a new file of ``size`` bytes in ``repository`` (a configured name)."""
        _add(self.tally.uploads, repository, size)
        self._unwritten += 1  # written with its request's count (that request arms the timer)

    def _worker_files(self) -> TallyFiles | None:
        """This worker's tally files, or None in a single process. The first call in a worker
        adds its slot's last tally: a replacement continues where the worker it replaces stopped."""
        peers = self.state.peers
        if peers is not self._peers:  # join_workers ran since the last look (in a fresh worker)
            self._peers = peers
            self._files = None
            if peers is not None and peers.slot >= 0:
                files = TallyFiles(self.state.settings.root, peers.count, peers.server)
                try:
                    earlier = files.read(peers.slot)
                except (OSError, ValueError) as exc:
                    log.warning("/metrics: worker %d's earlier counters are unreadable (%s): starting from zero",
                                peers.slot, exc)
                    earlier = None
                if earlier is not None:
                    self.tally.add(earlier)
                self._files = files
        return self._files

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop: written every FLUSH_EVERY requests and at scrapes only
            return
        self._timer = loop.call_later(WRITE_EVERY, self._tick)

    def _tick(self) -> None:
        """The write timer: write what came in since the last write, then again later; stop
        when nothing came (the next request arms it again)."""
        self._timer = None
        self.flush()
        if self._unwritten:
            self._write()
            self._arm()
        else:
            self.flush_at = 1

    def _write(self) -> None:
        files = self._worker_files()
        if files is None or not self._unwritten:
            return
        assert self._peers is not None
        try:
            files.write(self._peers.slot, self.tally)
        except (OSError, ValueError) as exc:
            if not self._write_failing:  # once, not every second: the timer tries again
                log.warning("/metrics: cannot write worker %d's counters to %s (other workers' scrapes "
                            "show its last written ones): %s", self._peers.slot, files.folder, exc)
            self._write_failing = True
            return
        if self._write_failing:
            log.info("/metrics: worker %d's counters are written again", self._peers.slot)
        self._write_failing = False
        self._unwritten = 0

    def server_tally(self) -> Tally:
        """The counters of the whole server: this process's, plus in a worker every other
        worker's last tally (read from ROOT: a few small files, at scrape time only)."""
        self.flush()
        files = self._worker_files()
        if files is None:
            return self.tally
        self._write()
        assert self._peers is not None
        total, unreadable = Tally(), []
        total.add(self.tally)
        for slot in range(files.count):
            if slot == self._peers.slot:
                continue
            try:
                other = files.read(slot)
            except (OSError, ValueError) as exc:
                unreadable.append(f"{slot} ({exc})")
                continue
            if other is not None:  # None: that worker has counted nothing yet
                total.add(other)
        if unreadable:
            log.warning("/metrics: left out the counters of worker %s: unreadable", ", ".join(unreadable))
        return total

    def collect(self) -> Iterable[Metric]:
        tally = self.server_tally()
        requests = CounterMetricFamily("pywharf_http_requests",
                                       "HTTP requests answered, by route class, repository and status.",
                                       labels=["route", "repository", "status"])
        for (route, repository, status), count in sorted(tally.requests.items()):
            requests.add_metric([route, repository, str(status)], count)
        latency = HistogramMetricFamily("pywharf_http_request_duration_seconds",
                                        "Time from request start to the last byte sent, by route class.",
                                        labels=["route"])
        for route, series in sorted(tally.latency.items()):
            latency.add_metric([route], series.cumulative(), sum_value=series.total)
        families = [requests, latency]
        for name, what, table in (
            ("pywharf_uploads", "Uploads that stored a new file, and their bytes.", tally.uploads),
            ("pywharf_downloads", "Distribution file downloads (GET answered 200, 206, or 302 to the store), "
                                  "and the bytes this server sent.", tally.downloads),
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
            pending, metrics = self.pending, self.metrics
            pending.append((route, scope.get(REPOSITORY_SCOPE_KEY, ""), status, time.perf_counter() - started,
                            download))
            if len(pending) >= metrics.flush_at:
                metrics.recorded()


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
