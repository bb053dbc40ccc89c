"""End-to-end: the modern Simple Repository API (PEP 503/629/691/700/658/714/592) and HTTP caching.

Why: pip and uv resolve fastest when an index speaks the protocol the way pypi.org does: JSON
pages, ``.metadata`` files instead of whole wheels, ``upload-time`` for ``--exclude-newer``,
yanks honoured. These tests start a real ``pywharf server`` with ``--access_log``, drive real
pip, uv, twine and ``pywharf yank``, and read the server's own access log to see what the
clients really fetched. Every page is checked against PEP 691's JSON schema and, for HTML, with
the same parsing pip does (``html.parser`` + ``packaging``).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import jsonschema
import pytest
import requests
from conftest import Server, client_env, fs_config, run, start_server, tool
from distbuilder import DistSpec, build_sdist, build_wheel
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

REPO, READ, WRITE = "local", "read-secret-00", "write-secret"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"

# PEP 691's JSON schema for the two pages, extended by PEP 700 (versions, size, upload-time) and
# PEP 714 (core-metadata); written from the PEPs' text.
_FILE_SCHEMA = {
    "type": "object",
    "required": ["filename", "url", "hashes"],
    "properties": {
        "filename": {"type": "string"},
        "url": {"type": "string"},
        "hashes": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]+$"}},
        "requires-python": {"type": ["string", "null"]},
        "dist-info-metadata": {"anyOf": [{"type": "boolean"}, {"$ref": "#/$defs/hashes"}]},
        "core-metadata": {"anyOf": [{"type": "boolean"}, {"$ref": "#/$defs/hashes"}]},
        "gpg-sig": {"type": "boolean"},
        "yanked": {"anyOf": [{"type": "boolean"}, {"type": "string"}]},
        "size": {"type": "integer", "minimum": 0},
        "upload-time": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"},
    },
}
_META = {
    "type": "object",
    "required": ["api-version"],
    "properties": {"api-version": {"type": "string", "pattern": r"^1\.\d+$"}},
}
PROJECT_SCHEMA = {
    "$defs": {"hashes": {"type": "object", "additionalProperties": {"type": "string"}}},
    "type": "object",
    "required": ["name", "files", "meta", "versions"],
    "properties": {
        "name": {"type": "string"},
        "files": {"type": "array", "items": _FILE_SCHEMA},
        "meta": _META,
        "versions": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    },
}
ROOT_SCHEMA = {
    "type": "object",
    "required": ["projects", "meta"],
    "properties": {
        "projects": {"type": "array", "items": {"type": "object", "required": ["name"],
                                                 "properties": {"name": {"type": "string"}}}},
        "meta": _META,
    },
}


# -- a pip-like reading of HTML pages ------------------------------------------------------------


class _PipLikeParser(HTMLParser):
    """What pip's ``parse_links`` takes from a page: the repository-version meta and anchors."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.anchors: list[dict[str, str | None]] = []
        self._open: dict[str, str | None] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            values = dict(attrs)
            if values.get("name"):
                self.meta[str(values["name"])] = str(values.get("content"))
        elif tag == "a":
            self._open, self._text = dict(attrs), ""

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append({**self._open, "_text": self._text})
            self._open = None


def parse_html_page(text: str) -> _PipLikeParser:
    parser = _PipLikeParser()
    parser.feed(text)
    parser.close()
    return parser


def dist_name_version(filename: str) -> tuple[str, object]:
    """Project name and version from a wheel or sdist filename, parsed as pip does."""
    if filename.endswith(".whl"):
        return parse_wheel_filename(filename)[:2]
    return parse_sdist_filename(filename)


