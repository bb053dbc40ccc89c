"""Regression tests, one per known defect of the original pywharf 0.2.3.

Each test is named after the defect and its docstring quotes it. Most run against a real
``pywharf server`` process; the ones about what happens *inside* a request (index parsing,
internal errors) drive the Starlette app in-process with ``starlette.testclient``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import requests
from conftest import Server, free_port, fs_config, journal_entries
from starlette.testclient import TestClient
from test_upload_rules import (
    READ,
    REPO_ROOT,
    WRITE,
    Dist,
    basic_header,
    digests,
    encode_multipart,
    listing,
    make_wheel,
    post_upload,
    storage_of,
    temp_leftovers,
    tree,
    upload,
    upload_fields,
    wait_synced,
)

import pywharf_core
import pywharf_core.http.page_cache
import pywharf_core.index.formats
import pywharf_core.index.local
import pywharf_core.service.repository
from pywharf_core.http.app import create_app
from pywharf_core.index.local import LocalIndexStore
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (from /proc/<pid>/task/*/children)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return kids


def _in_process_app(root: Path) -> tuple[TestClient, ServerState]:
    """The app a server would run, without a socket and without the sync thread (so every
    index parse during the test comes from request handling)."""
    settings = ServerSettings(root=root, extra_index_url="")
    state = ServerState(settings)
    state.repos = build_repos(load_setup(fs_config(), None, is_text=True), settings)
    return TestClient(create_app(state), raise_server_exceptions=False), state


def _tc_upload(client: TestClient, dist: Dist, override: dict | None = None) -> httpx.Response:
    body, content_type = encode_multipart(upload_fields(dist, override), dist.filename, dist.data)
    return client.post("/simple/", content=body, headers={"Content-Type": content_type}, auth=WRITE)


def test_defect_1_not_one_process_and_no_clean_sigterm_stop(fs_server: Server) -> None:
    """Known defect (0.2.3 broke this): "one process, no redis, stops cleanly on SIGTERM".

    Now: one process (no child processes: no redis, no worker pool), and SIGTERM ends it with
    exit code 0 within 10 s, as ``pywharf_core.http.serve.run`` documents.
    """
    pid = fs_server.proc.pid
    assert requests.get(f"{fs_server.base}/simple/", auth=READ, timeout=10).status_code == 200
    assert _children(pid) == [], subprocess.run(["ps", "--ppid", str(pid), "-o", "pid,cmd"],
                                                capture_output=True, text=True).stdout
    started = time.monotonic()
    fs_server.proc.send_signal(signal.SIGTERM)
    try:
        code = fs_server.proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"server still running 10 s after SIGTERM:\n{fs_server.log()}")
    assert code == 0, (
        f"exit code {code} after SIGTERM ({time.monotonic() - started:.2f} s), expected 0:\n{fs_server.log()}"
    )
    assert "Traceback" not in fs_server.log()


def test_defect_2_upload_filename_with_dotdot_written_outside_storage(fs_server: Server,
                                                                     tmp_path: Path) -> None:
    """Known defect: "``../../x-1.0-py3-none-any.whl`` was written outside storage".

    Now: 400, and no file appears anywhere under the server's folder or the test's tmp dir.
    """
    wait_synced(fs_server)
    dist = make_wheel(tmp_path / "dists", name="x")
    before = tree(tmp_path)
    response = upload(fs_server, dist, filename="../../x-1.0-py3-none-any.whl")
    assert response.status_code == 400, response.text
    assert tree(tmp_path) == before, tree(tmp_path) ^ before
    assert not (fs_server.root / "cache" / "x-1.0-py3-none-any.whl").exists()
    assert not (storage_of(fs_server) / "x-1.0-py3-none-any.whl").exists()


def test_defect_3_client_sent_sha256_trusted_and_published(fs_server: Server, tmp_path: Path) -> None:
    """Known defect: "a client-sent sha256 was trusted and published" (in the ``#sha256=`` links).

    Now: a ``sha256_digest`` of other bytes is 400 (even with a correct md5); with no digest at
    all the page shows the sha256 the server computed from the bytes it received.
    """
    dist = make_wheel(tmp_path / "dists")
    lie = hashlib.sha256(b"not the file").hexdigest()
    response = post_upload(fs_server, upload_fields(dist, {"sha256_digest": lie}), dist.filename, dist.data)
    assert response.status_code == 400, response.text
    no_sha = upload_fields(dist, {"sha256_digest": lie, "blake2_256_digest": None})
    response = post_upload(fs_server, no_sha, dist.filename, dist.data)
    assert response.status_code == 400, "a wrong sha256 beside a correct md5 was accepted"
    assert not (storage_of(fs_server) / dist.filename).exists()

    response = upload(fs_server, dist, with_digests=False)
    assert response.status_code == 200, response.text
    page = requests.get(f"{fs_server.base}/simple/demo/", auth=READ, timeout=10).text
    assert re.findall(r"#sha256=([0-9a-f]+)", page) == [hashlib.sha256(dist.data).hexdigest()], page


def test_defect_4_max_file_bytes_never_enforced(server_factory, tmp_path: Path) -> None:
    """Known defect: "``max_file_bytes`` never enforced".

    Now: an upload one byte over the limit is 413 and nothing is stored.
    """
    dist = make_wheel(tmp_path / "dists", extra_bytes=os.urandom(5000))
    limit = len(dist.data) - 1
    server = server_factory(fs_config(max_file_bytes=limit), "--extra_index_url=")
    wait_synced(server)
    before = listing(storage_of(server))
    response = upload(server, dist)
    assert response.status_code == 413, response.text
    assert listing(storage_of(server)) == before
    page = requests.get(f"{server.base}/simple/demo/", auth=READ, timeout=10, allow_redirects=False)
    assert page.status_code == 404


def test_defect_5_name_not_matching_filename_accepted(fs_server: Server, tmp_path: Path) -> None:
    """Known defect: "a ``name`` not matching the filename was accepted".

    Now: 400, the file is not stored and neither project lists it.
    """
    dist = make_wheel(tmp_path / "dists", name="demo")
    response = upload(fs_server, dist, override={"name": "victim"})
    assert response.status_code == 400, response.text
    assert not (storage_of(fs_server) / dist.filename).exists()
    for project in ("demo", "victim"):
        page = requests.get(f"{fs_server.base}/simple/{project}/", auth=READ, timeout=10,
                            allow_redirects=False)
        assert page.status_code == 404, (project, page.status_code)


def test_defect_6_multi_valued_fields_kept_only_first_value(fs_server: Server, tmp_path: Path) -> None:
    """Known defect: "multi-valued fields (classifiers, requires_dist, project_urls) lost all but their
    first value".

    Now: the journal (``uploads.jsonl``) and the sidecar (``.pywharf/<file>.toml``) keep every
    value, as lists, in upload order.
    """
    classifiers = ["Programming Language :: Python :: 3", "License :: OSI Approved :: MIT License",
                   "Operating System :: OS Independent"]
    requires_dist = ["requests>=2", 'tomli>=2; python_version < "3.11"']
    project_urls = ["Homepage, https://example.org", "Source, https://example.org/src"]
    dist = make_wheel(tmp_path / "dists", classifiers=classifiers, requires_dist=requires_dist,
                      project_urls=project_urls)
    response = upload(fs_server, dist)
    assert response.status_code == 200, response.text

    meta = journal_entries(fs_server.root / "cache" / "local")[dist.filename]["meta"]
    sidecar = tomllib.loads((storage_of(fs_server) / ".pywharf" / f"{dist.filename}.toml").read_text())
    for where, table in (("uploads.jsonl", meta), ("sidecar", sidecar)):
        assert table.get("classifiers") == classifiers, (where, table)
        assert table.get("requires_dist") == requires_dist, (where, table)
        assert table.get("project_urls") == project_urls, (where, table)
    # A single classifier is still a list, so readers need not guess.
    single = make_wheel(tmp_path / "dists", name="single", classifiers=["Framework :: Pytest"])
    assert upload(fs_server, single).status_code == 200
    single_sidecar = tomllib.loads((storage_of(fs_server) / ".pywharf" / f"{single.filename}.toml").read_text())
    assert single_sidecar["classifiers"] == ["Framework :: Pytest"]


def test_defect_7_every_request_reparsed_the_whole_index(tmp_path: Path, monkeypatch) -> None:
    """Known defect: "every request re-parsed the whole index".

    Now: pages are served from the in-memory snapshot: after an upload, 50 page requests (and
    downloads and the root page) parse no TOML at all, and the page is rendered once.
    """
    client, state = _in_process_app(tmp_path / "root")
    dists = [make_wheel(tmp_path / "dists", version=f"1.{i}") for i in range(3)]
    for dist in dists:
        response = _tc_upload(client, dist)
        assert response.status_code == 200, response.text

    calls: list[str] = []

    def counting(name: str, real: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)
        return wrapper

    # Every index parser the product has (TOML, the JSON cache, their common back end), wherever
    # it was imported, plus the raw TOML and JSON decoders.
    for module in (pywharf_core.index.formats, pywharf_core.service.repository, pywharf_core.index.local):
        for attr in dir(module):
            if attr.startswith("parse_index") or attr == "records_from_document":
                monkeypatch.setattr(module, attr, counting(f"{module.__name__}.{attr}", getattr(module, attr)))
    monkeypatch.setattr(tomllib, "loads", counting("tomllib.loads", tomllib.loads))
    monkeypatch.setattr(json, "loads", counting("json.loads", json.loads))
    renders: list[str] = []
    real_render = pywharf_core.http.page_cache.render_project
    monkeypatch.setattr(pywharf_core.http.page_cache, "render_project",
                        lambda project, *rest: renders.append(project) or real_render(project, *rest))

    auth = {"Authorization": basic_header(*READ)}
    for _ in range(50):
        page = client.get("/simple/demo/", headers=auth)
        assert page.status_code == 200
        assert all(d.filename in page.text for d in dists)
    for _ in range(5):
        assert client.get("/simple/", headers=auth).status_code == 200
        assert client.get(f"/simple/demo/{dists[0].filename}", headers=auth).content == dists[0].data
    assert calls == [], f"{len(calls)} TOML parses during 65 read requests: {sorted(set(calls))}"
    assert len(renders) <= 1, f"the project page was rendered {len(renders)} times for 50 requests"
    # The instrumentation works: reading the journal (what a sync does) is counted.
    state.repos["local"].local_index.load_journal()
    assert calls, "the parse counters did not intercept anything"


def test_defect_8_parallel_clients_got_404_and_fell_through_to_pypi(server_factory, tmp_path: Path) -> None:
    """Known defect: "under 8 parallel clients 2-4% of requests got a 404 from a lock timeout and fell
    through to PyPI".

    Now: 8 threads read the project page and download files (every file the page lists must
    download) while a 9th uploads 20 new files; every GET is a 200, never a redirect to the
    extra index (an unused local port here) and never a 404.
    """
    server = server_factory(fs_config(), f"--extra_index_url=http://127.0.0.1:{free_port()}/simple/")
    first = make_wheel(tmp_path / "dists", name="busy", version="1.0")
    assert upload(server, first).status_code == 200
    new = [make_wheel(tmp_path / "dists", name="busy", version=f"1.0.{i}") for i in range(1, 21)]
    uploads_done = threading.Event()
    go = threading.Barrier(9)
    href = re.compile(r'href="([^"#]+)#sha256=')

    def reader(index: int) -> list[tuple[str, int]]:
        bad: list[tuple[str, int]] = []
        session = requests.Session()
        session.auth = READ
        go.wait()
        count = 0
        while count < 100 or (not uploads_done.is_set() and count < 400):
            page = session.get(f"{server.base}/simple/busy/", allow_redirects=False, timeout=30)
            count += 1
            if page.status_code != 200:
                bad.append(("page", page.status_code))
                continue
            files = href.findall(page.text)
            target = files[(index + count) % len(files)]
            got = session.get(f"{server.base}/simple/busy/{target}", allow_redirects=False, timeout=30)
            count += 1
            if got.status_code != 200:
                bad.append((target, got.status_code))
        return bad

    def uploader() -> list[tuple[str, int]]:
        bad = []
        go.wait()
        try:
            for dist in new:
                response = upload(server, dist)
                if response.status_code != 200:
                    bad.append((dist.filename, response.status_code))
        finally:
            uploads_done.set()
        return bad

    with ThreadPoolExecutor(9) as pool:
        readers = [pool.submit(reader, i) for i in range(8)]
        upload_result = pool.submit(uploader)
        failures = [f for r in readers for f in r.result()]
    assert upload_result.result() == []
    assert failures == [], f"{len(failures)} failed GETs, e.g. {failures[:10]}"
    page = requests.get(f"{server.base}/simple/busy/", auth=READ, timeout=10).text
    assert len(href.findall(page)) == 21


def test_defect_9_each_upload_rescanned_and_rewrote_the_whole_index(fs_server: Server,
                                                                    tmp_path: Path) -> None:
    """Known defect: "each upload rescanned and rewrote the whole index".

    Now: uploads leave the local index (``ROOT/cache/local/index.json``, formerly
    ``index.toml``) alone (same inode, mtime and size) and only append a small entry to
    ``uploads.toml`` (the previous content stays a prefix, the inode stays the same, the
    description is not copied into it).
    """
    wait_synced(fs_server)
    store = LocalIndexStore(fs_server.root, "local")  # ROOT/cache/local/index.json (was index.toml)
    index, journal = store.index_path, store.journal_path
    assert index.exists(), f"the first sync wrote no local index {index}"

    def stat_of(path: Path) -> tuple[int, int, int] | None:
        if not path.exists():
            return None
        st = path.stat()
        return st.st_ino, st.st_mtime_ns, st.st_size

    index_before = stat_of(index)
    previous = journal.read_bytes() if journal.exists() else b""
    journal_inode = journal.stat().st_ino if journal.exists() else None
    big_description = "x" * 100_000
    for i in range(8):
        dist = make_wheel(tmp_path / "dists", version=f"2.{i}", description=big_description)
        assert upload(fs_server, dist).status_code == 200
        current = journal.read_bytes()
        assert current.startswith(previous), f"upload {i}: uploads.toml was rewritten, not appended to"
        delta = len(current) - len(previous)
        assert 0 < delta < 4096, f"upload {i}: uploads.toml grew by {delta} bytes"
        inode = journal.stat().st_ino
        assert journal_inode in (None, inode), f"upload {i}: uploads.toml was replaced"
        journal_inode, previous = inode, current
        assert stat_of(index) == index_before, f"upload {i}: index.toml was touched"


def test_defect_10_upload_temp_files_never_deleted(server_factory, tmp_path: Path) -> None:
    """Known defect: "upload temp files were never deleted".

    Now: after successful uploads, a 413, a 400 (digest mismatch), a 409 (same name, other
    bytes), a 403 and a body cut short, no ``.upload-*.part`` or other temp dotfile remains in
    storage, its sidecar folder or the local index folder.
    """
    server = server_factory(fs_config(max_file_bytes=20_000), "--extra_index_url=")
    storage = storage_of(server)
    ok = [make_wheel(tmp_path / "dists", version=f"1.{i}") for i in range(3)]
    for dist in ok:
        assert upload(server, dist).status_code == 200
    big = make_wheel(tmp_path / "dists", name="big", extra_bytes=os.urandom(40_000))
    assert upload(server, big).status_code == 413
    mismatch = make_wheel(tmp_path / "dists", name="mismatch")
    assert upload(server, mismatch, override={"md5_digest": digests(b"x")["md5_digest"]}).status_code == 400
    conflict = make_wheel(tmp_path / "dists", version="1.0", extra_bytes=b"different bytes")
    assert conflict.filename == ok[0].filename
    response = upload(server, conflict)
    assert response.status_code == 409, response.text
    assert upload(server, make_wheel(tmp_path / "dists", name="ro"), auth=READ).status_code == 403
    # A body that ends in the middle of the file part (no closing boundary).
    body, content_type = encode_multipart(upload_fields(ok[1]), "cut-1.0-py3-none-any.whl", ok[1].data)
    cut = requests.post(f"{server.base}/simple/", data=body[: len(body) // 2], auth=WRITE, timeout=30,
                        headers={"Content-Type": content_type})
    assert cut.status_code == 400, (cut.status_code, cut.text)

    assert temp_leftovers(storage) == []
    assert sorted(p.name for p in storage.iterdir() if not p.name.startswith(".")) == sorted(
        d.filename for d in ok)
    local = server.root / "cache" / "local"
    assert [p.name for p in local.iterdir() if p.name.startswith(".") and p.name != ".index.lock"] == []
    assert (storage / ok[0].filename).read_bytes() == ok[0].data


def _assert_no_leak(label: str, status: int, body: str, root: Path) -> None:
    assert "Traceback" not in body, (label, body)
    assert 'File "/' not in body, (label, body)
    for path in {str(root), str(root.resolve()), str(REPO_ROOT), str(Path(pywharf_core.__file__).parent),
                 sys.prefix}:
        assert path not in body, (label, path, body)
    assert "\n" not in body.strip(), (label, "error bodies are one line", body)
    if status == 500:
        assert body == "Internal Server Error", (label, body)


def test_defect_11_error_bodies_carried_tracebacks(fs_server: Server, tmp_path: Path, monkeypatch,
                                                   caplog) -> None:
    """Known defect: "error bodies carried Python tracebacks with absolute paths".

    Now: every error answer, from a malformed multipart body to an internal error raised by a
    backend with a path in its message, is one plain line; a 500 says only
    "Internal Server Error" (the details go to the server log).
    """
    dist = make_wheel(tmp_path / "dists")
    assert upload(fs_server, dist).status_code == 200
    other = make_wheel(tmp_path / "dists", extra_bytes=b"other")
    boundary = "b0undary"
    multipart = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    base = fs_server.base
    probes: list[tuple[str, requests.Response]] = [
        ("garbage multipart", requests.post(f"{base}/simple/", data=b"\x00garbage\r\n--nope", auth=WRITE,
                                            headers=multipart, timeout=10)),
        ("bad part header", requests.post(
            f"{base}/simple/", auth=WRITE, headers=multipart, timeout=10,
            data=f"--{boundary}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{boundary}--\r\n".encode())),
        ("no boundary", requests.post(f"{base}/simple/", data=b"x", auth=WRITE, timeout=10,
                                      headers={"Content-Type": "multipart/form-data"})),
        ("urlencoded", requests.post(f"{base}/simple/", data={":action": "file_upload"}, auth=WRITE,
                                     timeout=10)),
        ("no content", post_upload(fs_server, upload_fields(dist), None, b"")),
        ("digest mismatch", upload(fs_server, other, override={"md5_digest": "0" * 32})),
        ("conflict", upload(fs_server, other)),
        ("bad filename", upload(fs_server, dist, filename="/etc/passwd")),
        ("traversal", upload(fs_server, dist, filename="../../x-1.0-py3-none-any.whl")),
        ("name mismatch", upload(fs_server, dist, override={"name": "other"})),
        ("read secret", upload(fs_server, dist, auth=READ)),
        ("no auth", requests.get(f"{base}/simple/", timeout=10)),
        ("unknown path", requests.get(f"{base}/nope/../etc", auth=READ, timeout=10)),
        ("unknown project", requests.get(f"{base}/simple/nope/", auth=READ, timeout=10)),
        ("unknown file", requests.get(f"{base}/simple/demo/demo-9.9-py3-none-any.whl", auth=READ, timeout=10)),
        ("bad method", requests.delete(f"{base}/simple/", auth=WRITE, timeout=10)),
    ]
    for label, response in probes:
        assert response.status_code >= 400, (label, response.status_code)
        _assert_no_leak(label, response.status_code, response.text, fs_server.root)

    # Internal errors, in-process: a backend failing with a path in its message.
    client, state = _in_process_app(tmp_path / "inproc")
    assert _tc_upload(client, dist).status_code == 200
    repo = state.repos["local"]

    def broken_locate(filename: str):
        raise RuntimeError("/secret/path boom")

    def broken_store(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/secret/storage/demo-2.0-py3-none-any.whl")

    monkeypatch.setattr(repo.backend, "locate", broken_locate)
    monkeypatch.setattr(repo.backend, "store", broken_store)
    auth = {"Authorization": basic_header(*READ)}
    response = client.get(f"/simple/demo/{dist.filename}", headers=auth)
    assert response.status_code == 500, response.text
    _assert_no_leak("locate raises", 500, response.text, tmp_path / "inproc")
    assert "/secret" not in response.text
    response = _tc_upload(client, make_wheel(tmp_path / "dists", version="2.0"))
    # A storage error is the store's fault, not the client's: 503 with its cause (issue 12),
    # the cause's text only (strerror), never the path it names.
    assert response.status_code == 503, response.text
    assert "Permission denied" in response.text
    _assert_no_leak("store raises", 503, response.text, tmp_path / "inproc")
    assert "/secret" not in response.text
    assert temp_leftovers(tmp_path / "inproc" / "cache" / "local" / "storage") == []
    # The details are not lost: they go to the server log.
    assert "/secret/path boom" in caplog.text
