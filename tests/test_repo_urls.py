"""A URL per repository (issue 15, step 1): ``/repos/<repo>/simple/`` and ``/repos/<repo>/pypi/``.

Clients keep credentials per URL (pip, uv, netrc), so with two repositories on the shared
``/simple/`` they sent one repository's credentials to the other. Under ``/repos/<repo>/`` the
URL names the repository and the username may be anything (or ``__token__``). Rules
in-process; then real pip and uv installing from two repositories of one server, each with its
own credentials, in one command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tomli_w
from conftest import Server as ProcessServer
from conftest import client_env, run, start_server, tool
from test_e2e_clients import installed_version, pip
from test_security_data import Server
from test_upload_rules import encode_multipart, make_wheel, upload_fields

A_READ, A_WRITE = "alpha-read-secret", "alpha-write-secret"
B_READ, B_WRITE = "bravo-read-secret", "bravo-write-secret"


def two_repos(**table: object) -> str:
    return tomli_w.dumps({
        "alpha": {"type": "file_system", "read_secret": A_READ, "write_secret": A_WRITE, **table},
        "bravo": {"type": "file_system", "read_secret": B_READ, "write_secret": B_WRITE, **table},
    })


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path / "root", two_repos(sync_index_interval=3600))


def upload(server: Server, path: str, auth: tuple[str, str], tmp_path: Path, name: str, version: str = "1.0"):
    dist = make_wheel(tmp_path, name, version)
    body, content_type = encode_multipart(upload_fields(dist, None), dist.filename, dist.data)
    return server.client.post(path, content=body, headers={"Content-Type": content_type}, auth=auth)


def test_the_url_names_the_repository_and_any_username_works(server: Server, tmp_path: Path) -> None:
    assert upload(server, "/repos/alpha/simple/", ("ci", A_WRITE), tmp_path, "alpha-pkg").status_code == 200
    assert upload(server, "/repos/bravo/", ("", B_WRITE), tmp_path, "bravo-pkg").status_code == 200
    assert upload(server, "/repos/bravo/simple", ("bravo", B_WRITE), tmp_path, "bravo-pkg", "2.0").status_code == 200
    alpha = server.client.get("/repos/alpha/simple/", auth=("whoever", A_READ))
    assert alpha.status_code == 200 and "alpha-pkg" in alpha.text and "bravo-pkg" not in alpha.text
    bravo = server.client.get("/repos/bravo/simple/bravo-pkg/", auth=("alpha", B_READ))  # username ignored
    assert bravo.status_code == 200 and "bravo_pkg-2.0" in bravo.text
    # Files and metadata are reached through the same URL (relative links from the page).
    wheel = "/repos/alpha/simple/alpha-pkg/alpha_pkg-1.0-py3-none-any.whl"
    assert server.client.get(wheel, auth=("x", A_READ)).status_code == 200
    assert server.client.get(wheel + ".metadata", auth=("x", A_READ)).status_code == 200
    # The shared /simple/ keeps working, named by the username.
    assert "alpha-pkg" in server.client.get("/simple/", auth=("alpha", A_READ)).text


def test_one_repositorys_credentials_open_nothing_in_another(server: Server, tmp_path: Path) -> None:
    assert upload(server, "/repos/alpha/simple/", ("x", A_WRITE), tmp_path, "alpha-pkg").status_code == 200
    assert server.client.get("/repos/bravo/simple/", auth=("alpha", A_READ)).status_code == 401
    assert server.client.get("/repos/bravo/simple/", auth=("bravo", A_WRITE)).status_code == 401
    assert upload(server, "/repos/bravo/simple/", ("alpha", A_WRITE), tmp_path, "sneaky").status_code == 401
    assert server.client.get("/repos/nope/simple/", auth=("nope", A_READ)).status_code == 401
    assert server.client.post("/repos/alpha/yank/alpha-pkg/1.0", auth=("x", A_READ)).status_code == 403
    assert server.client.post("/repos/alpha/yank/alpha-pkg/1.0", auth=("x", A_WRITE)).status_code == 200


def test_tokens_work_on_their_repositorys_url_only(server: Server) -> None:
    created = server.client.post("/_/tokens/alpha", data={"scope": "read"}, auth=("alpha", A_WRITE))
    token = created.json()["token"]
    assert server.client.get("/repos/alpha/simple/", auth=("__token__", token)).status_code == 200
    assert server.client.get("/repos/alpha/simple/", auth=("alpha", token)).status_code == 200
    assert server.client.get("/repos/bravo/simple/", auth=("__token__", token)).status_code == 401


def test_redirects_and_json_urls_stay_under_the_repository_url(server: Server, tmp_path: Path) -> None:
    upload(server, "/repos/alpha/simple/", ("x", A_WRITE), tmp_path, "alpha-pkg")
    redirect = server.client.get("/repos/alpha/simple/Alpha_Pkg/", auth=("x", A_READ), follow_redirects=False)
    assert redirect.status_code == 301 and redirect.headers["location"] == "/repos/alpha/simple/alpha-pkg/"
    data = server.client.get("/repos/alpha/pypi/alpha-pkg/json", auth=("x", A_READ)).json()
    assert data["urls"][0]["url"].startswith("http://testserver/repos/alpha/simple/alpha-pkg/")


def test_a_browser_session_opens_only_its_own_repositorys_url(server: Server, tmp_path: Path) -> None:
    login = server.client.get("/login/")
    assert login.status_code == 200
    csrf = server.client.cookies.get("pywharf_csrf") or ""
    from pywharf_core.http.web.csrf import CSRF_FIELD

    token = login.text.split(f'name="{CSRF_FIELD}" value="', 1)[1].split('"', 1)[0]
    assert csrf
    response = server.client.post("/login/", data={"repo": "alpha", "secret": A_READ, CSRF_FIELD: token},
                                  follow_redirects=False)
    assert response.status_code == 303
    assert server.client.get("/repos/alpha/simple/").status_code == 200
    assert server.client.get("/repos/bravo/simple/").status_code == 401


def test_the_ui_shows_install_lines_with_the_repository_url(server: Server, tmp_path: Path) -> None:
    upload(server, "/repos/alpha/simple/", ("x", A_WRITE), tmp_path, "alpha-pkg")
    page = server.client.get("/project/alpha-pkg/", auth=("alpha", A_READ))
    assert "pip install --index-url http://testserver/repos/alpha/simple/ alpha-pkg" in page.text


# -- real clients ------------------------------------------------------------------------------


def test_pip_and_uv_install_from_two_repositories_with_two_credentials(tmp_path: Path) -> None:
    server: ProcessServer = start_server(tmp_path / "root", two_repos(), "--extra_index_url=")
    try:
        env = client_env(tmp_path)
        for repo, write, name in (("alpha", A_WRITE, "alpha-pkg"), ("bravo", B_WRITE, "bravo-pkg")):
            dist = make_wheel(tmp_path, name, "1.0")
            run([tool("twine"), "upload", "--repository-url", f"{server.base}/repos/{repo}/simple/",
                 "--disable-progress-bar", "--non-interactive", str(dist.path)],
                {**env, "TWINE_USERNAME": "__token__" if repo == "bravo" else "ci", "TWINE_PASSWORD": write},
                timeout=120)
        host = f"127.0.0.1:{server.port}"
        index_a = f"http://alpha:{A_READ}@{host}/repos/alpha/simple/"
        index_b = f"http://bravo:{B_READ}@{host}/repos/bravo/simple/"
        target = tmp_path / "pip"
        run([*pip(), "install", "--no-deps", "--target", str(target), "--index-url", index_a,
             "--extra-index-url", index_b, "alpha-pkg", "bravo-pkg"], env, timeout=120)
        assert installed_version(target, "alpha-pkg") == "1.0"
        assert installed_version(target, "bravo-pkg") == "1.0"
        target = tmp_path / "uv"
        run([tool("uv"), "pip", "install", "--no-deps", "--python", sys.executable, "--target",
             str(target), "--index-url", index_a, "--extra-index-url", index_b, "alpha-pkg", "bravo-pkg"],
            env, timeout=120)
        assert installed_version(target, "alpha-pkg") == "1.0"
        assert installed_version(target, "bravo-pkg") == "1.0"
    finally:
        server.stop()
