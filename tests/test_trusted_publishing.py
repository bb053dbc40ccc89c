"""Trusted Publishing (issue 14) through the server: ``/_/oidc/audience`` and ``/_/oidc/mint-token``.

- Real ``uv publish --trusted-publishing always``, unmodified, with a GitHub runner's environment
  (``GITHUB_ACTIONS``, ``ACTIONS_ID_TOKEN_REQUEST_URL`` / ``_TOKEN``) pointed at the stand-in
  Actions ID-token service and issuer of tests/oidc_standin.py, against a real pywharf server
  serving https (uv calls ``https://<host>/_/oidc/...`` whatever the publish URL; the test CA
  comes from trustme and reaches uv through ``SSL_CERT_FILE``).
- The exchange ``pypa/gh-action-pypi-publish`` performs (its ``oidc-exchange.py``, as described
  in docs/design/issue14-trusted-publishing-research.md section 2, re-done here with requests:
  audience from ``https://<netloc>/_/oidc/audience``, an ID token for it, ``POST`` ``{"token"}``
  to ``https://<netloc>/_/oidc/mint-token``, then twine with ``__token__``).
- Every refusal in-process (starlette TestClient; the stand-in still serves the keys on
  loopback): wrong repository, workflow, environment, audience, issuer, expired, replayed, each
  422 with Warehouse's body and a reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import tomli_w
import trustme
from conftest import Server as ProcessServer
from conftest import client_env, run, start_server, tool
from oidc_standin import OidcStandIn
from test_security_data import READ, REPO, WRITE, Server
from test_upload_rules import encode_multipart, make_wheel, upload_fields

from pywharf_core.model.api_tokens import SECRET_CHARS, parse_token

MINT = "/_/oidc/mint-token"


def config_with_publishers(*publishers: dict[str, Any], **table: Any) -> str:
    return tomli_w.dumps({REPO: {"type": "file_system", "read_secret": READ, "write_secret": WRITE,
                                 "sync_index_interval": 3600, "trusted_publishers": list(publishers), **table}})


def publisher(oidc: OidcStandIn, **changes: Any) -> dict[str, Any]:
    return {"issuer": oidc.url, "repository": "acme/widgets", "workflow": "release.yml", **changes}


@pytest.fixture(scope="module")
def oidc() -> Iterator[OidcStandIn]:
    with OidcStandIn() as standin:
        yield standin


@pytest.fixture(autouse=True)
def default_shape(oidc: OidcStandIn) -> None:
    oidc.reset()


def mint(server: Server, token: str) -> Any:
    return server.client.post(MINT, content=json.dumps({"token": token}).encode())


def refusal(response: Any) -> tuple[str, str]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["message"] == "Token request failed"
    (error,) = body["errors"]
    return error["code"], error["description"]


def upload(server: Server, auth: tuple[str, str], tmp_path: Path, name: str = "demo", version: str = "1.0") -> Any:
    dist = make_wheel(tmp_path, name, version)
    body, content_type = encode_multipart(upload_fields(dist, None), dist.filename, dist.data)
    return server.client.post("/simple/", content=body, headers={"Content-Type": content_type}, auth=auth)


# -- in-process: the protocol and every refusal ----------------------------------------------------


def test_audience_is_served_only_when_publishers_are_configured(tmp_path: Path, oidc: OidcStandIn) -> None:
    server = Server(tmp_path / "a", config_with_publishers(publisher(oidc)))
    response = server.client.get("/_/oidc/audience")
    assert response.status_code == 200 and response.json() == {"audience": "pywharf"}
    bare = Server(tmp_path / "b", config_with_publishers())
    assert bare.client.get("/_/oidc/audience").status_code == 403


def test_a_matching_token_mints_a_15_minute_upload_token(tmp_path: Path, oidc: OidcStandIn) -> None:
    server = Server(tmp_path / "root", config_with_publishers(publisher(oidc, projects=["demo"])))
    # No Content-Type at all, as uv before 0.10.10 sent it.
    response = mint(server, oidc.mint("pywharf"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert abs(body["expires"] - (time.time() + 900)) < 30
    parsed = parse_token(body["token"])
    assert parsed is not None and parsed.repo == REPO
    auth = ("__token__", body["token"])
    assert upload(server, auth, tmp_path).status_code == 200
    refused = upload(server, auth, tmp_path, "other")
    assert refused.status_code == 403 and "demo" in refused.text
    # Minted tokens are not listed with the API tokens (CI makes them by the hundred).
    assert server.client.get(f"/_/tokens/{REPO}", auth=(REPO, WRITE)).json()["tokens"] == []


def test_the_minted_token_stops_working_after_15_minutes(tmp_path: Path, oidc: OidcStandIn) -> None:
    server = Server(tmp_path / "root", config_with_publishers(publisher(oidc)))
    token = mint(server, oidc.mint("pywharf")).json()["token"]
    store = server.repo.tokens
    store.clock = lambda: time.time() + 901
    assert server.client.get("/simple/", auth=("__token__", token)).status_code == 401


def test_burning_ends_a_token_and_keeps_its_replay_guard(tmp_path: Path, oidc: OidcStandIn) -> None:
    """uv 0.13+ POSTs the minted token to /_/oidc/burn-token once its upload is done."""
    server = Server(tmp_path / "root", config_with_publishers(publisher(oidc)))
    jwt_text = oidc.mint("pywharf")
    token = mint(server, jwt_text).json()["token"]
    assert server.client.get("/simple/", auth=("__token__", token)).status_code == 200
    burned = server.client.post("/_/oidc/burn-token", json={"token": token})
    assert burned.status_code == 200 and burned.json() == {"success": True}
    assert server.client.get("/simple/", auth=("__token__", token)).status_code == 401
    assert refusal(server.client.post("/_/oidc/burn-token", json={"token": token}))[0] == "invalid-token"
    assert refusal(mint(server, jwt_text))[0] == "invalid-reuse-token"
    assert refusal(server.client.post("/_/oidc/burn-token", json={"token": "pywharf-nope"}))[0] == "invalid-token"
    # The audit log has the mint, the burn and the replay (never the token or the identity token).
    events = server.repo.audit.read(time.time() - 60).events
    assert [(e.action, e.status) for e in events] == [("token-mint", 200), ("token-burn", 200), ("token-mint", 422)]
    assert events[0].actor == "trusted publisher acme/widgets" and "repository='acme/widgets'" in events[0].detail
    assert events[1].actor == f"oidc token {parse_token(token).token_id} (trusted publisher acme/widgets)"
    assert "invalid-reuse-token" in events[2].detail
    assert token not in repr(events) and jwt_text not in repr(events)


@pytest.mark.parametrize(("shape", "code", "reason"), [
    ({"repository": "evil/widgets"}, "invalid-publisher", "evil/widgets"),
    ({"workflow": "other.yml"}, "invalid-publisher", "other.yml"),
    ({"environment": "staging"}, "invalid-publisher", "staging"),
    ({"audience": "pypi"}, "invalid-token", "audience"),
    ({"issuer": "https://token.actions.githubusercontent.com"}, "invalid-payload", "issuer"),
    ({"iat_offset": -1000}, "invalid-token", "expired"),
    ({"signing": "wrong-key"}, "invalid-token", "signature"),
    ({"event_name": "pull_request_target"}, "invalid-publisher", "pull_request_target"),
])
def test_each_mismatch_is_refused_with_422_and_a_reason(tmp_path: Path, oidc: OidcStandIn, shape: dict[str, Any],
                                                        code: str, reason: str) -> None:
    server = Server(tmp_path / "root", config_with_publishers(publisher(oidc, environment="pypi")))
    oidc.set_shape(environment="pypi")
    changes = dict(shape)
    found_code, description = refusal(mint(server, oidc.mint(changes.pop("audience", "pywharf"), **changes)))
    assert found_code == code
    assert reason.lower() in description.lower(), description


def test_a_replayed_token_is_refused_on_every_server_sharing_the_storage(tmp_path: Path, oidc: OidcStandIn) -> None:
    first = Server(tmp_path / "first", config_with_publishers(publisher(oidc)))
    second = Server(tmp_path / "second", config_with_publishers(publisher(oidc), storage_path=str(first.storage)))
    jwt_text = oidc.mint("pywharf")
    assert mint(first, jwt_text).status_code == 200
    assert refusal(mint(first, jwt_text)) == ("invalid-reuse-token", "invalid token: already used")
    assert refusal(mint(second, jwt_text))[0] == "invalid-reuse-token"


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"token": 5}', b'{"token": "abc"}',
                                  b'{"token": "' + b"x" * 70_000 + b'"}'])
def test_malformed_requests_are_invalid_payload(tmp_path: Path, oidc: OidcStandIn, body: bytes) -> None:
    server = Server(tmp_path / "root", config_with_publishers(publisher(oidc)))
    code, _ = refusal(server.client.post(MINT, content=body, headers={"Content-Type": "application/json"}))
    assert code == "invalid-payload"


def test_mints_and_refusals_are_logged_with_claims_never_tokens(tmp_path: Path, oidc: OidcStandIn,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    server = Server(tmp_path / "root", config_with_publishers(publisher(oidc)))
    good, bad = oidc.mint("pywharf"), oidc.mint("pywharf", repository="evil/widgets")
    expired = oidc.mint("pywharf", repository="late/widgets", iat_offset=-1000)
    minted = mint(server, good).json()["token"]
    mint(server, bad)
    mint(server, expired)
    assert "acme/widgets" in caplog.text and "invalid-publisher" in caplog.text
    # A refusal before any publisher is matched still names whose token it was.
    assert "invalid-token" in caplog.text and "late/widgets" in caplog.text
    for secret in (good, bad, expired, minted, minted[-SECRET_CHARS:]):
        assert secret not in caplog.text


# -- real clients over https --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def start_https(tmp_path: Path, config: str, tls: dict[str, Path]) -> ProcessServer:
    return start_server(tmp_path / "root", config, "--extra_index_url=", tls=tls)


def runner_env(tmp_path: Path, oidc: OidcStandIn, tls: dict[str, Path]) -> dict[str, str]:
    env = client_env(tmp_path)
    for name in ("GOOGLE_SERVICE_ACCOUNT_NAME", "GITLAB_CI", "BUILDKITE", "CIRCLECI", "GITHUB_ACTIONS",
                 "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"):
        env.pop(name, None)
    return {**env, **oidc.client_env(), "SSL_CERT_FILE": str(tls["ca"])}


def listed(server: ProcessServer, tls: dict[str, Path], project: str) -> str:
    return requests.get(f"{server.base}/simple/{project}/", auth=(REPO, READ),
                        verify=str(tls["ca"]), timeout=10).text


def test_uv_publishes_with_trusted_publishing_and_no_secret(tmp_path: Path, oidc: OidcStandIn,
                                                            tls: dict[str, Path]) -> None:
    server = start_https(tmp_path, config_with_publishers(publisher(oidc, environment="pypi")), tls)
    try:
        env = runner_env(tmp_path, oidc, tls)
        oidc.set_shape(environment="pypi")
        dist = make_wheel(tmp_path, "demo", "1.0")
        publish_url = f"{server.base}/simple/"
        cmd = [tool("uv"), "publish", "--trusted-publishing", "always", "--publish-url", publish_url, str(dist.path)]
        result = run(cmd, env, timeout=120)
        assert "::add-mask::pywharf-local-" in result.stdout  # uv masks the minted token in the job log
        assert dist.filename in listed(server, tls, "demo")
        assert oidc.idtoken_requests >= 1 and oidc.issued[-1]["aud"] == "pywharf"
        log = server.log()
        assert "minted token" in log and "acme/widgets" in log
        minted = result.stdout.split("::add-mask::", 1)[1].split()[0]
        assert minted not in log
        uv_version = tuple(int(p) for p in run([tool("uv"), "--version"], env).stdout.split()[1].split(".")[:2])
        if uv_version >= (0, 13):  # uv burns the minted token after its upload
            assert "burned by its holder" in log
            assert requests.get(f"{server.base}/simple/", auth=("__token__", minted),
                                verify=str(tls["ca"]), timeout=10).status_code == 401

        # The same job from the wrong environment: refused, uv shows the 422 and its reason.
        oidc.set_shape(environment="staging")
        other = make_wheel(tmp_path, "demo", "2.0")
        refused = run([*cmd[:-1], str(other.path)], env, timeout=120, check=False)
        assert refused.returncode != 0
        assert "422" in refused.stderr and "invalid-publisher" in refused.stderr, refused.stderr
        assert other.filename not in listed(server, tls, "demo")
    finally:
        server.stop()


def gh_action_exchange(repository_url: str, oidc_env: dict[str, str], ca: Path) -> str:
    """What pypa/gh-action-pypi-publish's oidc-exchange.py does (research notes section 2)."""
    netloc = requests.utils.urlparse(repository_url).netloc
    audience = requests.get(f"https://{netloc}/_/oidc/audience", verify=str(ca), timeout=30)
    assert audience.ok, audience.text
    id_token = requests.get(oidc_env["ACTIONS_ID_TOKEN_REQUEST_URL"], params={"audience": audience.json()["audience"]},
                            headers={"Authorization": f"bearer {oidc_env['ACTIONS_ID_TOKEN_REQUEST_TOKEN']}"},
                            timeout=30)
    id_token.raise_for_status()
    minted = requests.post(f"https://{netloc}/_/oidc/mint-token", json={"token": id_token.json()["value"]},
                           verify=str(ca), timeout=30)
    assert minted.ok, minted.text
    token = minted.json().get("token")
    assert isinstance(token, str)
    return token


