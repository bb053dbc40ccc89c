"""Upload and download rules of the HTTP API, each checked against a real ``pywharf server``.

The legacy upload is crafted by hand (:func:`encode_multipart`, :func:`upload_fields`) rather
than through twine, so a test can send exactly the bad request it is about: a wrong digest, a
name that does not match the filename, a filename with ``..`` in it. ``test_known_defects.py``
reuses these helpers.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from conftest import Server, client_env, fs_config, run, tool
from distbuilder import DistSpec, build_sdist, build_wheel

WRITE = ("local", "write-secret")
READ = ("local", "read-secret-00")
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
REPO_ROOT = Path(__file__).resolve().parents[1]


# -- helpers (also used by test_known_defects.py) ---------------------------------------------


@dataclass
class Dist:
    """A built distribution: its spec, filename and bytes."""

    spec: DistSpec
    path: Path

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def make_wheel(out_dir: Path, name: str = "demo", version: str = "1.0", extra_bytes: bytes = b"",
               **spec_fields: object) -> Dist:
    spec = DistSpec(name=name, version=version, **spec_fields)  # type: ignore[arg-type]
    return Dist(spec, build_wheel(spec, out_dir / f"{name}-{version}-{len(extra_bytes)}", extra_bytes))


def make_sdist(out_dir: Path, name: str = "demo", version: str = "1.0", **spec_fields: object) -> Dist:
    spec = DistSpec(name=name, version=version, **spec_fields)  # type: ignore[arg-type]
    return Dist(spec, build_sdist(spec, out_dir / f"{name}-{version}-sdist"))


def digests(data: bytes) -> dict[str, str]:
    return {
        "md5_digest": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        "sha256_digest": hashlib.sha256(data).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(data, digest_size=32).hexdigest(),
    }


def upload_fields(dist: Dist, override: Mapping[str, str | Sequence[str] | None] | None = None,
                  with_digests: bool = True) -> list[tuple[str, str]]:
    """The form fields twine sends for ``dist``; ``override`` replaces a field (None drops it,
    a list repeats it)."""
    spec = dist.spec
    wheel = dist.filename.endswith(".whl")
    fields: list[tuple[str, str]] = [
        (":action", "file_upload"),
        ("protocol_version", "1"),
        ("metadata_version", "2.1"),
        ("name", spec.name),
        ("version", spec.version),
        ("filetype", "bdist_wheel" if wheel else "sdist"),
        ("pyversion", "py3" if wheel else "source"),
        ("summary", spec.summary),
        ("description", spec.description),
        ("description_content_type", spec.description_content_type),
        ("requires_python", spec.requires_python),
    ]
    fields += [("classifiers", c) for c in spec.classifiers]
    fields += [("requires_dist", r) for r in spec.requires_dist]
    fields += [("project_urls", u) for u in spec.project_urls]
    if with_digests:
        fields += list(digests(dist.data).items())
    for key, value in (override or {}).items():
        fields = [(k, v) for k, v in fields if k != key]
        if value is None:
            continue
        fields += [(key, value)] if isinstance(value, str) else [(key, v) for v in value]
    return fields


def encode_multipart(fields: Iterable[tuple[str, str]], filename: str | None, content: bytes,
                     boundary: str | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body, byte for byte what we say (no client-side escaping)."""
    boundary = boundary or f"pywharf-test-{secrets.token_hex(12)}"
    parts = []
    for key, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
            + value.encode("utf-8") + b"\r\n"
        )
    if filename is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def post_upload(server: Server, fields: Iterable[tuple[str, str]], filename: str | None, content: bytes,
                auth: tuple[str, str] | None = WRITE, headers: Mapping[str, str] | None = None,
                path: str = "/simple/") -> requests.Response:
    """POST a legacy upload exactly as crafted."""
    body, content_type = encode_multipart(fields, filename, content)
    return requests.post(f"{server.base}{path}", data=body, auth=auth, timeout=60,
                         headers={"Content-Type": content_type, **(headers or {})})


def upload(server: Server, dist: Dist, auth: tuple[str, str] | None = WRITE, filename: str | None = None,
           override: Mapping[str, str | Sequence[str] | None] | None = None,
           with_digests: bool = True) -> requests.Response:
    """Upload ``dist`` (optionally under another ``filename`` or with overridden fields)."""
    return post_upload(server, upload_fields(dist, override, with_digests),
                       filename or dist.filename, dist.data, auth=auth)


