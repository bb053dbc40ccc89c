"""The audit log end to end (issue 16): two real servers on one storage; real ``twine upload``,
``pywharf yank``, ``pywharf token`` and refused writes through server A; then ``pywharf audit``
against server B shows every one of them with its actor and client address (``--json`` parses,
``--since`` filters), ``GET /_/audit/<repo>`` is the write secret's only, and the browser's
``/audit/`` page lists them for a write session and refuses a read session.

Why: the log is kept by the store, not by a server, so what one server recorded must be read
through any other; and it must name who did what without ever holding a secret.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import requests
from conftest import Server, fs_config, run, tool
from distbuilder import DistSpec, build_wheel
from starlette.testclient import TestClient
from test_github_backend import NAME, OWNER, READER, REPO_NAME, STRANGER, WRITER, gh, start, upload

from pywharf_core.http.app import create_app
from pywharf_core.http.web.csrf import CSRF_FIELD
from pywharf_core.model.api_tokens import SECRET_CHARS, parse_token
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup

READ, WRITE = "read-secret-00", "write-secret"
__all__ = ["gh"]  # the GitHub stand-in fixture, used here


def two_servers(server_factory, tmp_path: Path) -> tuple[Server, Server]:  # type: ignore[no-untyped-def]
    shared = tmp_path / "shared-storage"
    config = fs_config(storage_path=str(shared))
    first = server_factory(config, "--extra_index_url=", root_name="a")
    second = server_factory(config, "--extra_index_url=", root_name="b")
    return first, second


def pywharf(env: dict[str, str], *args: str, check: bool = True) -> str:
    result = run([tool("pywharf"), *args], {**env, "PYWHARF_TEST_WRITE": WRITE}, timeout=60, check=check)
    return result.stdout + (result.stderr if not check else "")


def twine(server: Server, wheel: Path, env: dict[str, str], password: str = WRITE, check: bool = True) -> str:
    cmd = [tool("twine"), "upload", "--repository-url", f"{server.base}/simple/", "--disable-progress-bar",
           "--non-interactive", str(wheel)]
    result = run(cmd, {**env, "TWINE_USERNAME": "local", "TWINE_PASSWORD": password}, timeout=120, check=check)
    return result.stdout + result.stderr


def login(session: requests.Session, server: Server, secret: str) -> None:
    page = session.get(f"{server.base}/login/", timeout=10)
    csrf = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', page.text)
    assert csrf, page.text[:300]
    response = session.post(f"{server.base}/login/", data={"repo": "local", "secret": secret,
                                                            CSRF_FIELD: csrf.group(1), "next": "/"},
                            allow_redirects=False, timeout=10)
    assert response.status_code == 303, response.text


def test_writes_through_one_server_are_audited_and_read_through_another(
        server_factory, env: dict[str, str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = two_servers(server_factory, tmp_path)
    audit_b = ["audit", "--url", b.base, "--repo", "local", "--secret_env", "PYWHARF_TEST_WRITE"]

    first = build_wheel(DistSpec("demo", "1.0"), tmp_path / "one")
    twine(a, first, env)
    time.sleep(1.1)
    between = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    time.sleep(1.1)

    second = build_wheel(DistSpec("demo", "2.0"), tmp_path / "two")
    twine(a, second, env)
    assert "yank: demo-2.0-py3-none-any.whl" in pywharf(
        env, "yank", "demo", "2.0", "--reason", "broken build", "--url", a.base, "--repo", "local",
        "--secret_env", "PYWHARF_TEST_WRITE")
    created = pywharf(env, "token", "create", "--projects", "demo", "--description", "release job",
                      "--url", a.base, "--repo", "local", "--secret_env", "PYWHARF_TEST_WRITE")
    token = created.strip().splitlines()[-1]
    token_id = parse_token(token).token_id  # type: ignore[union-attr]
    # Refused writes: a wrong secret (401), a read secret (403), other bytes under a stored name (409).
    assert "401" in twine(a, second, env, password="wrong-secret-123", check=False)
    assert requests.post(f"{a.base}/yank/demo/1.0", auth=("local", READ), timeout=10).status_code == 403
    clash = build_wheel(DistSpec("demo", "1.0"), tmp_path / "clash", extra_bytes=b"other bytes")
    assert "409" in twine(a, clash, env, check=False)
    third = build_wheel(DistSpec("demo", "3.0"), tmp_path / "three")
    run([tool("twine"), "upload", "--repository-url", f"{a.base}/simple/", "--disable-progress-bar",
         "--non-interactive", str(third)], {**env, "TWINE_USERNAME": "__token__", "TWINE_PASSWORD": token},
        timeout=120)
    assert f"revoked {token_id}" in pywharf(env, "token", "revoke", token_id, "--url", a.base, "--repo", "local",
                                            "--secret_env", "PYWHARF_TEST_WRITE")
    assert requests.post(f"{a.base}/yank/demo/3.0", auth=("__token__", token), timeout=10).status_code == 401

    # -- read through the other server ------------------------------------------------------------
    events = json.loads(pywharf(env, *audit_b, "--since", "1h", "--json"))["events"]
    summary = [(e["action"], e["status"], e["filename"]) for e in events]
    assert summary == [
        ("upload", 200, "demo-1.0-py3-none-any.whl"),
        ("upload", 200, "demo-2.0-py3-none-any.whl"),
        ("yank", 200, "demo-2.0-py3-none-any.whl"),
        ("token-create", 201, ""),
        ("upload", 401, ""),
        ("yank", 403, "1.0"),
        ("upload", 409, "demo-1.0-py3-none-any.whl"),
        ("upload", 200, "demo-3.0-py3-none-any.whl"),
        ("token-revoke", 200, ""),
        ("yank", 401, "3.0"),
    ], summary
    assert {e["client"] for e in events} == {"127.0.0.1"}
    assert {e["repo"] for e in events} == {"local"}
    actors = [e["actor"] for e in events]
    assert actors[:4] == ["write secret"] * 4
    assert actors[4] == "invalid credentials" and actors[5] == "read secret"
    assert actors[7] == f"api token {token_id} (release job)"
    assert actors[9] == f"invalid credentials (token {token_id})"
    assert events[0]["detail"] == "created" and events[2]["detail"] == "broken build"
    assert token_id in events[3]["detail"] and "release job" in events[3]["detail"]
    assert "already exists" in events[6]["detail"]
    everything = json.dumps(events)
    for secret in (WRITE, READ, "wrong-secret-123", token[-SECRET_CHARS:]):
        assert secret not in everything
    stored = b"".join(p.read_bytes() for p in (tmp_path / "shared-storage" / ".pywharf" / "audit").rglob("*.json"))
    assert WRITE.encode() not in stored and token.encode() not in stored

    since = json.loads(pywharf(env, *audit_b, "--since", between, "--json"))["events"]
    assert [e["filename"] for e in since][:1] == ["demo-2.0-py3-none-any.whl"] and len(since) == len(events) - 1
    text = pywharf(env, *audit_b, "--since", "1h")
    lines = text.strip().splitlines()
    assert len(lines) == len(events)
    assert "upload" in lines[0] and "demo/demo-1.0-py3-none-any.whl" in lines[0] and "from 127.0.0.1" in lines[0]
    assert "409" in lines[6] and "by write secret" in lines[6]
    assert len(pywharf(env, *audit_b, "--since", "1h", "--limit", "3").strip().splitlines()) == 3

    # -- who may read -------------------------------------------------------------------------------
    url = f"{b.base}/_/audit/local"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, auth=("local", READ), timeout=10).status_code == 403
    upload_token = json.loads(pywharf(env, "token", "create", "--json_output", "--url", a.base, "--repo", "local",
                                      "--secret_env", "PYWHARF_TEST_WRITE"))["token"]
    assert requests.get(url, auth=("__token__", upload_token), timeout=10).status_code == 403
    page = requests.get(url, params={"since": "1h", "limit": "2", "format": "json"}, auth=("local", WRITE), timeout=10)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert len(page.json()["events"]) == 2 and page.json()["next"]
    for bad in ({"since": "soon"}, {"limit": "100000"}, {"cursor": "../etc"}):
        assert requests.get(url, params=bad, auth=("local", WRITE), timeout=10).status_code == 400

    # -- the browser page --------------------------------------------------------------------------
    writer = requests.Session()
    login(writer, b, WRITE)
    html = writer.get(f"{b.base}/audit/", timeout=10)
    assert html.status_code == 200
    assert "demo-2.0-py3-none-any.whl" in html.text and "broken build" in html.text
    assert f"api token {token_id} (release job)" in html.text and "127.0.0.1" in html.text
    assert 'href="/audit/"' in writer.get(f"{b.base}/", timeout=10).text
    reader = requests.Session()
    login(reader, b, READ)
    refused = reader.get(f"{b.base}/audit/", timeout=10)
    assert refused.status_code == 403 and "demo-2.0" not in refused.text
    assert 'href="/audit/"' not in reader.get(f"{b.base}/", timeout=10).text
    assert requests.get(f"{b.base}/audit/", allow_redirects=False, timeout=10).status_code == 303


def test_browser_token_changes_and_their_refusals_are_audited(tmp_path: Path) -> None:
    settings = ServerSettings(root=tmp_path / "root", extra_index_url="")
    state = ServerState(settings)
    state.install(build_repos(load_setup(fs_config(), None, is_text=True), settings), configured=True)
    try:
        client = TestClient(create_app(state), raise_server_exceptions=False, follow_redirects=False)

        def csrf(path: str) -> str:
            found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', client.get(path).text)
            assert found
            return found.group(1)

        def log_in(secret: str) -> None:
            client.cookies.clear()
            client.post("/login/", data={"repo": "local", "secret": secret, CSRF_FIELD: csrf("/login/"), "next": "/"})

        log_in(WRITE)
        created = client.post("/tokens/", data={"scope": "read", "projects": "", "expires_days": "1",
                                                "description": "laptop", CSRF_FIELD: csrf("/tokens/")})
        token_id = re.search(r"pywharf-local-([0-9a-f]{16})-", created.text).group(1)  # type: ignore[union-attr]
        revoked = client.post(f"/tokens/{token_id}/revoke", data={CSRF_FIELD: csrf("/tokens/")})
        assert revoked.status_code == 303
        log_in(READ)
        assert client.post("/tokens/", data={"scope": "upload", CSRF_FIELD: csrf("/tokens/")}).status_code == 403
        events = state.repos["local"].audit.read(time.time() - 60).events  # type: ignore[union-attr]
        assert [(e.action, e.status, e.actor) for e in events] == [
            ("token-create", 201, "write secret"), ("token-revoke", 200, "write secret"),
            ("token-create", 403, "read secret")]
        assert all(token_id in e.detail and "browser UI" in e.detail for e in events[:2])
        assert all(e.client == "testclient" for e in events)
    finally:
        state.shutdown()


def test_the_read_route_is_bounded_and_answers_text_without_format(tmp_path: Path) -> None:
    settings = ServerSettings(root=tmp_path / "root", extra_index_url="")
    state = ServerState(settings)
    state.install(build_repos(load_setup(fs_config(), None, is_text=True), settings), configured=True)
    try:
        app = create_app(state)
        client = TestClient(app, raise_server_exceptions=False)
        assert client.post("/yank/demo/1.0", auth=("local", READ)).status_code == 403
        text = client.get("/_/audit/local", auth=("local", WRITE))
        assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
        assert "403  yank          demo/1.0  by read secret  from testclient" in text.text
        app.state.pywharf_audit_read_slots = threading.BoundedSemaphore(1)
        app.state.pywharf_audit_read_slots.acquire()  # as if a read were running: the only slot is taken
        busy = client.get("/_/audit/local", auth=("local", WRITE))
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    finally:
        state.shutdown()


def test_on_github_events_are_batched_into_one_commit(gh, server_factory, env: dict[str, str],  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    """On a store where each document write is a commit, three uploads and two refused ones make
    one audit commit (written when the log is read), not five."""
    server = start(server_factory, gh)
    for version in ("1.0", "2.0", "3.0"):
        wheel = build_wheel(DistSpec("demo", version), tmp_path / version)
        assert upload(server, wheel).status_code == 200
    assert upload(server, build_wheel(DistSpec("demo", "4.0"), tmp_path / "4.0"), READER).status_code == 403
    assert upload(server, build_wheel(DistSpec("demo", "4.0"), tmp_path / "4.0"), STRANGER).status_code == 401

    def audit_commits() -> list[str]:
        return [message for _, message in gh.history(OWNER, REPO_NAME) if "/audit/" in message]

    assert audit_commits() == []  # buffered
    events = json.loads(run([tool("pywharf"), "audit", "--url", server.base, "--repo", NAME, "--secret_env", "GH_W",
                             "--json"], {**env, "GH_W": WRITER}, timeout=60).stdout)["events"]
    assert [(e["action"], e["status"]) for e in events] == [("upload", 200)] * 3 + [("upload", 403), ("upload", 401)]
    assert len(audit_commits()) == 1
    assert requests.get(f"{server.base}/_/audit/{NAME}", auth=(NAME, READER), timeout=10).status_code == 403
    for token in (WRITER, READER, STRANGER):
        assert token not in json.dumps(events)