def test_the_gh_action_exchange_then_twine_uploads(tmp_path: Path, oidc: OidcStandIn, tls: dict[str, Path]) -> None:
    server = start_https(tmp_path, config_with_publishers(publisher(oidc, projects=["demo"])), tls)
    try:
        repository_url = f"{server.base}/simple/"
        token = gh_action_exchange(repository_url, oidc.client_env(), tls["ca"])
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set on this machine) override twine's
        # --cert, so the CA goes there too.
        env = {**client_env(tmp_path), "TWINE_USERNAME": "__token__", "TWINE_PASSWORD": token,
               "REQUESTS_CA_BUNDLE": str(tls["ca"]), "CURL_CA_BUNDLE": str(tls["ca"])}
        dist = make_wheel(tmp_path, "demo", "1.0")
        twine = [tool("twine"), "upload", "--repository-url", repository_url, "--cert", str(tls["ca"]),
                 "--disable-progress-bar", "--non-interactive"]
        run([*twine, str(dist.path)], env, timeout=120)
        assert dist.filename in listed(server, tls, "demo")
        other = make_wheel(tmp_path, "other", "1.0")
        refused = run([*twine, str(other.path)], env, timeout=120, check=False)
        assert refused.returncode != 0 and "403" in refused.stdout + refused.stderr
    finally:
        server.stop()


