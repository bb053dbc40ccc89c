"""The ``github`` backend: GitHub releases as package storage, the index as a file on a branch.

Why: users of pywharf 0.2.3 keep their packages in GitHub repositories (one release per file,
metadata in the release body) and must be able to switch without migrating; and GitHub is a
remote service that rate-limits, fails with 5xx, renames asset names and can apply a request
it then reports as failed. These tests pin what the backend promises in those conditions.

Unit tests first (no network). Then end-to-end tests: real ``pywharf server`` processes, real
twine / pip / uv, and ``tests/github_standin`` (a GitHub REST stand-in whose every answer is
checked against GitHub's OpenAPI description) in place of GitHub; PyGithub is the client, not
patched. Nothing reaches the internet (``--extra_index_url=``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import re
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import tomli_w
import yaml
from conftest import Server, client_env, run, tool, wait_for
from distbuilder import DistSpec, build_wheel
from github import Auth, Github, GithubException, RateLimitExceededExceedsMaxWait
from github_standin import GitHubStandIn
from urllib3 import HTTPResponse

from pywharf_backends.github.client import BoundedGithubRetry, ClientPolicy, GitHubClient, GitHubUnavailable
from pywharf_backends.github.commands import publisher_repository, render_trusted_publisher, render_workflow
from pywharf_backends.github.config import GitHubConfig
from pywharf_backends.github.contents import git_blob_sha
from pywharf_backends.github.storage import (
    BODY_HEADER,
    BODY_LIMIT,
    GitHubBackend,
    ReleaseInfo,
    body_version,
    parse_body,
    render_body,
)
from pywharf_core.model.errors import ConfigError, PywharfError
from pywharf_core.service.package_store import PackageStore
from pywharf_core.storage.api import VersionConflict
from pywharf_core.storage.backend import BackendContext
from pywharf_core.storage.config import ConfigSource, build_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OWNER, REPO_NAME, NAME = "alice", "pkgs", "gh"
ADMIN = "ghp_admin_0123456789abcdef"  # the repository owner's token: the servers' admin secret
WRITER = "ghp_writer_0123456789abcdef"  # push access
READER = "ghp_reader_0123456789abcdef"  # pull access
STRANGER = "ghp_stranger_0123456789abcd"  # a valid token without access to the repository
TOKENS = (ADMIN, WRITER, READER, STRANGER)


# == unit tests =====================================================================================


def make_config(**table: Any) -> GitHubConfig:
    config = build_config(GitHubConfig, NAME, {"type": "github", "owner": OWNER, "repo": REPO_NAME, **table},
                          ConfigSource("config.toml"))
    assert isinstance(config, GitHubConfig)
    return config


def test_config_defaults_match_pywharf_0_2_3():
    """An 0.2.3 config (type, owner, repo) keeps its meaning: master branch, index.toml, GitHub's 2 GiB limit."""
    config = make_config()
    assert (config.branch, config.index_filename, config.max_file_bytes, config.sync_index_interval) == (
        "master", "index.toml", 2147483647, 60)
    assert config.api_base_url == "https://api.github.com"


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"max_file_bytes": 2147483648}, "key 'max_file_bytes': GitHub release assets must be under 2 GiB"),
        ({"owner": "a/b"}, "key 'owner': must be a GitHub name"),
        ({"branch": "bad..branch"}, "key 'branch': must be a valid git branch name"),
        ({"index_filename": "../index.toml"}, "key 'index_filename': must be a relative path"),
        ({"api_base_url": "ftp://x"}, "key 'api_base_url': must be an http(s) URL"),
        ({"download": "teleport"}, "key 'download': must be one of redirect, stream"),
    ],
)
def test_config_errors_name_the_key(table: dict[str, Any], fragment: str):
    with pytest.raises(ConfigError) as info:
        make_config(**table)
    assert f"config.toml: [{NAME}] {fragment}" in str(info.value)


def _response(status: int, headers: dict[str, str], body: bytes = b"{}") -> HTTPResponse:
    return HTTPResponse(body=io.BytesIO(body), headers=headers, status=status, preload_content=True)


def test_retry_caps_every_rate_limit_wait():
    """PyGithub's GithubRetry would sleep as long as Retry-After says (an hour blocks a request
    thread for an hour); ours refuses waits over max_rate_limit_wait and says so."""
    retry = BoundedGithubRetry(max_rate_limit_wait=5, total=3)
    ok = retry.increment("GET", "/x", _response(403, {"Retry-After": "2"}))
    assert ok.get_retry_after(_response(403, {"Retry-After": "2"})) == 2
    with pytest.raises(RateLimitExceededExceedsMaxWait) as info:
        retry.increment("GET", "/x", _response(403, {"Retry-After": "3600"}))
    assert info.value.wait == 3600
    # 429 without Retry-After (PyGithub gives up at once): wait for X-RateLimit-Reset, if short.
    reset = str(int(time.time()) + 2)
    later = retry.increment("GET", "/x", _response(429, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}))
    assert 1 <= later.get_backoff_time() <= 4
    with pytest.raises(RateLimitExceededExceedsMaxWait) as info:
        retry.increment("GET", "/x", _response(429, {}))  # secondary limit: 60 s by default
    assert info.value.wait == 60


def test_retry_does_not_repeat_posts_when_told_not_to():
    from pywharf_backends.github.client import make_retry

    policy = ClientPolicy("http://127.0.0.1:1/api/v3")
    assert make_retry(policy).is_retry("POST", 502)
    assert not make_retry(policy, retry_posts=False).is_retry("POST", 502)
    assert make_retry(policy, retry_posts=False).is_retry("GET", 502)