def storage_of(server: Server, repo: str = "local") -> Path:
    return server.root / "cache" / repo / "storage"


def listing(folder: Path) -> set[str]:
    """Every path under ``folder`` (files and folders), relative, but the audit log's
    (``.pywharf/audit/``): a refused upload is recorded there (tests/test_audit.py), nothing else."""
    if not folder.exists():
        return set()
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if ".pywharf/audit" not in p.as_posix()}


def tree(folder: Path) -> set[str]:
    """Like :func:`listing` but without log files, which a running server keeps writing."""
    return {p for p in listing(folder) if not (p.endswith(".log") or ".log." in p or p.endswith("/log")
                                               or p == "log" or "/log/" in p or p.startswith("log/"))}


def temp_leftovers(storage: Path) -> list[str]:
    """Temp files in storage: ``.upload-*.part`` and any dotfile other than the sidecar dir."""
    found = [p.name for p in storage.iterdir() if p.name.startswith(".") and p.name != ".pywharf"]
    sidecars = storage / ".pywharf"
    if sidecars.exists():
        found += [f".pywharf/{p.name}" for p in sidecars.iterdir() if p.name.startswith(".")]
    found += [str(p.relative_to(storage)) for p in storage.rglob("*.part")]
    return sorted(set(found))


def wait_synced(server: Server, repo: str = "local", timeout: float = 10) -> None:
    """Wait for the first index sync (it writes ROOT/cache/<repo>/index.token), so that files
    the sync creates do not show up in a before/after comparison."""
    token = server.root / "cache" / repo / "index.token"
    deadline = time.monotonic() + timeout
    while not token.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"the first index sync never happened:\n{server.log()}")
        time.sleep(0.02)


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def raw_get(server: Server, raw_path: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``raw_path`` verbatim: http.client neither normalises nor re-quotes it."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", raw_path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def assert_clean_error(response: requests.Response, status: int) -> None:
    """The status is ``status`` and the body is a short human line, never a traceback."""
    body = response.text
    assert response.status_code == status, (response.status_code, body)
    assert "Traceback" not in body, body
    assert 'File "/' not in body, body


# -- auth ---------------------------------------------------------------------------------------


def test_missing_credentials_get_401_with_basic_challenge(fs_server: Server, tmp_path: Path) -> None:
    """Every read and write endpoint asks for basic auth, so pip/twine know to send it."""
    dist = make_wheel(tmp_path / "dists")
    for method, url in (("GET", "/simple/"), ("GET", "/simple/demo/"),
                        ("GET", f"/simple/demo/{dist.filename}")):
        response = requests.request(method, fs_server.base + url, timeout=10)
        assert_clean_error(response, 401)
        assert response.headers.get("WWW-Authenticate") == 'Basic realm="pywharf"', (url, response.headers)
    response = upload(fs_server, dist, auth=None)
    assert_clean_error(response, 401)
    assert response.headers.get("WWW-Authenticate") == 'Basic realm="pywharf"'
    assert dist.filename not in listing(storage_of(fs_server))


def test_wrong_secret_and_unknown_repo_get_401(fs_server: Server, tmp_path: Path) -> None:
    """A wrong secret, a secret of no repo, an unknown repo name or an empty password never
    get in; the answer is the same 401 so names cannot be probed."""
    dist = make_wheel(tmp_path / "dists")
    bad_auths = [("local", "wrong"), ("local", ""), ("nope", "read-secret-00"), ("nope", "write-secret"),
                 ("LOCAL", "write-secret")]
    for auth in bad_auths:
        response = requests.get(f"{fs_server.base}/simple/", auth=auth, timeout=10)
        assert_clean_error(response, 401)
        assert response.headers.get("WWW-Authenticate") == 'Basic realm="pywharf"', auth
        assert_clean_error(upload(fs_server, dist, auth=auth), 401)
    # A malformed Authorization header is a 401 too, not a 500.
    for header in ("Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer x"):
        response = requests.get(f"{fs_server.base}/simple/", headers={"Authorization": header}, timeout=10)
        assert_clean_error(response, 401)
    assert dist.filename not in listing(storage_of(fs_server))


def test_browser_user_agent_still_needs_basic_auth(fs_server: Server) -> None:
    """0.2.3 let browsers through to a login form; here basic auth applies whatever the UA."""
    headers = {"User-Agent": BROWSER_UA, "Accept": "text/html"}
    for url in ("/simple/", "/simple/demo/"):
        response = requests.get(fs_server.base + url, headers=headers, timeout=10, allow_redirects=False)
        assert_clean_error(response, 401)
        assert response.headers.get("WWW-Authenticate") == 'Basic realm="pywharf"'
        response = requests.get(fs_server.base + url, headers=headers, auth=("local", "wrong"), timeout=10,
                                allow_redirects=False)
        assert_clean_error(response, 401)
    response = requests.get(f"{fs_server.base}/simple/", headers=headers, auth=READ, timeout=10)
    assert response.status_code == 200, response.text
    assert "Simple index" in response.text


def test_read_secret_cannot_upload(fs_server: Server, tmp_path: Path) -> None:
    """The read secret is for pip; uploading with it is 403 and stores nothing."""
    wait_synced(fs_server)
    dist = make_wheel(tmp_path / "dists")
    before = listing(storage_of(fs_server))
    response = upload(fs_server, dist, auth=READ)
    assert_clean_error(response, 403)
    assert listing(storage_of(fs_server)) == before
    page = requests.get(f"{fs_server.base}/simple/demo/", auth=READ, timeout=10, allow_redirects=False)
    assert page.status_code == 404


# -- size limit ---------------------------------------------------------------------------------


def test_oversize_upload_is_413_and_leaves_nothing(server_factory, tmp_path: Path) -> None:
    """``max_file_bytes`` is enforced while streaming: 413, and neither the file nor its
    ``.upload-*.part`` temp file stays in storage; twine reports the failure too."""
    server = server_factory(fs_config(max_file_bytes=2000), "--extra_index_url=")
    wait_synced(server)
    storage = storage_of(server)
    dist = make_wheel(tmp_path / "dists", name="big", extra_bytes=os.urandom(20_000))
    assert len(dist.data) > 2000
    before = listing(storage)

    response = upload(server, dist)
    assert_clean_error(response, 413)
    assert listing(storage) == before, listing(storage) - before
    assert temp_leftovers(storage) == []

    env = client_env(tmp_path)
    result = run([tool("twine"), "upload", "--non-interactive", "--disable-progress-bar",
                  "--repository-url", f"{server.base}/simple/", "-u", "local", "-p", "write-secret",
                  str(dist.path)], env=env, check=False, timeout=120)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "413" in result.stdout + result.stderr, result.stdout + result.stderr
    assert listing(storage) == before
    assert temp_leftovers(storage) == []

    # A file within the limit is still accepted.
    small = make_wheel(tmp_path / "dists", name="small")
    assert len(small.data) <= 2000
    assert upload(server, small).status_code == 200
    assert (storage / small.filename).read_bytes() == small.data


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["md5_digest", "sha256_digest", "blake2_256_digest"])
def test_digest_mismatch_is_400(fs_server: Server, tmp_path: Path, field: str) -> None:
    """Each digest the client sends is checked against the bytes received."""
    wait_synced(fs_server)
    dist = make_wheel(tmp_path / "dists")
    before = listing(storage_of(fs_server))
    wrong = digests(b"some other bytes")[field]
    response = upload(fs_server, dist, override={field: wrong})
    assert_clean_error(response, 400)
    assert listing(storage_of(fs_server)) == before
    # Upper-case hex of the right digest is fine (twine sends lower case, others may not).
    right = digests(dist.data)[field].upper()
    assert upload(fs_server, dist, override={field: right}).status_code == 200
    assert (storage_of(fs_server) / dist.filename).read_bytes() == dist.data


