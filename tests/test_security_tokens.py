"""Security of API tokens and Trusted Publishing: the findings of the independent review of
issue 14, each a test that failed before its fix (F1-F8) and must keep passing.

F1 tokens never reach a backend's own authenticate; F2 revoking a minted token keeps its
identity token's replay guard; F3 burn-token guesses are rate limited; F4 dead token records do
not pile up; F5 malformed input is a 4xx, never a 500; F6 shared secrets cannot take the form of
a token; F7 minted tokens cannot yank; F8 a token in the username field is never logged.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from oidc_standin import OidcStandIn
from test_security_data import READ, REPO, WRITE, Server, config_text
from test_trusted_publishing import config_with_publishers, mint, publisher, refusal

from pywharf_core.model.api_tokens import format_token, new_token_id, parse_token

OTHER = "other"


def two_repos() -> str:
    return tomli_w.dumps({
        REPO: {"type": "file_system", "read_secret": READ, "write_secret": WRITE, "sync_index_interval": 3600},
        OTHER: {"type": "file_system", "read_secret": "other-read-1", "write_secret": "other-write-1",
                "sync_index_interval": 3600},
    })


def new_token(server: Server, repo: str = REPO, secret: str = WRITE, **fields: Any) -> str:
    response = server.client.post(f"/_/tokens/{repo}", data={k: str(v) for k, v in fields.items()},
                                  auth=(repo, secret))
    assert response.status_code == 201, response.text
    return response.json()["token"]


@pytest.fixture(scope="module")
def oidc():
    with OidcStandIn() as standin:
        yield standin


@pytest.fixture(autouse=True)
def default_shape(oidc: OidcStandIn) -> None:
    oidc.reset()


# -- F1: a pywharf token reaches a backend's own authenticate (GitHub: sent to api.github.com) ----------


def test_a_token_of_another_repository_is_never_passed_to_the_backends_authenticate(tmp_path: Path) -> None:
    server = Server(tmp_path / "root", two_repos())
    token_a = new_token(server)  # a token of repo "local"
    other = server.state.repos[OTHER]
    seen: list[str] = []
    original = other.backend.storage.authenticate

    def spy(secret: str) -> Any:
        seen.append(secret)
        return original(secret)

    other.backend.storage.authenticate = spy  # GitHub's storage.authenticate does GET /repos/... with it
    # A client configured with username "other" and the token of "local" (an easy mistake), or a
    # token-shaped secret naming a repository this server does not have, or another case.
    server.client.get("/simple/", auth=(OTHER, token_a))
    server.client.get("/simple/", auth=(OTHER, format_token("nosuchrepo", new_token_id())))
    server.client.get("/simple/", auth=(OTHER, format_token("Other", new_token_id())))
    leaked = [s for s in seen if parse_token(s) is not None]
    assert leaked == [], f"{len(leaked)} pywharf tokens were handed to the backend's authenticate"


# -- F2: revoking a minted token deletes the replay guard of its identity token ----------------------------


def test_revoking_a_minted_token_keeps_its_identity_token_from_minting_again(tmp_path: Path,
                                                                            oidc: OidcStandIn) -> None:
    server = Server(tmp_path / "root", config_with_publishers(publisher(oidc)))
    jwt_text = oidc.mint("pywharf")
    first = mint(server, jwt_text)
    assert first.status_code == 200, first.text
    token_id = parse_token(first.json()["token"]).token_id
    # The operator sees a leaked minted token in the log and revokes it by id.
    revoked = server.client.delete(f"/_/tokens/{REPO}/{token_id}", auth=(REPO, WRITE))
    assert revoked.status_code == 200, revoked.text
    # Whoever also holds the (still unexpired) JWT mints a fresh token from it.
    again = mint(server, jwt_text)
    assert again.status_code == 422 and refusal(again)[0] == "invalid-reuse-token", (
        f"replayed identity token minted again after revoke: {again.status_code} {again.text[:80]}")


# -- F3: /_/oidc/burn-token is an unauthenticated, unlimited storage read (GitHub: admin-token API call) ----


def test_burn_token_guesses_are_rate_limited(tmp_path: Path) -> None:
    server = Server(tmp_path / "root", config_text())
    storage = server.repo.backend.storage
    reads: list[str] = []
    original = storage.read_document

    def spy(key: str) -> Any:
        reads.append(key)
        return original(key)

    storage.read_document = spy
    statuses = set()
    for _ in range(100):
        fake = format_token(REPO, secrets.token_hex(8))
        statuses.add(server.client.post("/_/oidc/burn-token", json={"token": fake}).status_code)
    token_reads = [k for k in reads if k.startswith(".pywharf/tokens/")]
    # Basic auth gives one client 10 failures a minute; burn-token should not be a way around it.
    assert 429 in statuses or len(token_reads) <= 10, (
        f"100 anonymous burn requests made {len(token_reads)} store reads, statuses {sorted(statuses)}")


# -- F4: minted (and burned) tokens' records are never removed -------------------------------------------


def test_minted_and_burned_token_records_do_not_pile_up(tmp_path: Path, oidc: OidcStandIn) -> None:
    server = Server(tmp_path / "root", config_with_publishers(publisher(oidc)))
    for _ in range(5):  # five CI releases, each burning its token as uv does
        token = mint(server, oidc.mint("pywharf")).json()["token"]
        assert server.client.post("/_/oidc/burn-token", json={"token": token}).status_code == 200
    api = new_token(server)
    assert server.client.post("/_/oidc/burn-token", json={"token": api}).status_code == 200
    # A day later, with more tokens made, nothing ever removes the dead records.
    store = server.repo.tokens
    store.clock = lambda: time.time() + 86400
    new_token(server)
    mint(server, oidc.mint("pywharf"))
    records = sorted(p.name for p in (server.storage / ".pywharf" / "tokens").glob("*.json"))
    assert len(records) <= 2, f"{len(records)} token records on disk, 6 of them dead for a day"


# -- F5: robustness of the bounded-input paths -------------------------------------------------------------


def test_json_projects_that_are_not_strings_are_a_400(tmp_path: Path) -> None:
    server = Server(tmp_path / "root", config_text())
    response = server.client.post(f"/_/tokens/{REPO}", json={"scope": "upload", "projects": [1]},
                                  auth=(REPO, WRITE))
    assert response.status_code == 400, f"{response.status_code} {response.text[:100]}"


def test_a_bad_content_length_on_oidc_is_not_a_500(tmp_path: Path, oidc: OidcStandIn) -> None:
    server = Server(tmp_path / "root", config_with_publishers(publisher(oidc)))
    response = server.client.post("/_/oidc/mint-token", content=b'{"token": "x"}',
                                  headers={"Content-Length": "1e3"})
    assert response.status_code < 500, f"{response.status_code} {response.text[:100]}"


# -- F6: a shared secret in token form is silently dead -------------------------------------------------


def test_a_write_secret_shaped_like_a_token_is_refused_at_load(tmp_path: Path) -> None:
    """Such a secret would only ever be checked as a token (and fail): refused, naming the key."""
    from pywharf_core.model.errors import ConfigError

    shaped = format_token(REPO, new_token_id())
    with pytest.raises(ConfigError, match=r"write_secret.*form of a pywharf API token"):
        Server(tmp_path / "root", config_text(write_secret=shaped))


# -- F7: a minted token (scope: all projects by default) can yank ---------------------------------------


def test_a_minted_token_cannot_yank(tmp_path: Path, oidc: OidcStandIn) -> None:
    from test_trusted_publishing import upload
    server = Server(tmp_path / "root", config_with_publishers(publisher(oidc)))
    assert upload(server, (REPO, WRITE), tmp_path, "victim").status_code == 200
    token = mint(server, oidc.mint("pywharf")).json()["token"]
    response = server.client.post("/yank/victim/1.0", data={"reason": "x"}, auth=("__token__", token))
    assert response.status_code == 403, "a CI identity token yanked a release of an unrelated project"


# -- F8: a token sent as the *username* is written to the log ---------------------------------------------


def test_a_token_in_the_username_field_is_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    server = Server(tmp_path / "root", config_text())
    token = new_token(server)
    caplog.set_level(logging.DEBUG)
    # e.g. https://<token>:x@host/simple/ (the GitHub-PAT habit of putting the token first)
    response = server.client.get("/simple/", auth=(token, "x"))
    assert response.status_code == 401
    assert token[20:] not in caplog.text, "the token's secret part is in the log"
    assert token[20:] not in response.text


def test_the_new_token_page_is_not_stored(tmp_path: Path) -> None:
    server = Server(tmp_path / "root", config_text())
    client = server.client
    page = client.get("/login/")
    import re as _re
    csrf = (_re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            or _re.search(r'value="([^"]+)" name="csrf', page.text))
    assert csrf, page.text[:500]
    client.post("/login/", data={"repo": REPO, "secret": WRITE, "csrf_token": csrf.group(1), "next": "/tokens/"},
                follow_redirects=False)
    tokens_page = client.get("/tokens/")
    csrf = _re.search(r'name="csrf_token" value="([^"]+)"', tokens_page.text)
    created = client.post("/tokens/", data={"scope": "upload", "csrf_token": csrf.group(1), "expires_days": "1"})
    assert created.status_code == 200 and "pywharf-local-" in created.text
    assert "no-store" in created.headers.get("cache-control", ""), created.headers.get("cache-control")
