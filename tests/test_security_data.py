"""Security issue 13, data side: what a server without an index redirects, what /readyz tells
anonymous callers, the modes of stored files, which names and filenames are accepted, which
upload form fields are stored, and how much work a hostile archive can cause at upload.

In-process (starlette TestClient against the real app) over the file_system backend; hostile
archives are generated in memory (concatenated gzip members, a hand-built zip directory) so
each test stays fast.
"""

from __future__ import annotations

import gzip
import logging
import os
import stat
import struct
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w
from starlette.testclient import TestClient
from test_upload_rules import Dist, encode_multipart, make_sdist, make_wheel, upload_fields

from pywharf_core.http.app import create_app
from pywharf_core.model import metadata as metadata_module
from pywharf_core.service.backends import rebuild_remote_index
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup

REPO = "local"
READ, WRITE = "read-secret-123", "write-secret-123"
ADMIN, TOKEN = "admin-secret-123", "initialize-token-123"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
PUBLIC = "https://pypi.org/simple/"
# The legacy upload API's core-metadata fields, as Warehouse's forklift/legacy.py accepts them.
CONTRACT_FIELDS = [
    "metadata_version", "name", "version", "summary", "description", "description_content_type", "author",
    "author_email", "maintainer", "maintainer_email", "license", "license_expression", "license_file",
    "keywords", "classifiers", "platform", "supported_platform", "home_page", "download_url",
    "requires_python", "requires_dist", "provides_dist", "obsoletes_dist", "requires_external",
    "project_urls", "provides_extra", "dynamic", "pyversion", "filetype", "comment",
]


def config_text(**table: Any) -> str:
    return tomli_w.dumps({REPO: {"type": "file_system", "read_secret": READ, "write_secret": WRITE,
                                 "sync_index_interval": 3600, **table}})


ADMIN_TEXT = tomli_w.dumps({REPO: {"type": "file_system", "raw": ADMIN}})


class Server:
    """One in-process server; its sync thread's step is :meth:`sync`."""

    def __init__(self, root: Path, config: str | None = None, *, admin_secret: str | None = None,
                 extra_index_url: str = "", initialize_token: str | None = None) -> None:
        settings = ServerSettings(root=root, extra_index_url=extra_index_url, initialize_token=initialize_token)
        self.state = ServerState(settings)
        if config is not None:
            self.state.repos = build_repos(load_setup(config, admin_secret, is_text=True), settings)
            self.state.configured = True
        self.client = TestClient(create_app(self.state), raise_server_exceptions=False)

    @property
    def repo(self) -> Any:
        return self.state.repos[REPO]

    @property
    def storage(self) -> Path:
        return self.repo.backend.storage.root

    def sync(self) -> None:
        self.repo.sync_once()

    def post(self, fields: list[tuple[str, str]], filename: str, data: bytes) -> httpx.Response:
        body, content_type = encode_multipart(fields, filename, data)
        return self.client.post("/simple/", content=body, headers={"Content-Type": content_type},
                                auth=(REPO, WRITE))

    def upload(self, dist: Dist, filename: str | None = None, override: dict[str, Any] | None = None) -> httpx.Response:
        return self.post(upload_fields(dist, override), filename or dist.filename, dist.data)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, auth=(REPO, READ), follow_redirects=False, **kwargs)


def rebuilt(tmp_path: Path, server: Server) -> Server:
    """A fresh server on ``server``'s storage after ``update_index`` (records from sidecars)."""
    rebuild_remote_index(server.repo.backend)
    fresh = Server(tmp_path / f"fresh-{time.monotonic_ns()}", config_text(storage_path=str(server.storage)))
    fresh.sync()
    return fresh


# -- 1. no index loaded: no redirect to the public index --------------------------------------


