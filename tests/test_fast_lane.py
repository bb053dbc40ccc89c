"""The protocol's fast lane for cached pages (``pywharf_core.http.fast_lane``): it answers
exactly what the application answers, byte for byte, and nothing it should not.

In process: after a request through the application warmed the caches, :meth:`FastLane.answer`
must return the application's response for every eligible request, and None (the usual path)
for every request whose answer could differ. Through a real server: keep-alive and pipelined
requests mixing both paths, and a client over its failure budget gets 429 even with the right
secret.
"""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import pytest
import requests
import tomli_w
from conftest import Server as ProcessServer
from conftest import start_server
from test_security_data import Server
from test_upload_rules import encode_multipart, make_wheel, upload_fields
from upstream_standin import Upstream, json_page

from pywharf_core.http.fast_lane import FastLane
from pywharf_core.model.api_tokens import TOKEN_USERNAME

READ, WRITE = "fast-read-secret", "fast-write-secret"
DATE = [(b"date", b"Tue, 01 Dec 2026 00:00:00 GMT")]


def config() -> str:
    return tomli_w.dumps({
        "team": {"type": "file_system", "read_secret": READ, "write_secret": WRITE, "sync_index_interval": 3600},
        "pypi": {"type": "proxy", "read_secret": "proxy-read-secret", "upstream": "http://127.0.0.1:9/simple/"},
        "all": {"type": "group", "members": ["team", "pypi"], "read_secret": "group-read-secret",
                "write_secret": "group-write-secret"},
    })


