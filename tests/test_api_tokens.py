"""API tokens (issue 14): created, listed and revoked over HTTP and by ``pywharf token``; used as
``__token__`` (or with the repository's name) on every read and write route; scope, projects
and expiry enforced; revocation seen by a second server sharing the storage within one
``sync_index_interval``; the store keeps only hashes.

In-process (starlette TestClient against the real app) for the rules; real ``twine``, ``uv``
and ``pip`` against a real server process for the clients.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Server as ProcessServer
from conftest import fs_config, run, tool
from starlette.testclient import TestClient
from test_e2e_clients import installed_version, pip_install, uv_install
from test_security_data import READ, REPO, WRITE, Server, config_text
from test_upload_rules import encode_multipart, make_wheel, upload_fields

from pywharf_core.http.app import create_app
from pywharf_core.model.api_tokens import SECRET_CHARS, parse_token
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup

TOKENS = f"/_/tokens/{REPO}"


def create(server: Server, auth: tuple[str, str] = (REPO, WRITE), **fields: Any) -> Any:
    return server.client.post(TOKENS, data={k: str(v) for k, v in fields.items()}, auth=auth)


def new_token(server: Server, **fields: Any) -> str:
    response = create(server, **fields)
    assert response.status_code == 201, response.text
    return response.json()["token"]


def upload_as(server: Server, auth: tuple[str, str], tmp_path: Path, name: str = "demo", version: str = "1.0") -> Any:
    dist = make_wheel(tmp_path, name, version)
    body, content_type = encode_multipart(upload_fields(dist, None), dist.filename, dist.data)
    return server.client.post("/simple/", content=body, headers={"Content-Type": content_type}, auth=auth)


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path / "root", config_text())


# -- creating and listing ------------------------------------------------------------------------


def test_create_answers_201_with_the_token_once_and_list_never_shows_it(server: Server) -> None:
    response = create(server, scope="upload", projects="Demo_Pkg, other", expires_in=3600, description="ci job")
    assert response.status_code == 201
    body = response.json()
    assert set(body) >= {"id", "token", "scope", "projects", "expires"}
    assert body["scope"] == "upload" and body["projects"] == ["demo-pkg", "other"]
    assert abs(body["expires"] - (time.time() + 3600)) < 60
    parsed = parse_token(body["token"])
    assert parsed is not None and parsed.repo == REPO and parsed.token_id == body["id"]
    listed = server.client.get(TOKENS, auth=(REPO, WRITE))
    assert listed.status_code == 200
    assert listed.headers["cache-control"] == "no-store"
    entries = listed.json()["tokens"]
    assert [e["id"] for e in entries] == [body["id"]]
    assert entries[0]["description"] == "ci job" and entries[0]["projects"] == ["demo-pkg", "other"]
    assert body["token"] not in listed.text


def test_default_expiry_is_90_days_and_json_bodies_work(server: Server) -> None:
    response = server.client.post(TOKENS, json={"scope": "read"}, auth=(REPO, WRITE))
    assert response.status_code == 201, response.text
    assert abs(response.json()["expires"] - (time.time() + 90 * 86400)) < 60


def test_the_store_keeps_only_the_hash(server: Server) -> None:
    token = new_token(server)
    stored = b"".join(p.read_bytes() for p in (server.storage / ".pywharf").rglob("*") if p.is_file())
    assert token.encode() not in stored
    assert parse_token(token).token_id.encode() in stored  # type: ignore[union-attr]


@pytest.mark.parametrize(("fields", "message"), [
    ({"scope": "admin"}, "scope must be one of"),
    ({"scope": "upload", "expires_in": "-5"}, "expires_in"),
    ({"scope": "upload", "expires_in": "soon"}, "expires_in"),
    ({"scope": "upload", "projects": "../etc"}, "projects"),
    ({"scope": "read", "projects": "demo"}, "only an upload token"),
    ({"scope": "upload", "description": "x" * 201}, "description"),
])
def test_bad_token_requests_are_400_and_create_nothing(server: Server, fields: dict[str, str], message: str) -> None:
    response = server.client.post(TOKENS, data=fields, auth=(REPO, WRITE))
    assert response.status_code == 400 and message in response.text
    assert server.client.get(TOKENS, auth=(REPO, WRITE)).json()["tokens"] == []


def test_only_the_write_secret_manages_tokens(server: Server) -> None:
    token = new_token(server, scope="upload")
    assert create(server, auth=(REPO, READ)).status_code == 403
    assert create(server, auth=("__token__", token)).status_code == 403
    assert create(server, auth=(REPO, token)).status_code == 403
    assert create(server, auth=(REPO, "wrong-secret-1234")).status_code == 401
    assert server.client.post(TOKENS, data={"scope": "read"}).status_code == 401
    assert server.client.get(TOKENS, auth=(REPO, READ)).status_code == 403
    assert server.client.post("/_/tokens/nope", data={"scope": "read"}, auth=(REPO, WRITE)).status_code == 401


# -- using tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize("username", ["__token__", REPO])
def test_an_upload_token_reads_and_uploads_on_every_route(server: Server, tmp_path: Path, username: str) -> None:
    auth = (username, new_token(server, scope="upload"))
    assert upload_as(server, auth, tmp_path).status_code == 200
    page = server.client.get("/simple/demo/", auth=auth)
    assert page.status_code == 200 and "demo-1.0" in page.text
    assert server.client.get("/simple/", auth=auth).status_code == 200
    filename = "demo-1.0-py3-none-any.whl"
    assert server.client.get(f"/simple/demo/{filename}", auth=auth).status_code == 200
    assert server.client.get(f"/simple/demo/{filename}.metadata", auth=auth).status_code == 200
    assert server.client.get("/pypi/demo/json", auth=auth).status_code == 200
    assert server.client.post("/yank/demo/1.0", data={"reason": "bad"}, auth=auth).status_code == 200
    assert server.client.post("/unyank/demo/1.0", auth=auth).status_code == 200
    assert server.client.get("/index_mtime/", auth=auth).status_code == 200


def test_a_read_token_reads_but_cannot_upload(server: Server, tmp_path: Path) -> None:
    assert upload_as(server, (REPO, WRITE), tmp_path).status_code == 200
    auth = ("__token__", new_token(server, scope="read"))
    assert server.client.get("/simple/demo/", auth=auth).status_code == 200
    refused = upload_as(server, auth, tmp_path, version="2.0")
    assert refused.status_code == 403 and "may read but not upload" in refused.text
    assert server.client.post("/yank/demo/1.0", auth=auth).status_code == 403


def test_project_scope_is_enforced_and_the_403_names_the_allowed_projects(server: Server, tmp_path: Path) -> None:
    auth = ("__token__", new_token(server, scope="upload", projects="demo,demo-two"))
    assert upload_as(server, auth, tmp_path, "demo").status_code == 200
    assert upload_as(server, auth, tmp_path, "demo_two").status_code == 200
    refused = upload_as(server, auth, tmp_path, "other")
    assert refused.status_code == 403
    assert "demo, demo-two" in refused.text and "other" in refused.text
    assert "other" not in server.client.get("/simple/", auth=(REPO, READ)).text
    assert upload_as(server, (REPO, WRITE), tmp_path, "other").status_code == 200
    assert server.client.post("/yank/other/1.0", auth=auth).status_code == 403
    assert server.client.post("/yank/demo/1.0", auth=auth).status_code == 200


def test_a_token_of_one_repository_opens_no_other(tmp_path: Path) -> None:
    text = config_text() + fs_config("team", read="team-read-secret", write="team-write-secret")
    server = Server(tmp_path / "root", text)
    token = new_token(server)
    assert server.client.get("/simple/", auth=("team", token)).status_code == 401
    assert server.client.get("/simple/", auth=("__token__", token)).status_code == 200
    forged = token.replace(f"pywharf-{REPO}-", "pywharf-team-")
    assert server.client.get("/simple/", auth=("__token__", forged)).status_code == 401


def test_an_expired_token_is_refused(server: Server, tmp_path: Path) -> None:
    auth = ("__token__", new_token(server, scope="upload", expires_in=1))
    assert server.client.get("/simple/", auth=auth).status_code == 200
    time.sleep(1.2)
    assert server.client.get("/simple/", auth=auth).status_code == 401  # the cached verdict ends at expiry too
    assert upload_as(server, auth, tmp_path).status_code == 401
    assert server.client.get(TOKENS, auth=(REPO, WRITE)).json()["tokens"] == []


def test_a_tampered_token_is_refused(server: Server) -> None:
    token = new_token(server)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert server.client.get("/simple/", auth=("__token__", tampered)).status_code == 401
    assert server.client.get("/simple/", auth=("__token__", "pywharf-garbage")).status_code == 401


def test_revocation_is_immediate_here_and_within_one_sync_interval_on_another_server(tmp_path: Path) -> None:
    first = Server(tmp_path / "first", config_text(sync_index_interval=1))
    storage = first.storage
    settings = ServerSettings(root=tmp_path / "second", extra_index_url="")
    second_state = ServerState(settings)
    second_state.repos = build_repos(load_setup(
        config_text(sync_index_interval=1, storage_path=str(storage)), None, is_text=True), settings)
    second = TestClient(create_app(second_state), raise_server_exceptions=False)
    response = create(first, scope="read")
    token, token_id = response.json()["token"], response.json()["id"]
    auth = ("__token__", token)
    assert second.get("/simple/", auth=auth).status_code == 200  # a new token works everywhere at once
    assert first.client.get("/simple/", auth=auth).status_code == 200
    assert first.client.delete(f"{TOKENS}/{token_id}", auth=(REPO, WRITE)).status_code == 200
    assert first.client.get("/simple/", auth=auth).status_code == 401
    time.sleep(1.1)  # one sync_index_interval
    assert second.get("/simple/", auth=auth).status_code == 401
    assert first.client.delete(f"{TOKENS}/{token_id}", auth=(REPO, WRITE)).status_code == 404
    assert first.client.delete(f"{TOKENS}/not-an-id", auth=(REPO, WRITE)).status_code == 404


def test_tokens_are_never_logged(server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    response = create(server, scope="upload", projects="demo")
    token, token_id = response.json()["token"], response.json()["id"]
    upload_as(server, ("__token__", token), tmp_path)
    upload_as(server, ("__token__", token), tmp_path, "other")
    server.client.get("/simple/", auth=("__token__", token + "x"))
    server.client.delete(f"{TOKENS}/{token_id}", auth=(REPO, WRITE))
    assert token_id in caplog.text  # the id is what logs name
    secret_part = token[-SECRET_CHARS:]  # the secret may hold "-" itself: cut by length, not at a dash
    assert secret_part not in caplog.text


# -- real clients and the CLI ---------------------------------------------------------------------


def cli_token(server: ProcessServer, env: dict[str, str], *args: str) -> str:
    result = run([tool("pywharf"), "token", *args, "--url", server.base, "--repo", REPO,
                  "--secret_env", "PYWHARF_TEST_WRITE"], {**env, "PYWHARF_TEST_WRITE": "write-secret"}, timeout=60)
    return result.stdout


def test_twine_uv_and_pip_with_a_token_from_the_cli(fs_server: ProcessServer, env: dict[str, str],
                                                    tmp_path: Path) -> None:
    out = cli_token(fs_server, env, "create", "--projects", "demo", "--description", "ci token")
    token = out.strip().splitlines()[-1]
    assert parse_token(token) is not None, out
    listed = cli_token(fs_server, env, "list")
    assert "ci token" in listed and "demo" in listed and token not in listed
    listed_json = json.loads(cli_token(fs_server, env, "list", "--json_output"))
    token_id = listed_json["tokens"][0]["id"]

    first, second = make_wheel(tmp_path, "demo", "1.0"), make_wheel(tmp_path, "demo", "2.0")
    twine = [tool("twine"), "upload", "--repository-url", f"{fs_server.base}/simple/", "--disable-progress-bar",
             "--non-interactive", str(first.path)]
    run(twine, {**env, "TWINE_USERNAME": "__token__", "TWINE_PASSWORD": token}, timeout=120)
    run([tool("uv"), "publish", "--publish-url", f"{fs_server.base}/simple/", "--trusted-publishing", "never",
         "-u", "__token__", "-p", token, str(second.path)], env, timeout=120)
    other = make_wheel(tmp_path, "other", "1.0")
    refused = run([*twine[:-1], str(other.path)], {**env, "TWINE_USERNAME": "__token__", "TWINE_PASSWORD": token},
                  timeout=120, check=False)
    assert refused.returncode != 0 and "403" in refused.stdout + refused.stderr

    index = f"http://__token__:{token}@127.0.0.1:{fs_server.port}/simple/"
    pip_install(index, tmp_path / "pip", "demo==1.0", env)
    assert installed_version(tmp_path / "pip", "demo") == "1.0"
    uv_install(index, tmp_path / "uv", "demo", env)
    assert installed_version(tmp_path / "uv", "demo") == "2.0"

    assert f"revoked {token_id}" in cli_token(fs_server, env, "revoke", token_id)
    refused = pip_install(index, tmp_path / "pip2", "demo", env, check=False)
    assert refused.returncode != 0