def test_plain_http_server_refuses_tls_flags_with_waitress(tmp_path: Path, tls: dict[str, Path]) -> None:
    result = subprocess.run([tool("pywharf"), "server", str(tmp_path / "r"), "--server", "waitress",
                             "--ssl_certfile", str(tls["cert"]), "--ssl_keyfile", str(tls["key"])],
                            capture_output=True, text=True, timeout=60, env={**os.environ})
    assert result.returncode == 1 and "--ssl_certfile needs --server uvicorn" in result.stderr


# -- GitLab CI publishers (issuer https://gitlab.com or a self-managed one with provider) ----------


GITLAB_PROJECT = "acme/tools/widgets"  # a group, a subgroup and the project


def gitlab_claims(oidc: OidcStandIn, project: str = GITLAB_PROJECT, config: str = ".gitlab-ci.yml",
                  ref: str = "refs/tags/v1.0.0", environment: str | None = None) -> dict[str, Any]:
    """GitLab CI's ID token claims (docs.gitlab.com, "OpenID Connect (OIDC) ID token claims"):
    sub, project_path, ci_config_ref_uri (<host>/<project>//<config file>@<ref>), ref_path, sha."""
    host = oidc.url.split("://", 1)[1]
    extra: dict[str, Any] = {
        "sub": f"project_path:{project}:ref_type:tag:ref:v1.0.0", "project_path": project,
        "namespace_path": project.rsplit("/", 1)[0], "ci_config_ref_uri": f"{host}/{project}//{config}@{ref}",
        "ref_path": ref, "sha": "0123456789abcdef0123456789abcdef01234567",
    }
    if environment is not None:
        extra["environment"] = environment
    github_only = ("repository", "repository_owner", "repository_owner_id", "job_workflow_ref", "workflow_ref",
                   "event_name", "environment")
    return {"drop": github_only, "extra": extra}


