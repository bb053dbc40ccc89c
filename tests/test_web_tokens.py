"""The browser UI's tokens page (issue 14): a session logged in with the write secret creates,
lists and revokes API tokens at ``/tokens/``.

Why each test exists: these are the only browser forms that change something with the session
cookie, so they must be refused to anyone but the write secret's session (a read session or a
token session must not mint a token), without their CSRF token, and from another site; the new
token must appear once, in the answer to the POST only (never in a URL, a redirect, the list or
a log line), and really work as ``__token__``; revoking must refuse it at once. In-process
(starlette TestClient against the real app), so fast.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import fs_config
from starlette.testclient import TestClient

from pywharf_core.http.app import create_app
from pywharf_core.http.web.csrf import CSRF_FIELD
from pywharf_core.model.api_tokens import parse_token
from pywharf_core.service.repository import AuthExpiry
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup

READ, WRITE = "read-secret-0123456789", "write-secret-0123456789"
TOKEN_TEXT = re.compile(r"pywharf-local-[0-9a-f]{16}-[A-Za-z0-9_-]{43}")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[ServerState]:
    settings = ServerSettings(root=tmp_path / "root", extra_index_url="", auth_expiry=AuthExpiry())
    state = ServerState(settings)
    state.install(build_repos(load_setup(fs_config(read=READ, write=WRITE), None, is_text=True), settings),
                  configured=True)
    yield state
    state.shutdown()


def new_client(state: ServerState) -> TestClient:
    return TestClient(create_app(state), raise_server_exceptions=False, follow_redirects=False)


@pytest.fixture
def client(state: ServerState) -> Iterator[TestClient]:
    with new_client(state) as test_client:
        yield test_client


def form_token(client: TestClient, path: str = "/login/") -> str:
    response = client.get(path)
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', response.text)
    assert found, (response.status_code, response.text[:300])
    return found.group(1)


def login(client: TestClient, secret: str, repo: str = "local") -> None:
    response = client.post("/login/", data={"repo": repo, "secret": secret, CSRF_FIELD: form_token(client),
                                            "next": "/"})
    assert response.status_code == 303, response.text


def create(client: TestClient, csrf: str | None = None, **fields: str) -> httpx.Response:
    data = {"scope": "upload", "projects": "", "expires_days": "90", "description": "", **fields}
    data[CSRF_FIELD] = form_token(client, "/tokens/") if csrf is None else csrf
    return client.post("/tokens/", data=data)


def created_token(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    found = TOKEN_TEXT.findall(response.text)
    assert found, response.text
    return found[0]


def listed(client: TestClient) -> dict[str, str]:
    """Token ids on the list page, each with its row's text."""
    page = client.get("/tokens/")
    assert page.status_code == 200, page.text
    return dict(re.findall(r'<tr id="token-([0-9a-f]{16})">(.*?)</tr>', page.text, re.S))


def live_token_ids(state: ServerState) -> list[str]:
    return [record.token_id for record in state.repos["local"].tokens.list()]