def test_filename_and_metadata_must_agree(fs_server: Server, tmp_path: Path) -> None:
    """``name``, ``version`` and ``filetype`` must match the filename, and the filename must be
    a wheel or sdist name; otherwise 400 and nothing is stored."""
    wait_synced(fs_server)
    wheel = make_wheel(tmp_path / "dists")
    sdist = make_sdist(tmp_path / "dists")
    storage = storage_of(fs_server)
    before = listing(storage)
    cases: list[tuple[str, Dist, dict, str | None]] = [
        ("name of another project", wheel, {"name": "other-project"}, None),
        ("name missing", wheel, {"name": None}, None),
        ("version differs", wheel, {"version": "2.0"}, None),
        ("version missing", wheel, {"version": None}, None),
        ("version invalid", wheel, {"version": "not a version"}, None),
        ("wheel declared as sdist", wheel, {"filetype": "sdist"}, None),
        ("sdist declared as wheel", sdist, {"filetype": "bdist_wheel"}, None),
        ("not a distribution filename", wheel, {}, "notadist.txt"),
        ("wheel name without tags", wheel, {}, "demo-1.0.whl"),
        ("unsupported action", wheel, {":action": "remove_pkg"}, None),
    ]
    for label, dist, override, filename in cases:
        response = upload(fs_server, dist, filename=filename, override=override)
        assert response.status_code == 400, (label, response.status_code, response.text)
        assert_clean_error(response, 400)
        assert listing(storage) == before, (label, listing(storage) - before)
    # Normalisation differences are not mismatches: Demo_Pkg / demo.pkg name the same project.
    dotted = make_wheel(tmp_path / "dists", name="demo_pkg")
    assert upload(fs_server, dotted, override={"name": "Demo.Pkg"}).status_code == 200
    assert upload(fs_server, wheel, override={"version": "1.0.0"}).status_code == 200


