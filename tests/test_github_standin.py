"""The GitHub stand-in, driven by real PyGithub and by plain requests, checked against GitHub's OpenAPI description.

Every exchange in these tests is validated: requests-made calls directly with ``validation.validate`` (each
redirect hop included), PyGithub-made calls through the stand-in's own recording (``validate=True``), asserted
empty when each test's stand-in shuts down. The backend's end-to-end tests rely on the same guarantee.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from github import Auth, BadCredentialsException, Github, GithubException, GithubRetry, UnknownObjectException
from github.GithubException import RateLimitExceededException
from github_standin import Exchange, GitHubStandIn, git_blob_sha, sanitize_asset_name
from github_standin.validation import check_exchange, validate

OWNER, WRITER, READER, STRANGER = "alice-token", "bob-token", "carol-token", "dave-token"


@pytest.fixture
def gh() -> Iterator[GitHubStandIn]:
    """A stand-in with a private repo alice/pkgs: bob may push, carol may pull, dave has no access."""
    with GitHubStandIn.start(validate=True) as standin:
        standin.add_token(OWNER, "alice")
        standin.add_token(WRITER, "bob")
        standin.add_token(READER, "carol")
        standin.add_token(STRANGER, "dave")
        standin.create_repo("alice", "pkgs", private=True)
        standin.grant("alice", "pkgs", "bob", "push")
        standin.grant("alice", "pkgs", "carol", "pull")
        yield standin
        assert standin.internal_errors == []
        assert [str(v) for v in standin.schema_violations] == []


def client(gh: GitHubStandIn, token: str, **kwargs: Any) -> Github:
    return Github(
        auth=Auth.Token(token), base_url=gh.api_url, seconds_between_requests=0, seconds_between_writes=0, **kwargs
    )


def call(gh: GitHubStandIn, method: str, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
    """A plain-requests call (relative paths are under /api/v3), validated against the OpenAPI subset; the
    operation must be one the subset describes, so a call can never pass by escaping validation."""
    url = path if path.startswith("http") else gh.api_url + path
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"token {token}"
    response = requests.request(method, url, headers=headers, timeout=30, **kwargs)
    validate(response, require_covered=True)
    return response


def upload(gh: GitHubStandIn, release: dict[str, Any], name: str, data: bytes, token: str = OWNER) -> requests.Response:
    url = release["upload_url"].split("{")[0]
    headers = {"Content-Type": "application/octet-stream"}
    return call(gh, "POST", url, token, params={"name": name, "label": ""}, data=data, headers=headers)


# ---------------------------------------------------------------------------------------------- repos, auth


def test_repo_permissions_follow_each_tokens_role(gh: GitHubStandIn) -> None:
    expected = {
        OWNER: dict(admin=True, maintain=True, push=True, triage=True, pull=True),
        WRITER: dict(admin=False, maintain=False, push=True, triage=True, pull=True),
        READER: dict(admin=False, maintain=False, push=False, triage=False, pull=True),
    }
    for token, perms in expected.items():
        repo = client(gh, token).get_repo("alice/pkgs")
        assert {k: getattr(repo.permissions, k) for k in perms} == perms
        assert repo.private and repo.default_branch == "master"
        assert call(gh, "GET", "/repos/alice/pkgs", token).json()["permissions"] == perms

    with pytest.raises(UnknownObjectException):  # private repos are invisible, never 403
        client(gh, STRANGER).get_repo("alice/pkgs")
    with pytest.raises(BadCredentialsException):
        client(gh, "no-such-token").get_repo("alice/pkgs")
    gh.revoke_token(READER)
    revoked = call(gh, "GET", "/repos/alice/pkgs", READER)
    assert revoked.status_code == 401 and revoked.json()["message"] == "Bad credentials"
    assert call(gh, "GET", "/repos/alice/pkgs").status_code == 404  # anonymous

    gh.create_repo("alice", "public-pkgs", private=False)
    anonymous = call(gh, "GET", "/repos/alice/public-pkgs")
    assert anonymous.status_code == 200 and "permissions" not in anonymous.json()
    assert call(gh, "GET", "/repos/alice/public-pkgs", STRANGER).json()["permissions"]["push"] is False
    assert call(gh, "GET", "/repos/ALICE/PKGS", OWNER).json()["full_name"] == "alice/pkgs"  # case-insensitive


def test_write_permission_rules(gh: GitHubStandIn) -> None:
    denied = call(gh, "POST", "/repos/alice/pkgs/releases", READER, json={"tag_name": "v1"})
    assert denied.status_code == 403
    assert denied.json()["message"] == "Resource not accessible by personal access token"
    assert call(gh, "POST", "/repos/alice/pkgs/releases", STRANGER, json={"tag_name": "v1"}).status_code == 404
    gh.create_repo("alice", "open", private=False)
    assert call(gh, "POST", "/repos/alice/open/releases", json={"tag_name": "v1"}).status_code == 401
    assert call(gh, "POST", "/repos/alice/pkgs/releases", WRITER, json={"tag_name": "v1"}).status_code == 201
    assert call(gh, "GET", "/repos/alice/pkgs/collaborators/carol/permission", OWNER).json()["permission"] == "read"


def test_user_endpoint_and_repo_creation(gh: GitHubStandIn) -> None:
    g = client(gh, WRITER)
    me = g.get_user()
    assert me.login == "bob"
    created = me.create_repo("fresh", private=True, auto_init=True)
    assert created.full_name == "bob/fresh" and created.permissions.admin
    with pytest.raises(GithubException) as excinfo:
        me.create_repo("fresh")
    assert excinfo.value.status == 422
    assert call(gh, "GET", "/user").status_code == 401
    assert call(gh, "GET", "/").json()["rate_limit_url"] == gh.api_url + "/rate_limit"


# ---------------------------------------------------------------------------------------------- releases


def test_release_create_duplicate_draft_and_tag_lookup(gh: GitHubStandIn) -> None:
    repo = client(gh, WRITER).get_repo("alice/pkgs")
    release = repo.create_git_release("v1.0", "v1.0", "first")
    assert release.upload_url.startswith(gh.uploads_url) and release.upload_url.endswith("{?name,label}")
    with pytest.raises(GithubException) as excinfo:
        repo.create_git_release("v1.0", "again", "dup")
    assert excinfo.value.status == 422
    assert excinfo.value.data["errors"] == [{"resource": "Release", "code": "already_exists", "field": "tag_name"}]

    draft = repo.create_git_release("v2.0", "draft", "not yet", draft=True)
    assert draft.draft and draft.published_at is None
    with pytest.raises(UnknownObjectException):
        repo.get_release("v2.0")  # drafts are not found by tag, even with push access
    assert repo.get_release(draft.id).tag_name == "v2.0"
    assert repo.get_release("v1.0").id == release.id
    assert [r.tag_name for r in repo.get_releases()] == ["v2.0", "v1.0"]  # newest first, drafts for pushers
    reader_repo = client(gh, READER).get_repo("alice/pkgs")
    assert [r.tag_name for r in reader_repo.get_releases()] == ["v1.0"]
    assert call(gh, "GET", f"/repos/alice/pkgs/releases/{draft.id}", READER).status_code == 404

    published = draft.update_release("v2.0", "published now", draft=False)
    assert not published.draft and repo.get_release("v2.0").id == draft.id
    assert call(gh, "GET", "/repos/alice/pkgs/git/ref/tags/v2.0", OWNER).status_code == 200
    assert repo.get_latest_release().tag_name == "v2.0"
    release.delete_release()
    assert [r["tag_name"] for r in gh.releases("alice", "pkgs")] == ["v2.0"]


def test_release_pagination_follows_github_link_headers(gh: GitHubStandIn) -> None:
    repo = client(gh, OWNER).get_repo("alice/pkgs")
    for i in range(130):
        repo.create_git_release(f"v{i}", f"v{i}", "")
    gh.requests.clear()
    tags = [r.tag_name for r in repo.get_releases()]
    assert tags == [f"v{i}" for i in reversed(range(130))]
    assert gh.request_count("GET", r"/releases$") == 5  # 30 per page by default
    assert len({r.tag_name for r in client(gh, OWNER, per_page=100).get_repo("alice/pkgs").get_releases()}) == 130

    first = call(gh, "GET", "/repos/alice/pkgs/releases", OWNER, params={"per_page": 100})
    repo_id = call(gh, "GET", "/repos/alice/pkgs", OWNER).json()["id"]
    base = f"{gh.api_url}/repositories/{repo_id}/releases"
    assert first.headers["Link"] == (
        f'<{base}?page=2&per_page=100>; rel="next", <{base}?page=2&per_page=100>; rel="last"'
    )
    assert len(first.json()) == 100
    second = call(gh, "GET", f"{base}?page=2&per_page=100", OWNER)
    assert len(second.json()) == 30
    assert (
        second.headers["Link"] == f'<{base}?page=1&per_page=100>; rel="prev", <{base}?page=1&per_page=100>; rel="first"'
    )
    capped = call(gh, "GET", "/repos/alice/pkgs/releases", OWNER, params={"per_page": 1000})
    assert len(capped.json()) == 100


# ---------------------------------------------------------------------------------------------- assets


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("pkg-1.0-py3-none-any.whl", "pkg-1.0-py3-none-any.whl"),
        ("tobwen-1.1.0-1~buster_amd64.deb", "tobwen-1.1.0-1.buster_amd64.deb"),
        ("app-v1.3.0-(15-5)-release.apk", "app-v1.3.0-.15-5.-release.apk"),
        ("my title.exe", "my.title.exe"),
        ("fake.      file.txt", "fake.file.txt"),
        ("erick%%%%%!!!zhao.txt", "erick.zhao.txt"),
        ("pkg-2:1.0.tar.gz", "pkg-2.1.0.tar.gz"),
        (".config", "default.config"),
        ("torch-2.0+cu118.whl", "torch-2.0+cu118.whl"),
        ("żółw.txt", "zo.w.txt"),  # accents dropped; letters without an ASCII base become "."
    ],
)
def test_asset_names_are_renamed_like_github(given: str, stored: str) -> None:
    assert sanitize_asset_name(given) == stored


def test_plus_to_dot_mode_renames_plus() -> None:
    assert sanitize_asset_name("torch-2.0+cu118.whl", plus_to_dot=True) == "torch-2.0.cu118.whl"
    with GitHubStandIn.start(plus_to_dot=True) as gh:
        gh.add_token(OWNER, "alice")
        gh.create_repo("alice", "pkgs")
        release = call(gh, "POST", "/repos/alice/pkgs/releases", OWNER, json={"tag_name": "v1"}).json()
        assert upload(gh, release, "torch-2.0+cu118.whl", b"x").json()["name"] == "torch-2.0.cu118.whl"
        assert gh.asset_bytes("alice", "pkgs", "v1", "torch-2.0+cu118.whl") == b"x"


def test_asset_upload_duplicate_rename_and_download(gh: GitHubStandIn, tmp_path: Path) -> None:
    repo = client(gh, WRITER).get_repo("alice/pkgs")
    release = repo.create_git_release("v1", "v1", "")
    wheel = tmp_path / "demo-1.0+local-py3-none-any.whl"
    wheel.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 100)
    asset = release.upload_asset(str(wheel), content_type="application/zip")
    assert asset.name == "demo-1.0+local-py3-none-any.whl"  # requests sends %2B, which GitHub keeps
    assert asset.size == wheel.stat().st_size and asset.content_type == "application/zip"
    assert asset.digest == "sha256:" + hashlib.sha256(wheel.read_bytes()).hexdigest()
    with pytest.raises(GithubException) as excinfo:
        release.upload_asset(str(wheel))
    assert excinfo.value.status == 422
    assert excinfo.value.data["errors"] == [{"resource": "ReleaseAsset", "code": "already_exists", "field": "name"}]

    renamed = release.upload_asset(str(wheel), name="demo 1.0 (copy).whl")
    assert renamed.name == "demo.1.0.copy.whl"
    raw = release.raw_data
    literal_plus = requests.post(  # a literal '+' in a query string is a space: GitHub stores '.'
        raw["upload_url"].split("{")[0] + "?name=a+b.whl",
        data=b"x",
        headers={"Authorization": f"token {OWNER}", "Content-Type": "application/octet-stream"},
        timeout=30,
    )
    validate(literal_plus)
    assert literal_plus.status_code == 201 and literal_plus.json()["name"] == "a.b.whl"
    assert [a.name for a in release.get_assets()] == [asset.name, "demo.1.0.copy.whl", "a.b.whl"]

    status, _, chunks = asset.download_asset(chunk_size=65536)
    assert status == 200 and b"".join(chunks) == wheel.read_bytes()
    redirect = call(gh, "GET", asset.url, READER, headers={"Accept": "application/octet-stream"}, allow_redirects=False)
    assert redirect.status_code == 302
    location = redirect.headers["Location"]
    assert location.startswith(gh.api_url.removesuffix("/v3") + "/_storage/")
    fetched = requests.get(location, timeout=30)  # signed: no credentials needed
    assert fetched.content == wheel.read_bytes()
    assert requests.get(location, headers={"Range": "bytes=0-3"}, timeout=30).content == b"PK\x03\x04"
    assert call(gh, "GET", asset.url, READER).json()["download_count"] == 3
    assert gh.asset_bytes("alice", "pkgs", "v1", "demo 1.0 (copy).whl") == wheel.read_bytes()

    for grant in gh.world.grants.values():
        grant.expires = time.time() - 1
    expired = requests.get(location, timeout=30)
    assert expired.status_code == 403 and b"Request has expired" in expired.content

    denied = upload(gh, raw, "other.whl", b"x", token=READER)
    assert denied.status_code == 403
    asset.delete_asset()
    assert [a["name"] for a in gh.assets("alice", "pkgs", "v1")] == ["demo.1.0.copy.whl", "a.b.whl"]
    relabelled = renamed.update_asset("demo (2).whl", label="shown")
    assert (relabelled.name, relabelled.label) == ("demo.2.whl", "shown")
    with pytest.raises(GithubException) as excinfo:
        relabelled.update_asset("a.b.whl")
    assert excinfo.value.status == 422
    assert {
        "repos/create-release",
        "repos/upload-release-asset",
        "repos/list-release-assets",
        "repos/get-release-asset",
        "repos/update-release-asset",
        "repos/delete-release-asset",
    } <= set(gh.validated_operations)


def test_concurrent_uploads_of_one_name_create_one_asset(gh: GitHubStandIn) -> None:
    release = call(gh, "POST", "/repos/alice/pkgs/releases", OWNER, json={"tag_name": "v1"}).json()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: upload(gh, release, "same.whl", b"x" * (i + 1)).status_code, range(8)))
        others = list(pool.map(lambda i: upload(gh, release, f"p{i}.whl", b"y").status_code, range(8)))
    assert sorted(statuses) == [201] + [422] * 7 and others == [201] * 8
    assert len(gh.assets("alice", "pkgs", "v1")) == 9


def test_large_asset_streams_through(gh: GitHubStandIn, tmp_path: Path) -> None:
    release = call(gh, "POST", "/repos/alice/pkgs/releases", OWNER, json={"tag_name": "big"}).json()
    data = hashlib.sha256(b"seed").digest() * (24 * 1024 * 1024 // 32)  # 24 MiB
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    with path.open("rb") as body:
        created = requests.post(
            release["upload_url"].split("{")[0],
            params={"name": "big.bin"},
            data=body,
            headers={"Authorization": f"token {OWNER}", "Content-Type": "application/octet-stream"},
            timeout=60,
        )
    validate(created)
    assert created.status_code == 201 and created.json()["size"] == len(data)
    download = requests.get(
        created.json()["url"],
        headers={"Authorization": f"token {OWNER}", "Accept": "application/octet-stream"},
        stream=True,
        timeout=60,
    )
    digest = hashlib.sha256()
    for chunk in download.iter_content(1024 * 1024):
        digest.update(chunk)
    assert "sha256:" + digest.hexdigest() == created.json()["digest"]
    chunked = requests.post(  # no Content-Length: the upload endpoint needs the size up front
        release["upload_url"].split("{")[0] + "?name=chunked.bin",
        data=iter([b"a", b"b"]),
        headers={"Authorization": f"token {OWNER}", "Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert chunked.status_code == 411


# ---------------------------------------------------------------------------------------------- contents, git


def test_contents_create_update_stale_sha_and_big_files(gh: GitHubStandIn) -> None:
    repo = client(gh, WRITER).get_repo("alice/pkgs")
    created = repo.create_file("index/demo.toml", "add demo", b"v = 1\n", branch="master")
    sha = created["content"].sha
    assert sha == git_blob_sha(b"v = 1\n")
    content = repo.get_contents("index/demo.toml", ref="master")
    assert content.decoded_content == b"v = 1\n" and content.sha == sha

    body = {"message": "no sha", "content": base64.b64encode(b"v = 2\n").decode()}
    missing = call(gh, "PUT", "/repos/alice/pkgs/contents/index/demo.toml", WRITER, json=body)
    assert missing.status_code == 422 and missing.json()["message"] == 'Invalid request.\n\n"sha" wasn\'t supplied.'
    updated = repo.update_file("index/demo.toml", "bump", b"v = 2\n", sha)
    with pytest.raises(GithubException) as excinfo:
        repo.update_file("index/demo.toml", "stale", b"v = 3\n", sha)
    assert excinfo.value.status == 409
    assert gh.file_content("alice", "pkgs", "index/demo.toml", "master") == b"v = 2\n"
    assert updated["commit"].sha == gh.branch_sha("alice", "pkgs")

    raw = call(gh, "GET", "/repos/alice/pkgs/contents/index/demo.toml", READER).json()
    assert raw["content"] == base64.encodebytes(b"v = 2\n").decode() and raw["encoding"] == "base64"
    listing = call(gh, "GET", "/repos/alice/pkgs/contents/index", READER).json()
    assert [(e["name"], e["type"]) for e in listing] == [("demo.toml", "file")]

    big = bytes(range(256)) * 6000  # 1.5 MB: beyond the contents API's inline limit
    big_sha = gh.set_file("alice", "pkgs", "index/big.bin", "master", big)
    big_content = repo.get_contents("index/big.bin")
    assert big_content.encoding == "none" and big_content.content == "" and big_content.sha == big_sha
    assert base64.b64decode(repo.get_git_blob(big_sha).content) == big
    rawbytes = requests.get(
        f"{gh.api_url}/repos/alice/pkgs/contents/index/big.bin",
        headers={"Authorization": f"token {READER}", "Accept": "application/vnd.github.raw"},
        timeout=30,
    )
    assert rawbytes.content == big

    gone = repo.delete_file("index/demo.toml", "remove", updated["content"].sha)
    assert (
        gone["commit"].sha == gh.branch_sha("alice", "pkgs")
        and gh.file_content("alice", "pkgs", "index/demo.toml") is None
    )
    with pytest.raises(UnknownObjectException):
        repo.get_contents("index/demo.toml")
    assert call(gh, "PUT", "/repos/alice/pkgs/contents/x", READER, json=body).status_code == 403


def test_branches_refs_and_empty_repositories(gh: GitHubStandIn) -> None:
    repo = client(gh, OWNER).get_repo("alice/pkgs")
    head = repo.get_branch("master").commit.sha
    ref = repo.create_git_ref("refs/heads/index", head)
    assert ref.ref == "refs/heads/index" and repo.get_git_ref("heads/index").object.sha == head
    with pytest.raises(GithubException) as excinfo:
        repo.create_git_ref("refs/heads/index", head)
    assert excinfo.value.status == 422 and excinfo.value.data["message"] == "Reference already exists"
    missing = call(gh, "GET", "/repos/alice/pkgs/branches/nope", OWNER)
    assert missing.status_code == 404 and missing.json()["message"] == "Branch not found"
    assert sorted(b.name for b in repo.get_branches()) == ["index", "master"]
    repo.create_file("state.json", "on index", b"{}", branch="index")
    assert gh.file_content("alice", "pkgs", "state.json", "index") == b"{}"
    assert gh.file_content("alice", "pkgs", "state.json", "master") is None

    gh.create_repo("alice", "empty", auto_init=False)
    empty = client(gh, OWNER).get_repo("alice/empty")
    assert (
        call(gh, "POST", "/repos/alice/empty/git/refs", OWNER, json={"ref": "refs/heads/x", "sha": head}).status_code
        == 409
    )
    assert call(gh, "POST", "/repos/alice/empty/releases", OWNER, json={"tag_name": "v1"}).status_code == 422
    empty.create_file("first.txt", "first", b"1")
    assert empty.get_branch("master").commit.sha == gh.branch_sha("alice", "empty")


# ---------------------------------------------------------------------------------------------- http semantics


def test_etags_give_304_that_do_not_count(gh: GitHubStandIn) -> None:
    first = call(gh, "GET", "/repos/alice/pkgs", OWNER)
    etag = first.headers["ETag"]
    again = call(gh, "GET", "/repos/alice/pkgs", OWNER, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["x-ratelimit-remaining"] == first.headers["x-ratelimit-remaining"]
    assert call(gh, "GET", "/repos/alice/pkgs/releases", OWNER).headers["ETag"]
    release = client(gh, OWNER).get_repo("alice/pkgs").create_git_release("v1", "one", "")
    assert release.update() is True  # the POST answer carried no ETag: this GET fetches one
    assert release.update() is False  # PyGithub's conditional refresh: 304, nothing changed
    client(gh, WRITER).get_repo("alice/pkgs").get_release("v1").update_release("renamed", "")
    assert release.update() is True and release.name == "renamed"


def test_rate_limit_headers_and_exhaustion(gh: GitHubStandIn) -> None:
    response = call(gh, "GET", "/repos/alice/pkgs", OWNER)
    for name in ("limit", "remaining", "used", "reset", "resource"):
        assert f"x-ratelimit-{name}" in response.headers
    assert response.headers["x-ratelimit-limit"] == "5000" and response.headers["x-ratelimit-resource"] == "core"
    used = int(response.headers["x-ratelimit-used"])
    assert int(call(gh, "GET", "/repos/alice/pkgs", OWNER).headers["x-ratelimit-used"]) == used + 1
    assert call(gh, "GET", "/repos/alice/pkgs").headers["x-ratelimit-limit"] == "60"  # anonymous

    gh.set_rate_limit(remaining=0, reset_in=60)
    limited = call(gh, "GET", "/repos/alice/pkgs", OWNER)
    assert limited.status_code == 403 and limited.json()["message"].startswith("API rate limit exceeded")
    assert limited.headers["x-ratelimit-remaining"] == "0"
    overview = call(gh, "GET", "/rate_limit", OWNER)  # not rate limited itself
    assert overview.status_code == 200 and overview.json()["resources"]["core"]["remaining"] == 0
    g = client(gh, OWNER, retry=GithubRetry(max_rate_limit_wait=1))
    with pytest.raises(RateLimitExceededException):  # PyGithub recognises GitHub's primary-limit answer
        g.get_repo("alice/pkgs")
    gh.set_rate_limit(remaining=5000)
    assert call(gh, "GET", "/repos/alice/pkgs", OWNER).status_code == 200


def test_faults_retries_and_apply_first_hazards(gh: GitHubStandIn, tmp_path: Path) -> None:
    g = client(gh, OWNER)
    gh.add_fault("GET", r"/repos/alice/pkgs$", 502, times=2)
    repo = g.get_repo("alice/pkgs")  # PyGithub retries 5xx
    assert repo.name == "pkgs" and gh.request_count("GET", r"/repos/alice/pkgs$") == 3
    assert [r.status for r in gh.requests[-3:]] == [502, 502, 200]
    gh.add_fault("GET", r"/repos/alice/pkgs$", 503)
    faulted = requests.get(f"{gh.api_url}/repos/alice/pkgs", headers={"Authorization": f"token {OWNER}"}, timeout=30)
    assert faulted.status_code == 503 and faulted.headers["x-ratelimit-resource"] == "core"
    validate(faulted)

    fault = gh.add_fault("GET", r"/releases$", 403, headers={"Retry-After": "0"})
    assert list(repo.get_releases()) == [] and fault.hits == 1  # secondary limit with Retry-After: retried
    gh.add_fault("GET", r"/releases$", 429)
    with pytest.raises(GithubException) as excinfo:
        list(repo.get_releases())  # 429 without Retry-After is not retried by PyGithub
    assert excinfo.value.status == 429

    release = repo.create_git_release("v1", "v1", "")
    wheel = tmp_path / "demo-1.0.whl"
    wheel.write_bytes(b"wheel bytes")
    gh.add_fault("POST", r"/releases/\d+/assets$", 502, apply_first=True)
    with pytest.raises(GithubException) as excinfo:
        release.upload_asset(str(wheel))  # created, 502, retried: now 422 already_exists
    assert excinfo.value.status == 422
    assert excinfo.value.data["errors"][0]["code"] == "already_exists"
    assert gh.asset_bytes("alice", "pkgs", "v1", "demo-1.0.whl") == b"wheel bytes"

    sha = repo.create_file("index.toml", "create", b"a")["content"].sha
    gh.add_fault("PUT", r"/contents/index\.toml$", 503, apply_first=True)
    with pytest.raises(GithubException) as excinfo:
        repo.update_file("index.toml", "update", b"b", sha)  # committed, 503, retried: now 409 stale sha
    assert excinfo.value.status == 409
    assert gh.file_content("alice", "pkgs", "index.toml") == b"b"

    gh.add_fault("*", r"/_storage/", 503, body={"message": "SlowDown"})
    asset_url = gh.assets("alice", "pkgs", "v1")[0]["url"]
    headers = {"Authorization": f"token {OWNER}", "Accept": "application/octet-stream"}
    assert requests.get(asset_url, headers=headers, timeout=30).status_code == 503
    assert requests.get(asset_url, headers=headers, timeout=30).content == b"wheel bytes"
    assert [r.status for r in gh.requests if "/_storage/" in r.path][-2:] == [503, 200]


# ---------------------------------------------------------------------------------------------- slow answers


def test_slow_answers_hold_one_request_not_the_server(gh: GitHubStandIn) -> None:
    """``delay`` makes one answer late (client timeouts need that) while every other request is served at once:
    a sleep that blocked the server would make "GitHub is slow for this call" look like "GitHub is down"."""
    slow = gh.add_fault("GET", r"/repos/alice/pkgs$", delay=1.0)
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        late = pool.submit(call, gh, "GET", "/repos/alice/pkgs", OWNER)
        time.sleep(0.1)
        quick = call(gh, "GET", "/repos/alice/pkgs/releases", OWNER)
        assert quick.status_code == 200 and time.monotonic() - started < 0.8 and not late.done()
        assert late.result().json()["full_name"] == "alice/pkgs"  # no status: the operation's own answer
    assert time.monotonic() - started >= 1.0 and slow.hits == 1
    assert [r.delay for r in gh.requests if r.path == "/api/v3/repos/alice/pkgs"] == [1.0]

    gh.add_fault("GET", r"/repos/alice/pkgs$", 503, delay=0.3)  # a late error
    started = time.monotonic()
    assert call(gh, "GET", "/repos/alice/pkgs", OWNER).status_code == 503 and time.monotonic() - started >= 0.3

    # The client gives up before the stand-in reads the upload body: nothing is stored, the log says 499.
    release = call(gh, "POST", "/repos/alice/pkgs/releases", OWNER, json={"tag_name": "v1"}).json()
    gh.add_fault("POST", r"/releases/\d+/assets$", delay=0.5)
    with pytest.raises(requests.Timeout):
        requests.post(release["upload_url"].split("{")[0], params={"name": "late.whl"}, data=b"late",
                      headers={"Authorization": f"token {OWNER}"}, timeout=0.2)
    deadline = time.monotonic() + 5
    while gh.requests[-1].status != 499 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (gh.requests[-1].method, gh.requests[-1].status, gh.requests[-1].delay) == ("POST", 499, 0.5)
    assert gh.assets("alice", "pkgs", "v1") == []

    with pytest.raises(ValueError):
        gh.add_fault("GET", r"/x")  # neither a status nor a delay
    with pytest.raises(ValueError):
        gh.add_fault("GET", r"/x", delay=-1)


def test_applied_then_too_late_upload_meets_pygithubs_retry(gh: GitHubStandIn, tmp_path: Path) -> None:
    """``apply_first`` + ``delay``: GitHub stored the asset, the client timed out; PyGithub retries the POST
    (it retries POSTs on read timeouts) and the retry gets 422 already_exists: the hazard a backend must handle."""
    g = client(gh, OWNER, timeout=1)
    release = g.get_repo("alice/pkgs").create_git_release("v1", "v1", "")
    wheel = tmp_path / "demo-1.0.whl"
    wheel.write_bytes(b"wheel bytes")
    gh.add_fault("POST", r"/releases/\d+/assets$", delay=2.0, apply_first=True)
    with pytest.raises(GithubException) as excinfo:
        release.upload_asset(str(wheel))
    assert excinfo.value.status == 422 and excinfo.value.data["errors"][0]["code"] == "already_exists"
    assets = gh.assets("alice", "pkgs", "v1")
    assert [(a["name"], a["state"], a["size"]) for a in assets] == [("demo-1.0.whl", "uploaded", 11)]


def test_stop_ends_pending_delays() -> None:
    with GitHubStandIn.start() as standin:
        standin.add_fault("GET", r"/rate_limit$", delay=60)
        with pytest.raises(requests.Timeout):
            requests.get(f"{standin.api_url}/rate_limit", timeout=0.2)
        started = time.monotonic()
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------------------------- starter assets


def test_starter_asset_left_by_a_failed_upload(gh: GitHubStandIn, tmp_path: Path) -> None:
    """``starter=True``: the upload leaves a not-uploaded asset with part of the bytes, holding the name, and
    answers 502. The schema allows only ``uploaded``/``open`` as states, so the leftover is ``open`` (GitHub has
    been reported to say ``starter``); the name stays taken until the asset is deleted."""
    release = call(gh, "POST", "/repos/alice/pkgs/releases", OWNER, json={"tag_name": "v1"}).json()
    fault = gh.add_fault("POST", r"/releases/\d+/assets$", starter=True)
    failed = upload(gh, release, "demo-1.0.whl", b"0123456789")
    assert failed.status_code == 502 and fault.hits == 1 and fault.status == 502
    listed = call(gh, "GET", f"/repos/alice/pkgs/releases/{release['id']}/assets", OWNER).json()
    assert [(a["name"], a["state"], a["size"], a["digest"]) for a in listed] == [("demo-1.0.whl", "open", 5, None)]
    retried = upload(gh, release, "demo-1.0.whl", b"0123456789")
    assert retried.status_code == 422 and retried.json()["errors"][0]["code"] == "already_exists"
    assert call(gh, "DELETE", listed[0]["url"], OWNER).status_code == 204
    done = upload(gh, release, "demo-1.0.whl", b"0123456789")
    assert done.status_code == 201 and done.json()["state"] == "uploaded" and done.json()["size"] == 10
    assert done.json()["digest"] == "sha256:" + hashlib.sha256(b"0123456789").hexdigest()

    # PyGithub retries the 502'd POST and meets the leftover: 422 (what a backend has to clean up after).
    other = client(gh, OWNER).get_repo("alice/pkgs").create_git_release("v2", "v2", "")
    wheel = tmp_path / "demo-2.0.whl"
    wheel.write_bytes(b"x" * 1000)
    gh.add_fault("POST", r"/releases/\d+/assets$", starter=True)
    with pytest.raises(GithubException) as excinfo:
        other.upload_asset(str(wheel))
    assert excinfo.value.status == 422
    assert [(a["state"], a["size"]) for a in gh.assets("alice", "pkgs", "v2")] == [("open", 500)]
    with pytest.raises(ValueError):
        gh.add_fault("POST", r"/assets$", starter=True, apply_first=True)


# ---------------------------------------------------------------------------------------------- organisations


def test_organisations_and_their_repositories(gh: GitHubStandIn) -> None:
    """``GET /orgs/{org}`` (public; owners see plan and policies) and ``POST /orgs/{org}/repos`` (owners and
    members may create; others 403), with GitHub's roles on organisation repositories."""
    assert gh.add_org("acme", members={"alice": "admin", "bob": "member"})["type"] == "Organization"
    public = call(gh, "GET", "/orgs/acme")
    assert public.status_code == 200 and public.json()["login"] == "acme" and "plan" not in public.json()
    assert call(gh, "GET", "/orgs/acme", OWNER).json()["plan"]["filled_seats"] == 2
    assert call(gh, "GET", "/orgs/nobody").status_code == 404
    assert call(gh, "GET", "/orgs/alice").status_code == 404  # a user, not an organisation

    made = call(gh, "POST", "/orgs/acme/repos", OWNER, json={"name": "pkgs", "private": True, "auto_init": True})
    assert made.status_code == 201 and made.headers["Location"] == f"{gh.api_url}/repos/acme/pkgs"
    body = made.json()
    assert body["full_name"] == "acme/pkgs" and body["owner"]["type"] == "Organization" and body["private"]
    assert body["default_branch"] == "main" and gh.branch_sha("acme", "pkgs") is not None
    again = call(gh, "POST", "/orgs/acme/repos", OWNER, json={"name": "pkgs"})
    assert again.status_code == 422 and again.json()["errors"][0]["message"] == "name already exists on this account"
    denied = call(gh, "POST", "/orgs/acme/repos", STRANGER, json={"name": "x"})
    assert denied.status_code == 403 and denied.json()["message"].startswith("You need admin access")
    assert call(gh, "POST", "/orgs/acme/repos", json={"name": "x"}).status_code == 401
    assert call(gh, "POST", "/orgs/nobody/repos", OWNER, json={"name": "x"}).status_code == 404

    perms = {t: call(gh, "GET", "/repos/acme/pkgs", t) for t in (OWNER, WRITER, STRANGER)}
    assert perms[OWNER].json()["permissions"]["admin"] is True  # organisation owner
    assert perms[WRITER].json()["permissions"] == dict(admin=False, maintain=False, push=False, triage=False, pull=True)
    assert perms[STRANGER].status_code == 404  # not a member: the private repository is invisible

    org = client(gh, WRITER).get_organization("acme")  # PyGithub, as a member
    tools = org.create_repo("tools", private=True, auto_init=True, description="made by a member")
    assert tools.full_name == "acme/tools" and tools.permissions.admin and tools.owner.type == "Organization"
    assert client(gh, OWNER).get_organization("acme").plan.name == "free"
    assert {"orgs/get", "repos/create-in-org"} <= set(gh.validated_operations)
    with pytest.raises(ValueError):
        gh.add_token("acme-token", "acme")  # tokens belong to users
    with pytest.raises(ValueError):
        gh.add_org("alice")  # already a user