def test_a_repository_without_an_index_never_redirects_a_name_to_the_public_index(tmp_path: Path) -> None:
    """Before its first sync (and with no last good copy under ROOT) a repository cannot know
    whether a name is one of its private projects: redirecting it to the public index is
    dependency confusion. 503, no Location; after a sync the fallback works again."""
    server = Server(tmp_path / "root", config_text(), extra_index_url=PUBLIC)
    page = server.get("/simple/private-project/")
    assert page.status_code == 503, (page.status_code, page.headers.get("location"))
    assert "location" not in page.headers
    assert "not loaded" in page.text and page.headers["retry-after"]
    assert server.get("/simple/private-project/", headers={"Accept": JSON_V1}).status_code == 503
    server.sync()
    page = server.get("/simple/private-project/")
    assert page.status_code == 302 and page.headers["location"] == f"{PUBLIC}private-project/"


def test_a_restarted_repository_serving_its_last_good_index_still_falls_back(tmp_path: Path) -> None:
    first = Server(tmp_path / "root", config_text())
    first.sync()
    restarted = Server(tmp_path / "root", config_text(), extra_index_url=PUBLIC)
    assert restarted.repo.index_loaded and restarted.repo.last_sync is None
    assert restarted.get("/simple/requests/").status_code == 302


# -- 2. /readyz: details for administrators only ------------------------------------------------


def test_readyz_tells_anonymous_callers_only_whether_the_server_is_ready(tmp_path: Path) -> None:
    waiting = Server(tmp_path / "unconfigured", initialize_token=TOKEN)
    anonymous = waiting.client.get("/readyz")
    assert anonymous.status_code == 503 and anonymous.json() == {"ready": False}
    assert "initialize" not in anonymous.text
    admin = waiting.client.get("/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert admin.status_code == 503
    assert admin.json()["warnings"] == ["not configured: waiting for POST /initialize/"]

    server = Server(tmp_path / "root", config_text(), admin_secret=ADMIN_TEXT, initialize_token=TOKEN)
    for auth in (None, (REPO, READ), (REPO, WRITE), (REPO, "wrong-admin-secret"), ("other", ADMIN)):
        ready = server.client.get("/readyz", auth=auth)
        assert ready.status_code == 503 and ready.json() == {"ready": False}, (auth, ready.text)
        assert REPO not in ready.text
    assert server.client.get("/readyz", headers={"Authorization": "Bearer wrong-token-1234"}).json() == {
        "ready": False}
    for kwargs in ({"auth": (REPO, ADMIN)}, {"headers": {"Authorization": f"Bearer {TOKEN}"}}):
        ready = server.client.get("/readyz", **kwargs)
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "warnings": [f"index not synced yet: {REPO}"]}, kwargs

    server.sync()
    assert server.client.get("/readyz").json() == {"ready": True}
    assert server.client.get("/readyz").status_code == 200
    assert server.client.get("/readyz", auth=(REPO, ADMIN)).json() == {"ready": True, "warnings": []}
    restarted = Server(tmp_path / "root", config_text(), admin_secret=ADMIN_TEXT)
    assert restarted.client.get("/readyz").json() == {"ready": True}
    assert restarted.client.get("/readyz", auth=(REPO, ADMIN)).json()["warnings"] == [
        f"{REPO}: serving the last good index from ROOT; not synced since start"]


