"""Issue 13, transport: bounded request heads, slow clients timed out, a connection cap, bounded
per-request parsing and caches, a configurable public URL, security headers on every response,
and malformed upload forms answered 400.

Header limits, timeouts and the connection cap are properties of the real server (uvicorn with
``pywharf_core.http.transport``), so those tests talk raw sockets to a ``pywharf server``
subprocess with short timeouts; the rest run in-process against ``create_app``.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import Server, fs_config, tool
from starlette.testclient import TestClient
from test_upload_rules import encode_multipart, make_wheel, upload_fields

from pywharf_core.http.app import create_app
from pywharf_core.http.negotiation import choose_content_type
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup

REPO, READ, WRITE = "local", "read-secret-123", "write-secret-123"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
SECURITY = {"x-content-type-options": "nosniff", "x-frame-options": "DENY"}


# -- helpers -------------------------------------------------------------------------------------


def start(server_factory, *flags: str) -> Server:
    server = server_factory(fs_config(REPO, READ, WRITE), "--extra_index_url=", *flags)
    server.repos[REPO] = (READ, WRITE)
    return server


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool, float]:
    """What the server sends until it closes the connection (or ``timeout`` passes)."""
    started = time.monotonic()
    data = b""
    sock.settimeout(0.2)
    while time.monotonic() - started < timeout:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, True, time.monotonic() - started
        if not chunk:
            return data, True, time.monotonic() - started
        data += chunk
    return data, False, time.monotonic() - started


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) else 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- case 1: request heads are bounded -------------------------------------------------------------


def test_request_head_over_the_limit_is_431_and_closed_under_it_is_served(server_factory) -> None:
    server = start(server_factory, "--max_header_bytes=16384")
    with connect(server) as sock:  # just under the limit: served
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 15_000 + b"\r\nConnection: close\r\n\r\n")
        data, closed, _ = read_until_closed(sock, 5)
        assert status_of(data) == 200, data[:200]
    with connect(server) as sock:  # over it, in one header: 431, closed
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: " + b"c=1; " * 4000 + b"\r\n\r\n")
        data, closed, _ = read_until_closed(sock, 5)
        assert status_of(data) == 431 and closed, data[:200]
        assert b"x-content-type-options: nosniff" in data.lower()
    # A head that never ends is cut off once it passes the limit, long before 64 MiB arrive.
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        with pytest.raises(OSError):  # reset or broken pipe: the server closed on us
            while sent < 64 << 20:
                sock.sendall(b"X-Filler: " + b"b" * 1000 + b"\r\n")
                sent += 1012
        assert sent < 8 << 20
    assert "request headers over 16384 bytes" in server.log()
    assert requests.get(f"{server.base}/healthz", timeout=5).status_code == 200


def test_keep_alive_pipelining_and_early_answers_are_not_mistaken_for_heads(server_factory) -> None:
    """The head count and timers must follow the requests: pipelined requests, and a body that
    keeps coming after an early 401 (uvicorn reads and drops it), are not request heads."""
    server = start(server_factory, "--max_header_bytes=16384", "--header_timeout=1")
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        sock.sendall(b"POST /simple/ HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 1048576\r\n\r\n")
        time.sleep(0.3)  # the 401 goes out before the body comes
        sock.sendall(b"x" * (1 << 20))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, closed, _ = read_until_closed(sock, 5)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]
    assert statuses == [200, 200, 200, 401, 200] and closed, data[-300:]
    with connect(server) as sock:  # the same early answer, then silence: an idle connection
        sock.sendall(b"POST /simple/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        time.sleep(0.3)
        sock.sendall(b"x" * 100_000)
        data, closed, elapsed = read_until_closed(sock, 5)
        assert closed and elapsed < 2.5 and re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"401"]
    assert "stalled" not in server.log() and "request headers over" not in server.log()


def test_waitress_gets_the_header_limit_too(server_factory) -> None:
    server = start(server_factory, "--server=waitress", "--max_header_bytes=16384")
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n")
        data, _, _ = read_until_closed(sock, 5)
        assert status_of(data) == 431, data[:200]


def test_oversized_cookie_and_accept_are_refused_on_the_wire(server_factory) -> None:
    """The 16 MiB cookie / 4 MiB Accept of the review: refused at the transport (default limit)."""
    server = start(server_factory)
    for header in (b"Cookie: pywharf_session=" + b"x" * (1 << 20), b"Accept: " + b"text/html;q=0.1," * 70_000):
        with connect(server) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /simple/ HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
            data, closed, _ = read_until_closed(sock, 5)
            assert status_of(data) == 431 and closed
            assert time.monotonic() - started < 2
    assert requests.get(f"{server.base}/healthz", timeout=5).status_code == 200


# -- case 2: slow clients are timed out; connections are capped ------------------------------------


def test_half_sent_head_gets_408_and_is_closed_after_the_header_timeout(server_factory) -> None:
    server = start(server_factory, "--header_timeout=1")
    with connect(server) as sock, connect(server) as idle:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line
        data, closed, elapsed = read_until_closed(sock, 6)
        assert closed and status_of(data) == 408, data[:200]
        assert 0.9 < elapsed < 3
        _, idle_closed, _ = read_until_closed(idle, 3)  # connected, never sent a byte
        assert idle_closed
    # A trickle (one byte every 0.3 s) does not reset the clock either.
    with connect(server) as sock:
        started = time.monotonic()
        with pytest.raises(OSError):
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.3)
                if time.monotonic() - started > 6:
                    break
        assert time.monotonic() - started < 4
    assert "request headers not complete within 1s" in server.log()


def test_stalled_upload_body_is_cut_off_after_the_stall_timeout(server_factory) -> None:
    server = start(server_factory, "--stall_timeout=1")
    with connect(server) as sock:
        auth = requests.auth._basic_auth_str(REPO, WRITE)
        sock.sendall(
            b"POST /simple/ HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth.encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n"
        )
        _, closed, elapsed = read_until_closed(sock, 8)
        assert closed, "the server kept waiting for a stalled body"
        assert 0.9 < elapsed < 4
    time.sleep(0.3)
    log = server.log()
    assert "request body stalled for 1s" in log
    assert "Traceback" not in log and "internal error" not in log
    assert requests.get(f"{server.base}/healthz", timeout=5).status_code == 200


def test_download_to_a_client_that_stops_reading_is_cut_off(server_factory, tmp_path: Path) -> None:
    server = start(server_factory, "--stall_timeout=1")
    dist = make_wheel(tmp_path, extra_bytes=os.urandom(24 << 20))  # more than the socket buffers hold
    body, content_type = encode_multipart(upload_fields(dist), dist.filename, dist.data)
    response = requests.post(f"{server.base}/simple/", data=body, headers={"Content-Type": content_type},
                             auth=(REPO, WRITE), timeout=60)
    assert response.status_code == 200, response.text
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with sock:
        sock.connect(("127.0.0.1", server.port))
        auth = requests.auth._basic_auth_str(REPO, READ)
        sock.sendall(f"GET /simple/demo/{dist.filename} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
        time.sleep(4)  # not reading
        received, closed, _ = read_until_closed(sock, 10)
        assert closed and len(received) < len(dist.data)
    assert "response stalled (client not reading) for 1s" in server.log()


def test_connection_cap_holds_while_slow_clients_come_and_healthz_answers(server_factory) -> None:
    server = start(server_factory, "--max_connections=20", "--header_timeout=60")
    baseline = open_fds(server.proc.pid)
    slow = []
    try:
        for _ in range(60):  # three times the cap, each sending half a request head
            sock = connect(server)
            sock.sendall(b"GET /simple/ HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        time.sleep(0.5)
        assert open_fds(server.proc.pid) <= baseline + 20 + 2
        started = time.monotonic()
        response = requests.get(f"{server.base}/healthz", timeout=5)
        assert response.status_code == 200 and time.monotonic() - started < 2
    finally:
        for sock in slow:
            sock.close()
    assert "connection limit (20) reached" in server.log()


# -- case 3 and 4: bounded Accept parsing, bounded negotiation cache --------------------------------


@pytest.fixture
def state(tmp_path: Path) -> ServerState:
    settings = ServerSettings(root=tmp_path / "root", extra_index_url="")
    config = fs_config(REPO, READ, WRITE, sync_index_interval=3600)
    state = ServerState(settings)
    state.repos = build_repos(load_setup(config, None, is_text=True), settings)
    state.configured = True
    return state


def uploaded(client: TestClient, tmp_path: Path) -> str:
    dist = make_wheel(tmp_path)
    body, content_type = encode_multipart(upload_fields(dist), dist.filename, dist.data)
    response = client.post("/simple/", content=body, headers={"Content-Type": content_type}, auth=(REPO, WRITE))
    assert response.status_code == 200, response.text
    return dist.filename


@pytest.fixture
def client(state: ServerState) -> Iterator[TestClient]:
    with TestClient(create_app(state), raise_server_exceptions=False, follow_redirects=False) as client:
        yield client


def test_long_accept_is_406_fast_and_many_ranges_are_capped(client: TestClient) -> None:
    huge = ", ".join(f"text/x-{i};q=0.5" for i in range(4000))  # ~64 KiB: the largest head allowed
    started = time.monotonic()
    response = client.get("/simple/", auth=(REPO, READ), headers={"Accept": huge})
    assert response.status_code == 406
    assert time.monotonic() - started < 0.5
    # Within the length limit, only the first ranges count.
    many = ", ".join(["text/x-unknown"] * 40 + [JSON_V1])
    assert len(many) < 1024
    assert choose_content_type(many) is None
    assert choose_content_type("text/x-unknown, " + JSON_V1) == JSON_V1


def test_large_cookie_is_answered_fast(client: TestClient) -> None:
    """A cookie as large as a head may be: 401 (it is no session) or 200 where none is read."""
    cookie = "; ".join(f"c{i}=v" for i in range(9000))  # ~60 KiB
    started = time.monotonic()
    assert client.get("/simple/", headers={"Cookie": cookie}).status_code == 401
    assert client.get("/healthz", headers={"Cookie": cookie}).status_code == 200
    assert time.monotonic() - started < 0.5


def test_negotiation_cache_is_bounded_in_bytes() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(600):  # distinct, 2 KiB each: 1.2 MB if every value were memoised
            choose_content_type(f"text/html;q=0.{i % 9}, application/x-{i}-" + "p" * 2000)
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < 200_000, retained


# -- case 5: absolute URLs from --public_url, not the Host header ----------------------------------


def test_forged_host_is_not_reflected_when_public_url_is_set(state: ServerState, tmp_path: Path) -> None:
    from pywharf_core.http.public_url import normalize_public_url

    app = create_app(state, public_url=normalize_public_url("https://pypi.example.com"))
    with TestClient(app, raise_server_exceptions=False) as client:
        uploaded(client, tmp_path)
        forged = {"Host": "evil.example"}
        body = client.get("/pypi/demo/json", auth=(REPO, READ), headers=forged)
        assert body.status_code == 200
        assert "evil.example" not in body.text
        assert body.json()["urls"][0]["url"].startswith("https://pypi.example.com/simple/demo/")
        page = client.get("/project/demo/", auth=(REPO, READ), headers=forged)
        assert page.status_code == 200
        assert "evil.example" not in page.text and "https://pypi.example.com/repos/local/simple/" in page.text


def test_empty_home_page_hint_uses_the_public_url(state: ServerState) -> None:
    """The "upload one with twine" hint of an empty repository is an absolute URL too."""
    from pywharf_core.http.public_url import normalize_public_url

    app = create_app(state, public_url=normalize_public_url("https://pypi.example.com"))
    with TestClient(app, raise_server_exceptions=False) as client:
        page = client.get("/", auth=(REPO, READ), headers={"Host": "evil.example"})
        assert page.status_code == 200 and "No projects yet" in page.text
        assert "evil.example" not in page.text and "https://pypi.example.com/repos/local/simple/" in page.text


def test_without_public_url_the_request_host_is_used(client: TestClient, tmp_path: Path) -> None:
    uploaded(client, tmp_path)
    body = client.get("/pypi/demo/json", auth=(REPO, READ), headers={"Host": "pkgs.internal:8888"})
    assert body.json()["urls"][0]["url"].startswith("http://pkgs.internal:8888/simple/demo/")


def test_trailing_slash_redirects_do_not_reflect_the_host(client: TestClient) -> None:
    for path, target in (("/login", "/login/"), ("/pypi/demo/json/", "/pypi/demo/json"), ("/healthz/", "/healthz")):
        response = client.get(path, headers={"Host": "evil.example"})
        assert response.status_code == 307 and response.headers["location"] == target


def test_server_flag_public_url_reaches_the_json_api(server_factory, tmp_path: Path) -> None:
    server = start(server_factory, "--public_url=https://pypi.example.com")
    dist = make_wheel(tmp_path)
    body, content_type = encode_multipart(upload_fields(dist), dist.filename, dist.data)
    assert requests.post(f"{server.base}/simple/", data=body, headers={"Content-Type": content_type},
                         auth=(REPO, WRITE), timeout=30).status_code == 200
    document = requests.get(f"{server.base}/pypi/demo/json", auth=(REPO, READ), timeout=30,
                            headers={"Host": "evil.example"})
    assert document.json()["urls"][0]["url"].startswith("https://pypi.example.com/simple/demo/")


@pytest.mark.parametrize("flag", ["--public_url=ftp://x/", "--max_connections=0", "--header_timeout=-1"])
def test_bad_transport_flags_stop_the_server_with_one_line(tmp_path: Path, flag: str) -> None:
    result = subprocess.run([tool("pywharf"), "server", str(tmp_path / "root"), flag],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("pywharf server: error: --") and len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.parametrize("bad", ["ftp://x/", "pypi.example.com", "https:///path", "https://h/?q=1"])
def test_public_url_must_be_an_http_url(bad: str) -> None:
    from pywharf_core.http.public_url import normalize_public_url

    with pytest.raises(ValueError, match="--public_url"):
        normalize_public_url(bad)


# -- case 6: nosniff and frame protection on every response ----------------------------------------


def assert_secured(response) -> None:
    for name, value in SECURITY.items():
        assert response.headers.get_list(name) == [value], (response.request.url, name, response.headers)
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_every_response_carries_security_headers(state: ServerState, tmp_path: Path, monkeypatch) -> None:
    with TestClient(create_app(state), raise_server_exceptions=False) as client:
        filename = uploaded(client, tmp_path)
        read = {"auth": (REPO, READ)}
        page = client.get("/simple/demo/", **read)
        responses = [
            client.get("/healthz"), client.get("/nope"), client.get("/simple/"),  # 200, 404, 401
            client.get("/simple/demo/", **read), page,  # rendered, then from the page cache
            client.get("/simple/demo/", headers={"If-None-Match": page.headers["etag"]}, **read),  # 304
            client.get("/simple/", headers={"Accept": "image/png"}, **read),  # 406
            client.get(f"/simple/demo/{filename}", **read),  # download
            client.get("/project/demo/", **read), client.get("/login/"),  # web UI (own CSP)
        ]
        assert [r.status_code for r in responses] == [200, 404, 401, 200, 200, 304, 406, 200, 200, 200]
        monkeypatch.setattr(type(state.repos[REPO]), "set_yanked", lambda *a: 1 / 0)
        responses.append(client.post("/yank/demo/1.0", **{"auth": (REPO, WRITE)}))
        assert responses[-1].status_code == 500
    for response in responses:
        assert_secured(response)


# -- case 7: malformed upload forms are 400, never 500 ---------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("multipart/form-data; charset=x-unknown; boundary={b}", "Unsupported form charset"),
        ("multipart/form-data; charset=rot13; boundary={b}", "Unsupported form charset"),
        ("multipart/form-data; boundary=" + "x" * 300, "boundary must be"),
        ("multipart/form-data; boundary=", "boundary must be"),
    ],
)
def test_malformed_multipart_is_400_with_one_log_line(client: TestClient, tmp_path: Path, caplog,
                                                      content_type: str, expected: str) -> None:
    dist = make_wheel(tmp_path)
    body, plain = encode_multipart(upload_fields(dist), dist.filename, dist.data)
    boundary = plain.split("boundary=")[1]
    with caplog.at_level(logging.INFO):
        response = client.post("/simple/", content=body, auth=(REPO, WRITE),
                               headers={"Content-Type": content_type.format(b=boundary)})
    assert response.status_code == 400 and expected in response.text, response.text
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1 and records[0].exc_info is None, [r.getMessage() for r in records]
