"""Lifecycle and operations (issue 16): PEP 792 project statuses, deletion and retention, end to end.

Real ``pywharf server`` processes: A and B share one file_system storage folder (nothing else;
``sync_index_interval = 1``). ``pywharf status`` / ``pywharf delete`` act through A; B shows the
effect after a sync; ``update_index`` rebuilt from storage alone keeps it; real twine, pip and uv
see it (archived: twine's upload refused with the reason; quarantined: nothing to install).
In-process: the rules (who may, bad input, groups, page caches).
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
import tomli_w
from conftest import Server as ProcessServer
from conftest import run, tool, wait_for
from starlette.testclient import TestClient
from test_e2e_clients import pip, pip_install, uv_install
from test_groups import ALL_READ, ALL_WRITE, TEAM_WRITE, group_config
from test_index_sync import INTERVAL, READ, REPO, WRITE, shared_pair, sync_config, update_index, wait_ready
from test_upload_rules import Dist, encode_multipart, make_wheel, upload_fields

from pywharf_core.http.app import create_app
from pywharf_core.index.snapshot import IndexSnapshot
from pywharf_core.model.errors import ConfigError
from pywharf_core.model.names import parse_dist_filename
from pywharf_core.model.records import FileRecord
from pywharf_core.service.retention import RetentionPolicy, plan
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup

__all__ = ["shared_pair"]  # the fixture, imported for pytest

JSON_V1 = "application/vnd.pypi.simple.v1+json"


def cli(command: str, server: ProcessServer, *args: str, env: dict[str, str], secret: str = WRITE,
        check: bool = True) -> Any:
    return run([tool("pywharf"), command, "--url", server.base, "--repo", REPO, "--secret", secret, *args],
               env, timeout=60, check=check)


def page(server: ProcessServer, project: str) -> requests.Response:
    return requests.get(f"{server.base}/simple/{project}/", auth=(REPO, READ), headers={"Accept": JSON_V1},
                        timeout=10)


def files_on(server: ProcessServer, project: str) -> list:
    """The files ``server`` lists for ``project`` (none while it does not know the project yet)."""
    response = page(server, project)
    return response.json()["files"] if response.status_code == 200 else []


def html(server: ProcessServer, project: str) -> requests.Response:
    return requests.get(f"{server.base}/simple/{project}/", auth=(REPO, READ), timeout=10)


def file_url(server: ProcessServer, dist: Dist) -> str:
    return f"{server.base}/simple/{dist.spec.name}/{dist.filename}"


def status_of(server: ProcessServer, project: str) -> dict[str, str] | None:
    response = page(server, project)
    return response.json().get("project-status") if response.status_code == 200 else None


def said(result: Any) -> str:
    """A command's output on one line, without colours (twine wraps and colours the server's message)."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr).split())


def twine_upload(server: ProcessServer, dist: Dist, env: dict[str, str], check: bool = True) -> Any:
    return run([tool("twine"), "upload", "--repository-url", f"{server.base}/simple/", "-u", REPO, "-p", WRITE,
                "--non-interactive", "--disable-progress-bar", str(dist.path)], env, timeout=120, check=check)


