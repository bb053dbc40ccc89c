"""Proxy repositories through the server (issue 15): real pip and uv install from a pywharf
proxy of another real pywharf (the upstream, on loopback, behind basic auth), then again with
the upstream stopped; HEAD never starts a download; an upstream that cannot answer with
nothing cached is a 503, never a 500; a proxy takes no uploads.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import requests
import tomli_w
from conftest import Server as ProcessServer
from conftest import client_env, run, start_server, tool, wait_for
from test_e2e_clients import installed_version, pip
from test_upload_rules import make_wheel

UP_READ, UP_WRITE = "upstream-read-secret", "upstream-write-secret"
PROXY_READ = "proxy-read-secret"


def upstream_server(tmp_path: Path) -> ProcessServer:
    config = tomli_w.dumps({"up": {"type": "file_system", "read_secret": UP_READ, "write_secret": UP_WRITE}})
    server = start_server(tmp_path / "upstream", config, "--extra_index_url=")
    env = client_env(tmp_path)
    for name, version in (("publib", "1.0"), ("publib", "2.0"), ("otherlib", "0.1")):
        dist = make_wheel(tmp_path / "dists", name, version)
        run([tool("twine"), "upload", "--repository-url", f"{server.base}/repos/up/simple/",
             "--disable-progress-bar", "--non-interactive", str(dist.path)],
            {**env, "TWINE_USERNAME": "ci", "TWINE_PASSWORD": UP_WRITE}, timeout=120)
    return server


def proxy_server(tmp_path: Path, upstream: ProcessServer, *flags: str, **table: object) -> ProcessServer:
    config = tomli_w.dumps({"pypi": {"type": "proxy", "upstream": f"{upstream.base}/repos/up/simple/",
                                     "read_secret": PROXY_READ, "page_ttl": 1, **table}})
    admin = tomli_w.dumps({"pypi": {"type": "proxy", "raw": f"reader:{UP_READ}"}})
    return start_server(tmp_path / "proxy", config, "--extra_index_url=", *flags, admin_text=admin)


@pytest.fixture
def servers(tmp_path: Path):
    upstream = upstream_server(tmp_path)
    proxy = proxy_server(tmp_path, upstream)
    yield upstream, proxy
    proxy.stop()
    upstream.stop()


def test_pip_and_uv_install_through_the_proxy_and_again_with_the_upstream_stopped(
        tmp_path: Path, servers: tuple[ProcessServer, ProcessServer]) -> None:
    upstream, proxy = servers
    env = client_env(tmp_path)
    index = f"http://x:{PROXY_READ}@127.0.0.1:{proxy.port}/repos/pypi/simple/"
    run([*pip(), "install", "--no-deps", "--target", str(tmp_path / "first"), "--index-url", index, "publib"],
        env, timeout=120)
    assert installed_version(tmp_path / "first", "publib") == "2.0"
    page = requests.get(f"{proxy.base}/repos/pypi/simple/publib/", auth=("x", PROXY_READ), timeout=10)
    assert page.status_code == 200 and "publib-2.0-py3-none-any.whl" in page.text
    assert f"127.0.0.1:{upstream.port}" not in page.text  # file URLs are the proxy's own
    cached = proxy.root / "cache" / "pypi" / "storage" / "publib-2.0-py3-none-any.whl"
    assert cached.is_file()

    upstream.stop()
    run([*pip(), "install", "--no-deps", "--target", str(tmp_path / "second"), "--index-url", index, "publib"],
        env, timeout=120)
    assert installed_version(tmp_path / "second", "publib") == "2.0"
    run([tool("uv"), "pip", "install", "--no-deps", "--python", sys.executable, "--target", str(tmp_path / "uv"),
         "--index-url", index, "publib"], env, timeout=120)
    assert installed_version(tmp_path / "uv", "publib") == "2.0"
    # Never fetched while the upstream was up: a 503 with a reason, not a 500.
    missing = requests.get(f"{proxy.base}/repos/pypi/simple/otherlib/", auth=("x", PROXY_READ), timeout=30)
    assert missing.status_code == 503 and "Upstream index unavailable" in missing.text
    assert "Internal Server Error" not in proxy.log()


def test_head_never_downloads_and_uploads_are_refused(tmp_path: Path,
                                                      servers: tuple[ProcessServer, ProcessServer]) -> None:
    _, proxy = servers
    auth = ("x", PROXY_READ)
    url = f"{proxy.base}/repos/pypi/simple/otherlib/otherlib-0.1-py3-none-any.whl"
    head = requests.head(url, auth=auth, timeout=10)
    assert head.status_code == 200 and head.headers["etag"]
    assert not (proxy.root / "cache" / "pypi" / "storage" / "otherlib-0.1-py3-none-any.whl").exists()
    assert requests.get(f"{proxy.base}/repos/pypi/simple/nosuchlib/", auth=auth, timeout=10).status_code == 404
    body = requests.get(url, auth=auth, timeout=10)
    assert body.status_code == 200 and body.content[:2] == b"PK"
    metadata = requests.get(url + ".metadata", auth=auth, timeout=10)
    assert metadata.status_code == 200 and b"Name: otherlib" in metadata.content
    upload = requests.post(f"{proxy.base}/repos/pypi/simple/", auth=auth, data={":action": "file_upload"},
                           timeout=10)
    assert upload.status_code == 403
    wrong = requests.get(f"{proxy.base}/repos/pypi/simple/", auth=("x", "wrong-secret-123"), timeout=10)
    assert wrong.status_code == 401


def test_quickstart_proxy_serves_one_url_over_an_html_only_upstream(tmp_path: Path) -> None:
    """``pywharf quickstart --proxy=URL``: a group of the local repository and a proxy, here of a
    plain static PEP 503 tree (no JSON, no sizes) served by the standard library's web server."""
    import hashlib
    import subprocess

    from conftest import free_port
    from test_config_cli import cli_env, printed_secrets, terminate, wait_healthy
    from upstream_standin import StaticTree

    tree = tmp_path / "tree"
    dist = make_wheel(tmp_path / "dists", "htmllib", "3.0")
    (tree / "files").mkdir(parents=True)
    (tree / "files" / dist.filename).write_bytes(dist.data)
    (tree / "simple" / "htmllib").mkdir(parents=True)
    digest = hashlib.sha256(dist.data).hexdigest()
    (tree / "simple" / "htmllib" / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="../../files/{dist.filename}#sha256={digest}" '
        f'data-requires-python="&gt;=3.8">{dist.filename}</a></body></html>')
    static = StaticTree(tree)
    port = free_port()
    out = tmp_path / "quickstart.out"
    with open(out, "wb") as handle:
        proc = subprocess.Popen([tool("pywharf"), "quickstart", str(tmp_path / "root"), "--port", str(port),
                                 f"--proxy={static.base}/simple/"], stdout=handle, stderr=subprocess.STDOUT,
                                env=cli_env(), stdin=subprocess.DEVNULL)
    try:
        wait_healthy(proc, port, out)
        text = out.read_text()
        read, write = printed_secrets(text)
        assert f"pip install --index-url http://all:{read}@127.0.0.1:{port}/repos/all/simple/" in text
        env = client_env(tmp_path)
        target = tmp_path / "target"
        run([*pip(), "install", "--no-deps", "--target", str(target), "--index-url",
             f"http://all:{read}@127.0.0.1:{port}/repos/all/simple/", "htmllib"], env, timeout=120)
        assert installed_version(target, "htmllib") == "3.0"
        # HTML-only: no sizes upstream, so the JSON page says PEP 691 1.0 (1.1 makes "size" mandatory).
        page = requests.get(f"http://127.0.0.1:{port}/repos/all/simple/htmllib/", auth=("all", read), timeout=10,
                            headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
        assert page["meta"]["api-version"] == "1.0"
        assert "size" not in page["files"][0] and page["files"][0]["requires-python"] == ">=3.8"
        local = make_wheel(tmp_path / "dists", "mine", "0.1")
        run([tool("twine"), "upload", "--repository-url", f"http://127.0.0.1:{port}/repos/all/simple/",
             "--disable-progress-bar", "--non-interactive", str(local.path)],
            {**env, "TWINE_USERNAME": "all", "TWINE_PASSWORD": write}, timeout=120)
        assert (tmp_path / "root" / "cache" / "local" / "storage" / local.filename).is_file()
    finally:
        terminate(proc)
        static.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_twenty_concurrent_first_downloads_through_the_proxy_make_one_upstream_fetch(tmp_path: Path,
                                                                                    workers: int) -> None:
    """Counted in the upstream server's own access log (a real pywharf, --access_log). With two
    worker processes, the 20 must reach both (the proxy's access log names the process of each
    line; the kernel hands connections out, so now and then one worker takes all 20: then the
    next version of the file is tried, up to three)."""
    from concurrent.futures import ThreadPoolExecutor

    config = tomli_w.dumps({"up": {"type": "file_system", "read_secret": UP_READ, "write_secret": UP_WRITE}})
    upstream = start_server(tmp_path / "upstream", config, "--extra_index_url=", "--access_log")
    proxy = None
    try:
        for version in ("1.0", "1.1", "1.2"):
            # Two workers: big enough that both start a flight while the first fetch runs.
            size = (8 if workers == 1 else 96) << 20
            dist = make_wheel(tmp_path / "dists", "bigish", version, extra_bytes=os.urandom(size))
            run([tool("twine"), "upload", "--repository-url", f"{upstream.base}/repos/up/simple/",
                 "--disable-progress-bar", "--non-interactive", str(dist.path)],
                {**client_env(tmp_path), "TWINE_USERNAME": "ci", "TWINE_PASSWORD": UP_WRITE}, timeout=120)
            if proxy is None:
                proxy = proxy_server(tmp_path, upstream, f"--workers={workers}", "--access_log", page_ttl=1)
            url = f"{proxy.base}/repos/pypi/simple/bigish/{dist.filename}"
            page = f"{proxy.base}/repos/pypi/simple/bigish/"

            def offered(page: str = page, filename: str = dist.filename) -> bool:
                return filename in requests.get(page, auth=("x", PROXY_READ), timeout=30).text

            assert wait_for(offered, 10, proxy.log)

            def fetch(_: int, url: str = url) -> bytes:
                return requests.get(url, auth=("x", PROXY_READ), timeout=120).content

            with ThreadPoolExecutor(20) as pool:
                bodies = list(pool.map(fetch, range(20)))
            assert all(body == dist.data for body in bodies)
            fetches = [line for line in upstream.log().splitlines()
                       if f'"GET /repos/up/simple/bigish/{dist.filename}"' in line]
            assert len(fetches) == 1, fetches
            if workers == 1:
                return
            served = {line.split("[", 1)[1].split("]", 1)[0] for line in proxy.log().splitlines()
                      if f"GET /repos/pypi/simple/bigish/{dist.filename}" in line and "pywharf.access" in line}
            if len(served) == workers:  # both workers took some of the 20: the case to prove
                return
        raise AssertionError("three times, one worker took all 20 requests")
    finally:
        if proxy is not None:
            proxy.stop()
        upstream.stop()


def test_proxy_cache_kept_in_another_repositorys_store_never_enters_its_index(tmp_path: Path) -> None:
    """``storage = "team"``: the cache is an instance of team's own backend, relocated to
    ``.pywharf/proxy/pypi/`` in team's folder; team's pages, and its index rebuilt from storage,
    never show a proxied file; the cache serves with the upstream stopped."""
    upstream = upstream_server(tmp_path)
    team_write = "team-write-secret"
    config = tomli_w.dumps({
        "team": {"type": "file_system", "read_secret": "team-read-secret", "write_secret": team_write},
        "pypi": {"type": "proxy", "upstream": f"{upstream.base}/repos/up/simple/", "read_secret": PROXY_READ,
                 "page_ttl": 1, "storage": "team"},
    })
    admin = tomli_w.dumps({"pypi": {"type": "proxy", "raw": f"reader:{UP_READ}"}})
    proxy = start_server(tmp_path / "proxy", config, "--extra_index_url=", admin_text=admin)
    try:
        env = client_env(tmp_path)
        index = f"http://x:{PROXY_READ}@127.0.0.1:{proxy.port}/repos/pypi/simple/"
        run([*pip(), "install", "--no-deps", "--target", str(tmp_path / "first"), "--index-url", index, "publib"],
            env, timeout=120)
        assert installed_version(tmp_path / "first", "publib") == "2.0"
        team_folder = proxy.root / "cache" / "team" / "storage"
        cached = team_folder / ".pywharf" / "proxy" / "pypi" / "publib-2.0-py3-none-any.whl"
        assert cached.is_file()
        assert not (proxy.root / "cache" / "pypi" / "storage").exists()  # no folder of its own
        team_root = requests.get(f"{proxy.base}/repos/team/simple/", auth=("x", team_write), timeout=10)
        assert team_root.status_code == 200 and "publib" not in team_root.text
        rebuilt = run([tool("pywharf"), "update_index", "file_system", "team", "--root", str(proxy.root),
                       "--secret", team_write, "--read_secret", "team-read-secret", "--write_secret", team_write],
                      env, timeout=120)
        assert rebuilt.returncode == 0
        assert "publib" not in (team_folder / "index.toml").read_text()

        upstream.stop()
        run([tool("uv"), "pip", "install", "--no-deps", "--python", sys.executable, "--target", str(tmp_path / "uv"),
             "--index-url", index, "publib"], env, timeout=120)
        assert installed_version(tmp_path / "uv", "publib") == "2.0"
    finally:
        proxy.stop()
        upstream.stop()


@pytest.mark.parametrize(("table", "message"), [
    ({"storage": "nobody"}, "no repository 'nobody' in the config"),
    ({"storage": "mem"}, "a 'memory' store cannot keep a proxy's cache"),
    ({"storage": "other"}, "'other' is a proxy: name a repository with a store of its own"),
    ({"storage": "team", "storage_path": "x"}, "give either storage"),
    ({"storage": "pypi"}, "must name another repository"),
])
def test_proxy_storage_must_name_a_repository_that_can_lend_its_store(table: dict, message: str) -> None:
    from pywharf_core.model.errors import ConfigError
    from pywharf_core.service.server_state import load_setup

    config = tomli_w.dumps({
        "team": {"type": "file_system", "read_secret": "team-read-secret", "write_secret": "team-write-secret"},
        "mem": {"type": "memory", "read_secret": "mem-read-secret1", "write_secret": "mem-write-secret"},
        "other": {"type": "proxy", "read_secret": PROXY_READ},
        "pypi": {"type": "proxy", "read_secret": PROXY_READ, **table},
    })
    with pytest.raises(ConfigError) as raised:
        load_setup(config, None, is_text=True)
    assert message in str(raised.value) and "[pypi] key 'storage'" in str(raised.value)
