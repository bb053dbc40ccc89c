"""Regression tests for the failures issue 12 found: acknowledged uploads lost or hidden, names
that could not be stored, damaged indexes applied silently, storage errors as bare 500s,
readiness lost on restart, abandoned staging files, a stalled store hanging requests.

In-process (starlette TestClient against the real app) over the file_system and memory
backends, with storage adapters wrapped where a fault must happen at an exact step.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w
from starlette.testclient import TestClient
from test_upload_rules import Dist, encode_multipart, make_wheel, upload_fields

from pywharf_backends.memory import MemoryBackend, MemoryConfig
from pywharf_core.http.app import create_app
from pywharf_core.index.formats import dump_index
from pywharf_core.model.errors import BackendUnavailable
from pywharf_core.service.backends import rebuild_remote_index
from pywharf_core.service.package_store import INDEX_KEY, PackageStore
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup
from pywharf_core.storage.api import BlobInfo
from pywharf_core.storage.backend import BackendContext
from pywharf_core.storage.config import ConfigSource, build_config

REPO, READ, WRITE = "local", "read-secret-00", "write-secret"
JSON_V1 = "application/vnd.pypi.simple.v1+json"


def config_text(type_: str = "file_system", **table: Any) -> str:
    return tomli_w.dumps({REPO: {"type": type_, "read_secret": READ, "write_secret": WRITE,
                                 "sync_index_interval": 3600, **table}})


class Server:
    """One in-process server (the sync thread's step is :meth:`sync`)."""

    def __init__(self, root: Path, config: str) -> None:
        settings = ServerSettings(root=root, extra_index_url="")
        self.state = ServerState(settings)
        self.state.repos = build_repos(load_setup(config, None, is_text=True), settings)
        self.state.configured = True
        self.client = TestClient(create_app(self.state), raise_server_exceptions=False)

    @property
    def repo(self) -> Any:
        return self.state.repos[REPO]

    def sync(self) -> None:
        self.repo.sync_once()

    def upload(self, dist: Dist, filename: str | None = None, override: dict[str, str] | None = None) -> httpx.Response:
        body, content_type = encode_multipart(upload_fields(dist, override), filename or dist.filename, dist.data)
        return self.client.post("/simple/", content=body, headers={"Content-Type": content_type},
                                auth=(REPO, WRITE))

    def files(self, project: str) -> list[str]:
        page = self.client.get(f"/simple/{project}/", auth=(REPO, READ), headers={"Accept": JSON_V1})
        return [] if page.status_code == 404 else sorted(f["filename"] for f in page.json()["files"])


def admin_readyz(server: Server) -> httpx.Response:
    """/readyz as an administrator: only they are shown the warnings (issue 13)."""
    token = "initialize-token-123"
    server.state.settings = dataclasses.replace(server.state.settings, initialize_token=token)
    return server.client.get("/readyz", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def memory_store_id(request: pytest.FixtureRequest) -> str:
    return f"regress-{request.node.name}-{time.monotonic_ns()}"


def test_update_index_from_a_stale_listing_cannot_hide_an_acknowledged_upload(tmp_path: Path,
                                                                              memory_store_id: str) -> None:
    """An upload acknowledged while ``update_index`` lists storage (so the listing misses it)
    stays listed everywhere: its log entry is after the position the new base covers."""
    config = config_text("memory", store_id=memory_store_id)
    a = Server(tmp_path / "a", config)
    early = make_wheel(tmp_path / "d", "early", "1.0")
    assert a.upload(early).status_code == 200
    late = make_wheel(tmp_path / "d", "late", "1.0")

    table = {"type": "memory", "read_secret": READ, "write_secret": WRITE, "store_id": memory_store_id}
    storage = MemoryBackend(build_config(MemoryConfig, REPO, table, ConfigSource("test")),
                            BackendContext(root=tmp_path / "cli"))
    real_list = storage.list_blobs

    def listing_then_upload() -> Iterator[BlobInfo]:
        listed = list(real_list())  # the listing is taken...
        assert a.upload(late).status_code == 200  # ...then an upload is acknowledged
        yield from listed

    storage.list_blobs = listing_then_upload  # type: ignore[method-assign]
    assert rebuild_remote_index(PackageStore(storage)) == 1  # the base lists only "early"

    fresh = Server(tmp_path / "fresh", config)
    fresh.sync()
    assert fresh.files("early") == [early.filename]
    assert fresh.files("late") == [late.filename], "an acknowledged upload is hidden by update_index"
    a.sync()
    assert a.files("late") == [late.filename]


def test_a_filename_too_long_to_store_is_400_before_anything_is_written(tmp_path: Path) -> None:
    """Sidecars are named ``<filename>.toml`` / ``.metadata``: a filename that leaves no room for
    them was stored but never indexed (500 forever, update_index crashing). Now: 400, nothing kept."""
    server = Server(tmp_path / "root", config_text())
    name = "a" * 230
    dist = make_wheel(tmp_path / "d", "short", "1.0")
    filename = f"{name}-1.0-py3-none-any.whl"
    assert 246 < len(filename) <= 255  # a name the file system takes, its sidecar name it does not
    response = server.upload(dist, filename=filename, override={"name": name})
    assert response.status_code == 400, response.text
    assert "Invalid distribution filename" in response.text
    storage = tmp_path / "root" / "cache" / REPO / "storage"
    assert sorted(p.name for p in storage.iterdir() if p.name != ".pywharf") == []
    assert rebuild_remote_index(server.repo.backend) == 0


def test_a_full_disk_is_a_503_naming_the_cause_and_leaves_nothing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    server = Server(tmp_path / "root", config_text())
    dist = make_wheel(tmp_path / "d", "full", "1.0")
    real_link = os.link

    def no_space(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        if str(target).endswith(dist.filename):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_link(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "link", no_space)
    response = server.upload(dist)
    assert response.status_code == 503, response.text
    assert "No space left on device" in response.text
    monkeypatch.undo()
    storage = tmp_path / "root" / "cache" / REPO / "storage"
    assert [p.name for p in storage.iterdir() if not p.name.startswith(".")] == []
    assert server.upload(dist).status_code == 200  # the claim was released: the retry succeeds


def test_an_upload_whose_log_entry_cannot_be_written_is_a_503_and_its_retry_completes_it(
        tmp_path: Path, memory_store_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log entry is part of the acknowledgement: when it cannot be written the upload is a
    503 and no index lists the file; the complete file stays stored (deleting it could lose a
    200 another server gave for the same bytes meanwhile) and the client's retry lists it."""
    server = Server(tmp_path / "root", config_text("memory", store_id=memory_store_id))
    server.sync()  # an index is loaded: an unknown name is a 404, not "index not loaded"
    store = server.repo.backend
    real_write = store.storage.write_document

    def failing_log(key: str, data: bytes, expected: str | None) -> str:
        if key.startswith(".pywharf/log/"):
            raise BackendUnavailable("store went away")
        return real_write(key, data, expected)

    monkeypatch.setattr(store.storage, "write_document", failing_log)
    dist = make_wheel(tmp_path / "d", "retried", "1.0")
    response = server.upload(dist)
    assert response.status_code == 503, response.text
    assert "retry the upload" in response.text
    assert server.files("retried") == []
    fresh = Server(tmp_path / "fresh", config_text("memory", store_id=memory_store_id))
    fresh.sync()
    assert fresh.files("retried") == []
    monkeypatch.undo()
    assert server.upload(dist).status_code == 200
    fresh.sync()
    assert server.files("retried") == fresh.files("retried") == [dist.filename]


def test_an_identical_upload_acknowledged_elsewhere_survives_the_first_uploads_failure(
        tmp_path: Path, memory_store_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Server A stores a file and fails to log it; meanwhile B receives the same bytes (IDENTICAL)
    and answers 200. B's acknowledgement must hold: the file stays downloadable everywhere."""
    config = config_text("memory", store_id=memory_store_id)
    a, b = Server(tmp_path / "a", config), Server(tmp_path / "b", config)
    dist = make_wheel(tmp_path / "d", "twice", "1.0")
    store = a.repo.backend
    real_announce = store.announce

    def b_uploads_then_a_fails(record: Any) -> None:
        assert b.upload(dist).status_code == 200  # the same bytes through B, before A logs
        raise BackendUnavailable("store went away")

    monkeypatch.setattr(store, "announce", b_uploads_then_a_fails)
    assert a.upload(dist).status_code == 503
    monkeypatch.setattr(store, "announce", real_announce)
    fresh = Server(tmp_path / "fresh", config)
    fresh.sync()
    assert fresh.files("twice") == [dist.filename]
    page = fresh.client.get(f"/simple/twice/{dist.filename}", auth=(REPO, READ))
    assert page.status_code == 200 and page.content == dist.data


def test_a_claim_whose_upload_is_in_progress_is_not_taken_over(tmp_path: Path, memory_store_id: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A claimed its spelling and has not stored the file yet when B arrives with another
    spelling: B is refused (taking the claim over let both spellings be stored)."""
    config = config_text("memory", store_id=memory_store_id)
    a, b = Server(tmp_path / "a", config), Server(tmp_path / "b", config)
    first = make_wheel(tmp_path / "d", "Claimed", "1.0")
    other = make_wheel(tmp_path / "d2", "claimed", "1.0.0")
    storage = a.repo.backend.storage
    real_put = storage.put_blob
    answers: list[int] = []

    def b_arrives_first(key: str, *args: Any) -> bool:
        if key == first.filename and not answers:
            answers.append(b.upload(other).status_code)
        return real_put(key, *args)

    monkeypatch.setattr(storage, "put_blob", b_arrives_first)
    assert a.upload(first).status_code == 200
    assert answers == [409]
    fresh = Server(tmp_path / "fresh", config)
    fresh.sync()
    assert fresh.files("claimed") == [first.filename]


def test_a_yank_and_unyank_read_in_one_sync_end_unyanked(tmp_path: Path, memory_store_id: str) -> None:
    """Several log entries of one file in one batch: the last one is the state (a yank then an
    unyank was applied as 'yanked' because each entry was compared with the state before)."""
    config = config_text("memory", store_id=memory_store_id)
    a, b = Server(tmp_path / "a", config), Server(tmp_path / "b", config)
    dist = make_wheel(tmp_path / "d", "flip", "1.0")
    assert a.upload(dist).status_code == 200
    b.sync()
    assert a.client.post(f"/yank/flip/{dist.filename}", data={"reason": "x"}, auth=(REPO, WRITE)).status_code == 200
    assert a.client.post(f"/unyank/flip/{dist.filename}", auth=(REPO, WRITE)).status_code == 200
    b.sync()
    assert b.repo.snapshot.files[dist.filename].yanked is False
    restarted = Server(tmp_path / "b", config)
    restarted.sync()
    assert restarted.repo.snapshot.files[dist.filename].yanked is False


@pytest.mark.parametrize("damage", ["empty", "unrelated", "truncated"])
def test_an_implausibly_shrunk_remote_index_is_refused(tmp_path: Path, damage: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A base replaced by an empty or unrelated document, or one listing far fewer files than
    storage holds, is refused with an ERROR naming it; the last good index keeps being served
    and /readyz stays 200 with a warning."""
    server = Server(tmp_path / "root", config_text())
    dists = [make_wheel(tmp_path / "d", f"keep{i}", "1.0") for i in range(8)]
    for dist in dists:
        assert server.upload(dist).status_code == 200
    storage = tmp_path / "root" / "cache" / REPO / "storage"
    # Files stored before the index log existed (pywharf 0.3): only the base lists them. (Files
    # with log entries survive a damaged base anyway: the log is read from its start again.)
    shutil.rmtree(storage / ".pywharf" / "log")
    assert rebuild_remote_index(server.repo.backend) == 8
    server.sync()
    index = storage / "index.toml"
    good = index.read_bytes()
    damaged = {"empty": b"", "unrelated": b'[tool.poetry]\nname = "x"\n',
               "truncated": good[: good.index(b'[files."keep2')]}[damage]
    index.write_bytes(damaged)
    caplog.set_level(logging.ERROR)
    from pywharf_core.service.sync import RepoSyncThread

    RepoSyncThread(server.repo).sync_round()
    assert [f for d in dists for f in server.files(d.spec.name)] == [d.filename for d in dists]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(str(index) in e and "refused" in e for e in errors), errors
    ready = admin_readyz(server)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert "serving the last good index" in ready.json()["warnings"][0]


def test_an_emptied_base_hides_nothing_the_log_still_has(tmp_path: Path) -> None:
    """Every upload has an index log entry: an emptied base reads the log from its start, so
    nothing is hidden and nothing needs refusing."""
    server = Server(tmp_path / "root", config_text())
    dists = [make_wheel(tmp_path / "d", f"logged{i}", "1.0") for i in range(8)]
    for dist in dists:
        assert server.upload(dist).status_code == 200
    rebuild_remote_index(server.repo.backend)
    server.sync()
    (tmp_path / "root" / "cache" / REPO / "storage" / "index.toml").write_bytes(b"")
    server.sync()
    fresh = Server(tmp_path / "fresh", config_text(storage_path=str(tmp_path / "root" / "cache" / REPO / "storage")))
    fresh.sync()
    for each in (server, fresh):
        assert [f for d in dists for f in each.files(d.spec.name)] == [d.filename for d in dists]


def test_a_shrink_storage_agrees_with_is_applied(tmp_path: Path) -> None:
    """Files really deleted from storage (then update_index) leave the index: not refused."""
    server = Server(tmp_path / "root", config_text())
    dists = [make_wheel(tmp_path / "d", f"gone{i}", "1.0") for i in range(8)]
    for dist in dists:
        assert server.upload(dist).status_code == 200
    rebuild_remote_index(server.repo.backend)
    server.sync()
    storage = tmp_path / "root" / "cache" / REPO / "storage"
    for dist in dists[2:]:
        (storage / dist.filename).unlink()
    rebuild_remote_index(server.repo.backend)
    server.sync()
    assert server.files("gone0") == [dists[0].filename]
    assert server.files("gone5") == []


def test_readyz_after_restart_serves_the_last_good_index_as_ready(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted server whose store is unreachable serves its copy under ROOT: ready, with a
    warning (it stayed 503 and a readiness-gated load balancer dropped it)."""
    first = Server(tmp_path / "root", config_text())
    assert first.upload(make_wheel(tmp_path / "d", "kept", "1.0")).status_code == 200
    rebuild_remote_index(first.repo.backend)
    first.sync()
    restarted = Server(tmp_path / "root", config_text())
    assert admin_readyz(restarted).json()["warnings"] == [
        f"{REPO}: serving the last good index from ROOT; not synced since start"]
    assert restarted.client.get("/readyz").status_code == 200

    def down(*args: Any, **kwargs: Any) -> None:
        raise BackendUnavailable("store unreachable")

    monkeypatch.setattr(restarted.repo.backend, "fetch_remote_index", down)
    from pywharf_core.service.sync import RepoSyncThread

    RepoSyncThread(restarted.repo).sync_round()
    ready = admin_readyz(restarted)
    assert ready.status_code == 200, ready.text
    assert ready.json()["warnings"] == [f"{REPO}: serving the last good index; sync failing (see the server log)"]
    assert "unreachable" not in ready.text  # anonymous readers learn nothing about the storage
    assert restarted.files("kept") == ["kept-1.0-py3-none-any.whl"]
    empty = Server(tmp_path / "new-root", config_text(storage_path=str(tmp_path / "elsewhere")))
    assert empty.client.get("/readyz").status_code == 503  # nothing to serve yet: not ready


def test_damaged_local_copies_are_reported_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A local index.json of ``{}`` or a zero-byte journal is logged, and the next sync (base +
    log) serves everything again: the local copies are caches, the store is the truth."""
    first = Server(tmp_path / "root", config_text())
    dists = [make_wheel(tmp_path / "d", f"local{i}", "1.0") for i in range(3)]
    for dist in dists[:2]:
        assert first.upload(dist).status_code == 200
    rebuild_remote_index(first.repo.backend)
    first.sync()
    assert first.upload(dists[2]).status_code == 200  # in the log and the journal, not the base
    folder = tmp_path / "root" / "cache" / REPO
    (folder / "index.json").write_text("{}")
    (folder / "uploads.jsonl").write_bytes(b"")
    caplog.set_level(logging.ERROR)
    restarted = Server(tmp_path / "root", config_text())
    assert any("index.json" in r.getMessage() for r in caplog.records), caplog.text
    restarted.sync()
    assert [f for d in dists for f in restarted.files(d.spec.name)] == [d.filename for d in dists]


def test_abandoned_staging_files_are_removed_at_start(tmp_path: Path) -> None:
    """A server killed mid-upload leaves ``.upload-*.part`` in the staging folder: removed once
    old (never while an upload may still be writing it)."""
    storage = tmp_path / "root" / "cache" / REPO / "storage"
    storage.mkdir(parents=True)
    old, recent = storage / ".upload-old.part", storage / ".upload-recent.part"
    old.write_bytes(b"x" * 100)
    recent.write_bytes(b"y")
    week_ago = time.time() - 7 * 86400
    os.utime(old, (week_ago, week_ago))
    Server(tmp_path / "root", config_text())
    assert not old.exists()
    assert recent.exists()


def test_a_frozen_s3_endpoint_fails_within_the_configured_timeouts(tmp_path: Path) -> None:
    """A store that accepts connections and never answers: each request gives up after
    ``read_timeout`` x ``max_attempts`` (it used to hang 40-60 s), as a 503-style error naming it."""
    pytest.importorskip("boto3")
    from pywharf_backends.s3 import S3Backend, S3Config

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # and never answer
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        table = {"type": "s3", "read_secret": READ, "write_secret": WRITE, "bucket": "frozen",
                 "endpoint_url": f"http://127.0.0.1:{listener.getsockname()[1]}", "region_name": "us-east-1",
                 "read_timeout": 1, "connect_timeout": 1, "max_attempts": 2}
        backend = S3Backend(build_config(S3Config, REPO, table, ConfigSource("test")),
                            BackendContext(root=tmp_path, admin_secret="AK:SK"))
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="S3 read"):
            backend.read_document(INDEX_KEY)
        elapsed = time.monotonic() - started
        assert elapsed < 8, f"took {elapsed:.1f} s with read_timeout=1, max_attempts=2"
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in accepted:
            conn.close()


def test_an_old_base_document_is_still_read(tmp_path: Path) -> None:
    """A base without ``log_position`` (written before the log existed) reads as position 0."""
    server = Server(tmp_path / "root", config_text())
    dist = make_wheel(tmp_path / "d", "old", "1.0")
    assert server.upload(dist).status_code == 200
    record = server.repo.snapshot.files[dist.filename]
    storage = tmp_path / "root" / "cache" / REPO / "storage"
    (storage / "index.toml").write_bytes(dump_index([record]))
    fresh = Server(tmp_path / "fresh", config_text(storage_path=str(storage)))
    fresh.sync()
    assert fresh.files("old") == [dist.filename]


def test_update_index_claims_the_identity_of_files_stored_before_claims(tmp_path: Path) -> None:
    """A store filled by an older pywharf (or by hand) has no identity claims: update_index
    writes them, so a second server that never listed the file still refuses a respelling."""
    storage = tmp_path / "storage"
    first = Server(tmp_path / "a", config_text(storage_path=str(storage)))
    dist = make_wheel(tmp_path / "d", "Legacy", "1.0")
    assert first.upload(dist).status_code == 200
    for claim in (storage / ".pywharf" / "identity").iterdir():
        claim.unlink()  # as an older pywharf left it
    rebuild_remote_index(first.repo.backend)
    assert len(list((storage / ".pywharf" / "identity").iterdir())) == 1
    second = Server(tmp_path / "b", config_text(storage_path=str(storage)))  # never synced: lists nothing
    respelled = make_wheel(tmp_path / "d2", "legacy", "1.0.0")
    refused = second.upload(respelled)
    assert refused.status_code == 409, refused.text
    assert dist.filename in refused.text


def test_a_restart_reads_only_the_log_entries_its_journal_lacks(tmp_path: Path, memory_store_id: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal records how far the index log was applied: a restarted server reads one
    probe of the log, not every entry since the last compaction (on S3 that was a GET each);
    with a damaged journal it re-reads from the base's position, losing nothing."""
    config = config_text("memory", store_id=memory_store_id)
    first = Server(tmp_path / "root", config)
    dists = [make_wheel(tmp_path / "d", f"restart{i}", "1.0") for i in range(20)]
    for dist in dists:
        assert first.upload(dist).status_code == 200
    first.sync()

    def count_log_reads(server: Server) -> int:
        reads: list[str] = []
        storage = server.repo.backend.storage
        real = storage.read_document
        monkeypatch.setattr(storage, "read_document", lambda key: reads.append(key) or real(key))
        server.sync()
        monkeypatch.undo()
        return sum(key.startswith(".pywharf/log/") for key in reads)

    restarted = Server(tmp_path / "root", config)
    assert count_log_reads(restarted) == 1
    assert restarted.files("restart7") == [dists[7].filename]
    journal = tmp_path / "root" / "cache" / REPO / "uploads.jsonl"
    journal.write_bytes(journal.read_bytes()[:-7])  # torn: the position line cannot be trusted
    damaged = Server(tmp_path / "root", config)
    assert count_log_reads(damaged) == 21
    assert [f for d in dists for f in damaged.files(d.spec.name)] == [d.filename for d in dists]
