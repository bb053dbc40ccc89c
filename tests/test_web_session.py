"""Unit tests of the browser UI's security: session cookie, keys, CSRF, login rate limit.

Why: pywharf 0.2.3 kept the raw secret in clear text inside a cookie signed with a key derived
from the MAC address (forgeable, and the secret readable by base64-decoding the cookie), and it
ignored basic auth from browser User-Agents. These tests prove none of that holds: a cookie
cannot be altered, replayed past its age or made with another key; it never contains the secret
in a readable form; basic auth is honoured whatever the User-Agent; every POST form needs a
valid CSRF token; repeated wrong secrets are slowed down. They drive the app in-process
(``starlette.testclient``), so they are fast.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
import stat
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import itsdangerous.timed
import pytest
from conftest import fs_config
from starlette.testclient import TestClient
from test_upload_rules import BROWSER_UA, encode_multipart, make_wheel, upload_fields

from pywharf_core.http.app import create_app
from pywharf_core.http.web.csrf import CSRF_COOKIE, CSRF_FIELD
from pywharf_core.http.web.ratelimit import FailureLimiter
from pywharf_core.http.web.readme import render_description
from pywharf_core.http.web.routes import safe_next
from pywharf_core.http.web.session import KEY_FILENAME, SESSION_COOKIE, SessionCodec, SessionKeys, master_key
from pywharf_core.model.errors import ConfigError
from pywharf_core.service.repository import AuthExpiry
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup
from pywharf_core.storage.backend import Permission

READ_SECRET, WRITE_SECRET = "read-secret-0123456789", "write-secret-0123456789"
EXPIRY = AuthExpiry(read=3600, write=300)


# -- helpers -------------------------------------------------------------------------------------


def make_state(root: Path, read: str = READ_SECRET, write: str = WRITE_SECRET,
               session_secret: str | None = None) -> ServerState:
    settings = ServerSettings(root=root, extra_index_url="", auth_expiry=EXPIRY, session_secret=session_secret)
    state = ServerState(settings)
    state.repos = build_repos(load_setup(fs_config(read=read, write=write), None, is_text=True), settings)
    return state


def make_client(state: ServerState, https: bool = False) -> TestClient:
    base = "https://testserver" if https else "http://testserver"
    return TestClient(create_app(state), base_url=base, raise_server_exceptions=False, follow_redirects=False)


@pytest.fixture
def state(tmp_path: Path) -> ServerState:
    return make_state(tmp_path / "root")


@pytest.fixture
def client(state: ServerState) -> Iterator[TestClient]:
    with make_client(state) as test_client:
        yield test_client


def csrf_token(client: TestClient) -> str:
    """Open the login form (which sets the CSRF cookie) and return its hidden token."""
    response = client.get("/login/")
    assert response.status_code == 200, response.text
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', response.text)
    assert found, response.text
    return found.group(1)


def login(client: TestClient, secret: str = READ_SECRET, repo: str = "local", next_: str = "/") -> httpx.Response:
    return client.post("/login/", data={"repo": repo, "secret": secret, CSRF_FIELD: csrf_token(client), "next": next_})


def session_cookie(response: httpx.Response) -> str:
    found = re.search(rf"{SESSION_COOKIE}=([^;]+)", response.headers.get("set-cookie", ""))
    assert found, response.headers
    return found.group(1)


def b64_variants(text: str) -> list[bytes]:
    """Every way a piece of a cookie could be base64-decoded (standard or URL-safe, any padding)."""
    decoded = []
    for candidate in {text, text.lstrip(".")}:
        padded = candidate + "=" * (-len(candidate) % 4)
        for decode in (base64.urlsafe_b64decode, base64.b64decode):
            try:
                data = decode(padded)
            except (binascii.Error, ValueError):
                continue
            decoded.append(data)
            with contextlib.suppress(zlib.error):
                decoded.append(zlib.decompress(data))
    return decoded


def every_decoding(cookie: str) -> list[bytes]:
    """The cookie, each dot-separated part decoded, and any base64 string found inside those."""
    found = [cookie.encode()]
    for part in cookie.split("."):
        for data in b64_variants(part):
            found.append(data)
            for inner in re.findall(rb"[A-Za-z0-9_\-+/=]{16,}", data):
                found += b64_variants(inner.decode())
    return found


def with_cookie(client: TestClient, cookie: str) -> TestClient:
    """The client carrying only ``cookie`` as its session (per-request cookies are deprecated)."""
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, cookie)
    return client


def payload_of(cookie: str) -> dict[str, object]:
    """The JSON inside a cookie (itsdangerous zlib-compresses it when that is shorter: ``.`` prefix)."""
    payload = cookie.rsplit(".", 2)[0]
    raw = base64.urlsafe_b64decode(payload.lstrip(".") + "=" * (-len(payload.lstrip(".")) % 4))
    return json.loads(zlib.decompress(raw) if payload.startswith(".") else raw)


def tamper_payload(cookie: str, change: dict[str, object]) -> str:
    """The cookie with its payload changed and its timestamp and signature kept."""
    payload, timestamp, signature = cookie.rsplit(".", 2)
    data = {**payload_of(cookie), **change}
    raw = json.dumps(data, separators=(",", ":")).encode()
    compressed = payload.startswith(".")
    encoded = base64.urlsafe_b64encode(zlib.compress(raw) if compressed else raw).rstrip(b"=").decode()
    return f"{'.' if compressed else ''}{encoded}.{timestamp}.{signature}"


def flip_signature(cookie: str) -> str:
    """The cookie with the first character of its signature changed (the last one may only
    carry base64 padding bits, which decoding ignores)."""
    rest, signature = cookie.rsplit(".", 1)
    return f"{rest}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


def upload_demo(client: TestClient, tmp_path: Path) -> httpx.Response:
    dist = make_wheel(tmp_path / "dists", name="demo", version="1.0")
    body, content_type = encode_multipart(upload_fields(dist), dist.filename, dist.data)
    return client.post("/simple/", content=body, headers={"Content-Type": content_type},
                       auth=("local", WRITE_SECRET))


# -- the codec -----------------------------------------------------------------------------------


def test_codec_round_trip_and_age_per_permission() -> None:
    codec = SessionCodec(SessionKeys.from_master(b"k" * 32), EXPIRY)
    value = codec.encode("local", READ_SECRET, Permission.READ)
    session = codec.decode(value)
    assert session is not None
    assert (session.repo, session.secret, session.permission) == ("local", READ_SECRET, Permission.READ)
    assert READ_SECRET not in repr(session)
    now = time.time()
    assert codec.decode(value, now=now + 3590) is not None
    assert codec.decode(value, now=now + 3601) is None, "a read session outlives --auth_read_expires"
    write = codec.encode("local", WRITE_SECRET, Permission.WRITE)
    assert codec.decode(write, now=now + 290) is not None
    assert codec.decode(write, now=now + 301) is None, "a write session outlives --auth_write_expires"
    assert codec.decode(value, now=now - 3600) is None, "a cookie from the future is accepted"


@pytest.mark.parametrize("secret", [READ_SECRET, "ghp_" + "A1b2" * 9, "s" * 200])  # plain and zlib payloads
def test_codec_rejects_changed_payload_other_key_and_garbage(secret: str) -> None:
    codec = SessionCodec(SessionKeys.from_master(b"k" * 32), EXPIRY)
    value = codec.encode("local", secret, Permission.READ)
    for blob in every_decoding(value):
        assert secret.encode() not in blob
    assert codec.decode(tamper_payload(value, {"r": "other"})) is None
    assert codec.decode(tamper_payload(value, {"p": 2})) is None, "read session upgraded to write"
    session = codec.decode(tamper_payload(value, {}))  # the same payload re-encoded: still valid
    assert session is not None and session.secret == secret
    assert codec.decode(flip_signature(value)) is None
    other = SessionCodec(SessionKeys.from_master(b"o" * 32), EXPIRY)
    assert other.decode(value) is None
    assert codec.decode(other.encode("local", READ_SECRET, Permission.READ)) is None
    for garbage in ("", ".", "a.b.c", "x" * 5000, "eyJyIjoibG9jYWwifQ.AAAA.BBBB"):
        assert codec.decode(garbage) is None


def test_valid_signature_with_swapped_ciphertext_is_rejected() -> None:
    """Signing and encryption keys are separate: a signed payload whose token was encrypted
    under another key does not decrypt."""
    keys = SessionKeys.from_master(b"k" * 32)
    assert len({keys.signing, keys.encryption, keys.csrf}) == 3
    codec = SessionCodec(keys, EXPIRY)
    foreign = SessionCodec(SessionKeys.from_master(b"o" * 32), EXPIRY).encode("local", READ_SECRET, Permission.READ)
    token = payload_of(foreign)["s"]
    signer = itsdangerous.URLSafeTimedSerializer(keys.signing, salt="pywharf-session-v1",
                                                 signer_kwargs={"digest_method": hashlib.sha256})
    own = payload_of(codec.encode("local", READ_SECRET, Permission.READ))["s"]
    sid = "session-id-0123456789"
    assert codec.decode(signer.dumps({"r": "local", "p": 1, "s": own, "i": sid})) is not None  # the signer is right
    assert codec.decode(signer.dumps({"r": "local", "p": 1, "s": own})) is None  # no session id: refused
    assert codec.decode(signer.dumps({"r": "local", "p": 1, "s": token, "i": sid})) is None
    assert codec.decode(signer.dumps({"r": "local", "p": 1, "s": "plain-text-secret", "i": sid})) is None
    assert codec.decode(signer.dumps(["local", READ_SECRET])) is None


# -- cookies from the running app ----------------------------------------------------------------


def test_login_cookie_attributes_and_secret_never_readable(client: TestClient) -> None:
    response = login(client)
    assert response.status_code == 303 and response.headers["location"] == "/"
    header = response.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=lax" in header and "max-age=3600" in header
    assert "secure" not in header  # plain http: a Secure cookie would never come back
    cookie = session_cookie(response)
    for blob in every_decoding(cookie):
        assert READ_SECRET.encode() not in blob, f"the secret is readable in the cookie: {blob!r}"
    write = login(client, secret=WRITE_SECRET)
    assert "max-age=300" in write.headers["set-cookie"].lower()
    for blob in every_decoding(session_cookie(write)):
        assert WRITE_SECRET.encode() not in blob


def test_cookie_is_secure_over_https(state: ServerState) -> None:
    with make_client(state, https=True) as client:
        response = login(client)
        assert response.status_code == 303
        assert "; secure" in response.headers["set-cookie"].lower()


def test_session_reads_every_endpoint_but_never_writes(client: TestClient, tmp_path: Path) -> None:
    assert upload_demo(client, tmp_path).status_code == 200
    cookie = session_cookie(login(client))
    client.cookies.clear()
    filename = "demo-1.0-py3-none-any.whl"
    for path in ("/simple/", "/simple/demo/", f"/simple/demo/{filename}", f"/simple/demo/{filename}.metadata",
                 "/pypi/demo/json", "/index_mtime/", "/", "/project/demo/"):
        client.cookies.clear()
        assert client.get(path).status_code in (401, 303), path
        response = with_cookie(client, cookie).get(path)
        assert response.status_code == 200, (path, response.text)
    # Writes need basic auth: a cookie (which a cross-site form could make a browser send) is not enough.
    body, content_type = encode_multipart(upload_fields(make_wheel(tmp_path / "d2", version="2.0")),
                                          "demo-2.0-py3-none-any.whl", b"x")
    write_cookie = session_cookie(login(client, secret=WRITE_SECRET))
    response = with_cookie(client, write_cookie).post("/simple/", content=body,
                                                      headers={"Content-Type": content_type})
    assert response.status_code == 401
    response = with_cookie(client, write_cookie).post("/yank/demo/1.0")
    assert response.status_code == 401
    assert with_cookie(client, write_cookie).get("/simple/demo/").status_code == 200


def test_tampered_expired_and_foreign_cookies_are_refused_by_the_app(
        state: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with make_client(state) as client:
        cookie = session_cookie(login(client))
        client.cookies.clear()
        assert with_cookie(client, cookie).get("/simple/").status_code == 200
        for forged in (tamper_payload(cookie, {"r": "another"}), tamper_payload(cookie, {"p": 2}),
                       flip_signature(cookie)):
            response = with_cookie(client, forged).get("/simple/")
            assert response.status_code == 401, forged
        # A genuinely old cookie: signed two hours ago with the server's own key.
        monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 7200)
        old = session_cookie(login(client))
        monkeypatch.undo()
        client.cookies.clear()
        assert with_cookie(client, old).get("/simple/").status_code == 401
        assert with_cookie(client, old).get("/").headers["location"].startswith("/login/")
    # Another server key (another ROOT, or another --session_secret) does not accept it.
    for other in (make_state(tmp_path / "other-root"),
                  make_state(tmp_path / "root", session_secret="a-different-session-secret")):
        with make_client(other) as client:
            assert with_cookie(client, cookie).get("/simple/").status_code == 401


def test_revoked_secret_stops_working(tmp_path: Path) -> None:
    """The cookie is re-checked through the repo's permission path on every request."""
    root = tmp_path / "root"
    state = make_state(root)
    with make_client(state) as client:
        cookie = session_cookie(login(client))
        client.cookies.clear()
        assert with_cookie(client, cookie).get("/simple/").status_code == 200
        # The secret is rotated (as POST /initialize/ with a new config would do).
        fresh = make_state(root, read="a-new-read-secret-123")
        state.repos = fresh.repos
        assert with_cookie(client, cookie).get("/simple/").status_code == 401


