"""``GET /metrics`` of a server with ``--workers N`` (issue 17): whichever worker answers a
scrape, the counters are the whole server's (every worker's tally file summed), and they never go
down, not even when a worker dies and is replaced.

Unit tests drive :class:`Metrics` objects as two workers of one ROOT, exactly as the middleware
does (append, then ``recorded()`` at ``flush_at``); the end-to-end test runs a real two-worker
server, twine and many fresh connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from pathlib import Path

import pytest
import requests
from conftest import Server, client_env, fs_config, run, start_server, tool, wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_upload_rules import make_wheel

from pywharf_core.http import metrics as metrics_module
from pywharf_core.http.metric_tally import Tally, TallyClaim, TallyFiles, tally_folder
from pywharf_core.http.metrics import FLUSH_EVERY, Metrics
from pywharf_core.service.server_state import ServerSettings, ServerState
from pywharf_core.service.worker_peers import WorkerPeers

SERVER_WRITE_EVERY = metrics_module.WRITE_EVERY  # a real server's (the unit tests shorten it)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
PAGE = ("pywharf_http_requests_total", frozenset({("route", "page"), ("repository", "alpha"), ("status", "200")}))


def samples_of(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


RUN = "0123456789abcdef"  # the run id of the in-process workers below


def worker(root: Path, slot: int, count: int = 2) -> Metrics:
    """A Metrics object in worker ``slot`` of a ``count``-worker server on ``root``."""
    state = ServerState(ServerSettings(root=root, metrics=True))
    state.join_workers(WorkerPeers(count, RUN), slot)
    return Metrics(state)


def record(metrics: Metrics, times: int, *, seconds: float = 0.001, sent: int = -1, route: str = "page",
           repository: str = "alpha", status: int = 200) -> None:
    """What MetricsMiddleware does after each response."""
    for _ in range(times):
        metrics.pending.append((route, repository, status, seconds, sent))
        if len(metrics.pending) >= metrics.flush_at:
            metrics.recorded()


def scrape(metrics: Metrics) -> Samples:
    return samples_of(metrics.exposition().decode())


@pytest.fixture(autouse=True)
def fast_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "WRITE_EVERY", 0.05)


def test_two_workers_sum_counts_buckets_and_bytes(tmp_path: Path) -> None:
    async def scenario() -> None:
        first, second = worker(tmp_path, 0), worker(tmp_path, 1)
        record(first, FLUSH_EVERY + 44, seconds=0.0003)  # a full batch folded, more pending
        record(first, 2, route="file", sent=1000)  # downloads of 1,000 bytes
        record(second, 5, seconds=2.0)  # written by its timer only
        record(second, 1, route="file", sent=7)
        second.uploaded("alpha", 123)
        early = scrape(first)
        assert early[PAGE] == FLUSH_EVERY + 44, "the second worker has written nothing yet"
        await asyncio.sleep(0.3)  # the timers fire
        for answering in (first, second, first):
            samples = scrape(answering)
            assert samples[PAGE] == FLUSH_EVERY + 49
            histogram = "pywharf_http_request_duration_seconds"
            assert value(samples, f"{histogram}_bucket", route="page", le="0.0005") == FLUSH_EVERY + 44
            assert value(samples, f"{histogram}_bucket", route="page", le="1.0") == FLUSH_EVERY + 44
            assert value(samples, f"{histogram}_bucket", route="page", le="2.5") == FLUSH_EVERY + 49
            assert value(samples, f"{histogram}_bucket", route="page", le="+Inf") == FLUSH_EVERY + 49
            assert value(samples, f"{histogram}_count", route="file") == 3
            assert value(samples, f"{histogram}_sum", route="page") == pytest.approx((FLUSH_EVERY + 44) * 0.0003 + 10)
            assert value(samples, "pywharf_downloads_total", repository="alpha") == 3
            assert value(samples, "pywharf_download_bytes_total", repository="alpha") == 2007
            assert value(samples, "pywharf_uploads_total", repository="alpha") == 1
            assert value(samples, "pywharf_upload_bytes_total", repository="alpha") == 123
        # Idle: the timer stops, and the files are not rewritten.
        files = sorted(tally_folder(tmp_path, RUN).iterdir())
        assert [f.name for f in files] == ["0.json", "1.json"]
        written = [f.stat().st_mtime_ns for f in files]
        await asyncio.sleep(0.3)
        assert [f.stat().st_mtime_ns for f in files] == written
        record(second, 1, seconds=2.0)  # traffic again: the timer is armed again
        await asyncio.sleep(0.3)
        assert scrape(first)[PAGE] == FLUSH_EVERY + 50

    asyncio.run(scenario())


def test_a_replacement_worker_continues_from_its_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        dead, other = worker(tmp_path, 0), worker(tmp_path, 1)
        record(dead, 10)
        record(other, 4)
        await asyncio.sleep(0.3)
        assert scrape(other)[PAGE] == 14
        replacement = worker(tmp_path, 0)  # the same slot, a fresh process's counters
        assert scrape(replacement)[PAGE] == 14
        record(replacement, 3)
        await asyncio.sleep(0.3)
        assert scrape(other)[PAGE] == 17  # its file holds the dead worker's 10 and its own 3
        assert scrape(replacement)[PAGE] == 17

    asyncio.run(scenario())


def test_a_damaged_or_missing_file_is_left_out_with_a_warning(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    folder = tally_folder(tmp_path, RUN)
    folder.mkdir(parents=True)
    (folder / "1.json").write_bytes(b'{"format": 1, "requests": [["page", "alpha", 200, 5')  # cut short
    (folder / "2.json").write_text('{"format": 1, "requests": [["page", "alpha", 200, -5]], "latency": {}, '
                                   '"uploads": {}, "downloads": {}}')  # parses, but a negative count
    # slot 3: no file (a worker that has counted nothing yet)
    answering = worker(tmp_path, 0, count=4)
    record(answering, 6)
    with caplog.at_level(logging.WARNING):
        samples = scrape(answering)
    assert samples[PAGE] == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert re.findall(r"(?:worker |, )(\d+) \(", warnings[0]) == ["1", "2"], warnings[0]
    # A replacement whose own file is damaged starts from zero (with a warning), never fails.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        replacement = worker(tmp_path, 1, count=4)
        record(replacement, 2)
        assert scrape(replacement)[PAGE] == 8  # its 2, slot 0's 6 (written at its scrape)
    assert any("worker 1's earlier counters are unreadable" in r.getMessage() for r in caplog.records)
    assert Tally.decode((folder / "1.json").read_bytes()).requests[("page", "alpha", 200)] == 2  # repaired


def test_a_worker_that_cannot_write_warns_once_and_still_answers(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "cache").mkdir()
    tally_folder(tmp_path, RUN).parent.mkdir(parents=True)
    tally_folder(tmp_path, RUN).write_text("a file where the folder should be")

    async def scenario() -> None:
        answering = worker(tmp_path, 0)
        record(answering, 3)
        await asyncio.sleep(0.2)  # the timer tries
        record(answering, 2)
        await asyncio.sleep(0.2)  # and again
        assert scrape(answering)[PAGE] == 5  # and the scrape: 200, its own counts

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    failures = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(failures) == 1 and "worker 0's counters" in failures[0], failures


def test_a_single_process_writes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        single = Metrics(ServerState(ServerSettings(root=tmp_path, metrics=True)))
        record(single, FLUSH_EVERY * 2 + 3)
        await asyncio.sleep(0.3)
        assert scrape(single)[PAGE] == FLUSH_EVERY * 2 + 3

    asyncio.run(scenario())
    assert not (tmp_path / "cache").exists()


# End to end: a real server with two workers.

READ, WRITE = "read-secret-00", "write-secret"
LOCAL_PAGE = ("pywharf_http_requests_total", frozenset({("route", "page"), ("repository", "local"), ("status", "200")}))


def scrape_server(server: Server) -> Samples:
    response = requests.get(f"{server.base}/metrics", timeout=10)  # a fresh connection each time
    assert response.status_code == 200, response.text
    return samples_of(response.text)


def run_of(server: Server) -> str:
    """The server run's id: the name of the one lock file its supervisor holds."""
    (lock,) = (server.root / "cache" / "metrics").glob("*.lock")
    return lock.stem


