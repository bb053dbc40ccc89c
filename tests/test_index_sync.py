"""End-to-end: the remote index, each server's local index, and how servers keep in sync.

Why: pywharf's promise for more than one server (or a server restarted elsewhere) is that the
storage folder plus ``pywharf update_index`` is the single source of truth. An upload is visible
at once on the server that took it (its journal) and on every other server one sync later; a
corrupt remote index never blanks a running server; servers sharing one ROOT never tear each
other's files; and the CI service-container flow (environment variables + ``POST /initialize/``
with curl) works exactly as the original pywharf README documents it.

Every test runs real ``pywharf server`` processes on 127.0.0.1 with ``sync_index_interval = 1``
and real clients (twine, pip, curl) with an environment stripped of this machine's index
configuration. Nothing talks to the internet (``--extra_index_url=``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from conftest import Server, client_env, free_port, fs_config, journal_entries, run, tool, wait_for
from distbuilder import DistSpec, build_wheel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = "local"
READ, WRITE = "read-secret-00", "write-secret"
INTERVAL = 1  # sync_index_interval of every server here (seconds)


# -- helpers -------------------------------------------------------------------------------------


class _Links(HTMLParser):
    """The ``<a>`` elements of a PEP 503 page: link text -> attributes (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: dict[str, dict[str, str | None]] = {}
        self._attrs: dict[str, str | None] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._attrs, self._text = dict(attrs), ""

    def handle_data(self, data: str) -> None:
        if self._attrs is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._attrs is not None:
            self.links[self._text.strip()] = self._attrs
            self._attrs = None


def links_of(html: str) -> dict[str, dict[str, str | None]]:
    parser = _Links()
    parser.feed(html)
    parser.close()
    return parser.links


def get(server: Server, path: str, repo: str = REPO, secret: str = READ) -> requests.Response:
    return requests.get(f"{server.base}{path}", auth=(repo, secret), timeout=10)


def project_files(server: Server, project: str, repo: str = REPO,
                  secret: str = READ) -> dict[str, dict[str, str | None]]:
    """Files listed on ``/simple/<project>/`` (empty when the project is unknown: 404)."""
    response = get(server, f"/simple/{project}/", repo, secret)
    if response.status_code == 404:
        return {}
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    return links_of(response.text)


def index_mtime(server: Server, repo: str = REPO, secret: str = READ) -> int:
    response = get(server, "/index_mtime/", repo, secret)
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    return int(response.text.strip())


def sync_config(**extra: object) -> str:
    return fs_config(REPO, READ, WRITE, sync_index_interval=INTERVAL, **extra)


def update_index(storage: Path, env: dict[str, str], cwd: Path) -> None:
    """``pywharf update_index file_system local --storage_path STORAGE`` (rebuilds index.toml)."""
    result = run([tool("pywharf"), "update_index", "file_system", REPO, "--storage_path", str(storage)],
                 env, cwd=cwd, timeout=60)
    assert "wrote an index of" in result.stdout, result.stdout + result.stderr


def twine_upload(server: Server, wheel: Path, env: dict[str, str], repo: str = REPO,
                 secret: str = WRITE) -> None:
    run([tool("twine"), "upload", "--repository-url", f"{server.base}/simple/", "-u", repo, "-p", secret,
         "--non-interactive", "--disable-progress-bar", str(wheel)], env, timeout=120)


def legacy_upload(server: Server, spec: DistSpec, wheel: Path) -> requests.Response:
    """A bare legacy-API upload (the fields twine sends that matter), for many fast uploads."""
    data = wheel.read_bytes()
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": spec.name,
        "version": spec.version,
        "filetype": "bdist_wheel",
        "pyversion": "py3",
        "requires_python": spec.requires_python,
        "sha256_digest": hashlib.sha256(data).hexdigest(),
    }
    return requests.post(f"{server.base}/simple/", auth=(REPO, WRITE), data=fields,
                         files={"content": (wheel.name, data, "application/octet-stream")}, timeout=60)


def pip_install(index_url: str, target: Path, requirement: str, env: dict[str, str]) -> None:
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--target", str(target),
         "--index-url", index_url, requirement], env, timeout=120)


