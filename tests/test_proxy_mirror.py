"""Proxy repositories at the service level (pywharf_core/service/proxy_mirror.py and
pywharf_core/storage/proxy_config.py): pages and files of a real upstream on loopback
(tests/upstream_standin.py), the file_system store as the cache, no HTTP routes."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from test_pull_through import pull_wait_idle
from upstream_standin import Route, Upstream, json_page

from pywharf_core.model.errors import ConfigError
from pywharf_core.service.proxy_mirror import MirrorUnavailable, ProxyMirror, open_mirror
from pywharf_core.service.server_state import ServerSettings, build_repos, load_setup
from pywharf_core.storage.backend import BackendContext, LocalFile, Permission, StreamedFile
from pywharf_core.storage.config import ConfigSource, build_config
from pywharf_core.storage.proxy_config import ProxyCacheStorage, ProxyConfig, parse_duration

READ = "proxy-read-secret"
WHEEL = "demo-1.0-py3-none-any.whl"
SDIST = "demo-1.0.tar.gz"
WHEEL_BYTES = b"wheel bytes " * 1000
METADATA = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"


class Clock:
    """A settable clock (seconds since the epoch), starting now."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


def publish(upstream: Upstream, *, uploaded: datetime | None = None, etag: str | None = '"v1"',
            extra: list[dict] | None = None, delay: float = 0.0) -> None:
    """``demo`` upstream: one wheel (with a metadata file) and the files of ``extra``."""
    uploaded = uploaded or datetime.now(timezone.utc) - timedelta(days=30)
    upstream.routes[f"/files/{WHEEL}"] = Route(body=WHEEL_BYTES)
    upstream.routes[f"/files/{WHEEL}.metadata"] = Route(body=METADATA)
    files = [{"filename": WHEEL, "url": f"/files/{WHEEL}", "hashes": {"sha256": sha(WHEEL_BYTES)},
              "size": len(WHEEL_BYTES), "upload-time": iso(uploaded), "core-metadata": {"sha256": sha(METADATA)}},
             *(extra or [])]
    route = json_page("demo", files)
    route.etag, route.delay = etag, delay
    upstream.routes["/simple/demo/"] = route


def down(upstream: Upstream, *proxies: ProxyMirror) -> None:
    """Stop the upstream, and drop the proxies' keep-alive connections (the stand-in's handler
    threads keep serving a connection that is already open)."""
    upstream.stop()
    for proxy in proxies:
        proxy.upstream.session.close()


def proxy_config(upstream: Upstream | None, **keys: object) -> ProxyConfig:
    table = {"type": "proxy", "read_secret": READ, **keys}
    if upstream is not None:
        table.setdefault("upstream", f"{upstream.base}/simple/")
    config = build_config(ProxyConfig, "pypi", table, ConfigSource("<test>"))
    assert isinstance(config, ProxyConfig)
    return config


def mirror(root: Path, upstream: Upstream, clock: Clock | None = None, **keys: object) -> ProxyMirror:
    config = proxy_config(upstream, **keys)
    cache = ProxyCacheStorage(config, BackendContext(root=root))
    made = open_mirror(config, cache, None)
    made.upstream.timeout = 5
    if clock is not None:
        made.clock = clock
    return made


def test_a_fresh_page_is_fetched_once_then_refreshed_with_its_etag_keeping_the_tuple(
        tmp_path: Path, upstream: Upstream) -> None:
    publish(upstream)
    clock = Clock()
    proxy = mirror(tmp_path, upstream, clock, page_ttl=60)
    first = proxy.project_records("Demo")
    assert first is not None and [r.filename for r in first] == [WHEEL]
    assert first[0].sha256 == sha(WHEEL_BYTES) and first[0].metadata_sha256 == sha(METADATA)
    clock.now += 59
    assert proxy.project_records("demo") is first
    assert upstream.hits["/simple/demo/"] == 1
    clock.now += 2  # stale: asked again, with the ETag, and answered 304
    assert proxy.project_records("demo") is first
    assert upstream.hits["/simple/demo/"] == 2
    assert upstream.requests[-1][1].get("If-None-Match") == '"v1"'
    assert proxy.record("demo", WHEEL) == first[0] and proxy.record("demo", "other-1.0.tar.gz") is None
    assert proxy.known_projects() == ["demo"]
    # A changed page (new ETag, new file) is a new tuple.
    publish(upstream, etag='"v2"', extra=[{"filename": SDIST, "url": f"/files/{SDIST}",
                                            "hashes": {"sha256": "a" * 64}}])
    clock.now += 61
    changed = proxy.project_records("demo")
    assert changed is not first and changed is not None and {r.filename for r in changed} == {WHEEL, SDIST}


