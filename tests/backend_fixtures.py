"""Everything backend-specific of the backend contract suite (tests/test_backend_contract.py).

A backend joins the suite through ONE setup function registered in :data:`SETUPS`: given the
module's :class:`Engines` (SeaweedFS, the GitHub stand-in, started on first use) and a fresh
folder, it returns a :class:`BackendUnderTest`: a repository config pointing at FRESH storage
(a folder / a bucket prefix / a GitHub repository of its own), the clients' read and write
credentials, and the admin secret. Everything else goes through the core, never through the
backend object: apps are built the way ``pywharf server`` builds them (``load_setup`` ->
``build_repos`` -> ``create_app``) and driven over HTTP in-process, and the index is rebuilt by
the CLI's ``update_index`` use case.

What a setup must give:

- every :meth:`BackendUnderTest.app` shares ONE storage (two apps = two servers over one bucket),
  and each app has its own ROOT (``app("a")`` twice = the same server restarted);
- :meth:`BackendUnderTest.update_index` rebuilds the index from that storage alone, with
  ``pywharf_core.cli.update_index`` called with the repository's config keys (so a backend
  whose storage lives in the process, like an in-memory one, must let a new backend instance
  built from the same config reach the same store, e.g. through a name in its config);
- ``write`` / ``read``: (repository name, secret) pairs a client sends as basic auth;
- ``index_on_upload``: whether an upload alone reaches the remote index (so another server lists
  it after one sync), or only ``update_index`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import requests
import tomli_w
from starlette.testclient import TestClient
from test_upload_rules import Dist, encode_multipart, upload_fields

from pywharf_core.cli import update_index
from pywharf_core.http.app import create_app
from pywharf_core.model.records import FileRecord
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup
from pywharf_core.storage.backend import StagedFile

REPO = "contract"  # the package repository's name in every config
READ_SECRET, WRITE_SECRET = "contract-read-secret", "contract-write-secret"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
MIB = 1 << 20

# GitHub stand-in identities: the servers' admin token (owner), a push token and a pull token.
GH_OWNER = "alice"
GH_ADMIN, GH_WRITER, GH_READER = "ghp_contract_admin_0123456789", "ghp_contract_writer_012345678", \
    "ghp_contract_reader_012345678"


# -- engines: one SeaweedFS and one GitHub stand-in per test module, started on first use ------------


class Engines:
    """The module's external stores, each started the first time a setup asks for it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._seaweed: Any = None
        self._bucket = ""
        self._github: Any = None

    def seaweed(self) -> tuple[Any, str]:
        """SeaweedFS (``weed mini``) and one bucket for the module (tests use fresh prefixes)."""
        if self._seaweed is None:
            from seaweed import start_seaweedfs

            self._seaweed = start_seaweedfs(self.folder / "seaweedfs")
            self._bucket = self._seaweed.new_bucket()
        return self._seaweed, self._bucket

    def github(self) -> Any:
        """The GitHub REST stand-in with the admin, writer and reader tokens."""
        if self._github is None:
            from github_standin import GitHubStandIn

            # validate=False: the contract suite is not about the stand-in, and capturing every
            # exchange (20 MB uploads included) for validation costs memory and time.
            self._github = GitHubStandIn.start(validate=False)
            for token, login in ((GH_ADMIN, GH_OWNER), (GH_WRITER, "wendy"), (GH_READER, "rita")):
                self._github.add_token(token, login)
        return self._github

    def close(self) -> None:
        if self._github is not None:
            errors = self._github.internal_errors
            self._github.stop()
            assert errors == [], f"the GitHub stand-in failed internally:\n{errors}"
        if self._seaweed is not None:
            self._seaweed.stop()


# -- the backend under test, and apps over it -----------------------------------------------------------