def test_status_through_a_then_b_then_update_index_with_twine_pip_and_uv(
        shared_pair, env: dict[str, str], tmp_path: Path, server_factory) -> None:
    a, b, storage = shared_pair
    one = make_wheel(tmp_path / "d", "lcstat", "1.0")
    twine_upload(a, one, env)

    # archived, through A with the CLI: markers on A at once, on B after its next sync.
    out = cli("status", a, "lcstat", "archived", "--reason", "moved to lcstat2 <see docs>", env=env)
    assert "lcstat: archived" in out.stdout
    expected = {"status": "archived", "reason": "moved to lcstat2 <see docs>"}
    assert status_of(a, "lcstat") == expected
    assert wait_for(lambda: status_of(b, "lcstat") == expected, INTERVAL + 3, lambda: b.log())
    json_page = page(b, "lcstat").json()
    assert json_page["meta"]["api-version"] == "1.4" and [f["filename"] for f in json_page["files"]] == [one.filename]
    text = html(b, "lcstat").text
    assert '<meta name="pypi:repository-version" content="1.4">' in text
    assert '<meta name="pypi:project-status" content="archived">' in text
    assert '<meta name="pypi:project-status-reason" content="moved to lcstat2 &lt;see docs&gt;">' in text
    # An archived project still offers its files, and refuses a new upload, whichever server takes it.
    pip_install(b.index_url(REPO, READ), tmp_path / "pip-archived", "lcstat", env)
    refused = twine_upload(b, make_wheel(tmp_path / "d", "lcstat", "2.0"), env, check=False)
    assert refused.returncode != 0
    assert "403" in said(refused) and "archived (PEP 792) and accepts no uploads: moved to lcstat2" in said(refused)
    assert not (storage / "lcstat-2.0-py3-none-any.whl").exists()

    # quarantined: no file listed (HTML, JSON), none downloadable, nothing for pip or uv.
    cli("status", a, "lcstat", "quarantined", "--reason", "malware", env=env)
    assert wait_for(lambda: (status_of(b, "lcstat") or {}).get("status") == "quarantined", INTERVAL + 3,
                    lambda: b.log())
    for server in (a, b):
        assert page(server, "lcstat").json()["files"] == []
        assert one.filename not in html(server, "lcstat").text
        assert requests.get(file_url(server, one), auth=(REPO, READ), timeout=10).status_code == 404
        assert requests.get(f"{server.base}/pypi/lcstat/json", auth=(REPO, READ), timeout=10).status_code == 404
    for install in (pip_install, uv_install):
        result = install(b.index_url(REPO, READ), tmp_path / f"{install.__name__}-q", "lcstat", env, check=False)
        assert result.returncode != 0, result.stdout
        assert "lcstat" in said(result)
    download = run([*pip(), "download", "--no-deps", "-d", str(tmp_path / "dl"), "--index-url",
                    b.index_url(REPO, READ), "lcstat"], env, timeout=120, check=False)
    assert download.returncode != 0 and "No matching distribution" in said(download)
    assert (storage / one.filename).is_file()  # quarantine hides, it does not delete

    # Rebuilt from storage alone, read by a server that never saw the log.
    update_index(storage, env, tmp_path)
    fresh = server_factory(sync_config(storage_path=str(storage)), "--extra_index_url=", root_name="root-c")
    wait_ready(fresh)
    assert status_of(fresh, "lcstat") == {"status": "quarantined", "reason": "malware"}
    assert page(fresh, "lcstat").json()["files"] == []

    # Back to active: the marker goes (PEP 792 lets an index omit "active") and pip installs.
    cli("status", a, "lcstat", "active", env=env)
    assert wait_for(lambda: page(b, "lcstat").json()["files"] != [], INTERVAL + 3, lambda: b.log())
    assert "project-status" not in page(b, "lcstat").json()
    # (uv keeps pages for their max-age: a fresh cache, as a client past it would ask again)
    fresh_cache = {**env, "UV_CACHE_DIR": str(tmp_path / "uv2")}
    uv_install(b.index_url(REPO, READ), tmp_path / "uv-active", "lcstat", fresh_cache)
    assert "pypi:project-status" not in html(b, "lcstat").text
    # The audit log, read through B: each change with its actor and address.
    events = json.loads(cli("audit", b, "--json", env=env).stdout)["events"]
    changes = [(e["project"], e["detail"], e["actor"]) for e in events if e["action"] == "project-status"]
    assert changes == [("lcstat", "archived: moved to lcstat2 <see docs>", "write secret"),
                       ("lcstat", "quarantined: malware", "write secret"), ("lcstat", "active", "write secret")]