def test_readyz_is_no_unlimited_oracle_for_the_initialize_token_or_admin_secrets(tmp_path: Path) -> None:
    """Guesses at /readyz count against the budgets of /initialize/ (the token) and basic auth
    (a repository's secrets); out of budget, even the right credential is answered as anonymous."""
    server = Server(tmp_path / "root", config_text(), admin_secret=ADMIN_TEXT, initialize_token=TOKEN)
    settings = server.state.settings
    for attempt in range(settings.initialize_max_failures):
        server.client.get("/readyz", headers={"Authorization": f"Bearer wrong-token-{attempt:04d}"})
    limited = server.client.get("/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert limited.json() == {"ready": False}
    initialize = server.client.post("/initialize/", data={"config": config_text()},
                                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert initialize.status_code == 429  # one budget for the token, wherever it is guessed
    for attempt in range(settings.auth_failure_limit):
        server.client.get("/readyz", auth=(REPO, f"wrong-admin-{attempt:04d}"))
    assert server.client.get("/readyz", auth=(REPO, ADMIN)).json() == {"ready": False}
    assert server.client.get("/simple/", auth=(REPO, READ)).status_code == 429  # the same budget


# -- 3. file modes follow the umask -------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o077, 0o002])
def test_stored_files_and_folders_respect_the_process_umask(tmp_path: Path, umask: int) -> None:
    """Files were chmod-ed 0o644 (world-readable under umask 077); now every file under ROOT
    and in storage gets 0o666 & ~umask, every folder 0o777 & ~umask."""
    wheel = make_wheel(tmp_path / "d", "modes", "1.0")
    sdist = make_sdist(tmp_path / "d", "modes", "1.0")
    old = os.umask(umask)
    try:
        server = Server(tmp_path / "root", config_text())
        for dist in (wheel, sdist):
            assert server.upload(dist).status_code == 200
        server.sync()
        rebuild_remote_index(server.repo.backend)
        server.sync()
    finally:
        os.umask(old)
    checked = []
    for path in (tmp_path / "root").rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & umask == 0, f"{path} is {oct(mode)} under umask {oct(umask)}"
        if path.name.startswith(wheel.filename) or path.name.startswith(sdist.filename) or path.name == "index.toml":
            assert mode == 0o666 & ~umask, f"{path} is {oct(mode)}, expected {oct(0o666 & ~umask)}"
            checked.append(path.name)
    assert {wheel.filename, f"{wheel.filename}.toml", f"{wheel.filename}.metadata", sdist.filename,
            "index.toml"} <= set(checked), checked


# -- 4. names and filenames: ASCII, as the packaging specifications say ------------------------


@pytest.mark.parametrize("name", ["\u017fix", "\u212aelvin"])
def test_project_names_that_only_case_fold_to_ascii_are_refused(tmp_path: Path, name: str) -> None:
    ascii_name = name.replace("\u017f", "s").replace("\u212a", "K")
    server = Server(tmp_path / "root", config_text())
    dist = make_wheel(tmp_path / "d", ascii_name, "1.0")
    response = server.upload(dist, filename=name + dist.filename[len(ascii_name):], override={"name": name})
    assert response.status_code == 400, response.text
    assert "Invalid" in response.text
    assert not server.repo.snapshot.files
    assert [p.name for p in server.storage.iterdir() if not p.name.startswith(".")] == []


def test_confusable_names_in_page_and_download_paths_are_404(tmp_path: Path) -> None:
    """U+212A lower-cases to "k": /simple/\u212aelvin/ was redirected to kelvin's page and its
    files were downloadable under that spelling."""
    server = Server(tmp_path / "root", config_text())
    dist = make_wheel(tmp_path / "d", "kelvin", "1.0")
    assert server.upload(dist).status_code == 200
    assert server.get("/simple/kelvin/").status_code == 200
    assert server.get("/simple/\u212aelvin/").status_code == 404
    assert server.get(f"/simple/\u212aelvin/{dist.filename}").status_code == 404
    assert server.get(f"/simple/kelvin/{dist.filename}").status_code == 200
    assert server.client.get("/pypi/\u212aelvin/json", auth=(REPO, READ)).status_code == 404


BAD_FILENAMES = [
    "demo-1.0-1\u202e-py3-none-any.whl",  # RIGHT-TO-LEFT OVERRIDE in the build tag
    "demo-1.0-1\u2028-py3-none-any.whl",  # LINE SEPARATOR
    "demo-1.0-py3-none-an\u00fd.whl",  # non-ASCII platform tag
    "demo-1.0\u2028.tar.gz",  # packaging strips the unicode whitespace from the version
    "demo-1.0-1\u00a0x-py3-none-any.whl",  # NO-BREAK SPACE
]


@pytest.mark.parametrize("filename", BAD_FILENAMES)
def test_non_ascii_and_control_characters_in_filenames_are_refused(tmp_path: Path, filename: str) -> None:
    server = Server(tmp_path / "root", config_text())
    dist = (make_sdist if filename.endswith(".tar.gz") else make_wheel)(tmp_path / "d", "demo", "1.0")
    response = server.upload(dist, filename=filename)
    assert response.status_code == 400, response.text
    assert "Invalid distribution filename" in response.text and "ASCII" in response.text
    assert "\u202e" not in response.text and "\u2028" not in response.text  # escaped by repr
    assert server.get(f"/simple/demo/{filename}").status_code == 404


def test_a_non_ascii_version_field_is_refused(tmp_path: Path) -> None:
    """packaging strips Unicode whitespace around a version: "1.0.post1\u2028" equalled the
    filename's version and went into the index (and every page) with its line separator."""
    server = Server(tmp_path / "root", config_text())
    dist = make_wheel(tmp_path / "d", "demo", "1.0.post1")
    response = server.upload(dist, override={"version": "1.0.post1\u2028"})
    assert response.status_code == 400, response.text
    assert server.upload(dist).status_code == 200


def test_rebuild_from_storage_skips_non_ascii_filenames_with_a_warning(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    server = Server(tmp_path / "root", config_text())
    good = make_wheel(tmp_path / "d", "demo", "1.0")
    assert server.upload(good).status_code == 200
    sneaky = "demo-1.0-1\u202e-py3-none-any.whl"
    (server.storage / sneaky).write_bytes(good.data)  # put there by hand
    caplog.set_level(logging.WARNING)
    fresh = rebuilt(tmp_path, server)
    assert sorted(fresh.repo.snapshot.files) == [good.filename]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("skipping" in w and "\\u202e" in w for w in warnings), warnings
    assert not any("\u202e" in w for w in warnings), "the raw character reached the log"


# -- 5. only the upload contract's form fields are stored ---------------------------------------

FOREIGN = {"yanked": "true", "yanked_reason": "from the form", "sha256": "0" * 64, "size": "5",
           "upload_time": "1999-01-01T00:00:00Z", "metadata_sha256": "1" * 64, "protocol_version": "1",
           "bogus": "x" * 100, "asset": "other.whl"}


def test_form_fields_outside_the_upload_contract_are_not_stored(tmp_path: Path) -> None:
    server = Server(tmp_path / "root", config_text())
    dist = make_wheel(tmp_path / "d", "leak", "1.0")
    assert server.upload(dist, override=FOREIGN).status_code == 200
    record = server.repo.snapshot.files[dist.filename]
    assert not record.yanked and record.size == len(dist.data) and record.sha256 == dist.sha256
    assert set(record.meta) & set(FOREIGN) == set(), dict(record.meta)
    sidecar = (server.storage / ".pywharf" / f"{dist.filename}.toml").read_text()
    assert "bogus" not in sidecar and "from the form" not in sidecar and "1999" not in sidecar
    logged = "".join(p.read_text() for p in (server.storage / ".pywharf" / "log").rglob("*.json"))
    assert "bogus" not in logged and "0" * 64 not in logged
    fresh = rebuilt(tmp_path, server)
    again = fresh.repo.snapshot.files[dist.filename]
    assert not again.yanked and again.yanked_reason == ""
    assert again.size == len(dist.data) and again.sha256 == dist.sha256
    assert set(again.meta) & set(FOREIGN) == set(), dict(again.meta)
    info = fresh.get("/simple/leak/", headers={"Accept": JSON_V1}).json()["files"][0]
    assert info.get("yanked", False) is False


def test_a_sidecar_from_before_the_filter_does_not_leak_foreign_fields_into_a_rebuilt_index(tmp_path: Path) -> None:
    server = Server(tmp_path / "root", config_text())
    dist = make_wheel(tmp_path / "d", "old", "1.0")
    assert server.upload(dist).status_code == 200
    path = server.storage / ".pywharf" / f"{dist.filename}.toml"
    path.write_text(path.read_text() + 'bogus = "x"\nasset = "y"\n')
    again = rebuilt(tmp_path, server).repo.snapshot.files[dist.filename]
    assert "bogus" not in again.meta and "asset" not in again.meta
    assert again.meta["summary"] == "A test package"


def test_the_sidecar_round_trip_keeps_every_field_of_the_upload_contract(tmp_path: Path) -> None:
    server = Server(tmp_path / "root", config_text())
    dist = make_wheel(tmp_path / "d", "every", "1.0")
    multi = {"classifiers", "platform", "supported_platform", "requires_dist", "provides_dist", "obsoletes_dist",
             "requires_external", "project_urls", "provides_extra", "dynamic", "license_file"}
    fixed = {"name": "every", "version": "1.0", "filetype": "bdist_wheel", "metadata_version": "2.4",
             "requires_python": ">=3.9", "pyversion": "py3"}
    values: dict[str, Any] = {}
    for field in CONTRACT_FIELDS:
        values[field] = fixed.get(field) or ([f"{field} one", f"{field} two"] if field in multi else f"{field} value")
    assert server.upload(dist, override=values).status_code == 200
    before = server.repo.snapshot.files[dist.filename]
    after = rebuilt(tmp_path, server).repo.snapshot.files[dist.filename]
    assert dict(after.meta) == dict(before.meta)
    for field, value in values.items():
        if field == "description":
            continue  # kept beside the file, not in the index
        assert after.meta[field] == (tuple(value) if isinstance(value, list) else value), field
    sidecar = (server.storage / ".pywharf" / f"{dist.filename}.toml").read_text()
    assert "description value" in sidecar
    assert after.requires_python == ">=3.9"


# -- 6. bounded metadata extraction -------------------------------------------------------------

PKG_INFO = b"Metadata-Version: 2.2\nName: {name}\nVersion: 1.0\nRequires-Python: >=3.8\n\n"


def _tar_member(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _tar_file(name: str, data: bytes) -> bytes:
    return _tar_member(name, len(data)) + data + b"\0" * (-len(data) % 512)


def gzip_bomb_sdist(name: str, inflated: int) -> bytes:
    """An sdist whose first member inflates to ``inflated`` zero bytes, PKG-INFO after it.

    Built from concatenated gzip members (which gzip readers join into one stream): one 1 MiB
    block of zeros is compressed once and repeated, so generating it costs nothing."""
    mib = gzip.compress(b"\0" * (1 << 20), 9)
    parts = [gzip.compress(_tar_member(f"{name}-1.0/data.bin", inflated))]
    parts += [mib] * (inflated >> 20)
    pkg_info = PKG_INFO.replace(b"{name}", name.encode())
    parts.append(gzip.compress(_tar_file(f"{name}-1.0/PKG-INFO", pkg_info) + b"\0" * 1024))
    return b"".join(parts)


def many_member_sdist(name: str, members: int) -> bytes:
    """An sdist of ``members`` empty files (one header, repeated), PKG-INFO last."""
    block = gzip.compress(_tar_member(f"{name}-1.0/x", 0) * 10_000, 9)
    pkg_info = PKG_INFO.replace(b"{name}", name.encode())
    tail = gzip.compress(_tar_file(f"{name}-1.0/PKG-INFO", pkg_info) + b"\0" * 1024)
    return block * (members // 10_000) + tail


def many_entry_wheel(name: str, entries: int, zip64: bool = False) -> bytes:
    """A wheel with its own METADATA and ``entries`` more central-directory entries (all naming
    one empty local file): a directory of ``entries`` * 58 bytes that zipfile parses whole.

    ``zip64``: the real sizes are in a zip64 end record, the classic one claims one small entry
    (zipfile believes the zip64 record)."""
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n".encode()

    def local(filename: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(data)
        return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data), len(data),
                           len(filename), 0) + filename + data

    def central(filename: bytes, data: bytes, offset: int) -> bytes:
        crc = zlib.crc32(data)
        return struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, len(data), len(data),
                           len(filename), 0, 0, 0, 0, 0, offset) + filename

    meta_name = f"{name}-1.0.dist-info/METADATA".encode()
    empty_name = f"{name}/x.py".encode()
    first = local(meta_name, metadata)
    body = first + local(empty_name, b"")
    directory = central(meta_name, metadata, 0) + central(empty_name, b"", len(first)) * entries
    count = min(entries + 1, 0xFFFF)
    if not zip64:
        end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), len(body), 0)
        return body + directory + end
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries + 1, entries + 1,
                         len(directory), len(body))
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body) + len(directory), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, 58, len(body), 0)
    return body + directory + record + locator + end