@dataclass
class BackendUnderTest:
    type: str
    table: dict[str, Any]  # the repository's config table, without "type"
    admin_secret: str | None  # what the admin-secret file holds for REPO (raw); None: no admin secret
    write: tuple[str, str]
    read: tuple[str, str]
    folder: Path  # scratch space of this test: app ROOTs live under it
    index_on_upload: bool
    _apps: list[App] = field(default_factory=list)

    @property
    def config_text(self) -> str:
        return tomli_w.dumps({REPO: {"type": self.type, **self.table}})

    @property
    def admin_text(self) -> str | None:
        if self.admin_secret is None:
            return None
        return tomli_w.dumps({REPO: {"type": self.type, "raw": self.admin_secret}})

    def app(self, root: str = "a") -> App:
        """A server over this storage with ROOT ``<folder>/<root>``, synced once (as at start-up)."""
        app = App(self, self.folder / f"root-{root}")
        self._apps.append(app)
        return app

    def update_index(self) -> None:
        """``pywharf update_index``: rebuild the remote index from what the storage holds."""
        update_index(self.type, REPO, secret=self.admin_secret or self.write[1],
                     root=str(self.folder / "update-index-root"), **self.table)

    def close(self) -> None:
        for app in self._apps:
            app.close()


class App:
    """One in-process server (no socket, no sync thread: :meth:`sync` is the sync thread's step)."""

    def __init__(self, backend: BackendUnderTest, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        settings = ServerSettings(root=root, extra_index_url="")
        self.state = ServerState(settings)
        self.state.repos = build_repos(load_setup(backend.config_text, backend.admin_text, is_text=True), settings)
        self.state.configured = True
        self.client = TestClient(create_app(self.state), raise_server_exceptions=False, follow_redirects=False)
        self.sync()

    @property
    def _repo(self) -> Any:
        return self.state.repos[REPO]

    @property
    def storage(self) -> Any:
        """The repository's storage adapter (``pywharf_core.storage.api.Storage``), for the few
        tests about the layout the core keeps in it (tombstone documents, a legacy document) or
        about a step that fails there (an interrupted deletion)."""
        return self._repo.backend.storage

    def sync(self) -> None:
        """One index sync, as the server's sync thread does every ``sync_index_interval``."""
        self._repo.sync_once()

    def record(self, filename: str) -> FileRecord | None:
        """What this server's index says about ``filename``."""
        return self._repo.snapshot.files.get(filename)

    def deleted(self) -> list[str]:
        """The filenames this server's index holds tombstones of (deleted files), sorted."""
        return sorted(self._repo.snapshot.deleted)

    def upload(self, dist: Dist, filename: str | None = None,
               fields: Mapping[str, str | Sequence[str] | None] | None = None,
               auth: tuple[str, str] | None = None) -> httpx.Response:
        """A legacy upload of ``dist`` as twine sends it (plus ``fields``), under ``filename``."""
        body, content_type = encode_multipart(upload_fields(dist, fields), filename or dist.filename, dist.data)
        return self.client.post("/simple/", content=body, headers={"Content-Type": content_type},
                                auth=auth or self.backend.write)

    def files(self, project: str) -> dict[str, dict[str, Any]]:
        """The project page (PEP 691 JSON) as {filename: file entry}; {} when the project is unknown."""
        response = self.client.get(f"/simple/{project}/", auth=self.backend.read, headers={"Accept": JSON_V1})
        if response.status_code == 404:
            return {}
        assert response.status_code == 200, f"{response.status_code} {response.text}"
        return {entry["filename"]: entry for entry in response.json()["files"]}

    def project_json(self, project: str) -> dict[str, Any]:
        response = self.client.get(f"/pypi/{project}/json", auth=self.backend.read)
        assert response.status_code == 200, f"{response.status_code} {response.text}"
        return response.json()

    def download(self, project: str, filename: str) -> bytes:
        """A file's bytes, following the redirect to the store (s3 / GitHub signed URLs)."""
        response = self.client.get(f"/simple/{project}/{filename}", auth=self.backend.read)
        for _ in range(5):
            if response.status_code not in (301, 302, 303, 307, 308):
                break
            location = urljoin(str(response.request.url), response.headers["location"])
            if urlsplit(location).netloc == "testserver":
                response = self.client.get(location, auth=self.backend.read)
                continue
            with requests.get(location, timeout=60, allow_redirects=True) as external:
                assert external.status_code == 200, f"{external.status_code} from {location}: {external.text[:300]}"
                return external.content
        assert response.status_code == 200, f"{response.status_code} {response.text[:300]}"
        return response.content

    def yank(self, project: str, target: str, reason: str = "", *, undo: bool = False) -> httpx.Response:
        action = "unyank" if undo else "yank"
        return self.client.post(f"/{action}/{project}/{target}", data={"reason": reason}, auth=self.backend.write)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        self.state.shutdown()


def record_fields(record: FileRecord | None) -> dict[str, Any] | None:
    """Every field of a record, ``meta`` as a plain dict (for readable diffs)."""
    if record is None:
        return None
    return {f.name: dict(getattr(record, f.name)) if f.name == "meta" else getattr(record, f.name)
            for f in fields(record)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the setups: one function per backend, registered in SETUPS -----------------------------------------


def _file_system(engines: Engines, folder: Path) -> BackendUnderTest:
    """A storage folder shared by every app (``storage_path``), outside every ROOT."""
    table = {"read_secret": READ_SECRET, "write_secret": WRITE_SECRET, "storage_path": str(folder / "storage")}
    return BackendUnderTest("file_system", table, None, (REPO, WRITE_SECRET), (REPO, READ_SECRET), folder,
                            index_on_upload=True)


def _memory(engines: Engines, folder: Path) -> BackendUnderTest:
    """The reference adapter: a store in this process, shared by every app through its store_id."""
    table = {"read_secret": READ_SECRET, "write_secret": WRITE_SECRET, "store_id": f"contract-{uuid.uuid4().hex}"}
    return BackendUnderTest("memory", table, None, (REPO, WRITE_SECRET), (REPO, READ_SECRET), folder,
                            index_on_upload=True)


def _s3(engines: Engines, folder: Path) -> BackendUnderTest:
    """A fresh key prefix in the module's bucket; 20 MB files go up as multipart (5 MiB parts)."""
    from seaweed import ACCESS_KEY, SECRET_KEY

    seaweed, bucket = engines.seaweed()
    table = {"read_secret": READ_SECRET, "write_secret": WRITE_SECRET, "bucket": bucket,
             "prefix": f"t-{uuid.uuid4().hex[:12]}", "endpoint_url": seaweed.endpoint, "region_name": "us-east-1",
             "multipart_threshold": 8 * MIB, "multipart_chunksize": 5 * MIB}
    return BackendUnderTest("s3", table, f"{ACCESS_KEY}:{SECRET_KEY}", (REPO, WRITE_SECRET), (REPO, READ_SECRET),
                            folder, index_on_upload=True)


def _github(engines: Engines, folder: Path) -> BackendUnderTest:
    """A fresh private repository of alice on the stand-in; wendy may push, rita pull."""
    standin = engines.github()
    name = f"pkgs-{uuid.uuid4().hex[:12]}"
    standin.create_repo(GH_OWNER, name, private=True)
    standin.grant(GH_OWNER, name, "wendy", "push")
    standin.grant(GH_OWNER, name, "rita", "pull")
    table = {"owner": GH_OWNER, "repo": name, "api_base_url": standin.api_url, "max_rate_limit_wait": 3,
             "timeout": 20}
    return BackendUnderTest("github", table, GH_ADMIN, (REPO, GH_WRITER), (REPO, GH_READER), folder,
                            index_on_upload=True)


SETUPS: dict[str, Callable[[Engines, Path], BackendUnderTest]] = {
    "file_system": _file_system,
    "s3": _s3,
    "github": _github,
    "memory": _memory,
}


def make_backend(name: str, engines: Engines, folder: Path) -> BackendUnderTest:
    """The factory: a configured backend named ``name`` over fresh storage."""
    return SETUPS[name](engines, folder)



def staged_file(path: Path, data: bytes) -> StagedFile:
    """``data`` written to ``path`` and digested, as the upload route stages a file it streamed."""
    path.write_bytes(data)
    return StagedFile(path, len(data), hashlib.sha256(data).hexdigest(),
                      hashlib.md5(data, usedforsecurity=False).hexdigest(),
                      hashlib.blake2b(data, digest_size=32).hexdigest())
