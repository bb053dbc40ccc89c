"""Issue 13, browser-borne writes, sessions and authentication limits.

Why each test exists:

1. Browsers replay basic-auth credentials typed into their prompt on cross-site requests: every
   write must refuse a request the browser marks as cross-site, while package tools (which send
   neither ``Sec-Fetch-Site`` nor ``Origin``) keep uploading.
2. Logout was a GET (any site could log you out) and a copied cookie kept working after it.
3. A non-ASCII Basic header was a 500 with a 7.8 KB traceback per request.
4. Basic auth had no failure limit, and it bypassed the login form's limiter.
5. Unknown repository names were answered faster than known ones (a name oracle).
6. One-character secrets were accepted.
7. github: every request with a random token cost a GitHub API call, unbounded.

Modules added by the fix are imported inside the tests, so that on the unfixed code each test
fails on its own rather than the whole file failing to import.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import re
import secrets
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import fs_config
from starlette.testclient import TestClient
from test_upload_rules import encode_multipart, make_wheel, upload_fields

from pywharf_core.http.app import create_app
from pywharf_core.http.web.csrf import CSRF_FIELD
from pywharf_core.http.web.session import SESSION_COOKIE
from pywharf_core.model.errors import ConfigError
from pywharf_core.service.repository import AuthExpiry
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup
from pywharf_core.storage.config import ConfigSource, build_config

READ, WRITE = "read-secret-0123456789", "write-secret-0123456789"
OTHER_READ, OTHER_WRITE = "other-read-0123456789", "other-write-0123456789"
EVIL = "https://evil.example"
CROSS_SITE_HEADERS = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": EVIL},
    {"Origin": "null"},
    {"Origin": "http://testserver:8080"},  # another port is another origin
    {"Sec-Fetch-Site": "same-origin", "Origin": EVIL},
]
SAME_ORIGIN_HEADERS = [
    {},  # twine, uv, poetry, pdm, hatch, flit, pip: neither header
    {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"},
    {"Sec-Fetch-Site": "none"},
    {"Origin": "http://testserver:80"},
    {"Origin": "https://pypi.example.com", "X-Forwarded-Host": "pypi.example.com"},  # behind a TLS proxy
]


def make_state(root: Path, **settings: Any) -> ServerState:
    config = fs_config(read=READ, write=WRITE) + fs_config("other", read=OTHER_READ, write=OTHER_WRITE)
    server_settings = ServerSettings(root=root, extra_index_url="", auth_expiry=AuthExpiry(), **settings)
    state = ServerState(server_settings)
    state.install(build_repos(load_setup(config, None, is_text=True), server_settings), configured=True)
    return state


def make_client(state: ServerState, address: str = "testclient") -> TestClient:
    return TestClient(create_app(state), raise_server_exceptions=False, follow_redirects=False,
                      client=(address, 50000))


@pytest.fixture
def state(tmp_path: Path) -> Iterator[ServerState]:
    state = make_state(tmp_path / "root")
    yield state
    state.shutdown()


@pytest.fixture
def client(state: ServerState) -> Iterator[TestClient]:
    with make_client(state) as test_client:
        yield test_client


def upload(client: TestClient, tmp_path: Path, headers: dict[str, str], path: str = "/simple/",
           version: str = "1.0") -> httpx.Response:
    dist = make_wheel(tmp_path / "dists", name="demo", version=version)
    body, content_type = encode_multipart(upload_fields(dist), dist.filename, dist.data)
    return client.post(path, content=body, headers={"Content-Type": content_type, **headers}, auth=("local", WRITE))


def listed(client: TestClient) -> str:
    return client.get("/simple/demo/", auth=("local", READ)).text


def form_token(client: TestClient, path: str = "/login/") -> str:
    response = client.get(path)
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', response.text)
    assert found, (response.status_code, response.text[:300])
    return found.group(1)


def login(client: TestClient, secret: str = READ, repo: str = "local", **headers: str) -> httpx.Response:
    token = form_token(client)
    return client.post("/login/", data={"repo": repo, "secret": secret, CSRF_FIELD: token, "next": "/"},
                       headers=headers)


# -- 1. cross-site writes ------------------------------------------------------------------------


@pytest.mark.parametrize("headers", CROSS_SITE_HEADERS, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()))
@pytest.mark.parametrize("path", ["/", "/simple/", "/simple"])
def test_cross_site_upload_is_refused(client: TestClient, tmp_path: Path, path: str, headers: dict[str, str]) -> None:
    response = upload(client, tmp_path, headers, path=path)
    assert response.status_code == 403, response.text
    assert response.text.startswith("Cross-site request refused") and "\n" not in response.text.strip()
    assert "demo-1.0" not in listed(client)


@pytest.mark.parametrize("headers", SAME_ORIGIN_HEADERS, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()))
def test_tools_and_same_origin_requests_still_upload(client: TestClient, tmp_path: Path,
                                                     headers: dict[str, str]) -> None:
    """Tools send neither header; a browser on this very origin (or through a proxy that sets
    X-Forwarded-Host) is not cross-site."""
    response = upload(client, tmp_path, headers)
    assert response.status_code == 200, response.text
    assert "demo-1.0" in listed(client)


@pytest.mark.parametrize("action", ["yank", "unyank"])
@pytest.mark.parametrize("headers", CROSS_SITE_HEADERS[:3], ids=["cross-site", "same-site", "origin"])
def test_cross_site_yank_and_unyank_are_refused(client: TestClient, tmp_path: Path, action: str,
                                                headers: dict[str, str]) -> None:
    assert upload(client, tmp_path, {}).status_code == 200
    if action == "unyank":
        assert client.post("/yank/demo/1.0", data={"reason": "x"}, auth=("local", WRITE)).status_code == 200
    before = listed(client)
    response = client.post(f"/{action}/demo/1.0", data={"reason": "evil"}, auth=("local", WRITE), headers=headers)
    assert response.status_code == 403, response.text
    assert listed(client) == before
    # The same request without the browser's headers (the pywharf yank command) works.
    assert client.post(f"/{action}/demo/1.0", data={"reason": "ok"}, auth=("local", WRITE)).status_code == 200
    assert listed(client) != before


def test_cross_site_initialize_is_refused(tmp_path: Path) -> None:
    state = ServerState(ServerSettings(root=tmp_path / "root"))  # unconfigured: /initialize/ is open
    config = fs_config(read=READ, write=WRITE)
    with make_client(state) as client:
        response = client.post("/initialize/", data={"config": config}, headers={"Sec-Fetch-Site": "cross-site"})
        assert response.status_code == 403, response.text
        assert not state.configured and not state.repos
        response = client.post("/initialize/", data={"config": config}, headers={"Origin": EVIL})
        assert response.status_code == 403, response.text
        assert client.post("/initialize/", data={"config": config}).status_code == 200
    state.shutdown()


def test_every_unsafe_method_is_guarded_even_on_unknown_paths(client: TestClient) -> None:
    """The guard is one middleware, so a write endpoint added later is covered by construction."""
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = client.request(method, "/some/future/endpoint/", headers={"Sec-Fetch-Site": "cross-site"})
        assert response.status_code == 403, (method, response.status_code)
    assert client.get("/healthz", headers={"Sec-Fetch-Site": "cross-site", "Origin": EVIL}).status_code == 200


def test_same_origin_login_and_logout_forms_work(client: TestClient) -> None:
    same = {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"}
    assert login(client, **same).status_code == 303
    assert client.get("/simple/").status_code == 200
    token = form_token(client, "/")
    assert client.post("/logout/", data={CSRF_FIELD: token}, headers=same).status_code == 303
    assert client.get("/simple/").status_code == 401
    # A cross-site login is refused before it is even checked.
    assert login(client, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403


# -- 2. logout -----------------------------------------------------------------------------------


def test_get_logout_does_not_log_out(client: TestClient) -> None:
    assert login(client).status_code == 303
    response = client.get("/logout/")
    assert response.status_code == 200, response.status_code  # a page with the logout button
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert 'method="post" action="/logout/"' in response.text
    assert client.get("/simple/").status_code == 200


def test_logout_without_csrf_token_is_refused(client: TestClient) -> None:
    assert login(client).status_code == 303
    for data in ({}, {CSRF_FIELD: "forged"}):
        response = client.post("/logout/", data=data)
        assert response.status_code == 403, response.status_code
    assert client.get("/simple/").status_code == 200


def test_pages_carry_a_logout_form_not_a_link(client: TestClient) -> None:
    assert login(client).status_code == 303
    home = client.get("/").text
    assert 'href="/logout/"' not in home
    form = r'<form method="post" action="/logout/"[^>]*>\s*<input type="hidden" name="csrf_token" value="[^"]+"'
    assert re.search(form, home)


def logged_in_cookie(client: TestClient) -> str:
    response = login(client)
    assert response.status_code == 303
    return client.cookies[SESSION_COOKIE]


def logout(client: TestClient) -> None:
    response = client.post("/logout/", data={CSRF_FIELD: form_token(client, "/")})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/login/?logged_out=1"


def test_copied_cookie_stops_working_after_logout(state: ServerState) -> None:
    with make_client(state) as victim, make_client(state, "10.0.0.9") as thief:
        cookie = logged_in_cookie(victim)
        thief.cookies.set(SESSION_COOKIE, cookie)
        assert thief.get("/simple/").status_code == 200
        logout(victim)
        assert thief.get("/simple/").status_code == 401
        assert thief.get("/", follow_redirects=False).status_code == 303  # to the login form
        # Logging in again gives a new, working session.
        assert victim.get("/simple/").status_code == 401
        assert login(victim).status_code == 303 and victim.get("/simple/").status_code == 200


def test_revocation_survives_restart_and_is_shared_through_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first, sibling = make_state(root), make_state(root)  # two servers sharing one ROOT
    with make_client(first) as client, make_client(sibling) as other:
        cookie = logged_in_cookie(client)
        other.cookies.set(SESSION_COOKIE, cookie)
        assert other.get("/simple/").status_code == 200
        logout(client)
        assert other.get("/simple/").status_code == 401  # the sibling reads ROOT's revocations
    restarted = make_state(root)
    with make_client(restarted) as after:
        after.cookies.set(SESSION_COOKIE, cookie)
        assert after.get("/simple/").status_code == 401
    for state in (first, sibling, restarted):
        state.shutdown()


def test_revocation_set_is_bounded_and_forgets_expired_sessions(tmp_path: Path) -> None:
    from pywharf_core.http.web.revocation import REVOKED_FILENAME, RevokedSessions

    now = [1_000_000.0]
    revoked = RevokedSessions(tmp_path, max_entries=5, clock=lambda: now[0])
    ids = [secrets.token_urlsafe(18) for _ in range(8)]
    for i, session_id in enumerate(ids):
        revoked.revoke(session_id, now[0] + 100 + i)
    assert len(revoked._entries) <= 5
    assert revoked.is_revoked(ids[-1])  # the newest are kept; the ones closest to expiry go first
    now[0] += 200  # every cookie would have expired by now anyway
    assert not revoked.is_revoked(ids[-1])
    # The file stays small: compacted by an atomic replace once mostly expired.
    for _ in range(3000):
        revoked.revoke(secrets.token_urlsafe(18), now[0] + 1)
        now[0] += 2
    lines = (tmp_path / REVOKED_FILENAME).read_text().splitlines()
    assert len(lines) <= 2 * 1000 + 1, len(lines)
    assert all(re.fullmatch(r"\d+ [A-Za-z0-9_-]{24}", line) for line in lines)
    # A damaged file only forgets logouts; it never breaks the server.
    (tmp_path / REVOKED_FILENAME).write_bytes(b"\xff\xfe garbage\nnot a line\n")
    fresh = RevokedSessions(tmp_path, clock=lambda: now[0])
    assert not fresh.is_revoked("x" * 24)


# -- 3. undecodable Basic header -----------------------------------------------------------------


async def raw_asgi_get(app: Any, headers: list[tuple[bytes, bytes]], path: str = "/simple/") -> tuple[int, bytes]:
    """One request through the app's ASGI interface with header bytes exactly as given."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), *headers], "client": ("127.0.0.1", 5000),
             "server": ("testserver", 80)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.parametrize("value", [b"Basic \xff\xfe", b"Basic bG9jYWw6\xe9\xe9",
                                   b"Basic " + base64.b64encode(b"local:\xff\xfe")],
                         ids=["raw-bytes", "latin1-in-base64", "credentials-not-utf8"])