def test_delete_file_version_project_through_a_then_b_and_update_index(
        shared_pair, env: dict[str, str], tmp_path: Path) -> None:
    a, b, storage = shared_pair
    v1, v2, v3 = (make_wheel(tmp_path / "d", "lcdel", v) for v in ("1.0", "2.0", "3.0"))
    for dist in (v1, v2, v3):
        twine_upload(a, dist, env)
    assert wait_for(lambda: len(files_on(b, "lcdel")) == 3, INTERVAL + 3, lambda: b.log())

    out = cli("delete", a, "lcdel", v1.filename, env=env)
    assert f"delete: {v1.filename}" in out.stdout
    assert not (storage / v1.filename).exists()
    assert not (storage / ".pywharf" / f"{v1.filename}.metadata").exists()
    assert not (storage / ".pywharf" / f"{v1.filename}.toml").exists()

    def listed(server: ProcessServer) -> list[str]:
        return sorted(f["filename"] for f in page(server, "lcdel").json()["files"])

    assert listed(a) == [v2.filename, v3.filename]
    assert wait_for(lambda: listed(b) == [v2.filename, v3.filename], INTERVAL + 3, lambda: b.log())
    for server in (a, b):
        assert requests.get(file_url(server, v1), auth=(REPO, READ), timeout=10).status_code == 404
        assert requests.get(file_url(server, v1) + ".metadata", auth=(REPO, READ), timeout=10).status_code == 404

    # A deleted filename never comes back with other bytes (409, on either server)...
    other_bytes = make_wheel(tmp_path / "d2", "lcdel", "1.0", extra_bytes=b"something else")
    assert other_bytes.filename == v1.filename and other_bytes.data != v1.data
    refused = twine_upload(b, other_bytes, env, check=False)
    assert refused.returncode != 0 and "409" in said(refused) and "was deleted" in said(refused)
    # ...the same bytes may.
    twine_upload(b, v1, env)
    assert wait_for(lambda: v1.filename in listed(a), INTERVAL + 3, lambda: a.log())
    assert requests.get(file_url(a, v1), auth=(REPO, READ), timeout=10).content == v1.data

    # A version, then the whole project; update_index keeps them deleted, also for A, whose
    # journal still holds its own uploads of those files.
    assert f"delete: {v2.filename}" in cli("delete", b, "lcdel", "2.0", env=env).stdout
    assert wait_for(lambda: v2.filename not in listed(a), INTERVAL + 3, lambda: a.log())
    deleted = cli("delete", a, "lcdel", env=env).stdout
    assert sorted(deleted.split()) == sorted(["delete:", "delete:", v1.filename, v3.filename])
    update_index(storage, env, tmp_path)
    for server in (a, b):
        assert wait_for(lambda s=server: page(s, "lcdel").status_code == 404, INTERVAL + 3, lambda s=server: s.log())
        assert "no files left" in page(server, "lcdel").text
    time.sleep(INTERVAL + 0.5)  # both applied the new base (and A's journal entries were pruned)
    assert page(a, "lcdel").status_code == 404 and page(b, "lcdel").status_code == 404
    index = (storage / "index.toml").read_text()
    assert f'[deleted."{v3.filename}"]' in index and f'[files."{v3.filename}"]' not in index
    assert cli("delete", a, "lcdel", "9.9", env=env, check=False).returncode == 1
    # Every deletion and the refused one are in the audit log, read through the other server.
    events = json.loads(cli("audit", b, "--json", env=env).stdout)["events"]
    deletions = [(e["filename"], e["status"]) for e in events if e["action"] == "delete"]
    assert sorted(deletions) == sorted([(v1.filename, 200), (v2.filename, 200), (v1.filename, 200),
                                        (v3.filename, 200), ("9.9", 404)])
    assert all(e["actor"] == "write secret" and e["client"] == "127.0.0.1" for e in events if e["action"] == "delete")


# -- in-process: the rules --------------------------------------------------------------------------


class Local:
    """One in-process server over a file_system repository (``sync`` is the sync thread's step)."""

    def __init__(self, root: Path, config: str, extra_index_url: str = "") -> None:
        settings = ServerSettings(root=root, extra_index_url=extra_index_url)
        self.state = ServerState(settings)
        self.state.repos = build_repos(load_setup(config, None, is_text=True), settings)
        self.state.configured = True
        self.client = TestClient(create_app(self.state), raise_server_exceptions=False)
        for repo in self.state.repos.values():
            if repo.mirror is None and repo.group is None:
                repo.sync_once()

    def upload(self, dist: Dist, auth: tuple[str, str] = (REPO, WRITE), path: str = "/simple/") -> Any:
        body, content_type = encode_multipart(upload_fields(dist, None), dist.filename, dist.data)
        return self.client.post(path, content=body, headers={"Content-Type": content_type}, auth=auth)