def test_git_blob_sha_is_gits():
    assert git_blob_sha(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_sha(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def _release(tag: str, body: str, assets: list[dict[str, Any]], draft: bool = False) -> ReleaseInfo:
    return ReleaseInfo.from_json({
        "id": 1, "tag_name": tag, "name": tag, "body": body, "draft": draft, "prerelease": False,
        "url": "http://x/api/v3/repos/o/r/releases/1", "upload_url": "http://x/api/uploads/r/1/assets{?name,label}",
        "created_at": "2020-03-24T12:00:00Z", "assets": assets,
    })


def _asset(name: str, size: int = 10, state: str = "uploaded", digest: str | None = None, id: int = 7) -> dict:
    return {"id": id, "name": name, "url": f"http://x/api/v3/repos/o/r/releases/assets/{id}", "size": size,
            "state": state, "digest": digest, "created_at": "2020-03-24T12:00:01Z", "browser_download_url": ""}


# A release body as pywharf 0.2.3 wrote it: the upload form's fields, flat, plus distrib + sha256.
BODY_0_2_3 = tomli_w.dumps({
    "name": "oldpkg", "version": "0.1", "filetype": "bdist_wheel", "pyversion": "py3", "metadata_version": "2.1",
    "summary": "An old package", "requires_python": ">=3.7", "classifiers": "Programming Language :: Python :: 3",
    ":action": "file_upload", "protocol_version": "1", "distrib": "oldpkg", "sha256": "AB" * 32,
    "description": "Long text",
})


def test_release_assets_and_body_as_blobs_and_sidecar():
    """The distribution asset is the uploaded non-.metadata one (the body's ``asset`` decides between
    two); half-uploaded assets are not files; an empty or header-only body is no sidecar, a 0.2.3
    body (no header) is one, its version the body's hash."""
    body = render_body({"sha256": "aa" * 32, "version": "1.0", "asset": "x-1.0.local-py3-none-any.whl"})
    assets = [_asset("x-1.0.other-py3-none-any.whl", id=3), _asset("x-1.0.local-py3-none-any.whl", id=1),
              _asset("x-1.0.local-py3-none-any.whl.metadata", id=2)]
    release = _release("x-1.0+local-py3-none-any.whl", body, assets)
    dist, metadata = release.dist_asset(), release.metadata_asset()
    assert dist is not None and dist.id == 1 and metadata is not None and metadata.id == 2
    starter = _release("x-1.0-py3-none-any.whl", body, [_asset("x-1.0-py3-none-any.whl", state="open")])
    assert starter.dist_asset() is None and starter.metadata_asset() is None
    sidecar = release.sidecar()
    assert sidecar is not None and sidecar.data == body.encode() and sidecar.version == body_version(body)
    assert _release("a-1.0.tar.gz", "", []).sidecar() is None
    assert _release("a-1.0.tar.gz", BODY_HEADER.replace("\n", "\r\n"), []).sidecar() is None  # web-edited
    old = _release("oldpkg-0.1-py3-none-any.whl", BODY_0_2_3, [])
    assert old.sidecar() is not None and parse_body(BODY_0_2_3)["sha256"] == "AB" * 32


def test_release_body_keeps_description_only_while_it_fits():
    small = render_body({"name": "x", "description": "short", "requires_dist": ["a", "b"]})
    assert parse_body(small) == {"name": "x", "description": "short", "requires_dist": ["a", "b"]}
    big = render_body({"name": "x", "description": "y" * BODY_LIMIT})
    assert len(big) < BODY_LIMIT and parse_body(big) == {"name": "x"}
    assert parse_body(small.replace("\n", "\r\n")) == parse_body(small)  # edited in GitHub's web UI
    assert parse_body("not = [toml") == {}


def test_workflow_is_valid_yaml_and_passes_actionlint(tmp_path: Path):
    config = make_config(branch="main", index_filename="pkgs/index.toml")
    text = render_workflow(config, "0.3.0", enable_gh_pages=True)
    document = yaml.safe_load(text)
    assert set(document[True]["release"]["types"]) == {"published", "edited", "deleted"}  # YAML 1.1: on -> True
    assert "workflow_dispatch" in document[True] and document[True]["schedule"]
    steps = document["jobs"]["update-index"]["steps"]
    command = steps[-1]["run"]
    assert "pywharf update_index github 'gh' --owner 'alice' --repo 'pkgs' --branch 'main'" in command
    assert "--secret_env PYWHARF_GITHUB_TOKEN" in command and "ghp_" not in text
    assert_actionlint_clean(text, tmp_path)


def assert_actionlint_clean(workflow: str, tmp_path: Path) -> None:
    """actionlint (with shellcheck on the run: scripts when installed) finds nothing in ``workflow``."""
    actionlint = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    if not Path(actionlint).exists():
        pytest.skip("actionlint is not installed (test extra)")
    path = tmp_path / "lint" / ".github" / "workflows" / "w.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(workflow)
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    flags = [f"-shellcheck={shellcheck if Path(shellcheck).exists() else ''}", "-pyflakes="]
    result = subprocess.run([actionlint, *flags, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


class _Sink(BaseHTTPRequestHandler):
    """Reads an upload in chunks and throws it away."""

    def do_POST(self) -> None:
        remaining = int(self.headers["Content-Length"])
        while remaining:
            remaining -= len(self.rfile.read(min(remaining, 1 << 16)))
        self.send_response(201)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def test_upload_is_streamed_from_the_staged_file(tmp_path: Path):
    """An asset upload reads the staged file in blocks: memory stays flat whatever the file size."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    big = tmp_path / "big.whl"
    with open(big, "wb") as handle:
        handle.truncate(48 << 20)
    client = GitHubClient("token", ClientPolicy(f"http://127.0.0.1:{server.server_port}/api/v3"))
    try:
        tracemalloc.start()
        with open(big, "rb") as data:
            response = client.request("POST", "/upload", retry=False, data=data, params={"name": "big.whl"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        server.shutdown()
    assert response.status_code == 201
    assert peak < 8 << 20, f"upload held {peak} bytes in memory"


def test_a_slow_github_times_out_with_a_clear_error():
    """A GitHub that stops answering must not hold a worker thread forever, and the error must say
    "timed out" and name the setting - also once urllib3's retries are used up, where requests
    reports a ConnectionError that would read like GitHub being unreachable."""
    with GitHubStandIn.start() as standin:
        standin.add_fault("*", r"/slow$", delay=30, times=10)
        client = GitHubClient("token", ClientPolicy(standin.api_url, timeout=1, retries=0))
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:  # GitHubClient keeps one session per thread
            post = pool.submit(client.request, "POST", "/slow?token=signed-secret", retry=False, data=b"x" * 10)
            get = pool.submit(client.request, "GET", "/slow")  # retryable: urllib3's MaxRetryError, even with 0 retries
            with pytest.raises(GitHubUnavailable, match=r"^GitHub timed out on POST http://127\.0\.0\.1:\d+/api/v3/"
                                                        r"slow \(timeout is 1s\)$"):  # no query: it may hold a secret
                post.result()
            with pytest.raises(GitHubUnavailable, match=r"^GitHub timed out on GET .*/slow \(timeout is 1s\)$"):
                get.result()
        assert time.monotonic() - started < 5


# == end to end against the GitHub stand-in ===========================================================


@pytest.fixture
def gh() -> Iterator[GitHubStandIn]:
    """A stand-in with alice's private repo alice/pkgs: writer (push), reader (pull), stranger (none)."""
    with GitHubStandIn.start(validate=True) as standin:
        prepare(standin)
        yield standin
        assert standin.internal_errors == []
        assert standin.schema_violations == []


def prepare(standin: GitHubStandIn, repo: str = REPO_NAME) -> None:
    for token, login in zip(TOKENS, ("alice", "wendy", "rita", "sam"), strict=True):
        standin.add_token(token, login)
    standin.create_repo(OWNER, repo, private=True)
    standin.grant(OWNER, repo, "wendy", "push")
    standin.grant(OWNER, repo, "rita", "pull")


def gh_config(standin: GitHubStandIn, repo: str = REPO_NAME, **extra: Any) -> str:
    table = {"type": "github", "owner": OWNER, "repo": repo, "api_base_url": standin.api_url,
             "sync_index_interval": 1, "max_rate_limit_wait": 3, "timeout": 10, **extra}
    return tomli_w.dumps({NAME: table})


ADMIN_TOML = f'[{NAME}]\ntype = "github"\nraw = "{ADMIN}"\n'


def start(server_factory, standin: GitHubStandIn, *flags: str, root_name: str = "root", **extra: Any) -> Server:
    return server_factory(gh_config(standin, **extra), "--extra_index_url=", *flags, root_name=root_name,
                          admin_text=ADMIN_TOML)


def upload(server: Server, wheel: Path, token: str = WRITER) -> requests.Response:
    """A legacy-API upload with the fields twine sends that matter (fast; twine is used elsewhere)."""
    data = wheel.read_bytes()
    name, version = wheel.name.split("-")[:2]
    fields = {":action": "file_upload", "protocol_version": "1", "metadata_version": "2.1", "name": name,
              "version": version, "filetype": "bdist_wheel", "pyversion": "py3",
              "sha256_digest": hashlib.sha256(data).hexdigest()}
    return requests.post(f"{server.base}/simple/", auth=(NAME, token), data=fields,
                         files={"content": (wheel.name, data, "application/octet-stream")}, timeout=60)


def twine(server: Server, wheel: Path, env: dict[str, str], token: str = WRITER,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([tool("twine"), "upload", "--repository-url", f"{server.base}/simple/", "-u", NAME, "-p", token,
                "--non-interactive", "--disable-progress-bar", str(wheel)], env, timeout=120, check=check)


def files_on(server: Server, project: str, token: str = READER) -> list[str]:
    response = requests.get(f"{server.base}/simple/{project}/", auth=(NAME, token), timeout=10,
                            headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return [f["filename"] for f in response.json()["files"]]


def update_index(standin: GitHubStandIn, env: dict[str, str], cwd: Path, *flags: str, repo: str = REPO_NAME,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([tool("pywharf"), "update_index", "github", NAME, "--owner", OWNER, "--repo", repo,
                "--api_base_url", standin.api_url, "--secret_env", "GH_ADMIN_TOKEN", "--max_rate_limit_wait", "3",
                *flags], {**env, "GH_ADMIN_TOKEN": ADMIN}, cwd=cwd, timeout=60, check=check)


def assert_no_tokens(*texts: str) -> None:
    for text in texts:
        for token in TOKENS:
            assert token not in text, "a token was written to a log"


def dist_assets(standin: GitHubStandIn, tag: str) -> list[dict[str, Any]]:
    return [a for a in standin.assets(OWNER, REPO_NAME, tag) if not a["name"].endswith(".metadata")]


def adapter(standin: GitHubStandIn, root: Path, **table: Any) -> GitHubBackend:
    """The storage adapter itself (what the core's PackageStore drives), with the admin token."""
    return GitHubBackend(make_config(api_base_url=standin.api_url, max_rate_limit_wait=3, **table),
                         BackendContext(root=root, admin_secret=ADMIN))


def admin_repo(standin: GitHubStandIn, repo: str = REPO_NAME) -> Any:
    return Github(auth=Auth.Token(ADMIN), base_url=standin.api_url, seconds_between_requests=0,
                  seconds_between_writes=0).get_repo(f"{OWNER}/{repo}")


def test_a_0_2_3_release_is_a_file_and_its_body_the_sidecar(gh: GitHubStandIn, tmp_path: Path):
    """What 0.2.3 left (a release, its asset, a flat TOML body) is a blob and a sidecar: the core
    rebuilds the record from the body (upload time: the asset's creation), upgrades the body in
    place (header, size, asset name) and adds the PEP 658 asset. Drafts, releases without an
    uploaded asset and releases that are not distribution files are no files. The sha256 of a
    blob is GitHub's digest, whatever the body claims."""
    wheel = build_wheel(DistSpec("oldpkg", "0.1"), tmp_path / "dist")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    repo = admin_repo(gh)
    repo.create_git_release(wheel.name, wheel.name, tomli_w.dumps(tomllib.loads(BODY_0_2_3) | {"sha256": sha})
                            ).upload_asset(str(wheel))
    repo.create_git_release("v1", "v1", "notes").upload_asset(str(wheel))  # not a distribution filename
    repo.create_git_release("oldpkg-0.2-py3-none-any.whl", "draft", "", draft=True).upload_asset(str(wheel))
    repo.create_git_release("oldpkg-0.3-py3-none-any.whl", "no asset", "")
    backend = adapter(gh, tmp_path)
    blobs = list(backend.list_blobs())
    assert [(b.key, b.size) for b in blobs] == [("v1", wheel.stat().st_size), (wheel.name, wheel.stat().st_size)]
    created = gh.assets(OWNER, REPO_NAME, wheel.name)[0]["created_at"]
    assert blobs[1].modified is not None and blobs[1].modified.strftime("%Y-%m-%dT%H:%M:%SZ") == created

    sidecar = backend.read_document(f".pywharf/{wheel.name}.toml")
    assert sidecar is not None and tomllib.loads(sidecar.data.decode())["summary"] == "An old package"
    [record] = PackageStore(backend).list_files()
    assert (record.filename, record.distrib, record.version, record.sha256, record.size) == (
        wheel.name, "oldpkg", "0.1", sha, wheel.stat().st_size)
    assert record.requires_python == ">=3.7" and record.meta["summary"] == "An old package"
    assert record.upload_time == blobs[1].modified.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert ":action" not in record.meta and "description" not in record.meta and "sha256" not in record.meta
    body = next(r for r in gh.releases(OWNER, REPO_NAME) if r["tag_name"] == wheel.name)["body"]
    upgraded = tomllib.loads(body)
    assert body.startswith(BODY_HEADER) and upgraded["size"] == record.size and upgraded["asset"] == wheel.name
    assert upgraded["distrib"] == "oldpkg" and upgraded["metadata_sha256"] == record.metadata_sha256 != ""
    assert backend.blob_sha256(f".pywharf/{wheel.name}.metadata") == record.metadata_sha256

    repo.get_release(wheel.name).update_release(wheel.name, tomli_w.dumps({"sha256": "aa" * 32}))
    assert backend.blob_sha256(wheel.name) == sha  # GitHub's digest, not the body's claim
    assert backend.blob_sha256("oldpkg-0.3-py3-none-any.whl") is None
    assert not backend.has_blob("oldpkg-0.2-py3-none-any.whl")


def test_the_sidecar_is_the_release_body_with_compare_and_swap(gh: GitHubStandIn, tmp_path: Path):
    """put_blob is create-only (a release and its asset); the body is a document whose version is
    its hash: written only over the version read (a web edit in between is a conflict), with the
    asset's name and ``distrib`` added for 0.2.3's tools and ``description`` dropped when the body
    would be too long for GitHub. Deleting undoes each part."""
    backend = adapter(gh, tmp_path)
    wheel = build_wheel(DistSpec("cas", "1.0"), tmp_path / "dist")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    key, sidecar, metadata = wheel.name, f".pywharf/{wheel.name}.toml", f".pywharf/{wheel.name}.metadata"
    assert backend.put_blob(key, wheel, wheel.stat().st_size, sha) is True
    assert backend.put_blob(key, wheel, wheel.stat().st_size, sha) is False
    assert backend.read_document(sidecar) is None and backend.document_version(sidecar) is None  # header only

    first = backend.write_document(sidecar, tomli_w.dumps({"sha256": sha, "yanked": False}).encode(), None)
    body = gh.releases(OWNER, REPO_NAME)[0]["body"]
    assert body.startswith(BODY_HEADER) and body_version(body) == first
    assert tomllib.loads(body) == {"sha256": sha, "yanked": False, "distrib": "cas", "asset": wheel.name}
    with pytest.raises(VersionConflict):
        backend.write_document(sidecar, b"yanked = true\n", None)
    second = backend.write_document(sidecar, tomli_w.dumps({"description": "y" * BODY_LIMIT}).encode(), first)
    assert "description" not in tomllib.loads(gh.releases(OWNER, REPO_NAME)[0]["body"])
    with pytest.raises(VersionConflict):
        backend.write_document(sidecar, b"yanked = true\n", first)
    admin_repo(gh).get_release(wheel.name).update_release(wheel.name, body.replace("\n", "\r\n"))  # web UI
    edited = backend.read_document(sidecar)
    assert edited is not None and edited.version != second and parse_body(edited.data.decode())["sha256"] == sha
    with pytest.raises(VersionConflict):
        backend.write_document(sidecar, b"yanked = true\n", second)

    core = b"Metadata-Version: 2.1\nName: cas\nVersion: 1.0\n"
    (tmp_path / "METADATA").write_bytes(core)
    assert backend.put_blob(metadata, tmp_path / "METADATA", len(core), hashlib.sha256(core).hexdigest()) is True
    assert backend.put_blob(metadata, tmp_path / "METADATA", len(core), hashlib.sha256(core).hexdigest()) is False
    with contextlib.closing(backend.open_blob(metadata)) as source:  # type: ignore[arg-type]
        assert source.read() == core
    with contextlib.closing(backend.open_blob(key)) as source:  # type: ignore[arg-type]
        assert source.read() == wheel.read_bytes()
    backend.delete(sidecar)
    assert backend.read_document(sidecar) is None
    backend.delete(metadata)
    assert not backend.has_blob(metadata) and backend.has_blob(key)
    backend.delete(key)
    assert not backend.has_blob(key) and gh.releases(OWNER, REPO_NAME) == []
    backend.delete(key)  # absent: no error


def test_other_documents_are_files_on_the_branch_with_compare_and_swap(gh: GitHubStandIn, tmp_path: Path):
    """Index log entries, identity claims and the index are files on ``branch`` (created from the
    default branch when missing), beside ``index_filename``; their version is the blob sha.
    Create-only and compare-and-swap hold (GitHub's 422 / 409), one commit per write and none when
    the bytes are already there - also when GitHub applied a PUT and answered 503 (the client's
    retry meets our own commit: success, not a conflict) or when the branch moved under a write to
    another file (409: tried again)."""
    backend = adapter(gh, tmp_path, branch="pkg-index", index_filename="pkgs/index.toml")
    entry = ".pywharf/log/000000000001.json"
    first = backend.write_document(entry, b'{"a": 1}\n', None)
    assert first == git_blob_sha(b'{"a": 1}\n')
    assert gh.file_content(OWNER, REPO_NAME, f"pkgs/{entry}", "pkg-index") == b'{"a": 1}\n'
    with pytest.raises(VersionConflict):
        backend.write_document(entry, b"other", None)
    second = backend.write_document(entry, b"second", first)
    with pytest.raises(VersionConflict):
        backend.write_document(entry, b"third", first)
    head = gh.branch_sha(OWNER, REPO_NAME, "pkg-index")
    assert backend.write_document(entry, b"second", second) == second and gh.branch_sha(
        OWNER, REPO_NAME, "pkg-index") == head  # no empty commit

    gh.add_fault("PUT", r"/contents/pkgs/index\.toml$", 503, apply_first=True)
    index = backend.write_document("index.toml", b"format = 2\n", None)
    assert backend.document_version("index.toml") == index
    gh.add_fault("PUT", r"/contents/pkgs/\.pywharf/identity/x\.txt$", 409)  # the branch head moved
    backend.write_document(".pywharf/identity/x.txt", b"demo-1.0.tar.gz", None)
    with pytest.raises(VersionConflict):  # the same bytes, but not written by this call: not "created"
        backend.write_document(".pywharf/identity/x.txt", b"demo-1.0.tar.gz", None)
    messages = [message for _, message in gh.history(OWNER, REPO_NAME, "pkg-index")]
    assert messages[:5] == ["pywharf: .pywharf/identity/x.txt", "pywharf update_index",
                            f"pywharf: {entry}", f"pywharf: {entry}", "Initial commit"]
    document = backend.read_document(entry)
    assert document is not None and (document.data, document.version) == (b"second", second)
    backend.delete(entry)
    assert backend.read_document(entry) is None and backend.document_version(entry) is None
    backend.delete(entry)
    assert backend.describe("index.toml") == "pkgs/index.toml on alice/pkgs@pkg-index"


def test_upload_install_auth_and_conflicts(gh: GitHubStandIn, server_factory, env: dict[str, str],
                                          tmp_path: Path):
    """twine uploads with a push token: the file becomes a release asset; pip installs through a
    302 to GitHub's signed storage URL; a byte-identical re-upload is 200 and a different file
    under the same name 409; a pull token reads but cannot upload (403), a token without access
    (or GitHub refuses) is 401; and a verified token costs one GitHub call per auth window."""
    server = start(server_factory, gh, "--debug")  # debug logs too must not show tokens
    wheel = build_wheel(DistSpec("demo", "1.0", module_body="VALUE = 'demo 1.0'\n"), tmp_path / "dist")
    twine(server, wheel, env)
    assert gh.asset_bytes(OWNER, REPO_NAME, wheel.name, wheel.name) == wheel.read_bytes()
    release = gh.releases(OWNER, REPO_NAME)[0]
    assert release["tag_name"] == release["name"] == wheel.name
    body = tomllib.loads(release["body"])
    assert body["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest() and body["asset"] == wheel.name
    # The body is written once the asset is there: its PATCH fires `release: edited` for the workflow.
    writes = [(r.method, r.path) for r in gh.requests if r.method in ("POST", "PATCH") and "/releases" in r.path]
    assert [method for method, _ in writes] == ["POST", "POST", "POST", "PATCH"], writes  # release, wheel, .metadata

    download = requests.get(f"{server.base}/simple/demo/{wheel.name}", auth=(NAME, READER), allow_redirects=False,
                            timeout=10)
    assert download.status_code == 302 and download.headers["location"].startswith(f"{gh.base_url}/api/_storage/")
    before = len(gh.requests)  # the asset lookup and the short-lived signed URL are cached
    again = requests.get(f"{server.base}/simple/demo/{wheel.name}", auth=(NAME, READER), allow_redirects=False,
                         timeout=10)
    assert again.headers["location"] == download.headers["location"] and len(gh.requests) == before
    assert requests.get(again.headers["location"], timeout=10).content == wheel.read_bytes()
    metadata = requests.get(f"{server.base}/simple/demo/{wheel.name}.metadata", auth=(NAME, READER), timeout=10)
    assert metadata.status_code == 200 and b"Name: demo" in metadata.content
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(tmp_path / "t"), "--index-url",
         server.index_url(NAME, READER), "demo==1.0"], env, timeout=120)
    assert "demo 1.0" in (tmp_path / "t" / "demo" / "__init__.py").read_text()

    again = twine(server, wheel, env)  # CI retries are safe
    assert again.returncode == 0
    other = build_wheel(DistSpec("demo", "1.0"), tmp_path / "other", extra_bytes=b"different")
    conflict = twine(server, other, env, check=False)
    assert conflict.returncode != 0 and "409" in conflict.stdout + conflict.stderr
    assert [a["name"] for a in dist_assets(gh, wheel.name)] == [wheel.name]
    assert gh.asset_bytes(OWNER, REPO_NAME, wheel.name, wheel.name) == wheel.read_bytes()
    assert len(gh.releases(OWNER, REPO_NAME)) == 1

    newer = build_wheel(DistSpec("demo", "1.1"), tmp_path / "newer")
    assert upload(server, newer, READER).status_code == 403
    assert upload(server, newer, STRANGER).status_code == 401
    assert upload(server, newer, "ghp_not_a_token").status_code == 401
    assert requests.get(f"{server.base}/simple/", auth=(NAME, STRANGER), timeout=10).status_code == 401

    # Auth verdicts are cached per token: N requests cost one GET /repos/{owner}/{repo}.
    fresh = "ghp_fresh_reader_0123456789"
    gh.add_token(fresh, "rita")
    before = len(gh.requests)
    for _ in range(5):
        assert requests.get(f"{server.base}/simple/demo/", auth=(NAME, fresh), timeout=10).status_code == 200
    calls = [r for r in gh.requests[before:] if r.headers.get("authorization") == f"token {fresh}"]
    assert [(r.method, r.path) for r in calls] == [("GET", f"/api/v3/repos/{OWNER}/{REPO_NAME}")]
    assert_no_tokens(server.log())


@pytest.fixture
def plus_gh() -> Iterator[GitHubStandIn]:
    """A stand-in that renames even ``%2B`` to ``.`` in asset names (reported GitHub behaviour)."""
    with GitHubStandIn.start(validate=True, plus_to_dot=True) as standin:
        prepare(standin)
        yield standin
        assert standin.internal_errors == [] and standin.schema_violations == []


def test_local_version_filename_round_trips_through_githubs_renaming(plus_gh: GitHubStandIn, server_factory,
                                                                     env: dict[str, str], tmp_path: Path):
    """GitHub stores ``demo-1.0+local-...`` as ``demo-1.0.local-...``: the index, the page and the
    download still use the real filename, before and after update_index, and uv installs it."""
    gh = plus_gh
    server = start(server_factory, gh)
    wheel = build_wheel(DistSpec("demo", "1.0+local", module_body="VALUE = 'local'\n"), tmp_path / "dist")
    assert upload(server, wheel).status_code == 200
    stored = [a["name"] for a in gh.assets(OWNER, REPO_NAME, wheel.name)]
    assert sorted(stored) == ["demo-1.0.local-py3-none-any.whl", "demo-1.0.local-py3-none-any.whl.metadata"]
    assert files_on(server, "demo") == [wheel.name]
    update_index(gh, env, tmp_path)
    assert wheel.name in tomllib.loads(gh.file_content(OWNER, REPO_NAME, "index.toml", "master").decode())["files"]
    second = start(server_factory, gh, root_name="second")
    wait_for(lambda: files_on(second, "demo") == [wheel.name], 10, second.log)
    run([tool("uv"), "pip", "install", "--no-deps", "--target", str(tmp_path / "t"), "--index-url",
         second.index_url(NAME, READER), "demo==1.0+local"], env, timeout=120)
    assert "local" in (tmp_path / "t" / "demo" / "__init__.py").read_text()


def test_max_file_bytes_is_enforced_before_github_is_asked(gh: GitHubStandIn, server_factory, tmp_path: Path):
    server = start(server_factory, gh, max_file_bytes=600)
    wheel = build_wheel(DistSpec("big", "1.0"), tmp_path / "dist", extra_bytes=b"x" * 2000)
    assert upload(server, wheel).status_code == 413
    assert gh.releases(OWNER, REPO_NAME) == [] and gh.request_count("POST") == 0


def test_listing_follows_pagination(gh: GitHubStandIn, tmp_path: Path):
    """update_index must see every release, not the first page: 5 releases at 2 per page."""
    admin = Github(auth=Auth.Token(ADMIN), base_url=gh.api_url, seconds_between_requests=0,
                   seconds_between_writes=0).get_repo(f"{OWNER}/{REPO_NAME}")
    for i in range(5):
        wheel = build_wheel(DistSpec("paged", f"1.{i}"), tmp_path / "dist")
        admin.create_git_release(wheel.name, wheel.name, "").upload_asset(str(wheel))
    backend = adapter(gh, tmp_path)
    backend.policy = dataclasses.replace(backend.policy, per_page=2)
    backend.use_token(ADMIN)
    names = sorted(f"paged-1.{i}-py3-none-any.whl" for i in range(5))
    assert sorted(blob.key for blob in backend.list_blobs()) == names
    assert gh.request_count("GET", r"/releases$") == 3  # pages 1-3 (PyGithub follows the Link header)


def test_an_index_over_1_mb_is_read_through_the_blob_api(gh: GitHubStandIn, tmp_path: Path):
    """GitHub's contents API sends no content for files over 1 MB; big repositories have such an index."""
    from pywharf_core.index.formats import dump_index, parse_index
    from pywharf_core.model.records import FileRecord

    records = [FileRecord(filename=f"big_{i}-1.0-py3-none-any.whl", distrib=f"big-{i}", version="1.0",
                          sha256=f"{i:064x}", size=i, upload_time="2026-01-01T00:00:00.000000Z",
                          meta={"summary": "x" * 200}) for i in range(4000)]
    data = dump_index(records)
    assert len(data) > 1 << 20
    backend = PackageStore(adapter(gh, tmp_path))
    backend.publish_remote_index(data)
    remote = backend.fetch_remote_index(None)
    assert remote is not None and remote.data == data and len(parse_index(remote.data)) == 4000
    assert gh.request_count("GET", r"/git/blobs/[0-9a-f]+$") == 1
    assert backend.fetch_remote_index(remote.token) is None  # 304


def test_revoked_token_is_refused_after_the_cache_window(gh: GitHubStandIn, server_factory, tmp_path: Path):
    server = start(server_factory, gh, "--auth_write_expires", "1", "--auth_read_expires", "1")
    wheel = build_wheel(DistSpec("revoked", "1.0"), tmp_path / "dist")
    assert upload(server, wheel).status_code == 200
    gh.revoke_token(WRITER)
    time.sleep(1.3)
    assert upload(server, build_wheel(DistSpec("revoked", "1.1"), tmp_path / "d2")).status_code == 401
    assert requests.get(f"{server.base}/simple/", auth=(NAME, WRITER), timeout=10).status_code == 401


def test_update_index_then_another_server_syncs_with_304s(gh: GitHubStandIn, server_factory,
                                                         env: dict[str, str], tmp_path: Path):
    """Uploads and yanks reach another server at its next sync (the index log), before any
    update_index; update_index lists every release (paginated) and commits index.toml in one
    commit, which the other server then syncs; unchanged polls are conditional GETs answered 304."""
    server = start(server_factory, gh)
    wheels = [build_wheel(DistSpec("many", f"1.{i}"), tmp_path / "dist") for i in range(3)]
    for wheel in wheels:
        assert upload(server, wheel).status_code == 200
    # A release that is not a package file, and a draft: both ignored.
    admin = Github(auth=Auth.Token(ADMIN), base_url=gh.api_url, seconds_between_requests=0,
                   seconds_between_writes=0).get_repo(f"{OWNER}/{REPO_NAME}")
    admin.create_git_release("v1", "v1", "notes")
    admin.create_git_release("many-9.0-py3-none-any.whl", "draft", "", draft=True)
    yanked = requests.post(f"{server.base}/yank/many/{wheels[0].name}", data={"reason": "broken"},
                           auth=(NAME, WRITER), timeout=10)
    assert yanked.status_code == 200, yanked.text
    second = start(server_factory, gh, root_name="second")
    wait_for(lambda: sorted(files_on(second, "many")) == sorted(w.name for w in wheels), 10, second.log)
    assert gh.file_content(OWNER, REPO_NAME, "index.toml", "master") is None  # from the log alone
    commits_before = gh.branch_sha(OWNER, REPO_NAME, "master")
    # Faults on the way: a rate limit (Retry-After: 1) while listing releases, and a 503 after
    # the commit was applied (the client retries the PUT and gets 422: we must see our commit).
    gh.add_fault("GET", r"/repos/alice/pkgs/releases$", 403, headers={"Retry-After": "1"})
    gh.add_fault("PUT", r"/contents/index\.toml$", 503, apply_first=True)
    result = update_index(gh, env, tmp_path)
    assert "wrote an index of 3 files" in result.stdout
    assert gh.request_count("PUT", r"/contents/index\.toml$") == 2
    assert gh.branch_sha(OWNER, REPO_NAME, "master") != commits_before
    index = tomllib.loads(gh.file_content(OWNER, REPO_NAME, "index.toml", "master").decode())
    assert sorted(index["files"]) == sorted(w.name for w in wheels)
    assert index["files"][wheels[0].name]["metadata_sha256"]
    assert index["files"][wheels[0].name]["yanked_reason"] == "broken"  # kept in the release body
    unchanged = gh.branch_sha(OWNER, REPO_NAME, "master")
    update_index(gh, env, tmp_path)  # nothing changed: no commit
    assert gh.branch_sha(OWNER, REPO_NAME, "master") == unchanged

    def polls() -> list[int]:
        return [r.status for r in gh.requests if r.path.endswith("/contents/index.toml") and r.method == "GET"]

    wait_for(lambda: polls()[-3:] == [304, 304, 304], 10, lambda: f"unchanged polls were not 304s: {polls()}")
    page = requests.get(f"{second.base}/simple/many/", auth=(NAME, READER), timeout=10,
                        headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
    assert [f["yanked"] for f in page["files"]] == ["broken", False, False]
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(tmp_path / "t"), "--index-url",
         second.index_url(NAME, READER), "many"], env, timeout=120)
    assert (tmp_path / "t" / "many-1.2.dist-info").is_dir()
    assert_no_tokens(server.log(), second.log(), result.stdout, result.stderr)


def test_repository_made_by_pywharf_0_2_3_is_served(gh: GitHubStandIn, server_factory, env: dict[str, str],
                                                    tmp_path: Path):
    """Releases with 0.2.3 bodies and a legacy ``[[pkgs]]`` index.toml: served as they are, and
    update_index rewrites the index in the current format without losing anything."""
    wheel = build_wheel(DistSpec("oldpkg", "0.1", module_body="VALUE = 'old'\n"), tmp_path / "dist")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    body = tomllib.loads(BODY_0_2_3) | {"sha256": sha}
    admin = Github(auth=Auth.Token(ADMIN), base_url=gh.api_url, seconds_between_requests=0,
                   seconds_between_writes=0).get_repo(f"{OWNER}/{REPO_NAME}")
    release = admin.create_git_release(wheel.name, wheel.name, tomli_w.dumps(body))
    release.upload_asset(str(wheel))
    legacy = ('mtime = 1584379892\n\n[[pkgs]]\ntype = "github"\ndistrib = "oldpkg"\n'
              f'package = "oldpkg-0.1-py3-none-any"\next = ".whl"\nsha256 = "{sha}"\n\n'
              '[pkgs.meta]\nname = "oldpkg"\nversion = "0.1"\nrequires_python = ">=3.7"\n')
    gh.set_file(OWNER, REPO_NAME, "index.toml", "master", legacy.encode())
    server = start(server_factory, gh, download="stream")  # and: the server relays the bytes itself
    wait_for(lambda: files_on(server, "oldpkg") == [wheel.name], 10, server.log)
    relayed = requests.get(f"{server.base}/simple/oldpkg/{wheel.name}", auth=(NAME, READER), allow_redirects=False,
                           timeout=10)
    assert relayed.status_code == 200 and relayed.content == wheel.read_bytes()
    assert requests.get(f"{server.base}/simple/oldpkg/{wheel.name}.metadata", auth=(NAME, READER),
                        timeout=10).status_code == 404  # 0.2.3 kept no metadata file
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(tmp_path / "t"), "--index-url",
         server.index_url(NAME, READER), "oldpkg"], env, timeout=120)
    update_index(gh, env, tmp_path)
    index = tomllib.loads(gh.file_content(OWNER, REPO_NAME, "index.toml", "master").decode())
    assert index["format"] == 2 and index["files"][wheel.name]["sha256"] == sha
    assert index["files"][wheel.name]["requires_python"] == ">=3.7"


def test_upload_faults_leave_no_orphans(gh: GitHubStandIn, server_factory, tmp_path: Path):
    """GitHub failing during an upload: PyGithub's retried release POST, a 502 after the asset was
    stored (retry would get 422 already_exists), starter assets (left by an earlier failed upload,
    or by this one), a persistent failure (clear 503, nothing left behind), and rate limits within /
    beyond the cap."""
    server = start(server_factory, gh)
    uploads = r"^/api/uploads/repos/alice/pkgs/releases/\d+/assets$"

    # 502 on the release POST twice: retried with backoff, then it works.
    gh.add_fault("POST", r"/repos/alice/pkgs/releases$", 502, times=2)
    first = build_wheel(DistSpec("faulty", "1.0"), tmp_path / "d1")
    assert upload(server, first).status_code == 200

    # 502 after the dist asset was stored: we find our bytes there, no duplicate, no error.
    gh.add_fault("POST", uploads, 502, apply_first=True)  # hits the metadata asset
    gh.add_fault("POST", uploads, 502, apply_first=True)  # and the distribution
    second = build_wheel(DistSpec("faulty", "1.1"), tmp_path / "d2")
    assert upload(server, second).status_code == 200
    assert len(gh.assets(OWNER, REPO_NAME, second.name)) == 2

    # A starter asset left by an earlier upload that died half-way (here PyGithub's: GitHub kept part
    # of the bytes, answered 502, and the retry met the leftover's name: 422) is removed; and so is
    # the one this upload's first attempt leaves (on the metadata file): then the upload is made.
    third = build_wheel(DistSpec("faulty", "1.2"), tmp_path / "d3")
    admin = Github(auth=Auth.Token(ADMIN), base_url=gh.api_url, seconds_between_requests=0,
                   seconds_between_writes=0).get_repo(f"{OWNER}/{REPO_NAME}")
    stale = admin.create_git_release(third.name, third.name, "")
    gh.add_fault("POST", uploads, starter=True)
    with pytest.raises(GithubException):
        stale.upload_asset(str(third))
    assert [(a["name"], a["state"]) for a in gh.assets(OWNER, REPO_NAME, third.name)] == [(third.name, "open")]
    gh.add_fault("POST", uploads, starter=True)
    assert upload(server, third).status_code == 200
    assets = gh.assets(OWNER, REPO_NAME, third.name)
    assert sorted((a["name"], a["state"]) for a in assets) == [(third.name, "uploaded"),
                                                                 (f"{third.name}.metadata", "uploaded")]
    assert gh.asset_bytes(OWNER, REPO_NAME, third.name, third.name) == third.read_bytes()

    # Persistent failure: a clear 503, and the release this attempt created is gone again.
    gh.add_fault("POST", uploads, 502, times=50)
    fourth = build_wheel(DistSpec("faulty", "1.3"), tmp_path / "d4")
    failed = upload(server, fourth)
    assert failed.status_code == 503 and "GitHub" in failed.text
    gh.clear_faults()
    assert fourth.name not in [r["tag_name"] for r in gh.releases(OWNER, REPO_NAME)]

    # Rate limited within the cap (Retry-After: 1): honoured; beyond it (100 s > 3 s): fails fast.
    gh.add_fault("POST", r"/repos/alice/pkgs/releases$", 403, headers={"Retry-After": "1"})
    started = time.monotonic()
    assert upload(server, fourth).status_code == 200
    assert time.monotonic() - started >= 1
    gh.add_fault("POST", r"/repos/alice/pkgs/releases$", 403, headers={"Retry-After": "100"})
    started = time.monotonic()
    limited = upload(server, build_wheel(DistSpec("faulty", "1.4"), tmp_path / "d5"))
    assert limited.status_code == 503 and "rate limit" in limited.text and time.monotonic() - started < 10
    assert files_on(server, "faulty") == [first.name, second.name, third.name, fourth.name]
    # The auth check rides out 5xx too (a new token: nothing cached).
    gh.add_token("ghp_late_reader_0123456789", "rita")
    gh.add_fault("GET", r"^/api/v3/repos/alice/pkgs$", 502, times=2)
    assert requests.get(f"{server.base}/simple/", auth=(NAME, "ghp_late_reader_0123456789"),
                        timeout=30).status_code == 200
    assert_no_tokens(server.log())


def test_failed_sync_keeps_the_last_good_index(gh: GitHubStandIn, server_factory, env: dict[str, str],
                                               tmp_path: Path):
    server = start(server_factory, gh)
    wheel = build_wheel(DistSpec("steady", "1.0"), tmp_path / "dist")
    assert upload(server, wheel).status_code == 200
    update_index(gh, env, tmp_path)
    reader = start(server_factory, gh, root_name="reader")
    wait_for(lambda: files_on(reader, "steady") == [wheel.name], 10, reader.log)
    gh.add_fault("GET", r"/contents/index\.toml$", 502, times=1000)
    wait_for(lambda: "GitHub answered 502" in reader.log(), 20, reader.log)  # after its bounded retries
    assert files_on(reader, "steady") == [wheel.name]
    gh.clear_faults()
    gh.set_file(OWNER, REPO_NAME, "index.toml", "master", b"this is [not toml")
    wait_for(lambda: "corrupt" in reader.log(), 20, reader.log)
    assert files_on(reader, "steady") == [wheel.name]
    log = reader.log()
    assert "index sync failed, serving the last good index" in log
    assert_no_tokens(log)


def test_timeouts_during_upload_update_index_and_sync(gh: GitHubStandIn, server_factory, env: dict[str, str],
                                                       tmp_path: Path):
    """GitHub answering later than the backend's ``timeout`` (1 s here), the failure a fault
    returning at once cannot show: the request may have been applied all the same. Four
    scenarios (upload, update_index twice, server sync), each on its own repository and run at
    the same time: they mostly wait, and one after the other they would add 40 s to this file."""
    for repo in ("idx-late", "idx", "synced"):
        gh.create_repo(OWNER, repo, private=True)
        gh.grant(OWNER, repo, "rita", "pull")
    with ThreadPoolExecutor(4) as pool:
        scenarios = [pool.submit(_upload_timeouts, gh, server_factory, tmp_path),
                     pool.submit(_update_index_late_commit, gh, env, tmp_path),
                     pool.submit(_update_index_slow_listing, gh, env, tmp_path),
                     pool.submit(_sync_timeouts, gh, server_factory, tmp_path)]
        for scenario in scenarios:
            scenario.result()


def _upload_timeouts(gh: GitHubStandIn, server_factory, tmp_path: Path) -> None:
    """An upload GitHub stored but answered too late is found, not repeated (no duplicate asset);
    one GitHub never answers in time ends in a clear 503 after three attempts, leaving nothing."""
    server = start(server_factory, gh, root_name="slow-upload", timeout=1)
    uploads = r"^/api/uploads/repos/alice/pkgs/releases/\d+/assets$"
    gh.add_fault("POST", uploads, delay=3, apply_first=True, times=2)  # metadata file, then the wheel
    first = build_wheel(DistSpec("slow", "1.0"), tmp_path / "slow1")
    assert upload(server, first).status_code == 200
    assert sorted((a["name"], a["state"]) for a in gh.assets(OWNER, REPO_NAME, first.name)) == [
        (first.name, "uploaded"), (f"{first.name}.metadata", "uploaded")]

    never = gh.add_fault("POST", uploads, delay=3, times=3)
    second = build_wheel(DistSpec("slow", "1.1"), tmp_path / "slow2")
    failed = upload(server, second)
    assert failed.status_code == 503, failed.text
    assert "failed after 3 attempts: GitHub timed out on POST" in failed.text and "(timeout is 1s)" in failed.text
    assert never.hits == 3
    # The stand-in sees each abandoned attempt out and stores nothing: 499 (the client had hung up
    # before the body was read) or 404 (the release was already cleaned up by then).

    def abandoned() -> list[int]:
        return [r.status for r in gh.requests if r.method == "POST" and re.search(uploads, r.path) and r.delay][2:]

    wait_for(lambda: len(abandoned()) == 3, 10, lambda: f"abandoned uploads seen out: {abandoned()}")
    assert set(abandoned()) <= {499, 404}, abandoned()
    assert second.name not in [r["tag_name"] for r in gh.releases(OWNER, REPO_NAME)]
    assert upload(server, second).status_code == 200  # GitHub is back: one release, two assets
    assert len(gh.assets(OWNER, REPO_NAME, second.name)) == 2
    assert [r["tag_name"] for r in gh.releases(OWNER, REPO_NAME)] == [first.name, second.name]
    assert files_on(server, "slow") == [first.name, second.name]
    assert_no_tokens(server.log())


def _update_index_late_commit(gh: GitHubStandIn, env: dict[str, str], tmp_path: Path) -> None:
    """update_index: a commit GitHub applied but answered too late makes exactly one commit (the
    retried PUT meets the file, and the blob sha check sees our bytes there)."""
    admin = Github(auth=Auth.Token(ADMIN), base_url=gh.api_url, seconds_between_requests=0,
                   seconds_between_writes=0).get_repo(f"{OWNER}/idx-late")
    wheel = build_wheel(DistSpec("late", "1.0"), tmp_path / "late-dist")
    admin.create_git_release(wheel.name, wheel.name, "").upload_asset(str(wheel))
    cwd = tmp_path / "late-cwd"
    cwd.mkdir()
    head = gh.branch_sha(OWNER, "idx-late")
    gh.add_fault("PUT", r"/repos/alice/idx-late/contents/index\.toml$", delay=3, apply_first=True)
    done = update_index(gh, env, cwd, "--timeout", "1", repo="idx-late")
    assert "wrote an index of 1 files" in done.stdout
    history = gh.history(OWNER, "idx-late")
    assert [message for _, message in history] == ["pywharf update_index", "Initial commit"] and history[1][0] == head
    assert list(tomllib.loads(gh.file_content(OWNER, "idx-late", "index.toml").decode())["files"]) == [wheel.name]

    def puts() -> list[int]:
        return sorted(r.status for r in gh.requests if r.method == "PUT" and "/repos/alice/idx-late/" in r.path)

    # The late answer (201, logged once the stand-in has seen it out) and PyGithub's retry of the
    # PUT, which found the file already there (422).
    wait_for(lambda: puts() == [201, 422], 5, lambda: f"PUT answers: {puts()}")
    assert_no_tokens(done.stdout, done.stderr)


def _update_index_slow_listing(gh: GitHubStandIn, env: dict[str, str], tmp_path: Path) -> None:
    """update_index: a listing page that never comes in time ends the run with a clear error after
    bounded retries, and nothing is committed - not even an index of the page that did arrive."""
    from pywharf_core.index.formats import dump_index

    admin = Github(auth=Auth.Token(ADMIN), base_url=gh.api_url, seconds_between_requests=0,
                   seconds_between_writes=0).get_repo(f"{OWNER}/idx")
    for i in range(100):  # with the package release: two pages of releases (100 a page)
        admin.create_git_release(f"v0.{i}", f"v0.{i}", "")
    wheel = build_wheel(DistSpec("paged", "1.0"), tmp_path / "idx-dist")
    admin.create_git_release(wheel.name, wheel.name, "").upload_asset(str(wheel))  # newest: on page 1
    gh.set_file(OWNER, "idx", "index.toml", "master", dump_index([]))  # the last good index
    committed = gh.branch_sha(OWNER, "idx")
    cwd = tmp_path / "idx-cwd"
    cwd.mkdir()
    page_two = gh.add_fault("GET", rf"^/api/v3/repositories/{admin.id}/releases$", delay=3, times=100)
    failed = update_index(gh, env, cwd, "--timeout", "1", repo="idx", check=False)
    gh.remove_fault(page_two)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert ("pywharf update_index: error: GitHub timed out on listing the releases of alice/idx (timeout is 1s)"
            in failed.stderr)
    assert page_two.hits == 5  # the first try and 4 retries (with backoff), then the error
    assert gh.branch_sha(OWNER, "idx") == committed
    assert tomllib.loads(gh.file_content(OWNER, "idx", "index.toml").decode())["files"] == {}
    assert_no_tokens(failed.stdout, failed.stderr)


def _sync_timeouts(gh: GitHubStandIn, server_factory, tmp_path: Path) -> None:
    """Index polls that time out: the last good index keeps being served (and served at once: the
    poll runs beside the requests), the error is logged once however many polls fail, and the
    server picks up the next index when GitHub answers again."""
    from pywharf_core.index.formats import dump_index
    from pywharf_core.model.records import FileRecord

    records = [FileRecord(filename=f"steady-1.{i}-py3-none-any.whl", distrib="steady", version=f"1.{i}",
                          sha256=f"{i:064x}", size=10, upload_time="2026-01-01T00:00:00.000000Z") for i in range(2)]
    gh.set_file(OWNER, "synced", "index.toml", "master", dump_index(records[:1]))
    reader = start(server_factory, gh, root_name="slow-sync", repo="synced", timeout=1)
    wait_for(lambda: files_on(reader, "steady") == [records[0].filename], 10, reader.log)
    slow = gh.add_fault("GET", r"^/api/v3/repos/alice/synced/contents/index\.toml$", delay=3, times=1000)
    wait_for(lambda: "index sync failed" in reader.log(), 10, reader.log)
    started = time.monotonic()
    assert files_on(reader, "steady") == [records[0].filename]
    assert time.monotonic() - started < 1
    polls = slow.hits
    wait_for(lambda: slow.hits >= polls + 4, 15, lambda: f"no further polls: {slow.hits}")  # 2 polls, 2 tries each
    log = reader.log()
    assert log.count("index sync failed") == 1, log
    assert "GitHub timed out on GET" in log and "/repos/alice/synced/contents/index.toml (timeout is 1s)" in log
    ready = requests.get(f"{reader.base}/readyz", auth=(NAME, ADMIN), timeout=10)  # details: admins only
    assert ready.status_code == 200, ready.text  # it serves: the last good index...
    assert ready.json()["ready"] is True
    assert "serving the last good index; sync failing" in ready.json()["warnings"][0]  # ...and says so
    gh.remove_fault(slow)
    gh.set_file(OWNER, "synced", "index.toml", "master", dump_index(records))
    wait_for(lambda: files_on(reader, "steady") == [r.filename for r in records], 10, reader.log)
    assert reader.log().count("index sync failed") == 1
    assert_no_tokens(reader.log())


def test_init_pkg_repo_creates_a_working_package_repository(gh: GitHubStandIn, server_factory,
                                                           env: dict[str, str], tmp_path: Path):
    """init_pkg_repo makes the repository, an empty index and the update_index workflow, prints a
    config that a server then runs with, and is safe to run again."""
    command = [tool("pywharf"), "github.init_pkg_repo", "--name", NAME, "--owner", OWNER, "--repo", "fresh",
               "--token_env", "GH_ADMIN_TOKEN", "--api_base_url", gh.api_url, "--pywharf_version", "0.3.0"]
    env = {**env, "GH_ADMIN_TOKEN": ADMIN}
    made = run(command, env, timeout=60)
    assert "repository created" in made.stdout
    workflow = gh.file_content(OWNER, "fresh", ".github/workflows/pywharf-update-index.yml")
    assert workflow is not None and b"pywharf update_index github 'gh' --owner 'alice' --repo 'fresh'" in workflow
    assert_actionlint_clean(workflow.decode(), tmp_path)
    assert tomllib.loads(gh.file_content(OWNER, "fresh", "index.toml", "master").decode()) == {
        "format": 2, "files": {}}
    heads = (gh.branch_sha(OWNER, "fresh"), gh.branch_sha(OWNER, "fresh", "master"))
    again = run(command, env, timeout=60)
    assert "repository reused, workflow unchanged" in again.stdout and "kept (already there)" in again.stdout
    assert (gh.branch_sha(OWNER, "fresh"), gh.branch_sha(OWNER, "fresh", "master")) == heads
    printed = made.stdout.split("# config.toml (--config)\n", 1)[1].split("\n# admin_secret.toml", 1)[0]
    config = tomllib.loads(printed)
    assert config[NAME] == {"type": "github", "owner": OWNER, "repo": "fresh", "api_base_url": gh.api_url}
    assert_no_tokens(made.stdout, made.stderr)
    server = server_factory(printed + "sync_index_interval = 1\n", "--extra_index_url=",
                            admin_text=f'[{NAME}]\ntype = "github"\nenv = "GH_ADMIN_TOKEN"\n', env=env)
    wheel = build_wheel(DistSpec("fresh-pkg", "1.0"), tmp_path / "dist")
    assert upload(server, wheel, ADMIN).status_code == 200
    assert files_on(server, "fresh-pkg", ADMIN) == [wheel.name]


def test_init_pkg_repo_for_an_organisation(gh: GitHubStandIn, env: dict[str, str], tmp_path: Path):
    """An organisation owner's token: the repository is made in the organisation (POST
    /orgs/{org}/repos, not the token user's account) and set up as for a user; running it again
    is safe; someone outside the organisation gets GitHub's refusal as a one-line error."""
    gh.add_org("acme", members={"alice": "admin", "wendy": "member"})
    command = [tool("pywharf"), "github.init_pkg_repo", "--name", NAME, "--owner", "acme", "--repo", "pkgs",
               "--token_env", "GH_ADMIN_TOKEN", "--api_base_url", gh.api_url, "--pywharf_version", "0.3.0"]
    made = run(command, {**env, "GH_ADMIN_TOKEN": ADMIN}, timeout=60)
    assert "acme/pkgs: repository created" in made.stdout
    assert gh.request_count("POST", r"^/api/v3/orgs/acme/repos$") == 1 and gh.request_count("POST", "/user/repos") == 0
    repo = requests.get(f"{gh.api_url}/repos/acme/pkgs", headers={"Authorization": f"token {ADMIN}"}, timeout=10).json()
    assert repo["owner"]["type"] == "Organization" and repo["private"] and repo["permissions"]["admin"]
    workflow = gh.file_content("acme", "pkgs", ".github/workflows/pywharf-update-index.yml")
    assert workflow is not None and b"--owner 'acme' --repo 'pkgs'" in workflow
    assert tomllib.loads(gh.file_content("acme", "pkgs", "index.toml", "master").decode()) == {"format": 2, "files": {}}
    printed = made.stdout.split("# config.toml (--config)\n", 1)[1].split("\n# admin_secret.toml", 1)[0]
    assert tomllib.loads(printed)[NAME]["owner"] == "acme"
    again = run(command, {**env, "GH_ADMIN_TOKEN": ADMIN}, timeout=60)
    assert "repository reused, workflow unchanged" in again.stdout
    other = [*command[:command.index("--repo") + 1], "other", *command[command.index("--repo") + 2:]]
    refused = run(other, {**env, "GH_ADMIN_TOKEN": STRANGER}, timeout=60, check=False)
    assert refused.returncode == 1
    assert ("error: GitHub answered 403 to creating acme/other: You need admin access to the organization before "
            "adding a repository to it.") in refused.stderr
    assert requests.get(f"{gh.api_url}/repos/acme/other", headers={"Authorization": f"token {ADMIN}"},
                        timeout=10).status_code == 404
    assert_no_tokens(made.stdout, made.stderr, again.stdout, refused.stderr)


def printed_config(stdout: str) -> str:
    return stdout.split("# config.toml (--config)\n", 1)[1].split("\n# admin_secret.toml", 1)[0]


def test_init_pkg_repo_prints_a_trusted_publisher(gh: GitHubStandIn, env: dict[str, str]):
    """--trusted_publisher_workflow adds a [[NAME.trusted_publishers]] entry to the printed
    config: the publishing repository (the package's source repository, not the storage
    repository), the workflow file name and the environment, as TOML under the repository's
    table. Given the example's values it is the entry of examples/github-actions/."""
    example = Path(__file__).resolve().parent.parent / "examples" / "github-actions" / "trusted-publisher.toml"
    ((example_name, example_table),) = tomllib.loads(example.read_text()).items()
    (wanted,) = example_table["trusted_publishers"]
    gh.add_org("pywharf", members={"alice": "admin"})
    command = [tool("pywharf"), "github.init_pkg_repo", "--name", example_name, "--owner", "pywharf",
               "--repo", "pywharf-pkg-repo", "--token_env", "GH_ADMIN_TOKEN", "--api_base_url", gh.api_url,
               "--trusted_publisher_workflow", wanted["workflow"],
               "--trusted_publisher_environment", wanted["environment"],
               "--trusted_publisher_repository", wanted["repository"]]
    made = run(command, {**env, "GH_ADMIN_TOKEN": ADMIN}, timeout=60)
    config = tomllib.loads(printed_config(made.stdout))
    table = config[example_name]
    assert (table["owner"], table["repo"]) == ("pywharf", "pywharf-pkg-repo")
    assert table["trusted_publishers"] == [{k: v for k, v in wanted.items() if k != "projects"}]
    assert "id-token: write" in made.stdout and "GitHub Enterprise Server" in made.stdout  # not api.github.com
    assert_no_tokens(made.stdout, made.stderr)

    # A bare repository name is under --owner; no --trusted_publisher_environment: any environment.
    again = run([*command[:command.index("--trusted_publisher_workflow")], "--trusted_publisher_workflow",
                 "release.yaml", "--trusted_publisher_repository", "widgets"],
                {**env, "GH_ADMIN_TOKEN": ADMIN}, timeout=60)
    (entry,) = tomllib.loads(printed_config(again.stdout))[example_name]["trusted_publishers"]
    assert entry == {"issuer": "https://token.actions.githubusercontent.com", "repository": "pywharf/widgets",
                     "workflow": "release.yaml"}
    plain = run(command[:command.index("--trusted_publisher_workflow")], {**env, "GH_ADMIN_TOKEN": ADMIN}, timeout=60)
    assert "trusted_publishers" not in plain.stdout


@pytest.mark.parametrize("flags, message", [
    (["--trusted_publisher_workflow", ".github/workflows/release.yml"], "must be a workflow file name"),
    (["--trusted_publisher_workflow", "release"], "must be a workflow file name"),
    (["--trusted_publisher_workflow", "release.yml", "--trusted_publisher_repository", "a/b/c"], "OWNER/NAME"),
    (["--trusted_publisher_environment", "pypi"], "need --trusted_publisher_workflow"),
])
def test_init_pkg_repo_refuses_a_bad_trusted_publisher(flags: list[str], message: str, gh: GitHubStandIn,
                                                        env: dict[str, str]):
    """Bad trusted-publisher flags fail with one line before anything is made on GitHub."""
    gh.requests.clear()
    command = [tool("pywharf"), "github.init_pkg_repo", "--name", NAME, "--owner", OWNER, "--repo", "never",
               "--token_env", "GH_ADMIN_TOKEN", "--api_base_url", gh.api_url, *flags]
    refused = run(command, {**env, "GH_ADMIN_TOKEN": ADMIN}, timeout=60, check=False)
    assert refused.returncode == 1 and message in refused.stderr, refused.stderr
    assert gh.request_count() == 0


def test_render_trusted_publisher_is_toml_under_the_repository_table() -> None:
    """The entry parses as TOML whatever the names hold (a '.' in a repository name is not a
    nested table; quotes in an environment name are escaped)."""
    text = render_trusted_publisher("team.pkgs", publisher_repository(None, "acme", "pkgs"), "release.yml",
                                    'prod "eu"')
    assert tomllib.loads(text) == {"team.pkgs": {"trusted_publishers": [{
        "issuer": "https://token.actions.githubusercontent.com", "repository": "acme/pkgs",
        "workflow": "release.yml", "environment": 'prod "eu"'}]}}
    assert publisher_repository("acme/widgets", "alice", "pkgs") == "acme/widgets"
    assert publisher_repository("widgets", "alice", "pkgs") == "alice/widgets"
    with pytest.raises(PywharfError):
        publisher_repository("acme/", "alice", "pkgs")


def test_gen_gh_pages_renders_an_installable_static_index(gh: GitHubStandIn, server_factory,
                                                          env: dict[str, str], tmp_path: Path):
    """A public package repository rendered as static PEP 503 / 691 pages: with --with_files a
    self-contained tree pip installs from over file://; without, links go to the public
    release download URLs."""
    gh.create_repo(OWNER, "public", private=False)
    server = server_factory(gh_config(gh, repo="public"), "--extra_index_url=", admin_text=ADMIN_TOML)
    wheel = build_wheel(DistSpec("pages-demo", "2.0", module_body="VALUE = 'pages'\n"), tmp_path / "dist")
    assert upload(server, wheel, ADMIN).status_code == 200
    out = tmp_path / "site"
    base = [tool("pywharf"), "github.gen_gh_pages", "--owner", OWNER, "--repo", "public", "--api_base_url",
            gh.api_url]
    run([*base, "--output", str(out), "--with_files"], env, timeout=60)
    assert (out / "simple" / "pages-demo" / wheel.name).read_bytes() == wheel.read_bytes()
    page = (out / "simple" / "pages-demo" / "index.html").read_text()
    assert f'href="{wheel.name}#sha256={hashlib.sha256(wheel.read_bytes()).hexdigest()}"' in page
    assert "data-dist-info-metadata" in page and (out / "simple" / "pages-demo" / f"{wheel.name}.metadata").is_file()
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(tmp_path / "t"), "--index-url",
         (out / "simple").as_uri(), "pages-demo"], env, timeout=120)
    assert "pages" in (tmp_path / "t" / "pages_demo" / "__init__.py").read_text()
    linked = tmp_path / "linked"
    run([*base, "--output", str(linked)], client_env(tmp_path), timeout=60)  # anonymous: a public repo
    page = (linked / "simple" / "pages-demo" / "index.html").read_text()
    assert f"{gh.base_url}/{OWNER}/public/releases/download/" in page
    assert (linked / "simple" / "index.json").is_file() and (linked / ".nojekyll").is_file()
    pushed = run([*base, "--output", str(tmp_path / "pushed"), "--push_branch", "gh-pages", "--token_env",
                  "GH_ADMIN_TOKEN"], {**env, "GH_ADMIN_TOKEN": ADMIN}, timeout=60)
    assert "pages committed to alice/public@gh-pages" in pushed.stdout
    assert gh.file_content(OWNER, "public", "simple/pages-demo/index.html", "gh-pages") == page.encode()