def gitlab_publisher(oidc: OidcStandIn, **changes: Any) -> dict[str, Any]:
    return {"issuer": oidc.url, "provider": "gitlab", "repository": GITLAB_PROJECT, "workflow": ".gitlab-ci.yml",
            **changes}


def test_a_gitlab_ci_token_mints_for_its_project_and_config_file(tmp_path: Path, oidc: OidcStandIn) -> None:
    server = Server(tmp_path / "root", config_with_publishers(gitlab_publisher(oidc, environment="production")))
    response = mint(server, oidc.mint("pywharf", **gitlab_claims(oidc, environment="Production")))
    assert response.status_code == 200, response.text
    assert upload(server, ("__token__", response.json()["token"]), tmp_path).status_code == 200


@pytest.mark.parametrize(("changes", "reason"), [
    ({"project": "acme/tools/other"}, "acme/tools/other"),
    ({"config": "ci/other.yml"}, "ci/other.yml"),
    ({"environment": "staging"}, "staging"),
])
def test_gitlab_mismatches_are_refused(tmp_path: Path, oidc: OidcStandIn, changes: dict[str, Any],
                                       reason: str) -> None:
    server = Server(tmp_path / "root", config_with_publishers(gitlab_publisher(oidc, environment="production")))
    code, description = refusal(mint(server, oidc.mint("pywharf", **gitlab_claims(oidc, **changes))))
    assert code == "invalid-publisher" and reason in description, description