@pytest.fixture
def local(tmp_path: Path) -> Local:
    return Local(tmp_path / "root", tomli_w.dumps({REPO: {"type": "file_system", "read_secret": READ,
                                                          "write_secret": WRITE, "sync_index_interval": 3600}}),
                 extra_index_url="https://pypi.invalid/simple/")


def test_status_input_rules_and_who_may(local: Local, tmp_path: Path) -> None:
    assert local.upload(make_wheel(tmp_path, "rules", "1.0")).status_code == 200
    post = local.client.post
    assert post("/status/rules", data={"status": "frozen"}, auth=(REPO, WRITE)).status_code == 400
    assert post("/status/rules", data={"status": "archived", "reason": "x" * 1001},
                auth=(REPO, WRITE)).status_code == 400
    assert post("/status/nothere", data={"status": "archived"}, auth=(REPO, WRITE)).status_code == 404
    assert post("/status/rules", data={"status": "archived"}, auth=(REPO, READ)).status_code == 403
    assert post("/delete/rules", auth=(REPO, READ)).status_code == 403
    assert post("/delete/rules/7.0", auth=(REPO, WRITE)).status_code == 404
    # An API token limited to another project may not; one limited to this project may.
    other = post(f"/_/tokens/{REPO}", data={"scope": "upload", "projects": "other"}, auth=(REPO, WRITE)).json()
    mine = post(f"/_/tokens/{REPO}", data={"scope": "upload", "projects": "rules"}, auth=(REPO, WRITE)).json()
    refused = post("/status/rules", data={"status": "archived"}, auth=("__token__", other["token"]))
    assert refused.status_code == 403 and "rules" in refused.text
    assert post("/status/Rules", data={"status": "deprecated", "reason": "r"},
                auth=("__token__", mine["token"])).status_code == 200
    assert post("/repos/local/status/rules", data={"status": "deprecated", "reason": "r"},
                auth=(REPO, WRITE)).status_code == 200  # the per-repository URL too
    assert post("/delete/rules/1.0", auth=("__token__", mine["token"])).status_code == 200


def test_a_status_change_refreshes_cached_pages_and_quarantine_hides_the_project_json(
        local: Local, tmp_path: Path) -> None:
    dist = make_wheel(tmp_path, "cached", "1.0")
    assert local.upload(dist).status_code == 200
    get = local.client.get
    for accept in (JSON_V1, "text/html"):
        assert dist.filename in get("/simple/cached/", auth=(REPO, READ), headers={"Accept": accept}).text
    assert local.client.post("/status/cached", data={"status": "quarantined"}, auth=(REPO, WRITE)).status_code == 200
    quarantined = get("/simple/cached/", auth=(REPO, READ), headers={"Accept": JSON_V1}).json()
    assert quarantined["files"] == [] and quarantined["project-status"] == {"status": "quarantined"}
    assert dist.filename not in get("/simple/cached/", auth=(REPO, READ)).text
    assert get("/pypi/cached/json", auth=(REPO, READ)).status_code == 404
    assert get(f"/simple/cached/{dist.filename}.metadata", auth=(REPO, READ)).status_code == 404
    refused = local.upload(make_wheel(tmp_path, "cached", "2.0"))
    assert refused.status_code == 403 and "quarantined" in refused.text
    assert local.client.post("/status/cached", data={"status": "deprecated"}, auth=(REPO, WRITE)).status_code == 200
    back = get("/simple/cached/", auth=(REPO, READ), headers={"Accept": JSON_V1}).json()
    assert [f["filename"] for f in back["files"]] == [dist.filename]
    assert back["project-status"] == {"status": "deprecated"}
    assert local.upload(make_wheel(tmp_path, "cached", "2.0")).status_code == 200  # deprecated: a marker only


def test_a_deleted_project_is_never_redirected_to_the_public_index(local: Local, tmp_path: Path) -> None:
    assert local.upload(make_wheel(tmp_path, "private-lib", "1.0")).status_code == 200
    assert local.client.post("/delete/private-lib", auth=(REPO, WRITE)).status_code == 200
    response = local.client.get("/simple/private-lib/", auth=(REPO, READ), follow_redirects=False)
    assert response.status_code == 404, response.headers
    # A name this repository never held still falls back to the public index.
    assert local.client.get("/simple/never-here/", auth=(REPO, READ), follow_redirects=False).status_code == 302