def check_html_project_page(page_url: str, text: str, project: str) -> dict[str, dict[str, str | None]]:
    """PEP 503/629/592/658/714 rules for one project page; returns filename -> anchor."""
    parsed = parse_html_page(text)
    assert parsed.meta.get("pypi:repository-version", "").startswith("1."), parsed.meta
    files: dict[str, dict[str, str | None]] = {}
    for anchor in parsed.anchors:
        href = str(anchor["href"])
        url = urljoin(page_url, href)
        filename = Path(urlsplit(url).path).name
        assert anchor["_text"] == filename, "PEP 503: the link text is the filename"
        assert canonicalize_name(dist_name_version(filename)[0]) == project
        fragment = urlsplit(href).fragment
        assert re.fullmatch(r"sha256=[0-9a-f]{64}", fragment), href
        if anchor.get("data-requires-python") is not None:
            SpecifierSet(str(anchor["data-requires-python"]))  # parses once un-escaped, as pip does
        core = anchor.get("data-core-metadata")
        assert core == anchor.get("data-dist-info-metadata"), "PEP 714: both attributes, same value"
        if core is not None:
            assert re.fullmatch(r"sha256=[0-9a-f]{64}", str(core)), core
        assert "data-gpg-sig" not in anchor
        files[filename] = anchor
    return files


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """protoa 1.0 and 2.0 (wheel + sdist) need protob; protob 1.1 needs Python >= 4."""
    out = tmp_path_factory.mktemp("dists")
    specs = {
        "a1": DistSpec("protoa", "1.0", requires_dist=["protob"]),
        "a2": DistSpec("protoa", "2.0", requires_dist=["protob>=1.0"]),
        "b1": DistSpec("protob", "1.0"),
        "b11": DistSpec("protob", "1.1", requires_python=">=4"),
    }
    files = {key: build_wheel(spec, out) for key, spec in specs.items()}
    files["a2_sdist"] = build_sdist(specs["a2"], out)
    return files


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, Path]) -> Server:
    """One server for the module (uploads cost a twine run); tests that change state restore it."""
    tmp = tmp_path_factory.mktemp("proto")
    srv = start_server(tmp / "root", fs_config(REPO, READ, WRITE), "--extra_index_url=", "--access_log")
    env = client_env(tmp)
    run([tool("twine"), "upload", "--repository-url", f"{srv.base}/simple/", "-u", REPO, "-p", WRITE,
         "--non-interactive", "--disable-progress-bar", *map(str, corpus.values())], env, timeout=120)
    yield srv
    srv.stop()


def get(server: Server, path: str, secret: str = READ, **headers: str) -> requests.Response:
    return requests.get(f"{server.base}{path}", auth=(REPO, secret), headers=headers, timeout=10)