def basic(user: str, secret: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{secret}".encode())


@pytest.fixture
def server(tmp_path: Path) -> Server:
    server = Server(tmp_path / "root", config())
    for version in ("1.0", "1.1", "2.0", "3.0", "4.0", "5.0"):  # a page over the gzip threshold
        dist = make_wheel(tmp_path, "fastlib", version)
        body, content_type = encode_multipart(upload_fields(dist, None), dist.filename, dist.data)
        response = server.client.post("/repos/team/simple/", content=body, headers={"Content-Type": content_type},
                                      auth=("x", WRITE))
        assert response.status_code == 200, response.text
    return server


def app_response(server: Server, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """The application's answer as sent (raw bytes: gzip stays gzip)."""
    headers = {"Accept-Encoding": "identity", **headers}
    with server.client.stream("GET", path, headers=headers, follow_redirects=False) as response:
        return response.status_code, dict(response.headers), b"".join(response.iter_raw())


def lane_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers.pop("date")
    return status, headers, body


def answer(lane: FastLane, path: str, headers: dict[str, str], client: str = "127.0.0.1") -> bytes | None:
    headers = {"Accept-Encoding": "identity", **headers}
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return lane.answer(path.encode(), raw, client, DATE)


@pytest.mark.parametrize("path", ["/simple/fastlib/", "/repos/team/simple/fastlib/"])
@pytest.mark.parametrize("extra", [
    {},
    {"Accept": "application/vnd.pypi.simple.v1+json"},
    {"Accept": "text/html"},
    {"Accept": "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"},
    {"Accept-Encoding": "gzip, deflate"},
    {"Accept": "application/vnd.pypi.simple.v1+json", "Accept-Encoding": "gzip"},
])
def test_every_eligible_request_gets_the_applications_exact_answer(server: Server, path: str, extra: dict) -> None:
    lane = FastLane(server.client.app.state)
    user = "team" if path.startswith("/simple/") else "anyone"
    headers = {"Authorization": basic(user, READ).decode(), **extra}
    expected = app_response(server, path, headers)  # also warms the verdict and page caches
    assert expected[0] == 200
    raw = answer(lane, path, headers)
    assert raw is not None, "the fast lane declined an eligible request"
    status, got_headers, body = lane_response(raw)
    assert (status, body) == (expected[0], expected[2])
    # What pip (requests) sends changes nothing: still answered, the same way.
    assert answer(lane, path, {**headers, "Connection": "keep-alive"}) == raw
    assert got_headers == expected[1]
    assert ("content-encoding" in got_headers) == ("gzip" in extra.get("Accept-Encoding", ""))


def test_repeated_headers_are_read_as_the_application_reads_them(server: Server) -> None:
    lane = FastLane(server.client.app.state)
    good, bad = basic("team", READ), basic("team", "wrong-secret-000")
    app_response(server, "/simple/fastlib/", {"Authorization": good.decode()})  # verdict cached
    # Two Authorization headers (the application reads the first): never answered here.
    for pair in ((bad, good), (good, bad)):
        raw = [(b"authorization", pair[0]), (b"authorization", pair[1])]
        assert lane.answer(b"/simple/fastlib/", raw, "127.0.0.1", DATE) is None
    # Two Accept headers: the first counts, as in the application.
    raw = [(b"authorization", good), (b"accept", b"application/vnd.pypi.simple.v1+json"), (b"accept", b"text/html"),
           (b"accept-encoding", b"identity")]
    answered = lane.answer(b"/simple/fastlib/", raw, "127.0.0.1", DATE)
    assert answered is not None and b"application/vnd.pypi.simple.v1+json" in answered.split(b"\r\n\r\n")[0]
    # An empty Accept is what the application gets too.
    raw = [(b"authorization", good), (b"accept", b""), (b"accept-encoding", b"identity")]
    expected = app_response(server, "/simple/fastlib/", {"Authorization": good.decode(), "Accept": ""})
    answered = lane.answer(b"/simple/fastlib/", raw, "127.0.0.1", DATE)
    assert (answered is None and expected[0] != 200) or lane_response(answered) == expected


@pytest.mark.parametrize(("path", "headers"), [
    ("/simple/fastlib/?format=json", {}),                           # a query
    ("/simple/FastLib/", {}),                                       # not the normal form: a redirect
    ("/simple/fast%6cib/", {}),                                     # percent-encoded
    ("/simple/nosuch/", {}),                                        # unknown: 404 (or a redirect)
    ("/simple/", {}),                                               # the root page
    ("/simple/fastlib/fastlib-1.0-py3-none-any.whl", {}),           # a file
    ("/simple/fastlib/", {"If-None-Match": "*"}),                   # conditional: maybe 304
    ("/simple/fastlib/", {"Upgrade": "websocket"}),
    ("/simple/fastlib/", {"X-Forwarded-For": "10.0.0.1"}),           # the client would be rewritten
    ("/simple/fastlib/", {"Accept": "image/png"}),                  # 406
    ("/repos/all/simple/nosuch/", {"Authorization": basic("x", "group-read-secret").decode()}),  # no member knows
    ("/repos/pypi/simple/fastlib/", {"Authorization": basic("x", "proxy-read-secret").decode()}),  # upstream down
])
def test_requests_whose_answer_could_differ_take_the_usual_path(server: Server, path: str, headers: dict) -> None:
    lane = FastLane(server.client.app.state)
    headers = {"Authorization": basic("team", READ).decode(), **headers}
    app_response(server, path, headers)
    app_response(server, "/simple/fastlib/", {"Authorization": basic("team", READ).decode()})  # verdict cached
    assert answer(lane, path, headers) is None


def test_credentials_the_cache_has_not_approved_are_never_answered(server: Server) -> None:
    lane = FastLane(server.client.app.state)
    path = "/simple/fastlib/"
    # Nothing cached yet: even the right secret goes the usual way (which checks it).
    assert answer(lane, path, {"Authorization": basic("team", READ).decode()}) is None
    for header in (basic("team", "wrong-secret-000"), basic("nobody", READ), b"Bearer x", b"Basic !!!",
                   basic(TOKEN_USERNAME, "pywharf-team-0123456789abcdef-" + "a" * 43), b""):
        app_response(server, path, {"Authorization": header.decode()})
        assert answer(lane, path, {"Authorization": header.decode()}) is None
    app_response(server, path, {"Authorization": basic("team", READ).decode()})
    assert answer(lane, path, {"Authorization": basic("team", READ).decode()}) is not None
    # Another worker process wrote: the usual path catches up first.
    server.state.peers = _Changed()
    assert answer(lane, path, {"Authorization": basic("team", READ).decode()}) is None


def upload_fastlib(server: ProcessServer, tmp_path: Path) -> None:
    """fastlib 1.0 into [team] of a real server."""
    dist = make_wheel(tmp_path, "fastlib", "1.0")
    body, content_type = encode_multipart(upload_fields(dist, None), dist.filename, dist.data)
    assert requests.post(f"{server.base}/repos/team/simple/", data=body, auth=("x", WRITE),
                         headers={"Content-Type": content_type}, timeout=30).status_code == 200


class _Changed:
    def changed(self) -> bool:
        return True


def test_a_client_over_its_failure_budget_is_refused_even_with_the_right_secret(tmp_path: Path) -> None:
    server = start_server(tmp_path / "root", config(), "--extra_index_url=", "--auth_failure_limit=3")
    try:
        upload_fastlib(server, tmp_path)
        url = f"{server.base}/simple/fastlib/"
        assert requests.get(url, auth=("team", READ), timeout=10).status_code == 200  # cached from now on
        assert requests.get(url, auth=("team", READ), timeout=10).status_code == 200
        for _ in range(3):
            assert requests.get(url, auth=("team", "wrong-secret-000"), timeout=10).status_code == 401
        assert requests.get(url, auth=("team", READ), timeout=10).status_code == 429
    finally:
        server.stop()


def test_keep_alive_and_pipelining_mix_both_paths_in_order(tmp_path: Path) -> None:
    server = start_server(tmp_path / "root", config(), "--extra_index_url=")
    try:
        upload_fastlib(server, tmp_path)
        auth = basic("team", READ).decode()
        fast = f"GET /simple/fastlib/ HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
        slow = f"GET /simple/fastlib/?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
        root = f"GET /simple/ HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(fast.encode())  # warms the caches (usual path)
            first = _read_responses(sock, 1)
            sock.sendall((fast + slow + fast + root + fast).encode())  # pipelined, one packet
            answers = _read_responses(sock, 5)
            for _ in range(20):  # keep-alive: the same connection goes on serving
                sock.sendall(fast.encode())
                answers += _read_responses(sock, 1)
        assert [status for status, _ in first + answers] == [200] * 26
        pages = [body for _, body in answers]
        assert pages[0] == pages[1] == pages[2] == pages[4] == first[0][1] and b"fastlib-1.0" in pages[0]
        assert b"fastlib" in pages[3] and pages[3] != pages[0]  # the root page, in its place
        time.sleep(0.2)
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` complete HTTP/1.1 responses with Content-Length bodies, in order."""
    buffer = b""
    found: list[tuple[int, bytes]] = []
    while len(found) < count:
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
        length = int(lengths[0])
        while len(rest) < length:
            rest += sock.recv(65536)
        found.append((int(head.split(b" ")[1]), rest[:length]))
        buffer = rest[length:]
    return found


@pytest.mark.parametrize("status", ["quarantined", "deprecated", "archived"])
def test_a_project_with_a_status_gets_the_applications_page_with_its_marker(server: Server, status: str) -> None:
    changed = server.client.post("/repos/team/status/fastlib", data={"status": status, "reason": "see notes"},
                                 auth=("x", WRITE))
    assert changed.status_code == 200, changed.text
    lane = FastLane(server.client.app.state)
    for accept in ("text/html", "application/vnd.pypi.simple.v1+json"):
        headers = {"Authorization": basic("team", READ).decode(), "Accept": accept}
        expected = app_response(server, "/simple/fastlib/", headers)
        raw = answer(lane, "/simple/fastlib/", headers)
        assert raw is not None and lane_response(raw) == expected
        assert status.encode() in expected[2]
        assert (b"fastlib-1.0" in expected[2]) is (status != "quarantined")


def test_a_group_answers_its_hosted_members_page_and_a_proxy_its_fresh_page(tmp_path: Path) -> None:
    """Through the group's URL: the hosted member's page (the group's own secret); through a
    proxy with a fresh upstream page: the proxied page; both byte for byte the application's."""
    upstream = Upstream()
    digest = "a" * 64
    upstream.routes["/simple/publib/"] = json_page("publib", [{
        "filename": "publib-1.0-py3-none-any.whl", "url": f"{upstream.base}/files/publib-1.0-py3-none-any.whl",
        "hashes": {"sha256": digest}, "upload-time": "2026-01-01T00:00:00Z"}])
    try:
        text = config().replace("http://127.0.0.1:9/simple/", f"{upstream.base}/simple/")
        server = Server(tmp_path / "root", text)
        dist = make_wheel(tmp_path, "fastlib", "1.0")
        body, content_type = encode_multipart(upload_fields(dist, None), dist.filename, dist.data)
        assert server.client.post("/repos/team/simple/", content=body, headers={"Content-Type": content_type},
                                  auth=("x", WRITE)).status_code == 200
        server.state.repos["team"].sync_once()  # an index loaded: the group may look past it
        lane = FastLane(server.client.app.state)
        cases = [("/repos/all/simple/fastlib/", "group-read-secret", b"fastlib-1.0"),
                 ("/repos/all/simple/publib/", "group-read-secret", b"publib-1.0"),
                 ("/repos/pypi/simple/publib/", "proxy-read-secret", b"publib-1.0")]
        for path, secret, needle in cases:
            headers = {"Authorization": basic("x", secret).decode()}
            expected = app_response(server, path, headers)
            assert expected[0] == 200 and needle in expected[2]
            raw = answer(lane, path, headers)
            assert raw is not None, path
            assert lane_response(raw) == expected
    finally:
        upstream.stop()


def test_an_idle_connection_after_a_fast_answer_is_closed_by_the_watchdog(tmp_path: Path) -> None:
    server = start_server(tmp_path / "root", config(), "--extra_index_url=", "--header_timeout=1")
    try:
        upload_fastlib(server, tmp_path)
        fast = f"GET /simple/fastlib/ HTTP/1.1\r\nHost: x\r\nAuthorization: {basic('team', READ).decode()}\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(fast.encode())
            sock.sendall(fast.encode())  # answered by the fast lane (the first one cached the verdict)
            assert [status for status, _ in _read_responses(sock, 2)] == [200, 200]
            started = time.monotonic()
            assert sock.recv(1) == b""  # closed by the server while idle...
            assert 0.5 < time.monotonic() - started < 5  # ...after about --header_timeout
    finally:
        server.stop()