def test_a_group_keeps_answering_a_deleted_project_from_its_hosted_member(tmp_path: Path) -> None:
    """Dependency confusion: once the team's files of a name are all deleted, the group must
    not start answering that name from the proxy (whose upstream, here a closed port, would
    fail the request rather than 404 it)."""
    server = Local(tmp_path / "root", group_config("http://127.0.0.1:9/simple/"))
    dist = make_wheel(tmp_path, "team-secret", "1.0")
    assert server.upload(dist, auth=("x", ALL_WRITE), path="/repos/all/simple/").status_code == 200
    assert server.client.post("/repos/all/delete/team-secret", auth=("x", ALL_WRITE)).status_code == 405
    assert server.client.post("/repos/all/status/team-secret", data={"status": "archived"},
                              auth=("x", ALL_WRITE)).status_code == 405
    assert server.client.post("/repos/team/delete/team-secret", auth=("team", TEAM_WRITE)).status_code == 200
    team, group = server.state.repos["team"], server.state.repos["all"]
    assert group.group.cached_member("team-secret") == (team,)
    answer = server.client.get("/repos/all/simple/team-secret/", auth=("x", ALL_READ))
    assert answer.status_code == 404 and "no files left" in answer.text


def test_journal_lines_of_a_server_are_whole_json(local: Local, tmp_path: Path) -> None:
    """What the server journals for statuses and deletions is what the index model reads back."""
    assert local.upload(make_wheel(tmp_path, "journaled", "1.0")).status_code == 200
    local.client.post("/status/journaled", data={"status": "archived", "reason": "r"}, auth=(REPO, WRITE))
    local.client.post("/delete/journaled", auth=(REPO, WRITE))
    lines = [json.loads(line) for line in
             (tmp_path / "root" / "cache" / REPO / "uploads.jsonl").read_bytes().splitlines()]
    assert {"project_status": "journaled"}.items() <= lines[-2].items()
    assert lines[-1]["deleted"] == "journaled-1.0-py3-none-any.whl"


# -- retention ----------------------------------------------------------------------------------------


def _record(filename: str, upload_time: str = "2026-01-01T00:00:00.000000Z") -> FileRecord:
    dist = parse_dist_filename(filename)
    return FileRecord(filename, dist.project, str(dist.version), "a" * 64, 1, upload_time)


def test_retention_plan_keeps_the_newest_prereleases_and_every_final_release() -> None:
    versions = ["1.0", "1.1a1", "1.1a2", "1.1.dev1", "1.2rc1", "2.0"]
    snapshot = IndexSnapshot.build([_record(f"demo-{v}.tar.gz") for v in versions] +
                                   [_record("other-0.1a1.tar.gz")])
    doomed = plan(snapshot, RetentionPolicy(keep_prereleases=2), datetime(2026, 6, 1, tzinfo=timezone.utc))
    assert [d.record.filename for d in doomed] == ["demo-1.1.dev1.tar.gz", "demo-1.1a1.tar.gz"]
    assert doomed[0].why == "pre-/dev-release older than the newest 2 of demo"
    everything = plan(snapshot, RetentionPolicy(keep_prereleases=0), datetime(2026, 6, 1, tzinfo=timezone.utc))
    assert len(everything) == 5 and not any(d.record.version in ("1.0", "2.0") for d in everything)


def test_retention_plan_by_age_and_version_pattern() -> None:
    snapshot = IndexSnapshot.build([
        _record("demo-1.0.dev3.tar.gz", "2026-01-01T00:00:00.000000Z"),  # old dev: goes
        _record("demo-1.0.dev4.tar.gz", "2026-05-30T00:00:00.000000Z"),  # recent dev: stays
        _record("demo-0.9.tar.gz", "2025-01-01T00:00:00.000000Z"),  # old, not matching: stays
        _record("demo-0.8.dev1.tar.gz", ""),  # unknown age: stays
    ])
    policy = RetentionPolicy(max_age_days=30, version_pattern=r".*\.dev\d+")
    doomed = plan(snapshot, policy, datetime(2026, 6, 1, tzinfo=timezone.utc))
    assert [(d.record.filename, d.why) for d in doomed] == [
        ("demo-1.0.dev3.tar.gz", r"uploaded 2026-01-01, over 30 days ago, version matches '.*\\.dev\\d+'")]