def slot_pages(server: Server, slot: int) -> int:
    tally = TallyFiles(server.root, 2, run_of(server)).read(slot)
    return tally.requests.get(("page", "local", 200), 0) if tally else 0


def settled(server: Server, expected: int) -> Samples:
    """Scrapes once every worker has written (after its timer), all agreeing on ``expected`` pages."""
    time.sleep(SERVER_WRITE_EVERY + 0.5)
    scrapes = [scrape_server(server) for _ in range(8)]
    assert [s.get(LOCAL_PAGE, 0) for s in scrapes] == [expected] * 8, server.log()
    return scrapes[-1]


@pytest.mark.parametrize("server_kind", ["uvicorn", "waitress"])
def test_a_scrape_shows_every_worker_and_never_goes_down(tmp_path: Path, server_kind: str) -> None:
    root = tmp_path / "root"
    TallyClaim(root, "ended").release()  # a server that ran on this ROOT and is gone...
    stale = TallyFiles(root, 2, "ended")
    stale.folder.mkdir(parents=True)
    (stale.folder.parent / "ended.lock").touch()  # ...leaving its folder and lock file (killed)
    earlier = Tally()
    earlier.requests[("page", "local", 200)] = 10**6
    for slot in (0, 1):
        stale.write(slot, earlier)  # left by an earlier run of the server: never summed
    server = start_server(root, fs_config(), "--extra_index_url=", "--workers", "2", "--metrics",
                          f"--server={server_kind}")
    try:
        assert not stale.folder.exists()  # an ended server's tallies: removed at start
        dist = make_wheel(tmp_path, "sumlib", "1.0")
        run([tool("twine"), "upload", "--repository-url", f"{server.base}/repos/local/simple/",
             "--disable-progress-bar", "--non-interactive", str(dist.path)],
            {**client_env(tmp_path), "TWINE_USERNAME": "local", "TWINE_PASSWORD": WRITE}, timeout=120)
        made = 0
        for _ in range(8):  # fresh connections, until both workers have counted pages
            for path in ("/simple/", "/simple/sumlib/"):  # the app's page; one uvicorn's fast lane answers
                for _ in range(25):
                    assert requests.get(f"{server.base}{path}", auth=("local", READ), timeout=10).status_code == 200
                    made += 1
            time.sleep(SERVER_WRITE_EVERY + 0.3)
            if slot_pages(server, 0) and slot_pages(server, 1):
                break
        assert slot_pages(server, 0) and slot_pages(server, 1), "the kernel gave every connection to one worker"
        samples = settled(server, made)
        assert value(samples, "pywharf_uploads_total", repository="local") == 1
        assert value(samples, "pywharf_upload_bytes_total", repository="local") == len(dist.data)
        assert value(samples, "pywharf_http_request_duration_seconds_count", route="page") == made

        # The busier worker dies; its replacement starts from its file: nothing goes down.
        victim_slot = 0 if slot_pages(server, 0) >= slot_pages(server, 1) else 1
        pids = re.findall(r"serving with 2 worker processes: (\d+), (\d+)", server.log())[-1]
        os.kill(int(pids[victim_slot]), signal.SIGKILL)
        wait_for(lambda: f"worker {victim_slot} replaced" in server.log(), 15, server.log)
        settled(server, made)
        before = slot_pages(server, victim_slot)
        more = 0
        while slot_pages(server, victim_slot) == before:  # until the replacement has written pages of its own
            assert more < 400, "the replacement never answered"
            for _ in range(20):
                assert requests.get(f"{server.base}/simple/", auth=("local", READ), timeout=10).status_code == 200
                more += 1
            time.sleep(SERVER_WRITE_EVERY + 0.3)
        settled(server, made + more)
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_a_starting_server_clears_the_tallies_of_ended_runs_only(tmp_path: Path) -> None:
    """Several servers may share a ROOT (containers whose supervisors are all pid 1, too): each
    run has a random id and holds a lock on its folder; a starting one removes only the folders
    whose lock nobody holds, and its own when it stops."""
    tally = Tally()
    tally.requests[("page", "local", 200)] = 5
    live = TallyClaim(tmp_path, "live")  # another server still running on this ROOT
    TallyFiles(tmp_path, 2, "live").write(0, tally)
    ended = TallyFiles(tmp_path, 2, "ended")
    ended.write(0, tally)
    (ended.folder.parent / "ended.lock").touch()  # its server was killed: the lock file stayed, unheld
    TallyFiles(tmp_path, 2, "12345").write(0, tally)  # no lock file at all (an older pywharf)
    starting = TallyClaim(tmp_path, "starting")
    try:
        assert TallyFiles(tmp_path, 2, "ended").read(0) is None and not (tmp_path / "cache/metrics/ended.lock").exists()
        assert TallyFiles(tmp_path, 2, "12345").read(0) is None
        kept = TallyFiles(tmp_path, 2, "live").read(0)
        assert kept is not None and kept.requests == tally.requests
        TallyFiles(tmp_path, 2, "starting").write(1, tally)
    finally:
        starting.release()
        live.release()
    assert sorted(p.name for p in (tmp_path / "cache" / "metrics").iterdir()) == []