def test_validator_catches_shape_errors(gh: GitHubStandIn) -> None:
    """Negative control: the validation is not vacuous."""
    created = call(gh, "POST", "/repos/alice/pkgs/releases", OWNER, json={"tag_name": "v1"})
    good = Exchange(
        "GET",
        created.json()["url"],
        {},
        None,
        200,
        {"content-type": "application/json"},
        created.content,
    )
    assert check_exchange(good).violations == []
    broken = json.loads(created.content)
    del broken["node_id"]
    broken["assets"] = [{"name": "x"}]
    bad = check_exchange(
        Exchange(good.method, good.url, {}, None, 200, good.response_headers, json.dumps(broken).encode())
    )
    assert bad.violations and "node_id" in str(bad.violations[0])
    relative = dict(json.loads(created.content), url="/relative")
    assert check_exchange(
        Exchange(good.method, good.url, {}, None, 200, good.response_headers, json.dumps(relative).encode())
    ).violations
    not_error = check_exchange(Exchange(good.method, good.url, {}, None, 404, good.response_headers, b"[]"))
    assert not_error.violations
    uncovered = check_exchange(Exchange("GET", gh.api_url + "/repos/a/b/git/blobs/abc", {}, None, 200, {}, b"{}"))
    assert uncovered.covered is False