@pytest.mark.parametrize("bad_name", [
    "../x-1.0-py3-none-any.whl",
    "../../x-1.0-py3-none-any.whl",
    "..%2fx-1.0-py3-none-any.whl",
    "/tmp/x-1.0-py3-none-any.whl",
    "..\\\\x-1.0-py3-none-any.whl",
    "sub/x-1.0-py3-none-any.whl",
])
def test_upload_path_traversal_is_400(fs_server: Server, tmp_path: Path, bad_name: str) -> None:
    """A filename that is a path is refused before anything touches the disk."""
    wait_synced(fs_server)
    dist = make_wheel(tmp_path / "dists", name="x")
    storage = storage_of(fs_server)
    outside = Path("/tmp/x-1.0-py3-none-any.whl")
    outside_before = outside.stat().st_mtime_ns if outside.exists() else None
    tree_before = tree(tmp_path)
    storage_before = listing(storage)

    response = upload(fs_server, dist, filename=bad_name)
    assert_clean_error(response, 400)
    assert tree(tmp_path) == tree_before, tree(tmp_path) ^ tree_before
    assert listing(storage) == storage_before
    assert not [p for p in tree(fs_server.root) if p.endswith("x-1.0-py3-none-any.whl")]
    assert (outside.stat().st_mtime_ns if outside.exists() else None) == outside_before


def test_download_path_traversal_is_refused(fs_server: Server, tmp_path: Path) -> None:
    """Encoded ``..`` in a download path never reaches the file system: 400 or 404."""
    dist = make_wheel(tmp_path / "dists")
    assert upload(fs_server, dist).status_code == 200
    (fs_server.root / "cache" / "local" / "secret.whl").write_bytes(b"secret")
    auth = {"Authorization": basic_header(*READ)}
    for raw in ("/simple/%2e%2e/%2e%2e/etc/passwd", "/simple/x/%2e%2e", "/simple/x/..%2f..%2fetc%2fpasswd",
                "/simple/demo/..%2fsecret.whl", "/simple/demo/%2e%2e%2fsecret.whl",
                "/simple/demo/..%2f..%2f..%2f..%2fetc%2fpasswd", "/simple/%2e%2e/"):
        status, body = raw_get(fs_server, raw, auth)
        assert status in (400, 404), (raw, status, body[:200])
        assert b"root:" not in body and body != b"secret"
    # The legitimate file still downloads through the same client.
    status, body = raw_get(fs_server, f"/simple/demo/{dist.filename}", auth)
    assert status == 200 and body == dist.data


def test_long_description_uploads(fs_server: Server, tmp_path: Path) -> None:
    """Descriptions over 1 MB (Starlette's form default) upload; PyPI allows several MB."""
    description = ("A long README line with some text in it.\n" * 80_000)[: 3 * 1024 * 1024]
    dist = make_wheel(tmp_path / "dists", name="verbose", description=description)
    response = upload(fs_server, dist, override={"description": description})
    assert response.status_code == 200, response.text
    assert (storage_of(fs_server) / dist.filename).read_bytes() == dist.data
    page = requests.get(f"{fs_server.base}/simple/verbose/", auth=READ, timeout=10)
    assert dist.filename in page.text