@pytest.mark.parametrize(("table", "key"), [
    ({"retention_max_age_days": 3}, "retention_version_pattern"),
    ({"retention_version_pattern": ".*"}, "retention_version_pattern"),
    ({"retention_max_age_days": 3, "retention_version_pattern": "(unclosed"}, "retention_version_pattern"),
    ({"retention_max_age_days": 0, "retention_version_pattern": ".*"}, "retention_max_age_days"),
    ({"retention_keep_prereleases": -1}, "retention_keep_prereleases"),
])
def test_retention_config_mistakes_name_the_key(table: dict[str, object], key: str) -> None:
    config = tomli_w.dumps({REPO: {"type": "file_system", "read_secret": READ, "write_secret": WRITE, **table}})
    with pytest.raises(ConfigError, match=key):
        load_setup(config, None, is_text=True)


def test_retention_route_rules(local: Local, tmp_path: Path) -> None:
    post = local.client.post
    assert post("/retention", auth=(REPO, WRITE)).status_code == 400  # no rules configured
    ruled = Local(tmp_path / "ruled", tomli_w.dumps({REPO: {
        "type": "file_system", "read_secret": READ, "write_secret": WRITE, "retention_keep_prereleases": 0}}))
    assert ruled.upload(make_wheel(tmp_path, "ret", "1.0a1")).status_code == 200
    token = ruled.client.post(f"/_/tokens/{REPO}", data={"scope": "upload"}, auth=(REPO, WRITE)).json()["token"]
    assert ruled.client.post("/retention", auth=("__token__", token)).status_code == 403
    assert ruled.client.post("/retention", auth=(REPO, READ)).status_code == 403
    dry = ruled.client.post("/retention", data={"dry_run": "1"}, auth=(REPO, WRITE))
    assert dry.text == "ret-1.0a1-py3-none-any.whl\tpre-/dev-release older than the newest 0 of ret\n"
    assert "ret" in ruled.state.repos[REPO].snapshot.projects
    assert ruled.client.post("/retention", auth=(REPO, WRITE)).text == dry.text
    assert "ret" not in ruled.state.repos[REPO].snapshot.projects


def test_retention_dry_run_then_run_then_scheduled_through_the_servers(
        server_factory, env: dict[str, str], tmp_path: Path) -> None:
    storage = tmp_path / "shared-storage"
    storage.mkdir()
    config = sync_config(storage_path=str(storage), retention_keep_prereleases=1)
    a = server_factory(config, "--extra_index_url=", root_name="root-a")
    b = server_factory(config, "--extra_index_url=", root_name="root-b")
    a1, a2, final = (make_wheel(tmp_path / "d", "lcret", v) for v in ("1.0a1", "1.0a2", "1.0"))
    for dist in (a1, a2, final):
        twine_upload(a, dist, env)

    def listed(server: ProcessServer) -> list[str]:
        response = page(server, "lcret")
        return sorted(f["filename"] for f in response.json()["files"]) if response.status_code == 200 else []

    dry = cli("retention", a, "--dry-run", env=env).stdout
    assert dry == f"would delete: {a1.filename} (pre-/dev-release older than the newest 1 of lcret)\n"
    assert (storage / a1.filename).is_file() and len(listed(a)) == 3
    assert cli("retention", a, env=env).stdout == dry.replace("would delete", "deleted")
    assert not (storage / a1.filename).exists()
    assert wait_for(lambda: listed(b) == sorted([a2.filename, final.filename]), INTERVAL + 3, lambda: b.log())
    assert cli("retention", b, "--dry_run", env=env).stdout == "retention: nothing to delete\n"

    # Scheduled: a server started with --retention_interval applies the rules by itself.
    a3 = make_wheel(tmp_path / "d", "lcret", "1.0a3")
    twine_upload(b, a3, env)
    server_factory(config, "--extra_index_url=", "--retention_interval=1", root_name="root-c")
    assert wait_for(lambda: listed(a) == sorted([a3.filename, final.filename]), 15, lambda: a.log())
    assert not (storage / a2.filename).exists()