def test_upstream_down_serves_the_last_good_page_also_after_a_restart(tmp_path: Path, upstream: Upstream,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    publish(upstream)
    clock = Clock()
    proxy = mirror(tmp_path, upstream, clock, page_ttl=60)
    first = proxy.project_records("demo")
    down(upstream, proxy)
    clock.now += 120
    assert proxy.project_records("demo") is first
    assert "serving the page of" in caplog.text
    # A restarted server over the same cache store, the upstream still down.
    restarted = mirror(tmp_path, upstream, Clock(), page_ttl=60)
    restarted.clock.now += 120  # type: ignore[attr-defined]
    records = restarted.project_records("demo")
    assert records == first


def test_upstream_down_and_nothing_cached_is_mirror_unavailable(tmp_path: Path, upstream: Upstream) -> None:
    proxy = mirror(tmp_path, upstream)
    down(upstream, proxy)
    with pytest.raises(MirrorUnavailable):
        proxy.project_records("demo")
    with pytest.raises(MirrorUnavailable):  # remembered for a while: no new attempt, same answer
        proxy.open("demo", WHEEL, metadata=False)


def test_a_project_the_upstream_does_not_have_is_none_and_cached(tmp_path: Path, upstream: Upstream) -> None:
    clock = Clock()
    proxy = mirror(tmp_path, upstream, clock, page_ttl=60)
    assert proxy.project_records("nothing-here") is None
    assert proxy.project_records("nothing-here") is None
    assert upstream.hits["/simple/nothing-here/"] == 1
    clock.now += 61
    assert proxy.project_records("nothing-here") is None
    assert upstream.hits["/simple/nothing-here/"] == 2
    with pytest.raises(FileNotFoundError):
        proxy.open("nothing-here", "nothing_here-1.0.tar.gz", metadata=False)
    assert proxy.project_records("not a name!") is None


def test_the_cooldown_hides_fresh_files_and_files_without_an_upload_time(tmp_path: Path, upstream: Upstream) -> None:
    now = datetime.now(timezone.utc)
    publish(upstream, uploaded=now - timedelta(days=8), extra=[
        {"filename": "demo-2.0-py3-none-any.whl", "url": "/files/demo-2.0-py3-none-any.whl",
         "hashes": {"sha256": "b" * 64}, "upload-time": iso(now - timedelta(days=1))},
        {"filename": SDIST, "url": f"/files/{SDIST}", "hashes": {"sha256": "c" * 64}},
    ])
    proxy = mirror(tmp_path, upstream, exclude_newer_than="7d")
    records = proxy.project_records("demo")
    assert records is not None and [r.filename for r in records] == [WHEEL]
    with pytest.raises(FileNotFoundError):
        proxy.open("demo", "demo-2.0-py3-none-any.whl", metadata=False)
    assert upstream.hits["/files/demo-2.0-py3-none-any.whl"] == 0
    assert [r.filename for r in mirror(tmp_path / "b", upstream).project_records("demo") or ()] == [
        WHEEL, "demo-2.0-py3-none-any.whl", SDIST]


def test_allow_and_deny_patterns_on_normalised_names(tmp_path: Path, upstream: Upstream) -> None:
    publish(upstream)
    upstream.routes["/simple/demo-secret/"] = json_page("demo-secret", [])
    proxy = mirror(tmp_path, upstream, allow=["Demo*"], deny=["demo_secret"])
    assert proxy.project_records("demo") is not None
    assert proxy.project_records("Demo.Secret") is None
    assert proxy.project_records("other") is None
    assert upstream.hits["/simple/demo-secret/"] == 0 and upstream.hits["/simple/other/"] == 0


def test_twenty_concurrent_requests_for_one_project_make_one_upstream_fetch(tmp_path: Path,
                                                                            upstream: Upstream) -> None:
    publish(upstream, delay=0.3)
    proxy = mirror(tmp_path, upstream)
    results: list[object] = []
    start = threading.Barrier(20)

    def client() -> None:
        start.wait()
        results.append(proxy.project_records("demo"))

    threads = [threading.Thread(target=client) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert upstream.hits["/simple/demo/"] == 1
    assert len(results) == 20 and all(result is results[0] for result in results)
    assert not proxy._locks  # the lock table holds only projects in use


def test_open_streams_and_caches_then_serves_from_the_store_with_the_upstream_stopped(
        tmp_path: Path, upstream: Upstream) -> None:
    publish(upstream)
    proxy = mirror(tmp_path, upstream, page_ttl=60)
    target = proxy.open("demo", WHEEL, metadata=False)
    assert isinstance(target, StreamedFile) and b"".join(target.chunks) == WHEEL_BYTES
    pull_wait_idle(proxy.pull)
    metadata = proxy.open("demo", WHEEL, metadata=True)
    assert isinstance(metadata, StreamedFile) and b"".join(metadata.chunks) == METADATA
    pull_wait_idle(proxy.pull)
    with pytest.raises(FileNotFoundError):
        proxy.open("demo", "demo-9.9-py3-none-any.whl", metadata=False)
    down(upstream, proxy)
    again = proxy.open("demo", WHEEL, metadata=False)
    assert isinstance(again, LocalFile) and again.path.read_bytes() == WHEEL_BYTES
    # A restarted server, the page stale and the upstream down: the cached page and files.
    clock = Clock()
    clock.now += 3600
    restarted = mirror(tmp_path, upstream, clock, page_ttl=60)
    assert isinstance(restarted.open("demo", WHEEL, metadata=False), LocalFile)
    cached_metadata = restarted.open("demo", WHEEL, metadata=True)
    assert isinstance(cached_metadata, LocalFile) and cached_metadata.path.read_bytes() == METADATA
    assert upstream.hits[f"/files/{WHEEL}"] == 1 and upstream.hits[f"/files/{WHEEL}.metadata"] == 1
    assert restarted.known_projects() == ["demo"]


def test_a_file_without_a_verifiable_metadata_file_has_none(tmp_path: Path, upstream: Upstream) -> None:
    publish(upstream, extra=[{"filename": SDIST, "url": f"/files/{SDIST}", "hashes": {"sha256": "d" * 64},
                              "core-metadata": True}])
    proxy = mirror(tmp_path, upstream)
    with pytest.raises(FileNotFoundError):
        proxy.open("demo", SDIST, metadata=True)
    assert upstream.hits[f"/files/{SDIST}.metadata"] == 0


def test_durations() -> None:
    assert [parse_duration(v) for v in ("", "7d", "12h", "30m", "90s", "3600", " 2D ")] == [
        None, 604800, 43200, 1800, 90, 3600, 172800]
    for bad in ("7 days", "-1", "1w", "1.5h", "d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


CONFIG = """
[pypi]
type = "proxy"
read_secret = "proxy-read-secret"
upstream = "{upstream}"
"""


@pytest.mark.parametrize(("line", "key"), [
    ('exclude_newer_than = "7 days"', "exclude_newer_than"),
    ("page_ttl = 0", "page_ttl"),
    ('read_secret = "short"', "read_secret"),
    ('deny = [""]', "deny[0]"),
])
def test_config_errors_name_the_key(line: str, key: str) -> None:
    text = CONFIG.format(upstream="https://pypi.example/simple/").replace('read_secret = "proxy-read-secret"\n', "")
    if not line.startswith("read_secret"):
        text += 'read_secret = "proxy-read-secret"\n'
    with pytest.raises(ConfigError, match=re.escape(f"[pypi] key '{key}'")):
        load_setup(text + line + "\n", None, is_text=True)


def test_config_errors_missing_read_secret_and_bad_upstream() -> None:
    with pytest.raises(ConfigError, match=r"\[pypi\] key 'read_secret': missing required key"):
        load_setup('[pypi]\ntype = "proxy"\n', None, is_text=True)
    with pytest.raises(ConfigError, match=r"\[pypi\] key 'upstream'"):
        load_setup(CONFIG.format(upstream="ftp://pypi.example/simple/"), None, is_text=True)
    with pytest.raises(ConfigError, match=r"\[pypi\] key 'write_secret': unknown key"):
        load_setup(CONFIG.format(upstream="https://x.example/") + 'write_secret = "proxy-write-secret"\n', None,
                   is_text=True)


def test_build_repos_makes_a_read_only_proxy_with_a_mirror(tmp_path: Path, upstream: Upstream) -> None:
    publish(upstream)
    setup = load_setup(CONFIG.format(upstream=f"{upstream.base}/simple/"),
                       '[pypi]\ntype = "proxy"\nraw = "user:pass:word"\n', is_text=True)
    repos = build_repos(setup, ServerSettings(root=tmp_path))
    repo = repos["pypi"]
    assert repo.mirror is not None and repo.mirror.upstream.auth == ("user", "pass:word")
    assert repo.grant_for(READ).permission is Permission.READ
    assert repo.grant_for("proxy-read-secreT").permission is Permission.NONE
    assert repo.grant_for("").permission is Permission.NONE
    assert len(repo.snapshot) == 0
    records = repo.mirror.project_records("demo")
    assert records is not None and records[0].filename == WHEEL
    assert (tmp_path / "cache" / "pypi" / "storage" / ".pywharf" / "proxy" / "pages" / "demo.json").is_file()
    # The upstream's credentials go to the upstream.
    assert upstream.auth_headers("/simple/demo/")[0] is not None


def test_a_proxy_never_grants_write_even_to_an_upload_token(tmp_path: Path) -> None:
    setup = load_setup(CONFIG.format(upstream="https://pypi.example/simple/"), None, is_text=True)
    repo = build_repos(setup, ServerSettings(root=tmp_path))["pypi"]
    assert repo.mirror is not None and repo.mirror.upstream.auth is None
    assert repo.tokens is not None
    created = repo.tokens.create("upload", description="ci")
    assert repo.grant_for(created.token).permission is Permission.READ


def test_upstream_credentials_must_be_user_and_password() -> None:
    with pytest.raises(ConfigError, match=r"<admin secret>: \[pypi\]: the admin secret of a proxy is"):
        load_setup(CONFIG.format(upstream="https://pypi.example/simple/"),
                   '[pypi]\ntype = "proxy"\nraw = "just-a-token"\n', is_text=True)


def test_pages_in_memory_are_bounded(tmp_path: Path, upstream: Upstream) -> None:
    for name in ("a", "b", "c"):
        upstream.routes[f"/simple/{name}/"] = json_page(name, [])
    proxy = mirror(tmp_path, upstream)
    proxy.max_pages = 2
    for name in ("a", "b", "c"):
        assert proxy.project_records(name) == ()
    assert list(proxy._pages) == ["b", "c"]


def test_an_outage_is_not_retried_on_every_request(tmp_path: Path, upstream: Upstream,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    publish(upstream)
    clock = Clock()
    proxy = mirror(tmp_path, upstream, clock, page_ttl=60)
    first = proxy.project_records("demo")
    upstream.routes["/simple/demo/"] = Route(status=503)
    clock.now += 61
    for _ in range(5):
        assert proxy.project_records("demo") is first
    assert upstream.hits["/simple/demo/"] == 2
    assert caplog.text.count("serving the page of") == 1
    clock.now += 31  # the retry period is over: asked again
    assert proxy.project_records("demo") is first
    assert upstream.hits["/simple/demo/"] == 3


def test_a_damaged_cached_page_is_ignored(tmp_path: Path, upstream: Upstream) -> None:
    publish(upstream)
    proxy = mirror(tmp_path, upstream)
    key = proxy.page_key("demo")
    proxy.cache.write_document(key, b"{not json", None)
    down(upstream, proxy)
    with pytest.raises(MirrorUnavailable):
        proxy.project_records("demo")


def test_a_config_sent_over_http_may_name_only_an_allowed_upstream_and_folder(tmp_path: Path) -> None:
    limits = ServerSettings(root=tmp_path).http_config_limits()
    with pytest.raises(ConfigError, match=re.escape("[pypi] key 'upstream'")):
        load_setup(CONFIG.format(upstream="http://169.254.169.254/simple/"), None, is_text=True, limits=limits)
    with pytest.raises(ConfigError, match=re.escape("[pypi] key 'storage_path'")):
        load_setup(CONFIG.format(upstream="https://pypi.org/simple/") + 'storage_path = "/etc"\n', None,
                   is_text=True, limits=limits)
    setup = load_setup('[pypi]\ntype = "proxy"\nread_secret = "proxy-read-secret"\n', None, is_text=True,
                       limits=limits)
    assert setup.configs["pypi"].upstream == "https://pypi.org/simple/"  # type: ignore[attr-defined]


def test_fresh_page_answers_from_memory_only(tmp_path: Path, upstream: Upstream) -> None:
    """The HTTP layer serves a cached page without a thread hop: fresh_page never fetches."""
    publish(upstream)
    clock = Clock()
    proxy = mirror(tmp_path, upstream, clock, page_ttl=60, deny=["secret-*"])
    hits = sum(upstream.hits.values())
    assert proxy.fresh_page("demo") is None and sum(upstream.hits.values()) == hits  # not fetched
    records = proxy.project_records("demo")
    assert proxy.fresh_page("demo") == (records,)
    assert proxy.fresh_page("secret-thing") == (None,)  # denied: decided without the upstream
    clock.now += 61
    assert proxy.fresh_page("demo") is None  # stale: the caller refreshes in a worker thread