# -- downloads and pages ------------------------------------------------------------------------


def test_download_head_range_etag_cache_control(fs_server: Server, tmp_path: Path) -> None:
    """Downloads support HEAD, Range and conditional GET; files are cached as immutable."""
    dist = make_wheel(tmp_path / "dists")
    assert upload(fs_server, dist).status_code == 200
    url = f"{fs_server.base}/simple/demo/{dist.filename}"

    head = requests.head(url, auth=READ, timeout=10)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(dist.data)
    assert head.content == b""

    full = requests.get(url, auth=READ, timeout=10)
    assert full.status_code == 200 and full.content == dist.data
    assert "immutable" in full.headers.get("Cache-Control", "")
    etag = full.headers.get("ETag")
    assert etag, full.headers

    partial = requests.get(url, auth=READ, headers={"Range": "bytes=0-9"}, timeout=10)
    assert partial.status_code == 206, partial.status_code
    assert partial.content == dist.data[:10]
    assert partial.headers.get("Content-Range") == f"bytes 0-9/{len(dist.data)}"

    cached = requests.get(url, auth=READ, headers={"If-None-Match": etag}, timeout=10)
    assert cached.status_code == 304
    assert cached.content == b""
    stale = requests.get(url, auth=READ, headers={"If-None-Match": '"0000"'}, timeout=10)
    assert stale.status_code == 200 and stale.content == dist.data


def test_non_normalised_project_url_redirects(fs_server: Server, tmp_path: Path) -> None:
    """PEP 503: /simple/Demo_Pkg/ redirects (301) to the normalised /simple/demo-pkg/."""
    dist = make_wheel(tmp_path / "dists", name="Demo_Pkg")
    assert upload(fs_server, dist).status_code == 200
    for variant in ("Demo_Pkg", "DEMO.PKG", "demo_pkg", "Demo-Pkg"):
        response = requests.get(f"{fs_server.base}/simple/{variant}/", auth=READ, timeout=10,
                                allow_redirects=False)
        assert response.status_code == 301, (variant, response.status_code)
        assert response.headers["Location"].endswith("/simple/demo-pkg/"), response.headers["Location"]
    followed = requests.get(f"{fs_server.base}/simple/Demo_Pkg/", auth=READ, timeout=10)
    assert followed.status_code == 200 and dist.filename in followed.text


def test_project_page_lists_upload_at_once(fs_server: Server, tmp_path: Path) -> None:
    """Right after the upload's 200, the page has the file with the server's own sha256 and an
    HTML-escaped data-requires-python."""
    dist = make_wheel(tmp_path / "dists", requires_python=">=3.8,<4")
    response = upload(fs_server, dist, with_digests=False)
    assert response.status_code == 200, response.text
    page = requests.get(f"{fs_server.base}/simple/demo/", auth=READ, timeout=10)
    assert page.status_code == 200
    expected = hashlib.sha256(dist.data).hexdigest()
    assert f'href="{dist.filename}#sha256={expected}"' in page.text, page.text
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in page.text, page.text
    root = requests.get(f"{fs_server.base}/simple/", auth=READ, timeout=10)
    assert 'href="demo/"' in root.text
    # The same bytes again: 200, nothing changes (CI retries are safe).
    again = upload(fs_server, dist, with_digests=False)
    assert again.status_code == 200
    assert requests.get(f"{fs_server.base}/simple/demo/", auth=READ, timeout=10).text == page.text


@pytest.mark.parametrize("path", ["/simple/", "/simple", "/"])
def test_upload_is_accepted_at_every_spelling_and_never_redirected(fs_server: Server, tmp_path: Path,
                                                                    path: str) -> None:
    """twine aborts on a redirected upload: POST /simple, /simple/ and / all store directly."""
    dist = make_wheel(tmp_path, name=f"spelling{len(path)}")
    response = post_upload(fs_server, upload_fields(dist), dist.filename, dist.data, path=path)
    assert response.status_code == 200, response.text
    assert response.history == [], "the upload was redirected"
    assert (storage_of(fs_server) / dist.filename).read_bytes() == dist.data