class AccessLog:
    """The server's ``--access_log`` lines written since ``mark()``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.offset = 0

    def mark(self) -> None:
        self.offset = len(self.server.log())

    def requests(self) -> list[tuple[str, str, int, str]]:
        """(method, path, status, content type) of every request logged since the mark."""
        lines = self.server.log()[self.offset:]
        found = re.findall(r'pywharf\.access: \S+ "(\w+) (\S+)" (\d{3}) (\S+) ', lines)
        return [(m, p, int(s), ct) for m, p, s, ct in found]


# -- 1. real resolvers use JSON pages and .metadata files --------------------------------------


def _fetched(log: AccessLog) -> tuple[set[str], set[str], dict[str, str]]:
    entries = [e for e in log.requests() if e[0] == "GET" and e[2] == 200]
    metadata = {Path(p).name for _, p, _, _ in entries if p.endswith(".metadata")}
    dists = {Path(p).name for _, p, _, _ in entries if p.endswith((".whl", ".tar.gz"))}
    pages = {p: ct for _, p, _, ct in entries if p.startswith("/simple/") and p.endswith("/")}
    return metadata, dists, pages


def test_pip_resolves_from_json_pages_and_metadata_files(server: Server, corpus: dict[str, Path],
                                                         tmp_path: Path) -> None:
    log = AccessLog(server)
    log.mark()
    run([sys.executable, "-m", "pip", "install", "--no-cache-dir", "--target", str(tmp_path / "t"),
         "--index-url", server.index_url(REPO, READ), "protoa"], client_env(tmp_path), timeout=120)
    assert (tmp_path / "t" / "protoa").is_dir() and (tmp_path / "t" / "protob").is_dir()
    metadata, dists, pages = _fetched(log)
    assert pages == {"/simple/protoa/": JSON_V1, "/simple/protob/": JSON_V1}, pages
    assert {corpus["a2"].name + ".metadata", corpus["b1"].name + ".metadata"} <= metadata, metadata
    assert dists == {corpus["a2"].name, corpus["b1"].name}, "pip downloaded files it did not install"


def test_uv_resolves_from_json_pages_and_metadata_files(server: Server, corpus: dict[str, Path],
                                                        tmp_path: Path) -> None:
    log = AccessLog(server)
    log.mark()
    run([tool("uv"), "pip", "install", "--python", sys.executable, "--target", str(tmp_path / "t"),
         "--index-url", server.index_url(REPO, READ), "protoa"], client_env(tmp_path), timeout=120)
    assert (tmp_path / "t" / "protoa").is_dir() and (tmp_path / "t" / "protob").is_dir()
    metadata, dists, pages = _fetched(log)
    assert pages == {"/simple/protoa/": JSON_V1, "/simple/protob/": JSON_V1}, pages
    assert {corpus["a2"].name + ".metadata", corpus["b1"].name + ".metadata"} <= metadata, metadata
    assert dists == {corpus["a2"].name, corpus["b1"].name}, "uv downloaded files it did not install"


# -- 2. every page validates -------------------------------------------------------------------


def test_every_page_validates_as_pep691_json_and_pep503_html(server: Server, corpus: dict[str, Path]) -> None:
    root_json = get(server, "/simple/", Accept=JSON_V1)
    assert root_json.headers["content-type"] == JSON_V1
    jsonschema.validate(root_json.json(), ROOT_SCHEMA)
    projects = [p["name"] for p in root_json.json()["projects"]]
    assert projects == ["protoa", "protob"]
    root_html = parse_html_page(get(server, "/simple/", Accept="text/html").text)
    assert root_html.meta["pypi:repository-version"].startswith("1.")
    assert [a["_text"] for a in root_html.anchors] == projects

    expected = {canonicalize_name(dist_name_version(p.name)[0]) for p in corpus.values()}
    assert set(projects) == expected
    for project in projects:
        page = get(server, f"/simple/{project}/", Accept=JSON_V1)
        document = page.json()
        jsonschema.validate(document, PROJECT_SCHEMA)
        assert document["name"] == project
        assert document["meta"]["api-version"] == "1.1"
        html_page = get(server, f"/simple/{project}/", Accept=HTML_V1)
        assert html_page.headers["content-type"].startswith(HTML_V1)
        anchors = check_html_project_page(f"{server.base}/simple/{project}/", html_page.text, project)
        assert set(anchors) == {f["filename"] for f in document["files"]}
        versions = set()
        for entry in document["files"]:
            local = next(p for p in corpus.values() if p.name == entry["filename"])
            data = local.read_bytes()
            assert entry["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()
            assert entry["size"] == len(data)
            download = requests.get(urljoin(page.url, entry["url"]), auth=(REPO, READ), timeout=10)
            assert download.content == data
            meta = entry["core-metadata"]
            assert meta == entry["dist-info-metadata"]
            assert isinstance(meta, dict), f"{entry['filename']}: a wheel/sdist 2.2 always has metadata"
            served = requests.get(urljoin(page.url, entry["url"]) + ".metadata", auth=(REPO, READ), timeout=10)
            assert served.status_code == 200
            assert hashlib.sha256(served.content).hexdigest() == meta["sha256"]
            assert served.content.startswith(b"Metadata-Version: 2.")
            assert anchors[entry["filename"]]["data-core-metadata"] == f"sha256={meta['sha256']}"
            assert anchors[entry["filename"]].get("data-requires-python") == entry["requires-python"]
            versions.add(dist_name_version(entry["filename"])[1])
        assert document["versions"] == sorted(str(v) for v in versions)
    # The escaping pip undoes: ">=4" is written "&gt;=4" in the attribute.
    assert 'data-requires-python="&gt;=4"' in get(server, "/simple/protob/", Accept="text/html").text


def test_content_negotiation_follows_pep691(server: Server) -> None:
    def negotiated(accept: str) -> requests.Response:
        return get(server, "/simple/protoa/", Accept=accept)

    assert negotiated(f"{JSON_V1}, {HTML_V1};q=0.5").headers["content-type"] == JSON_V1
    assert negotiated(f"{JSON_V1};q=0.2, {HTML_V1}").headers["content-type"].startswith(HTML_V1)
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert negotiated(browser).headers["content-type"].startswith("text/html")
    assert negotiated("*/*").headers["content-type"].startswith("text/html")
    refused = negotiated("application/vnd.pypi.simple.v2+json")
    assert refused.status_code == 406
    ok = negotiated(JSON_V1)
    assert "Accept" in ok.headers["vary"]
    forced = requests.get(f"{server.base}/simple/protoa/", params={"format": JSON_V1}, auth=(REPO, READ),
                          headers={"Accept": "text/html"}, timeout=10)
    assert forced.headers["content-type"] == JSON_V1


# -- 3. yanking -----------------------------------------------------------------------------------


def _pywharf_yank(server: Server, env: dict[str, str], *args: str) -> str:
    return run([tool("pywharf"), *args, "--url", server.base, "--repo", REPO, "--secret", WRITE], env,
               timeout=60).stdout


def test_yank_round_trip_with_pip(server: Server, corpus: dict[str, Path], tmp_path: Path) -> None:
    env = client_env(tmp_path)
    out = _pywharf_yank(server, env, "yank", "protoa", "2.0", "--reason", "broken build, use 1.0")
    assert corpus["a2"].name in out and corpus["a2_sdist"].name in out
    try:
        document = get(server, "/simple/protoa/", Accept=JSON_V1).json()
        yanked = {f["filename"]: f["yanked"] for f in document["files"]}
        assert yanked[corpus["a2"].name] == "broken build, use 1.0"
        assert yanked[corpus["a1"].name] is False
        info = get(server, "/pypi/protoa/2.0/json").json()
        assert info["info"]["yanked"] is True
        assert info["info"]["yanked_reason"] == "broken build, use 1.0"
        assert all(u["yanked_reason"] == "broken build, use 1.0" for u in info["urls"])
        assert get(server, "/pypi/protoa/json").json()["info"]["version"] == "1.0", "latest skips yanked"
        html_anchor = parse_html_page(get(server, "/simple/protoa/", Accept="text/html").text).anchors
        assert {a["_text"]: a.get("data-yanked") for a in html_anchor}[corpus["a2"].name] == "broken build, use 1.0"

        pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--index-url",
               server.index_url(REPO, READ)]
        run([*pip, "--target", str(tmp_path / "any"), "protoa"], env, timeout=120)
        assert list((tmp_path / "any").glob("protoa-1.0.dist-info")), "pip picked the yanked 2.0"
        pinned = run([*pip, "--target", str(tmp_path / "pinned"), "protoa==2.0"], env, timeout=120)
        assert list((tmp_path / "pinned").glob("protoa-2.0.dist-info"))
        assert "yanked" in pinned.stderr.lower() and "broken build, use 1.0" in pinned.stderr, pinned.stderr
    finally:
        out = _pywharf_yank(server, env, "unyank", "protoa", "2.0")
    assert corpus["a2"].name in out
    assert all(f["yanked"] is False for f in get(server, "/simple/protoa/", Accept=JSON_V1).json()["files"])


def test_yank_needs_the_write_secret_and_a_known_target(server: Server) -> None:
    url = f"{server.base}/yank/protoa/2.0"
    assert requests.post(url, auth=(REPO, READ), timeout=10).status_code == 403
    assert requests.post(url, auth=(REPO, "nope"), timeout=10).status_code == 401
    missing = requests.post(f"{server.base}/yank/protoa/9.9", auth=(REPO, WRITE), timeout=10)
    assert missing.status_code == 404


def test_yank_cli_reports_errors(server: Server, tmp_path: Path) -> None:
    result = run([tool("pywharf"), "yank", "protoa", "9.9", "--url", server.base, "--repo", REPO,
                  "--secret", WRITE], client_env(tmp_path), timeout=60, check=False)
    assert result.returncode != 0
    assert "404" in result.stderr and "9.9" in result.stderr


# -- 4. HTTP caching --------------------------------------------------------------------------------


def test_etag_304_and_new_etag_after_upload(server: Server, tmp_path: Path) -> None:
    first = get(server, "/simple/protob/", Accept=JSON_V1)
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[^"]+"', etag), "a strong ETag"
    assert first.headers["cache-control"].startswith("private, max-age=")
    again = get(server, "/simple/protob/", **{"Accept": JSON_V1, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    root_etag = get(server, "/simple/").headers["etag"]

    wheel = build_wheel(DistSpec("protob", "1.2"), tmp_path)
    run([tool("twine"), "upload", "--repository-url", f"{server.base}/simple/", "-u", REPO, "-p", WRITE,
         "--non-interactive", "--disable-progress-bar", str(wheel)], client_env(tmp_path), timeout=120)
    try:
        changed = get(server, "/simple/protob/", **{"Accept": JSON_V1, "If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        assert wheel.name in {f["filename"] for f in changed.json()["files"]}
        assert get(server, "/simple/").headers["etag"] == root_etag, "the project list did not change"
    finally:
        (server.root / "cache" / REPO / "storage" / wheel.name).unlink()  # keep the module corpus stable

    download = get(server, "/simple/protob/protob-1.0-py3-none-any.whl")
    assert "immutable" in download.headers["cache-control"]
    assert get(server, "/simple/protob/protob-1.0-py3-none-any.whl",
               **{"If-None-Match": download.headers["etag"]}).status_code == 304


def test_gzip_only_for_pages_worth_it(server: Server) -> None:
    """Pages of at least GZIP_MIN_BYTES are gzipped for clients that accept it; small ones are not."""
    from pywharf_core.http.pages import GZIP_MIN_BYTES

    large, small = "/simple/protoa/", "/simple/"
    for path, accept in ((large, JSON_V1), (small, JSON_V1)):
        plain = get(server, path, Accept=accept, **{"Accept-Encoding": "identity"})
        raw = requests.get(f"{server.base}{path}", auth=(REPO, READ), timeout=10, stream=True,
                           headers={"Accept": accept, "Accept-Encoding": "gzip"})
        body = raw.raw.read()
        if path == large:
            assert len(plain.content) >= GZIP_MIN_BYTES, "the corpus must make this page large"
            assert raw.headers["content-encoding"] == "gzip"
            assert gzip.decompress(body) == plain.content
            assert raw.headers["etag"] != plain.headers["etag"], "each encoding has its own strong ETag"
        else:
            assert len(plain.content) < GZIP_MIN_BYTES
            assert "content-encoding" not in raw.headers and body == plain.content