def test_undecodable_basic_header_is_a_400_with_one_short_log_line(
    state: ServerState, caplog: pytest.LogCaptureFixture, value: bytes
) -> None:
    app = create_app(state)
    with caplog.at_level(logging.DEBUG, logger="pywharf_core"):
        status, body = asyncio.run(raw_asgi_get(app, [(b"authorization", value)]))
    assert status == 400, body
    assert body.startswith(b"Malformed Authorization header") and body.count(b"\n") <= 1
    # The repository's background sync may log meanwhile ("synced 0 files"): count what the
    # request logged, i.e. every record outside the sync's logger.
    records = [r for r in caplog.records if r.name.startswith("pywharf") and r.name != "pywharf_core.service.sync"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].exc_info is None and len(records[0].getMessage()) < 200
    assert "\xff" not in records[0].getMessage()


# -- 4. one failure limit for basic auth and the login form ---------------------------------------


@pytest.fixture
def limited_state(tmp_path: Path) -> Iterator[ServerState]:
    state = make_state(tmp_path / "root", auth_failure_limit=4, auth_failure_window=60)
    yield state
    state.shutdown()


def test_basic_auth_failures_are_limited(limited_state: ServerState) -> None:
    with make_client(limited_state) as client:
        for _ in range(4):
            assert client.get("/simple/", auth=("local", "wrong-guess-000000")).status_code == 401
        response = client.get("/simple/", auth=("local", READ))  # even the right secret is not checked now
        assert response.status_code == 429, response.text
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert "Too many failed" in response.text and "\n" not in response.text.strip()
        assert upload(client, Path(limited_state.settings.root).parent, {}).status_code == 429