def assert_page_headers(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


# -- the write session ---------------------------------------------------------------------------


def test_write_session_creates_lists_and_revokes(client: TestClient, state: ServerState) -> None:
    login(client, WRITE)
    home = client.get("/")
    assert 'href="/tokens/"' in home.text  # the header links the tokens page for the write session
    page = client.get("/tokens/")
    assert page.status_code == 200
    assert_page_headers(page)
    assert "No live tokens." in page.text
    assert 'name="expires_days"' in page.text and 'value="90"' in page.text

    response = create(client, scope="upload", projects="Demo_Pkg, other", expires_days="30", description="ci job")
    token = created_token(response)
    assert_page_headers(response)
    parsed = parse_token(token)
    assert parsed is not None and parsed.repo == "local"
    assert response.text.count(token) >= 2  # the token block and the usage lines: this page only
    assert f"-u __token__ -p {token}" in response.text  # twine
    assert f"http://__token__:{token}@testserver/repos/local/simple/" in response.text  # pip
    assert 'data-copy="new-token"' in response.text
    assert "location" not in response.headers and token not in str(response.url)

    # It works on /simple/ as __token__, and the list shows it without its secret.
    assert client.get("/simple/", auth=("__token__", token)).status_code == 200
    rows = listed(client)
    assert list(rows) == [parsed.token_id]
    row = rows[parsed.token_id]
    assert "upload" in row and "demo-pkg, other" in row and "ci job" in row
    assert token not in client.get("/tokens/").text
    assert live_token_ids(state) == [parsed.token_id]

    # Revoke: 303 back to the list with a notice; the token is refused at once.
    revoke = client.post(f"/tokens/{parsed.token_id}/revoke", data={CSRF_FIELD: form_token(client, "/tokens/")})
    assert revoke.status_code == 303
    assert revoke.headers["location"] == f"/tokens/?revoked={parsed.token_id}"
    assert revoke.headers["cache-control"] == "no-store"
    after = client.get(revoke.headers["location"])
    assert f"Token {parsed.token_id} is revoked" in after.text
    assert listed(client) == {}
    assert live_token_ids(state) == []
    assert client.get("/simple/", auth=("__token__", token)).status_code == 401


def test_a_reloaded_create_page_does_not_create_a_second_token(client: TestClient, state: ServerState) -> None:
    """A browser reload of the "New API token" page sends the same POST again: the form's id,
    remembered in a cookie once it created a token, stops the second one (409, the list shows
    the first); a fresh form (a new id) creates another."""
    login(client, WRITE)
    page = client.get("/tokens/")
    csrf = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', page.text).group(1)
    form_id = re.search(r'name="form_id" value="([^"]+)"', page.text).group(1)
    data = {"scope": "upload", "projects": "", "expires_days": "90", "description": "reload", CSRF_FIELD: csrf,
            "form_id": form_id}
    first = client.post("/tokens/", data=data)
    token_id = parse_token(created_token(first)).token_id
    again = client.post("/tokens/", data=data)
    assert again.status_code == 409
    assert "already sent" in again.text and not TOKEN_TEXT.search(again.text)
    assert list(listed(client)) == [token_id] and live_token_ids(state) == [token_id]
    # Two tabs: forms opened side by side, sent one after the other, then the first reloaded.
    tab_a = re.search(r'name="form_id" value="([^"]+)"', client.get("/tokens/").text).group(1)
    tab_b = re.search(r'name="form_id" value="([^"]+)"', client.get("/tokens/").text).group(1)
    assert len({form_id, tab_a, tab_b}) == 3
    second = client.post("/tokens/", data={**data, "form_id": tab_a})
    assert parse_token(created_token(second)).token_id != token_id
    created_token(client.post("/tokens/", data={**data, "form_id": tab_b}))
    assert client.post("/tokens/", data={**data, "form_id": tab_a}).status_code == 409
    assert len(live_token_ids(state)) == 3


def test_read_token_has_no_projects_and_defaults(client: TestClient) -> None:
    login(client, WRITE)
    response = create(client, scope="read", expires_days="")
    token = created_token(response)
    assert "twine upload" not in response.text  # a read token cannot upload: only the pip line
    assert client.get("/simple/", auth=("__token__", token)).status_code == 200
    row = next(iter(listed(client).values()))
    assert "read" in row and "n/a (read only)" in row


@pytest.mark.parametrize(("fields", "status", "message"), [
    ({"scope": "read", "projects": "demo"}, 400, "only an upload token takes them"),
    ({"scope": "admin"}, 400, "scope must be one of"),
    ({"expires_days": "0"}, 400, "whole number of days"),
    ({"expires_days": "3651"}, 400, "whole number of days"),
    ({"expires_days": "soon"}, 400, "whole number of days"),
    ({"projects": "not a name!"}, 400, "Projects:"),
    ({"description": "x" * 201}, 400, "description must be"),
])
def test_bad_fields_show_the_error_and_create_nothing(client: TestClient, state: ServerState, fields: dict[str, str],
                                                      status: int, message: str) -> None:
    login(client, WRITE)
    response = create(client, **fields)
    assert response.status_code == status, response.text
    assert message in response.text
    assert not TOKEN_TEXT.search(response.text)
    assert live_token_ids(state) == []


def test_revoking_an_unknown_token_is_404(client: TestClient) -> None:
    login(client, WRITE)
    response = client.post("/tokens/0123456789abcdef/revoke", data={CSRF_FIELD: form_token(client, "/tokens/")})
    assert response.status_code == 404
    assert "There is no token" in response.text


# -- who may not ---------------------------------------------------------------------------------


def test_without_a_session_pages_redirect_to_login(client: TestClient, state: ServerState) -> None:
    response = client.get("/tokens/")
    assert response.status_code == 303
    assert response.headers["location"] == "/login/?next=%2Ftokens%2F"
    csrf = form_token(client)
    for path in ("/tokens/", "/tokens/0123456789abcdef/revoke"):
        response = client.post(path, data={CSRF_FIELD: csrf, "scope": "read"})
        assert response.status_code == 303 and response.headers["location"] == "/login/?next=%2Ftokens%2F"
    # Basic auth (even the write secret) is not a session: tools use /_/tokens/<repo>.
    assert client.get("/tokens/", auth=("local", WRITE)).status_code == 303
    assert live_token_ids(state) == []


def test_read_session_and_token_session_get_403(client: TestClient, state: ServerState) -> None:
    with new_client(state) as writer:
        login(writer, WRITE)
        token = created_token(create(writer, scope="upload"))
        token_id = next(iter(listed(writer)))
    for secret, repo, what in ((READ, "local", "the read secret"), (token, "__token__", "an API token"),
                               (token, "local", "an API token")):
        client.cookies.clear()
        login(client, secret, repo)
        assert 'href="/tokens/"' not in client.get("/").text  # no link for them
        page = client.get("/tokens/")
        assert page.status_code == 403, (what, page.text)
        assert f"you are logged in with {what}" in page.text and "write secret" in page.text
        assert "Log out" in page.text  # a way out, not a login redirect loop
        assert_page_headers(page)
        csrf = form_token(client, "/")
        assert create(client, csrf=csrf).status_code == 403
        response = client.post(f"/tokens/{token_id}/revoke", data={CSRF_FIELD: csrf})
        assert response.status_code == 403
    assert live_token_ids(state) == [token_id]  # nothing created, nothing revoked


def test_posts_without_or_with_a_wrong_csrf_token_are_403(client: TestClient, state: ServerState) -> None:
    login(client, WRITE)
    token_id = parse_token(created_token(create(client)))
    assert token_id is not None
    for csrf in ("", "0" * 64, form_token(client, "/tokens/") + "0"):
        response = create(client, csrf=csrf)
        assert response.status_code == 403, response.text
        assert "form has expired" in response.text
        assert not TOKEN_TEXT.search(response.text)
        response = client.post(f"/tokens/{token_id.token_id}/revoke", data={CSRF_FIELD: csrf})
        assert response.status_code == 403
    response = client.post("/tokens/", data={"scope": "read"})  # no field at all
    assert response.status_code == 403
    # A token from another browser (another nonce cookie) does not fit this one.
    with new_client(state) as other:
        foreign = form_token(other)
    assert create(client, csrf=foreign).status_code == 403
    assert live_token_ids(state) == [token_id.token_id]


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                                     {"Origin": "https://evil.example"}], ids=["cross-site", "same-site", "origin"])
def test_cross_site_posts_are_refused(client: TestClient, state: ServerState, headers: dict[str, str]) -> None:
    login(client, WRITE)
    token_id = parse_token(created_token(create(client)))
    assert token_id is not None
    csrf = form_token(client, "/tokens/")
    data = {"scope": "read", "expires_days": "1", CSRF_FIELD: csrf}
    assert client.post("/tokens/", data=data, headers=headers).status_code == 403
    response = client.post(f"/tokens/{token_id.token_id}/revoke", data={CSRF_FIELD: csrf}, headers=headers)
    assert response.status_code == 403
    assert live_token_ids(state) == [token_id.token_id]
    # The same forms from this very site work.
    same = {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"}
    assert client.post("/tokens/", data=data, headers=same).status_code == 200
    assert len(live_token_ids(state)) == 2


def test_a_changed_write_secret_ends_token_management(tmp_path: Path) -> None:
    """The session's secret is re-checked on every request, as for every page."""
    root = tmp_path / "root"
    settings = ServerSettings(root=root, extra_index_url="", auth_expiry=AuthExpiry())
    state = ServerState(settings)
    state.install(build_repos(load_setup(fs_config(read=READ, write=WRITE), None, is_text=True), settings),
                  configured=True)
    with new_client(state) as client:
        login(client, WRITE)
        assert client.get("/tokens/").status_code == 200
        state.install(build_repos(load_setup(fs_config(read=READ, write="a-new-write-secret-99"), None,
                                             is_text=True), settings), configured=True)
        response = client.get("/tokens/")
        assert response.status_code == 303 and response.headers["location"].startswith("/login/")
    state.shutdown()


def test_tokens_are_never_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    login(client, WRITE)
    token = created_token(create(client, description="logged job"))
    parsed = parse_token(token)
    assert parsed is not None
    client.post(f"/tokens/{parsed.token_id}/revoke", data={CSRF_FIELD: form_token(client, "/tokens/")})
    assert parsed.token_id in caplog.text  # the id is what logs name
    assert token not in caplog.text and token[-43:] not in caplog.text
    assert WRITE not in caplog.text