def _upload_raw(server: Server, name: str, filename: str, data: bytes, filetype: str) -> httpx.Response:
    fields = [(":action", "file_upload"), ("protocol_version", "1"), ("name", name), ("version", "1.0"),
              ("filetype", filetype), ("metadata_version", "2.2")]
    return server.post(fields, filename, data)


def _assert_accepted_without_metadata(server: Server, filename: str, caplog: pytest.LogCaptureFixture,
                                      started: float) -> None:
    record = server.repo.snapshot.files[filename]
    assert record.metadata_sha256 == "", "metadata was extracted past the bounds"
    project = filename.split("-")[0]
    assert server.get(f"/simple/{project}/{filename}.metadata").status_code == 404
    assert server.get(f"/simple/{project}/{filename}").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == metadata_module.__name__]
    assert len(warnings) == 1 and filename in warnings[0] and "bound" in warnings[0], warnings
    assert time.monotonic() - started < 10  # on main this was 2-39 s of CPU


def test_a_gzip_bomb_sdist_is_not_inflated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A member claiming 512 MiB is refused at its header: nothing of it is decompressed. The
    upload is kept (a valid file), without PEP 658 metadata, with one warning."""
    data = gzip_bomb_sdist("bomb", 512 << 20)
    assert len(data) < 1 << 20
    server = Server(tmp_path / "root", config_text())
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    response = _upload_raw(server, "bomb", "bomb-1.0.tar.gz", data, "sdist")
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 5
    _assert_accepted_without_metadata(server, "bomb-1.0.tar.gz", caplog, started)


def test_a_small_sdist_built_the_same_way_still_gets_its_metadata(tmp_path: Path) -> None:
    """The generator is right: below the bounds the PKG-INFO after the big member is served."""
    server = Server(tmp_path / "root", config_text())
    small = gzip_bomb_sdist("small", 4 << 20)
    assert _upload_raw(server, "small", "small-1.0.tar.gz", small, "sdist").status_code == 200
    assert server.repo.snapshot.files["small-1.0.tar.gz"].metadata_sha256
    assert _upload_raw(server, "few", "few-1.0.tar.gz", many_member_sdist("few", 10_000), "sdist").status_code == 200
    assert server.repo.snapshot.files["few-1.0.tar.gz"].metadata_sha256
    for project, zip64 in (("fewer", False), ("fewer64", True)):
        wheel = many_entry_wheel(project, 1_000, zip64)
        filename = f"{project}-1.0-py3-none-any.whl"
        assert _upload_raw(server, project, filename, wheel, "bdist_wheel").status_code == 200
        assert server.repo.snapshot.files[filename].metadata_sha256, filename


def test_an_sdist_of_300k_members_is_scanned_only_up_to_the_bound(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    data = many_member_sdist("many", 300_000)
    server = Server(tmp_path / "root", config_text())
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    response = _upload_raw(server, "many", "many-1.0.tar.gz", data, "sdist")
    assert response.status_code == 200, response.text
    _assert_accepted_without_metadata(server, "many-1.0.tar.gz", caplog, started)


@pytest.mark.parametrize("zip64", [False, True], ids=["classic", "zip64-behind-a-small-end-record"])
def test_a_wheel_with_a_huge_central_directory_is_not_parsed(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                              zip64: bool) -> None:
    data = many_entry_wheel("wide", 300_000, zip64)
    server = Server(tmp_path / "root", config_text())
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    response = _upload_raw(server, "wide", "wide-1.0-py3-none-any.whl", data, "bdist_wheel")
    assert response.status_code == 200, response.text
    _assert_accepted_without_metadata(server, "wide-1.0-py3-none-any.whl", caplog, started)
