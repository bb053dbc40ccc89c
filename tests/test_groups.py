"""Group repositories (issue 15, step 3): one URL over a hosted repository and a proxy.

Real servers and clients: an upstream pywharf (the "public index", on loopback) holds
``publib`` and a higher version of a name the team also uses privately; a second pywharf has
the team's repository, a proxy of the upstream and a group of both. pip and uv install through
the group a private package that depends on a proxied one, again with the upstream stopped; the
shared name resolves to the private files only. In-process: a hosted member without an index
makes the group answer 503 instead of falling through to the proxy; uploads POSTed to the group
land in its upload member; config mistakes name the key.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests
import tomli_w
from conftest import Server as ProcessServer
from conftest import client_env, run, start_server, tool
from test_e2e_clients import installed_version, pip
from test_proxy_http import PROXY_READ, UP_WRITE
from test_proxy_http import upstream_server as plain_upstream
from test_upload_rules import encode_multipart, make_wheel, upload_fields

from pywharf_core.model.errors import ConfigError
from pywharf_core.service.server_state import ServerSettings, build_repos, load_setup

TEAM_READ, TEAM_WRITE = "team-read-secret", "team-write-secret"
ALL_READ, ALL_WRITE = "group-read-secret", "group-write-secret"


def group_config(upstream_url: str, **group: object) -> str:
    return tomli_w.dumps({
        "team": {"type": "file_system", "read_secret": TEAM_READ, "write_secret": TEAM_WRITE},
        "pypi": {"type": "proxy", "upstream": upstream_url, "read_secret": PROXY_READ, "page_ttl": 1},
        "all": {"type": "group", "members": ["pypi", "team"], "read_secret": ALL_READ, "write_secret": ALL_WRITE,
                **group},
    })


def twine(server: ProcessServer, url_path: str, user: str, secret: str, dist: Path, env: dict[str, str]) -> None:
    run([tool("twine"), "upload", "--repository-url", f"{server.base}{url_path}", "--disable-progress-bar",
         "--non-interactive", str(dist)], {**env, "TWINE_USERNAME": user, "TWINE_PASSWORD": secret}, timeout=120)


def test_pip_and_uv_install_through_the_group_and_private_names_never_come_from_upstream(tmp_path: Path) -> None:
    upstream = plain_upstream(tmp_path)  # publib 1.0 and 2.0, otherlib 0.1
    env = client_env(tmp_path)
    # The public index also has "team-app", at a higher version than the team's private one.
    twine(upstream, "/repos/up/simple/", "ci", UP_WRITE, make_wheel(tmp_path / "pub", "team-app", "99.0").path, env)
    admin = tomli_w.dumps({"pypi": {"type": "proxy", "raw": f"reader:{'upstream-read-secret'}"}})
    server = start_server(tmp_path / "server", group_config(f"{upstream.base}/repos/up/simple/"),
                          "--extra_index_url=", admin_text=admin)
    try:
        app = make_wheel(tmp_path / "team", "team-app", "1.0", requires_dist=["publib>=2"])
        twine(server, "/repos/all/simple/", "__anything__", ALL_WRITE, app.path, env)  # lands in "team"
        assert (server.root / "cache" / "team" / "storage" / app.filename).is_file()

        index = f"http://x:{ALL_READ}@127.0.0.1:{server.port}/repos/all/simple/"
        page = requests.get(f"{server.base}/repos/all/simple/team-app/", auth=("x", ALL_READ), timeout=30)
        assert page.status_code == 200 and "team_app-1.0" in page.text and "99.0" not in page.text
        target = tmp_path / "pip"
        run([*pip(), "install", "--target", str(target), "--index-url", index, "team-app"], env, timeout=180)
        assert installed_version(target, "team-app") == "1.0"  # never the upstream's 99.0
        assert installed_version(target, "publib") == "2.0"  # the dependency, through the proxy

        upstream.stop()
        target = tmp_path / "uv"
        run([tool("uv"), "pip", "install", "--python", sys.executable, "--target", str(target), "--index-url",
             index, "team-app"], env, timeout=180)
        assert installed_version(target, "team-app") == "1.0"
        assert installed_version(target, "publib") == "2.0"
        listing = requests.get(f"{server.base}/repos/all/simple/", auth=("x", ALL_READ), timeout=10).text
        assert "team-app" in listing and "publib" in listing
        # The team's own secret does not open the group; the group's does not open the team.
        assert requests.get(f"{server.base}/repos/all/simple/", auth=("x", TEAM_READ), timeout=10).status_code == 401
        assert requests.get(f"{server.base}/repos/team/simple/", auth=("x", ALL_READ), timeout=10).status_code == 401
    finally:
        server.stop()
        upstream.stop()


# -- in-process ---------------------------------------------------------------------------------


def test_a_hosted_member_without_an_index_makes_the_group_wait_not_fall_through(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from pywharf_core.http.app import create_app
    from pywharf_core.service.server_state import ServerState

    settings = ServerSettings(root=tmp_path / "root", extra_index_url="")
    state = ServerState(settings)
    # The proxy's upstream is a closed port: it must never even be asked.
    state.repos = build_repos(load_setup(group_config("http://127.0.0.1:9/simple/"), None, is_text=True), settings)
    state.configured = True
    client = TestClient(create_app(state), raise_server_exceptions=False)
    assert not state.repos["team"].index_loaded
    waiting = client.get("/repos/all/simple/private-thing/", auth=("x", ALL_READ))
    assert waiting.status_code == 503 and waiting.headers["retry-after"] == "5"
    assert "team" in waiting.text

    state.repos["team"].sync_once()  # the team's index is loaded (empty): now the proxy may answer
    dist = make_wheel(tmp_path, "private-thing", "1.0")
    body, content_type = encode_multipart(upload_fields(dist, None), dist.filename, dist.data)
    assert client.post("/repos/all/simple/", content=body, headers={"Content-Type": content_type},
                       auth=("x", ALL_WRITE)).status_code == 200
    page = client.get("/repos/all/simple/private-thing/", auth=("x", ALL_READ))
    assert page.status_code == 200 and dist.filename in page.text
    assert client.get(f"/repos/all/simple/private-thing/{dist.filename}", auth=("x", ALL_READ)).content == dist.data
    assert client.post("/repos/all/yank/private-thing/1.0", auth=("x", ALL_WRITE)).status_code == 405
    assert client.get("/repos/all/simple/", auth=("x", ALL_READ)).status_code == 200
    # The group has its own API tokens (kept in its own folder), valid on the group's URL only.
    created = client.post("/_/tokens/all", data={"scope": "read"}, auth=("all", ALL_WRITE))
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert client.get("/repos/all/simple/private-thing/", auth=("__token__", token)).status_code == 200
    assert client.get("/repos/team/simple/private-thing/", auth=("__token__", token)).status_code == 401


@pytest.mark.parametrize(("group", "message"), [
    ({"members": ["team", "nope"]}, "members[1]"),
    ({"members": []}, "members"),
    ({"upload_to": "pypi"}, "upload_to"),
    ({"upload_to": "elsewhere"}, "upload_to"),
])
def test_group_config_mistakes_name_the_key(tmp_path: Path, group: dict[str, object], message: str) -> None:
    settings = ServerSettings(root=tmp_path / "root", extra_index_url="")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_repos(load_setup(group_config("http://127.0.0.1:9/simple/", **group), None, is_text=True), settings)