def test_default_budget_counts_basic_auth_and_login_together(client: TestClient) -> None:
    """Defaults (10 failures a minute per address and repository): 5 guesses by basic auth and 5
    through the login form use it up, for both paths."""
    for _ in range(5):
        assert client.get("/simple/", auth=("local", "wrong-guess-000000")).status_code == 401
    for _ in range(5):
        assert login(client, secret="wrong-guess-000000").status_code == 200
    assert client.get("/simple/", auth=("local", READ)).status_code == 429
    assert login(client).status_code == 429


def test_login_form_and_basic_auth_share_one_budget(limited_state: ServerState) -> None:
    with make_client(limited_state) as client:
        for _ in range(2):
            assert client.get("/simple/", auth=("local", "wrong-guess-000000")).status_code == 401
        for _ in range(2):
            response = login(client, secret="wrong-guess-000000")
            assert response.status_code == 200 and "Invalid repository name or secret." in response.text
        assert login(client).status_code == 429
        assert client.get("/simple/", auth=("local", READ)).status_code == 429


def test_limit_is_per_address_and_repository(limited_state: ServerState) -> None:
    """While one address is limited on one repository, others keep working with right secrets."""
    with make_client(limited_state, "203.0.113.7") as attacker, make_client(limited_state, "198.51.100.2") as user:
        for _ in range(5):
            attacker.get("/simple/", auth=("local", "wrong-guess-000000"))
        assert attacker.get("/simple/", auth=("local", READ)).status_code == 429
        assert user.get("/simple/", auth=("local", READ)).status_code == 200
        assert login(user).status_code == 303
        assert attacker.get("/simple/", auth=("other", OTHER_READ)).status_code == 200