def wait_ready(server: Server, timeout: float = 10) -> None:
    wait_for(lambda: requests.get(f"{server.base}/readyz", timeout=5).status_code == 200, timeout,
             lambda: f"/readyz never answered 200:\n{server.log()}")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def shared_pair(server_factory, tmp_path: Path) -> tuple[Server, Server, Path]:
    """Servers A and B: two ROOTs, one shared ``storage_path``; nothing else in common."""
    storage = tmp_path / "shared-storage"
    storage.mkdir()
    config = sync_config(storage_path=str(storage))
    a = server_factory(config, "--extra_index_url=", root_name="root-a")
    b = server_factory(config, "--extra_index_url=", root_name="root-b")
    wait_ready(a)
    wait_ready(b)
    return a, b, storage


# -- 1. an upload reaches a second server through storage + update_index -------------------------


def test_upload_reaches_other_server_at_its_next_sync(shared_pair, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    """Two servers share only the storage folder. The server that took an upload lists it at
    once; the other lists it at its next sync, with no ``update_index`` (issue 12: the upload's
    entry in the remote index log is part of the acknowledgement), so that pip installs from
    it; ``update_index`` then compacts the log into the base and nothing changes for clients.
    Its /index_mtime/ reports the sync."""
    a, b, storage = shared_pair
    spec = DistSpec("syncdemo", "1.0", module_body="VALUE = 'sync 1.0'\n")
    wheel = build_wheel(spec, tmp_path / "dist")

    anonymous = requests.get(f"{b.base}/index_mtime/", timeout=10)
    assert anonymous.status_code == 401, "/index_mtime/ must need the repo's basic auth"
    mtime_before = index_mtime(b)

    twine_upload(a, wheel, env)
    on_a = project_files(a, "syncdemo")
    assert wheel.name in on_a, f"A does not list its own upload at once: {on_a}"
    assert on_a[wheel.name]["href"].endswith(f"#sha256={sha256_of(wheel)}")
    assert (storage / wheel.name).read_bytes() == wheel.read_bytes()

    started = time.time()
    on_b = wait_for(lambda: project_files(b, "syncdemo"), INTERVAL + 2.0,
                    lambda: f"B never listed {wheel.name} at its next sync:\n{b.log()}")
    assert set(on_b) == {wheel.name}
    assert on_b[wheel.name]["href"].endswith(f"#sha256={sha256_of(wheel)}")
    update_index(storage, env, tmp_path)
    time.sleep(INTERVAL + 0.5)
    assert project_files(b, "syncdemo") == on_b, "compaction changed what B serves"

    target = tmp_path / "target"
    pip_install(b.index_url(REPO, READ), target, "syncdemo==1.0", env)
    assert (target / "syncdemo" / "__init__.py").read_text() == spec.module_body

    mtime_after = index_mtime(b)
    assert mtime_after > mtime_before, (mtime_before, mtime_after)
    assert mtime_after >= int(started), "B's last sync predates the update_index that it applied"


def test_every_twine_field_survives_update_index_and_sync(shared_pair, env: dict[str, str],
                                                         tmp_path: Path) -> None:
    """Round trip: what twine uploads (read from the wheel's METADATA) survives upload ->
    ``update_index`` -> another server's sync -> its simple JSON page and /pypi JSON, with
    multi-valued fields kept as lists; the long description is kept beside the file (served as
    the PEP 658 ``.metadata``), not in the index."""
    a, b, storage = shared_pair
    spec = DistSpec(
        "Round.Trip", "3.1.4", summary="Every field, twice over", requires_python=">=3.9,!=3.9.1",
        requires_dist=["requests>=2", "rich; extra == 'pretty'"],
        classifiers=["Programming Language :: Python :: 3", "Intended Audience :: Developers"],
        project_urls=["Homepage, https://example.invalid/home", "Issues, https://example.invalid/issues"],
        description="# Round trip\n\nA *long* description with <html> & \"quotes\".\n",
        extra_metadata=[
            "Author: Ada Lovelace", "Author-email: Ada <ada@example.invalid>",
            "Maintainer: Grace Hopper", "Maintainer-email: grace@example.invalid",
            "License: MIT", "Keywords: alpha,beta", "Home-page: https://example.invalid",
            "Download-URL: https://example.invalid/dl", "Platform: any", "Provides-Extra: pretty",
        ],
    )
    wheel = build_wheel(spec, tmp_path / "dist")
    twine_upload(a, wheel, env)
    update_index(storage, env, tmp_path)
    wait_for(lambda: project_files(b, "round-trip"), 3.0, lambda: f"B never synced:\n{b.log()}")

    index = tomllib.loads((storage / "index.toml").read_text())
    entry = index["files"][wheel.name]
    assert "description" not in entry.get("meta", {}), "the long description belongs beside the file"
    assert entry["meta"]["classifiers"] == spec.classifiers
    assert entry["meta"]["requires_dist"] == spec.requires_dist

    info = get(b, "/pypi/round-trip/json").json()["info"]
    expected = {
        "name": "Round.Trip", "version": "3.1.4", "summary": spec.summary,
        "requires_python": spec.requires_python, "author": "Ada Lovelace",
        "author_email": "Ada <ada@example.invalid>", "maintainer": "Grace Hopper",  # keywords: as twine sends them
        "maintainer_email": "grace@example.invalid", "license": "MIT", "keywords": "alpha, beta",
        "home_page": "https://example.invalid", "download_url": "https://example.invalid/dl",
        "platform": "any", "description_content_type": "text/markdown",
        "classifiers": spec.classifiers, "requires_dist": spec.requires_dist, "provides_extra": ["pretty"],
        "project_urls": {"Homepage": "https://example.invalid/home", "Issues": "https://example.invalid/issues"},
    }
    assert {key: info.get(key) for key in expected} == expected
    # The upload's digests, kept in the sidecar, survive the rebuild (issue 12: lost on file_system).
    (url,) = get(b, "/pypi/round-trip/json").json()["urls"]
    content = wheel.read_bytes()
    assert url["digests"] == {"sha256": sha256_of(wheel),
                              "md5": hashlib.md5(content, usedforsecurity=False).hexdigest(),
                              "blake2b_256": hashlib.blake2b(content, digest_size=32).hexdigest()}

    page = requests.get(f"{b.base}/simple/round-trip/", auth=(REPO, READ), timeout=10,
                        headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
    (file_entry,) = page["files"]
    assert file_entry["requires-python"] == spec.requires_python
    assert file_entry["size"] == wheel.stat().st_size
    assert file_entry["hashes"] == {"sha256": sha256_of(wheel)}
    assert file_entry["upload-time"].endswith("Z")
    assert page["versions"] == ["3.1.4"]
    metadata = get(b, f"/simple/round-trip/{wheel.name}.metadata")
    assert hashlib.sha256(metadata.content).hexdigest() == file_entry["core-metadata"]["sha256"]
    assert metadata.content.decode().endswith(spec.description)


# -- 2. deletions and sidecar-less files through update_index ------------------------------------


def test_update_index_drops_deleted_files_and_indexes_files_without_sidecar(
        shared_pair, env: dict[str, str], tmp_path: Path) -> None:
    """The remote index is rebuilt from storage alone: a file an operator deletes (with its
    ``.pywharf/`` sidecar) disappears from a server that does not hold it in its journal, and a
    wheel copied in by hand (no sidecar) is indexed with metadata read from the wheel itself,
    so pip still sees its Requires-Python."""
    a, b, storage = shared_pair
    keep_spec, gone_spec = DistSpec("prunedemo", "1.0"), DistSpec("prunedemo", "2.0")
    keep, gone = build_wheel(keep_spec, tmp_path / "dist"), build_wheel(gone_spec, tmp_path / "dist")
    for spec, wheel in ((keep_spec, keep), (gone_spec, gone)):
        response = legacy_upload(a, spec, wheel)
        assert response.status_code == 200, response.text
    assert (storage / ".pywharf" / f"{gone.name}.toml").is_file(), "upload left no sidecar"

    update_index(storage, env, tmp_path)
    wait_for(lambda: set(project_files(b, "prunedemo")) == {keep.name, gone.name}, 3.0,
             lambda: f"B never listed both files: {project_files(b, 'prunedemo')}\n{b.log()}")

    (storage / gone.name).unlink()
    (storage / ".pywharf" / f"{gone.name}.toml").unlink()
    update_index(storage, env, tmp_path)
    wait_for(lambda: set(project_files(b, "prunedemo")) == {keep.name}, 3.0,
             lambda: f"B still lists the deleted file: {project_files(b, 'prunedemo')}\n{b.log()}")
    download = get(b, f"/simple/prunedemo/{gone.name}")
    assert download.status_code == 404, download.status_code

    # A wheel dropped into storage by hand: no sidecar, metadata only inside the wheel.
    hand_spec = DistSpec("handdemo", "3.1", requires_python=">=3.7.1")
    hand = build_wheel(hand_spec, tmp_path / "hand")
    shutil.copyfile(hand, storage / hand.name)
    assert not (storage / ".pywharf" / f"{hand.name}.toml").exists()
    update_index(storage, env, tmp_path)
    listed = wait_for(lambda: project_files(b, "handdemo"), 3.0,
                      lambda: f"B never listed the sidecar-less wheel:\n{b.log()}")
    assert set(listed) == {hand.name}
    assert listed[hand.name].get("data-requires-python") == ">=3.7.1", listed
    assert listed[hand.name]["href"].endswith(f"#sha256={sha256_of(hand)}"), listed
    fetched = get(b, f"/simple/handdemo/{hand.name}")
    assert fetched.status_code == 200 and fetched.content == hand.read_bytes()
    # Indexed from the wheel's METADATA, the version is the wheel's own.
    index = tomllib.loads((storage / "index.toml").read_text())
    assert index["files"][hand.name]["version"] == "3.1"
    assert index["files"][hand.name]["requires_python"] == ">=3.7.1"


# -- 3. a corrupt remote index never blanks a running server --------------------------------------


def test_corrupt_remote_index_keeps_last_good_pages(server_factory, env: dict[str, str],
                                                     tmp_path: Path) -> None:
    """Garbage in ``storage/index.toml`` (a bad hand edit, a broken copy) must not take the
    packages away from clients: the server keeps serving the last good pages, stays ready, logs
    the failure once (not once per interval) naming the repo, does not claim a successful sync
    in /index_mtime/, and picks up the next valid index."""
    storage = tmp_path / "storage"
    storage.mkdir()
    server = server_factory(sync_config(storage_path=str(storage)), "--extra_index_url=")
    first = build_wheel(DistSpec("corruptdemo", "1.0"), tmp_path / "dist")
    shutil.copyfile(first, storage / first.name)
    update_index(storage, env, tmp_path)
    wait_for(lambda: project_files(server, "corruptdemo"), 3.0,
             lambda: f"the server never listed {first.name}:\n{server.log()}")
    wait_ready(server)
    good_page = get(server, "/simple/corruptdemo/").text

    (storage / "index.toml").write_text('this is not [[ toml at all\nfiles = "\n')
    time.sleep(INTERVAL + 0.5)
    mtime_frozen = index_mtime(server)
    time.sleep(2 * INTERVAL + 0.5)  # a few more failing syncs

    page = get(server, "/simple/corruptdemo/")
    assert page.status_code == 200, page.text
    assert page.text == good_page
    assert get(server, f"/simple/corruptdemo/{first.name}").content == first.read_bytes()
    ready = requests.get(f"{server.base}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert index_mtime(server) == mtime_frozen, "/index_mtime/ advanced although every sync failed"
    failures = [line for line in server.log().splitlines() if "index sync failed" in line]
    assert len(failures) == 1, "expected exactly one sync error line:\n" + "\n".join(failures)
    assert "ERROR" in failures[0] and f"'{REPO}'" in failures[0], failures[0]
    assert "corrupt" in failures[0], failures[0]

    second = build_wheel(DistSpec("corruptdemo", "2.0"), tmp_path / "dist")
    shutil.copyfile(second, storage / second.name)
    update_index(storage, env, tmp_path)
    wait_for(lambda: set(project_files(server, "corruptdemo")) == {first.name, second.name}, 3.0,
             lambda: f"the repaired index was not served: {project_files(server, 'corruptdemo')}\n"
                     f"{server.log()}")
    assert index_mtime(server) > mtime_frozen


# -- 4. two servers sharing one ROOT under concurrent uploads and index rebuilds ------------------


@pytest.fixture
def same_root_pair(tmp_path: Path) -> tuple[Path, str]:
    """Two servers on one ROOT and one config (B reaches ROOT through a symlink only so that the
    two server logs get different names; the server resolves it to the same folder)."""
    root = tmp_path / "shared-root"
    root.mkdir()
    (tmp_path / "shared-root-b").symlink_to(root, target_is_directory=True)
    return root, sync_config()


def test_two_servers_one_root_concurrent_uploads(server_factory, same_root_pair, env: dict[str, str],
                                                 tmp_path: Path) -> None:
    """Servers sharing ROOT write the same local index, journal and storage. Twenty uploads
    through both at once, with ``update_index`` rewriting the remote index meanwhile, must leave
    index.json valid JSON, every journal line whole JSON, and (after one more update_index and two sync
    intervals) both servers listing all twenty files, with nothing half-written in storage."""
    root, config = same_root_pair
    a = server_factory(config, "--extra_index_url=", root_name="shared-root")
    b = server_factory(config, "--extra_index_url=", root_name="shared-root-b")
    wait_ready(a)
    wait_ready(b)
    storage = root / "cache" / REPO / "storage"
    local = root / "cache" / REPO

    specs = [DistSpec("concurdemo", f"1.{i}") for i in range(20)]
    wheels = [build_wheel(spec, tmp_path / "dist") for spec in specs]

    def upload(i: int) -> int:
        return legacy_upload(a if i % 2 == 0 else b, specs[i], wheels[i]).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(upload, i) for i in range(20)]
        for _ in range(3):
            update_index(storage, env, tmp_path)
        statuses = [f.result() for f in futures]
    assert statuses == [200] * 20, statuses

    json.loads((local / "index.json").read_text())
    journal_entries(local)

    update_index(storage, env, tmp_path)
    expected = {w.name for w in wheels}
    for server in (a, b):
        wait_for(lambda s=server: set(project_files(s, "concurdemo")) == expected, 2 * INTERVAL + 0.5,
                 lambda s=server: f"{s.base} lists {len(project_files(s, 'concurdemo'))} of 20:\n{s.log()}")

    index = json.loads((local / "index.json").read_text())
    assert set(index["files"]) == expected
    assert journal_entries(local) == {}, "the journal keeps entries the remote index already lists"
    assert {p.name for p in storage.iterdir() if p.suffix == ".whl"} == expected
    leftovers = [p.name for p in storage.iterdir() if p.name.startswith(".") and p.name != ".pywharf"]
    assert leftovers == [], leftovers
    for wheel in wheels[:3]:
        assert get(b, f"/simple/concurdemo/{wheel.name}").content == wheel.read_bytes()


def test_identical_retry_through_other_server_keeps_journal_valid(server_factory, same_root_pair,
                                                                   tmp_path: Path) -> None:
    """A CI retry behind a load balancer: the same bytes uploaded through A, then through B
    (sharing ROOT) before B's next sync. README: a byte-identical re-upload "answers 200 and
    changes nothing". The journal keeps one entry for the file."""
    root, _ = same_root_pair
    config = fs_config(REPO, READ, WRITE, sync_index_interval=60)  # no sync between the uploads
    a = server_factory(config, "--extra_index_url=", root_name="shared-root")
    b = server_factory(config, "--extra_index_url=", root_name="shared-root-b")
    wait_ready(a)
    wait_ready(b)
    spec = DistSpec("retrydemo", "1.0")
    wheel = build_wheel(spec, tmp_path / "dist")
    first, retry = legacy_upload(a, spec, wheel), legacy_upload(b, spec, wheel)
    assert (first.status_code, retry.status_code) == (200, 200), (first.text, retry.text)
    journal = root / "cache" / REPO / "uploads.jsonl"
    assert list(journal_entries(journal.parent)) == [wheel.name]
    assert journal.read_bytes().count(b"\n") == 1, "the identical retry added a second entry"


# -- 5. the CI service-container flow of the original README --------------------------------------


def test_ci_service_container_flow(tmp_path: Path) -> None:
    """The original pywharf README's GitHub Actions recipe: a service container can pass no
    arguments, so the server starts from PYWHARF_COMMAND* variables alone and waits unconfigured
    (/readyz 503) until a step POSTs the config with plain ``curl -d`` (TOML text, not
    urlencoded). Then twine and pip work, and nobody can re-initialise without a token."""
    root, port = tmp_path / "pywharf-root", free_port()
    env = {k: v for k, v in client_env(tmp_path).items() if not k.startswith("PYWHARF_")}
    server_env = {**env, "PYWHARF_COMMAND": "server", "PYWHARF_COMMAND_ROOT": str(root),
                  "PYWHARF_COMMAND_PORT": str(port), "PYWHARF_COMMAND_HOST": "127.0.0.1",
                  "PYWHARF_COMMAND_EXTRA_INDEX_URL": ""}
    log_path = tmp_path / "pywharf-root-server.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([tool("pywharf")], stdout=log_file, stderr=subprocess.STDOUT, env=server_env)
    server = Server(root, port, proc, log_path)
    try:
        def healthy() -> bool:
            assert proc.poll() is None, f"server exited ({proc.returncode}):\n{server.log()}"
            try:
                return requests.get(f"{server.base}/healthz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(healthy, 20, lambda: f"server never answered /healthz:\n{server.log()}")
        not_ready = requests.get(f"{server.base}/readyz", timeout=10)
        assert not_ready.status_code == 503, not_ready.text

        read, write = "ci-read-secret", "ci-write-secret"
        curl_env = {
            **env,
            "CONFIG": f'[{REPO}]\ntype = "file_system"\nread_secret = "{read}"\n'
                      f'write_secret = "{write}"\nsync_index_interval = {INTERVAL}\n',
            "ADMIN_SECRET": f'[{REPO}]\ntype = "file_system"\nraw = "{write}"\n',
        }
        script = ('/usr/bin/curl -d "config=${CONFIG}&admin_secret=${ADMIN_SECRET}" -X POST '
                  f"http://127.0.0.1:{port}/initialize/")
        result = run(["bash", "-c", script], curl_env, timeout=30)
        assert "initialized 1 package repositories" in result.stdout, result.stdout + result.stderr + server.log()
        wait_ready(server)

        spec = DistSpec("cidemo", "0.1", module_body="VALUE = 'ci'\n")
        wheel = build_wheel(spec, tmp_path / "dist")
        twine_upload(server, wheel, env, REPO, write)
        target = tmp_path / "target"
        pip_install(server.index_url(REPO, read), target, "cidemo==0.1", env)
        assert (target / "cidemo" / "__init__.py").read_text() == spec.module_body
        assert (root / "cache" / REPO / "storage" / wheel.name).read_bytes() == wheel.read_bytes()

        again = requests.post(f"{server.base}/initialize/", timeout=10,
                              data={"config": '[evil]\ntype = "file_system"\nread_secret = "evil-read-secret"\n'
                                              'write_secret = "evil-write-secret"\n'})
        assert again.status_code == 403, again.text
        assert get(server, "/simple/", REPO, read).status_code == 200
        assert get(server, "/simple/", "evil", "x").status_code == 401
    finally:
        server.stop()


# -- 6. /initialize/ token rules -------------------------------------------------------------------


def test_open_initialize_refuses_huge_bodies_and_empty_configs(server_factory) -> None:
    """Security review: before its first /initialize/ a server takes it from anyone, so a
    huge file field must not be buffered (413) and a config defining no repository must not
    claim the server (400); after both, the rightful first /initialize/ still works."""
    server = server_factory(None, "--extra_index_url=")
    url = f"{server.base}/initialize/"
    huge = requests.post(url, files={"config": ("c.toml", b"#" * (3 << 20), "application/toml")}, timeout=30)
    assert huge.status_code == 413, huge.text
    empty = requests.post(url, data={"config": "# nothing here\n"}, timeout=10)
    assert empty.status_code == 400 and "no package repository" in empty.text, empty.text
    assert requests.get(f"{server.base}/readyz", timeout=5).status_code == 503, "the server got claimed"
    ok = requests.post(url, data={"config": sync_config()}, timeout=10)
    assert ok.status_code == 200, ok.text
    wait_ready(server)


def test_initialize_needs_bearer_token_and_rejects_bad_config(server_factory, tmp_path: Path) -> None:
    """A configured server may only be re-configured with ``Authorization: Bearer <token>``
    (else anyone reaching the port could swap its secrets). A valid call (config sent as a
    multipart file, like ``curl -F config=@file``) replaces the repo set at once; an invalid
    config is refused with a 400 naming the bad key and the running config keeps serving."""
    token = "init-token-for-tests"
    server = server_factory(sync_config(), "--extra_index_url=", "--initialize_token", token)
    wait_ready(server)
    new_config = ('[other]\ntype = "file_system"\nread_secret = "other-read-secret"\n'
                  'write_secret = "other-write-secret"\nsync_index_interval = 1\n')
    url = f"{server.base}/initialize/"

    def post(headers: dict[str, str], config: str) -> requests.Response:
        return requests.post(url, headers=headers, timeout=10,
                             files={"config": ("config.toml", config.encode(), "application/toml")})

    assert post({}, new_config).status_code == 403
    assert post({"Authorization": "Bearer wrong-token"}, new_config).status_code == 403
    assert post({"Authorization": f"Basic {token}"}, new_config).status_code == 403
    assert get(server, "/simple/").status_code == 200, "a refused /initialize/ changed the config"

    ok = post({"Authorization": f"Bearer {token}"}, new_config)
    assert ok.status_code == 200, ok.text
    assert get(server, "/simple/", "other", "other-read-secret").status_code == 200
    assert get(server, "/simple/", REPO, READ).status_code == 401
    wait_ready(server)

    bad = post({"Authorization": f"Bearer {token}"},
               '[third]\ntype = "file_system"\nread_secret = "read-secret-00"\nwrite_secret = "write-secret"\n'
               'bogus_key = 1\n')
    assert bad.status_code == 400, bad.text
    assert "bogus_key" in bad.text, bad.text
    assert get(server, "/simple/", "other", "other-read-secret").status_code == 200
    assert get(server, "/simple/", "third", "r").status_code == 401


# -- 7. SIGTERM while a sync is running -----------------------------------------------------------


def big_index(count: int) -> str:
    """A valid remote index of ``count`` files: seconds of parsing for the sync thread."""
    parts = ["format = 2\n"]
    digest = "0" * 64
    for i in range(count):
        parts.append(f'[files."bigdemo-0.0.{i}-py3-none-any.whl"]\ndistrib = "bigdemo"\nversion = "0.0.{i}"\n'
                     f'sha256 = "{digest}"\nsize = 100\nupload_time = "2026-01-01T00:00:00.000000Z"\n'
                     'requires_python = ">=3.8"\n')
    return "".join(parts)


def test_sigterm_during_sync_exits_zero(server_factory, tmp_path: Path) -> None:
    """``docker stop`` / a CI teardown sends SIGTERM at any moment, also while the sync thread
    is busy with a large index: the server must exit, with status 0, within 10 s."""
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "index.toml").write_text(big_index(100_000))
    token = "initialize-token-123"  # /readyz says why it is not ready to administrators only
    server = server_factory(sync_config(storage_path=str(storage)), "--extra_index_url=", "--initialize_token", token)
    ready = requests.get(f"{server.base}/readyz", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert ready.status_code == 503 and "not synced" in ready.text, "the first sync was not still running"
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"server still running 10 s after SIGTERM:\n{server.log()}")
    assert code == 0, (f"exit code {code} after SIGTERM ({time.monotonic() - started:.2f} s), expected 0:\n"
                       f"{server.log()}")