def test_key_file_is_0600_and_survives_restart(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with make_client(make_state(root)) as client:
        cookie = session_cookie(login(client))
    key_file = root / KEY_FILENAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not [p.name for p in root.iterdir() if p.name.startswith(".session-key")]
    with make_client(make_state(root)) as client:  # a restart, or a second server on the same ROOT
        assert with_cookie(client, cookie).get("/simple/").status_code == 200
    key_file.chmod(0o644)
    assert master_key(root, None) == key_file.read_text().strip().encode()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with pytest.raises(ConfigError):
        master_key(root, "too-short")
    assert master_key(root, "x" * 16) == b"x" * 16


def test_session_secret_is_shared_between_servers(tmp_path: Path) -> None:
    secret = "one-session-secret-for-the-fleet"
    with make_client(make_state(tmp_path / "a", session_secret=secret)) as client:
        cookie = session_cookie(login(client))
    with make_client(make_state(tmp_path / "b", session_secret=secret)) as client:
        assert with_cookie(client, cookie).get("/simple/").status_code == 200
    assert not (tmp_path / "a" / KEY_FILENAME).exists()


# -- basic auth, whatever the User-Agent ---------------------------------------------------------


def test_basic_auth_works_with_a_browser_user_agent(client: TestClient) -> None:
    headers = {"User-Agent": BROWSER_UA, "Accept": "text/html"}
    assert client.get("/simple/", headers=headers, auth=("local", READ_SECRET)).status_code == 200
    assert client.get("/", headers=headers, auth=("local", READ_SECRET)).status_code == 200
    response = client.get("/simple/", headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == 'Basic realm="pywharf"'
    # Wrong basic auth is refused even with a valid session cookie: basic auth is never ignored.
    cookie = session_cookie(login(client))
    client.cookies.clear()
    response = with_cookie(client, cookie).get("/simple/", headers=headers, auth=("local", "wrong"))
    assert response.status_code == 401


# -- CSRF ------------------------------------------------------------------------------------------


def test_login_without_a_valid_csrf_token_is_403(client: TestClient) -> None:
    good = csrf_token(client)
    form = {"repo": "local", "secret": READ_SECRET, "next": "/"}
    assert client.post("/login/", data=form).status_code == 403  # token missing
    assert client.post("/login/", data={**form, CSRF_FIELD: "0" * 64}).status_code == 403  # wrong token
    assert client.post("/login/", data={**form, CSRF_FIELD: good[:-1] + "x"}).status_code == 403
    nonce = client.cookies.get(CSRF_COOKIE)
    client.cookies.clear()  # a cross-site page cannot read or set our cookie
    response = client.post("/login/", data={**form, CSRF_FIELD: good})
    assert response.status_code == 403 and SESSION_COOKIE not in response.headers.get("set-cookie", "")
    client.cookies.clear()
    client.cookies.set(CSRF_COOKIE, nonce)
    assert client.post("/login/", data={**form, CSRF_FIELD: good}).status_code == 303


def test_safe_next_only_allows_local_paths() -> None:
    assert safe_next("/project/demo/?x=1") == "/project/demo/?x=1"
    for bad in ("//evil.example/", "https://evil.example/", "/\\evil", "evil", "", None, "/logout/", "/a\r\nb"):
        assert safe_next(bad) == "/"


def test_open_redirect_after_login_is_refused(client: TestClient) -> None:
    response = login(client, next_="//evil.example/")
    assert response.status_code == 303 and response.headers["location"] == "/"


# -- rate limit ------------------------------------------------------------------------------------


def test_failures_per_minute_then_429(client: TestClient, state: ServerState) -> None:
    for _ in range(state.settings.auth_failure_limit):
        response = login(client, secret="wrong")
        assert response.status_code == 200 and "Invalid repository name or secret." in response.text
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    response = login(client)  # even the right secret is not checked now
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert "Too many failed attempts" in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


def test_failure_limiter_window() -> None:
    now = [1000.0]
    limiter = FailureLimiter(limit=5, window=60, clock=lambda: now[0], max_clients=3)
    for _ in range(5):
        assert limiter.retry_after("a") == 0
        limiter.record_failure("a")
        now[0] += 1
    assert limiter.retry_after("a") == pytest.approx(55)
    assert limiter.retry_after("b") == 0  # per client
    now[0] += 56
    assert limiter.retry_after("a") == 0
    for client in ("b", "c", "d", "e"):
        limiter.record_failure(client)
    assert len(limiter._failures) <= 3  # memory stays bounded


# -- README rendering ------------------------------------------------------------------------------


def test_description_rendering_is_sanitized() -> None:
    evil = ('# Title\n\n<script>alert(1)</script>\n\n<img src=x onerror="alert(2)">\n\n'
            '[link](javascript:alert(3))\n\n<a href="https://ok.example/" onclick="x()">ok</a>\n')
    html = render_description(evil, "text/markdown")
    assert "<h3" in html and "<h1" not in html and "Title" in html  # demoted below the page's own h1/h2
    for bad in ("<script", "onerror", "javascript:", "onclick"):
        assert bad not in html.lower(), html
    rst = render_description("Title\n=====\n\n*emphasis* and ``code``\n", "")  # no type: reST, as on PyPI
    assert "<em>emphasis</em>" in rst
    raw = render_description("Title\n=====\n\n.. raw:: html\n\n   <script>x</script>\n", "text/x-rst")
    assert "<script" not in raw and "&lt;script&gt;" in raw  # refused by docutils: shown as escaped text
    plain = render_description("<b>not bold</b>\nline two", "text/plain")
    assert "<b>" not in plain and "&lt;b&gt;" in plain
    assert "<script" not in render_description("<script>x</script>" * 10, "text/x-rst; charset=UTF-8")


def test_cli_session_secret_flag_and_env_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``--session_secret`` and ``PYWHARF_SESSION_SECRET`` reach the server; a short one stops it
    at start (a guessable key would let anyone forge cookies offline)."""
    from pywharf_core.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["server", str(tmp_path / "root"), "--session_secret", "short"])
    assert exited.value.code == 1
    assert "at least 16 characters" in capsys.readouterr().err
    monkeypatch.setenv("PYWHARF_SESSION_SECRET", "also-short")
    with pytest.raises(SystemExit) as exited:
        main(["server", str(tmp_path / "root")])
    assert exited.value.code == 1
    assert "PYWHARF_SESSION_SECRET" in capsys.readouterr().err