def test_unknown_names_count_and_limit_clears_after_window(limited_state: ServerState) -> None:
    now = [5000.0]
    with make_client(limited_state) as client:
        for _ in range(4):
            assert client.get("/simple/", auth=("no-such-repo", "wrong-guess-000000")).status_code == 401
        assert client.get("/simple/", auth=("no-such-repo", "wrong-guess-000000")).status_code == 429
        limiter = client.app.state.pywharf_auth_limiter  # type: ignore[attr-defined]
        assert (limiter.limit, limiter.window) == (4, 60)  # from the server settings
        start = limiter._clock()
        limiter._clock = lambda: start + now[0] - 5000.0
        now[0] += 61
        assert client.get("/simple/", auth=("no-such-repo", "wrong-guess-000000")).status_code == 401


def test_cli_has_documented_failure_limit_flags() -> None:
    import inspect

    from pywharf_core.cli import server

    parameters = inspect.signature(server).parameters
    assert parameters["auth_failure_limit"].default == ServerSettings(root=Path(".")).auth_failure_limit == 10
    assert parameters["auth_failure_window"].default == ServerSettings(root=Path(".")).auth_failure_window == 60


# -- 5. no timing oracle for repository names ------------------------------------------------------


def test_unknown_name_does_the_same_work_and_gets_the_same_answer(client: TestClient,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bool, int]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((threading.current_thread() is threading.main_thread(), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    answers = {}
    work = {}
    for name in ("local", "no-such-repo"):
        calls.clear()
        response = client.get("/simple/", auth=(name, "a-wrong-secret-of-some-length"))
        answers[name] = (response.status_code, response.text, sorted(response.headers.items()))
        work[name] = [on_main for on_main, _ in calls]
    assert answers["local"] == answers["no-such-repo"]
    assert answers["local"][0] == 401
    # Both compare against two secrets in constant time, in a worker thread (the same thread hop).
    assert work["local"] == work["no-such-repo"] == [False, False]


# -- 6. secret strength --------------------------------------------------------------------------


def fs_table(**table: Any) -> dict[str, Any]:
    return {"type": "file_system", "read_secret": READ, "write_secret": WRITE, **table}


@pytest.mark.parametrize(
    ("table", "key", "fragment"),
    [
        (fs_table(read_secret="r"), "read_secret", "is 1 characters: at least 12 are required"),
        (fs_table(write_secret=" "), "write_secret", "must not be only whitespace"),
        (fs_table(write_secret=" " * 30), "write_secret", "must not be only whitespace"),
        (fs_table(read_secret="elevenchars"), "read_secret", "is 11 characters"),
        (fs_table(read_secret="abcd", min_secret_chars=5), "read_secret", "at least 5 are required"),
        (fs_table(min_secret_chars=0), "min_secret_chars", "must be a positive integer"),
    ],
)
def test_weak_secrets_are_refused_at_config_load(table: dict[str, Any], key: str, fragment: str) -> None:
    from pywharf_backends.file_system import FileSystemConfig

    with pytest.raises(ConfigError) as info:
        build_config(FileSystemConfig, "local", table, ConfigSource("/etc/pywharf/config.toml"))
    message = str(info.value)
    assert message.startswith(f"/etc/pywharf/config.toml: [local] key '{key}': "), message
    assert fragment in message
    for value in (table["read_secret"], table["write_secret"]):
        if value.strip():
            assert f"'{value}'" not in message and f'"{value}"' not in message  # never the secret itself


def test_secret_minimum_applies_to_every_shared_secret_backend(tmp_path: Path) -> None:
    for backend in ("file_system", "memory"):
        with pytest.raises(ConfigError, match=r"\[weak\] key 'write_secret'"):
            load_setup(f'[weak]\ntype = "{backend}"\nread_secret = "{READ}"\nwrite_secret = "bar"\n', None,
                       is_text=True)
    assert load_setup(fs_config("ok", read="twelve-chars", write="x" * 12), None, is_text=True).configs
    lowered = '[ok]\ntype = "file_system"\nread_secret = "r"\nwrite_secret = "w"\nmin_secret_chars = 1\n'
    assert load_setup(lowered, None, is_text=True).configs  # explicitly lowered for a throwaway setup


# -- 7. github: refused tokens cached, token checks bounded ---------------------------------------


@pytest.fixture
def gh() -> Iterator[Any]:
    from github_standin import GitHubStandIn
    from test_github_backend import prepare

    with GitHubStandIn.start(validate=True) as standin:
        prepare(standin)
        yield standin
        assert standin.internal_errors == []


def github_backend(gh: Any, tmp_path: Path, **table: Any) -> Any:
    from test_github_backend import ADMIN, OWNER, REPO_NAME

    from pywharf_backends.github.config import GitHubConfig
    from pywharf_backends.github.storage import GitHubBackend
    from pywharf_core.storage.backend import BackendContext

    config = build_config(GitHubConfig, "gh", {"type": "github", "owner": OWNER, "repo": REPO_NAME,
                                               "api_base_url": gh.api_url, **table}, ConfigSource("config.toml"))
    return GitHubBackend(config, BackendContext(root=tmp_path, admin_secret=ADMIN))


AUTH_CHECK = r"^/api/v3/repos/alice/pkgs$"


def test_github_refused_tokens_are_cached(gh: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_github_backend import STRANGER, WRITER

    from pywharf_backends.github import storage
    from pywharf_core.storage.backend import Permission

    backend = github_backend(gh, tmp_path, auth_failure_ttl=30)
    random_token = "ghp_" + secrets.token_hex(18)
    for _ in range(5):
        assert backend.authenticate(random_token) is Permission.NONE  # 401 from GitHub
        assert backend.authenticate(STRANGER) is Permission.NONE  # 404: cannot see the private repo
    assert gh.request_count("GET", AUTH_CHECK) == 2
    for _ in range(3):
        assert backend.authenticate(WRITER) is Permission.WRITE  # positives are the core's to cache
    assert gh.request_count("GET", AUTH_CHECK) == 5
    # Briefly: after the TTL GitHub is asked again (the token may have been granted access).
    now = time.monotonic()
    # Only the backend's clock: freezing time.monotonic itself would stall the stand-in's event loop.
    later = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    later.monotonic = lambda: now + 31
    monkeypatch.setattr(storage, "time", later)
    assert backend.authenticate(random_token) is Permission.NONE
    assert gh.request_count("GET", AUTH_CHECK) == 6


def test_github_refusal_cache_is_bounded(gh: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pywharf_backends.github import storage

    monkeypatch.setattr(storage, "AUTH_FAILURE_CACHE_MAX", 3)
    backend = github_backend(gh, tmp_path)
    for _ in range(6):
        backend.authenticate("ghp_" + secrets.token_hex(18))
    assert len(backend._refused) <= 3


def test_github_concurrent_token_checks_are_bounded(gh: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from pywharf_backends.github import client as client_module
    from pywharf_core.storage.backend import Permission

    backend = github_backend(gh, tmp_path, max_concurrent_auth_checks=2)
    gh.add_fault("GET", AUTH_CHECK, status=None, delay=0.3, times=8)
    in_flight, peak, lock = [0], [0], threading.Lock()
    real_request = client_module.GitHubClient.request

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return real_request(self, *args, **kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(client_module.GitHubClient, "request", counting)
    tokens = ["ghp_" + secrets.token_hex(18) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        verdicts = list(pool.map(backend.authenticate, tokens))
    assert verdicts == [Permission.NONE] * 8
    assert peak[0] == 2, peak[0]
    assert gh.request_count("GET", AUTH_CHECK) == 8