def test_a_gitlab_config_uri_of_another_project_or_ref_is_refused(tmp_path: Path, oidc: OidcStandIn) -> None:
    server = Server(tmp_path / "root", config_with_publishers(gitlab_publisher(oidc)))
    shape = gitlab_claims(oidc)
    host = oidc.url.split("://", 1)[1]
    # The config file of another project (GitLab's include: from elsewhere), at the run's ref.
    shape["extra"]["ci_config_ref_uri"] = f"{host}/evil/project//.gitlab-ci.yml@refs/tags/v1.0.0"
    assert "ci_config_ref_uri" in refusal(mint(server, oidc.mint("pywharf", **shape)))[1]
    shape = gitlab_claims(oidc, ref="refs/heads/other")
    shape["extra"]["ref_path"] = "refs/tags/v1.0.0"
    assert "ref_path" in refusal(mint(server, oidc.mint("pywharf", **shape)))[1]


def test_gitlab_publisher_config_rules() -> None:
    from pywharf_core.storage.trusted_publishers import TrustedPublisher

    assert TrustedPublisher(issuer="https://gitlab.com", repository="g/p", workflow="ci/release.yml").kind == "gitlab"
    assert TrustedPublisher(repository="o/r", workflow="release.yml").kind == "github"
    bad = TrustedPublisher(issuer="https://gitlab.com", repository="g", workflow="../x.yml",
                           repository_owner_id="1")
    assert {key for key, _ in bad.check()} == {"repository", "workflow", "repository_owner_id"}
