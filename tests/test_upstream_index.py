"""The upstream simple-index client (pywharf_core/service/upstream_index.py) against real HTTP
servers on loopback: a scriptable PEP 691 JSON server and a plain static web server serving a
PEP 503 HTML tree."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from upstream_standin import JSON_V1, Route, StaticTree, Upstream, json_page

from pywharf_core.model.errors import InvalidName
from pywharf_core.service.upstream_index import (
    PAGE_ACCEPT,
    NotModified,
    UpstreamFile,
    UpstreamIndex,
    UpstreamPage,
    UpstreamUnavailable,
    filter_cooldown,
    parse_upload_time,
    to_record,
)

H1, H2, H3 = "a" * 64, "b" * 64, "c" * 64


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


def page(upstream: Upstream, project: str = "demo", **kwargs) -> UpstreamPage:
    result = UpstreamIndex(f"{upstream.base}/simple/", **kwargs).fetch_project(project)
    assert isinstance(result, UpstreamPage)
    return result


def by_name(result: UpstreamPage) -> dict[str, UpstreamFile]:
    return {f.filename: f for f in result.files}


# -- PEP 691 JSON ----------------------------------------------------------------------------------


def test_json_page_keeps_hashes_requires_python_yanked_metadata_and_upload_time(upstream: Upstream) -> None:
    upstream.routes["/simple/demo/"] = json_page("Demo", [
        {"filename": "demo-1.0-py3-none-any.whl", "url": "../../files/demo-1.0-py3-none-any.whl",
         "hashes": {"sha256": H1.upper(), "md5": "x"}, "requires-python": "<4,>=3.8", "size": 1234,
         "yanked": False, "core-metadata": {"sha256": H2}, "upload-time": "2024-01-02T03:04:05.123456Z"},
        {"filename": "demo-1.0.tar.gz", "url": "https://files.example.org/demo-1.0.tar.gz#sha256=ignored",
         "hashes": {"sha256": H3}, "yanked": "broken build", "dist-info-metadata": True,
         "upload-time": "2024-01-02T03:04:05Z"},
        {"filename": "demo-0.9-py3-none-any.whl", "url": "/files/demo-0.9-py3-none-any.whl",
         "hashes": {}, "yanked": True, "data-dist-info-metadata": {"sha256": H1}},
        {"filename": "demo-0.8.tar.gz", "url": "demo-0.8.tar.gz", "hashes": {"sha256": H1}, "yanked": ""},
        # Skipped: not a wheel or sdist, another project, not http, a duplicate.
        {"filename": "demo-1.0-py3.8.egg", "url": "demo-1.0-py3.8.egg", "hashes": {"sha256": H1}},
        {"filename": "other-1.0.tar.gz", "url": "other-1.0.tar.gz", "hashes": {"sha256": H1}},
        {"filename": "demo-0.7.tar.gz", "url": "javascript:alert(1)", "hashes": {"sha256": H1}},
        {"filename": "demo-0.8.tar.gz", "url": "elsewhere/demo-0.8.tar.gz", "hashes": {"sha256": H2}},
    ], versions=["0.8", "0.9", "1.0"])
    upstream.routes["/simple/demo/"].etag = '"v1"'
    result = page(upstream, "DEMO")
    assert (result.project, result.api_version, result.etag, result.skipped) == ("demo", "1.1", '"v1"', 4)
    assert result.url == f"{upstream.base}/simple/demo/"
    files = by_name(result)
    assert list(files) == ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz", "demo-0.9-py3-none-any.whl",
                           "demo-0.8.tar.gz"]
    wheel = files["demo-1.0-py3-none-any.whl"]
    assert wheel == UpstreamFile(
        "demo-1.0-py3-none-any.whl", f"{upstream.base}/files/demo-1.0-py3-none-any.whl", H1, 1234, "<4,>=3.8",
        False, "", H2, "2024-01-02T03:04:05.123456Z")
    assert wheel.metadata_url == wheel.url + ".metadata"
    sdist = files["demo-1.0.tar.gz"]
    assert (sdist.url, sdist.yanked, sdist.yanked_reason) == ("https://files.example.org/demo-1.0.tar.gz", True,
                                                              "broken build")
    assert (sdist.core_metadata_sha256, sdist.upload_time, sdist.size) == ("", "2024-01-02T03:04:05.000000Z", None)
    old = files["demo-0.9-py3-none-any.whl"]
    assert (old.sha256, old.yanked, old.yanked_reason, old.core_metadata_sha256) == (None, True, "", H1)
    assert old.url == f"{upstream.base}/files/demo-0.9-py3-none-any.whl"
    assert files["demo-0.8.tar.gz"].url == f"{upstream.base}/simple/demo/demo-0.8.tar.gz"
    assert files["demo-0.8.tar.gz"].yanked is False  # "" is not a reason: pip reads it as not yanked
    assert files["demo-0.8.tar.gz"].core_metadata_sha256 is None
    # The Accept header asks for JSON first, as pip does.
    assert upstream.requests[0][1]["Accept"] == PAGE_ACCEPT


def test_to_record_offers_only_files_with_a_sha256(upstream: Upstream) -> None:
    upstream.routes["/simple/demo/"] = json_page("demo", [
        {"filename": "demo-1.0-py3-none-any.whl", "url": "demo-1.0-py3-none-any.whl", "hashes": {"sha256": H1},
         "requires-python": ">=3.8", "size": 10, "yanked": "bad", "core-metadata": {"sha256": H2},
         "upload-time": "2024-01-02T03:04:05.5Z"},
        {"filename": "demo-1.1-py3-none-any.whl", "url": "demo-1.1-py3-none-any.whl", "hashes": {"md5": "x"},
         "core-metadata": True},
        {"filename": "demo-1.2.tar.gz", "url": "demo-1.2.tar.gz", "hashes": {"sha256": H3}, "core-metadata": True},
    ])
    files = by_name(page(upstream))
    record = to_record(files["demo-1.0-py3-none-any.whl"])
    assert record is not None
    assert (record.distrib, record.version, record.sha256, record.size, record.upload_time) == (
        "demo", "1.0", H1, 10, "2024-01-02T03:04:05.500000Z")
    assert (record.requires_python, record.yanked, record.yanked_reason, record.metadata_sha256) == (
        ">=3.8", True, "bad", H2)
    assert to_record(files["demo-1.1-py3-none-any.whl"]) is None  # nothing to verify the bytes against
    sdist = to_record(files["demo-1.2.tar.gz"])
    assert sdist is not None
    # Size unknown -> 0; metadata offered without a hash -> not advertised; no upload time -> "".
    assert (sdist.size, sdist.metadata_sha256, sdist.upload_time) == (0, "", "")


def test_gzip_page_is_decoded_and_etag_gives_not_modified(upstream: Upstream) -> None:
    body = json.dumps({"meta": {"api-version": "1.0"}, "name": "demo", "files": [
        {"filename": "demo-1.0.tar.gz", "url": "demo-1.0.tar.gz", "hashes": {"sha256": H1}}]}).encode()
    upstream.routes["/simple/demo/"] = Route(body=gzip.compress(body), content_type=JSON_V1,
                                             headers={"Content-Encoding": "gzip"}, etag='W/"abc"')
    index = UpstreamIndex(f"{upstream.base}/simple")  # no trailing slash: one is added
    first = index.fetch_project("demo")
    assert isinstance(first, UpstreamPage) and first.etag == 'W/"abc"' and len(first.files) == 1
    again = index.fetch_project("demo", etag=first.etag)
    assert again == NotModified('W/"abc"')
    assert upstream.requests[-1][1]["If-None-Match"] == 'W/"abc"'


def test_redirect_is_followed_and_relative_urls_resolve_against_the_final_page(upstream: Upstream) -> None:
    upstream.routes["/old/demo/"] = Route(status=301, headers={"Location": "/simple/demo/"})
    upstream.routes["/simple/demo/"] = json_page("demo", [
        {"filename": "demo-1.0.tar.gz", "url": "../../files/demo-1.0.tar.gz", "hashes": {"sha256": H1}}])
    result = UpstreamIndex(f"{upstream.base}/old/").fetch_project("demo")
    assert isinstance(result, UpstreamPage)
    assert result.url == f"{upstream.base}/simple/demo/"
    assert result.files[0].url == f"{upstream.base}/files/demo-1.0.tar.gz"


def test_redirect_loop_is_bounded(upstream: Upstream) -> None:
    upstream.routes["/simple/demo/"] = Route(status=302, headers={"Location": "/simple/demo/"})
    with pytest.raises(UpstreamUnavailable, match="redirects"):
        UpstreamIndex(f"{upstream.base}/simple/").fetch_project("demo")
    assert upstream.hits["/simple/demo/"] == 6


# -- PEP 503 HTML from a plain static web server --------------------------------------------------------


HTML = """<!DOCTYPE html>
<html><head><meta name="pypi:repository-version" content="1.0"><title>Links for demo</title></head>
<body>
<a href="../../packages/demo-1.0-py3-none-any.whl#sha256={h1}" data-requires-python="&lt;4,&gt;=3.8"
   data-core-metadata="sha256={h2}">demo-1.0-py3-none-any.whl</a><br>
<a href="http://cdn.example.org/p/demo-1.0.tar.gz#md5=abc&amp;sha256={h3}" data-yanked="bad &amp; broken"
   data-dist-info-metadata="true">demo-1.0.tar.gz</a><br>
<a href="demo-0.9.zip#sha256=nothex" data-yanked="">demo-0.9.zip</a><br>
<a href="demo_docs-1.0.tar.gz#sha256={h1}">demo_docs-1.0.tar.gz</a><br>
<a href="demo-0.1.tar.bz2#sha256={h1}">demo-0.1.tar.bz2</a><br>
<a name="no-href">anchor without href</a>
</body></html>
"""


def test_html_only_upstream_served_by_a_static_web_server(tmp_path: Path) -> None:
    folder = tmp_path / "tree" / "simple" / "demo"
    folder.mkdir(parents=True)
    (folder / "index.html").write_text(HTML.format(h1=H1, h2=H2, h3=H3.upper()))
    server = StaticTree(tmp_path / "tree")
    try:
        result = UpstreamIndex(f"{server.base}/simple/").fetch_project("Demo")
    finally:
        server.stop()
    assert isinstance(result, UpstreamPage)
    assert (result.project, result.api_version, result.etag, result.skipped) == ("demo", "1.0", None, 2)
    files = by_name(result)
    wheel = files["demo-1.0-py3-none-any.whl"]
    assert wheel == UpstreamFile("demo-1.0-py3-none-any.whl", f"{server.base}/packages/demo-1.0-py3-none-any.whl",
                                 H1, None, "<4,>=3.8", False, "", H2, None)
    sdist = files["demo-1.0.tar.gz"]
    assert (sdist.url, sdist.sha256) == ("http://cdn.example.org/p/demo-1.0.tar.gz", H3)
    assert (sdist.yanked, sdist.yanked_reason, sdist.core_metadata_sha256) == (True, "bad & broken", "")
    old = files["demo-0.9.zip"]
    assert (old.sha256, old.yanked, old.yanked_reason) == (None, True, "")  # an empty data-yanked still yanks
    assert to_record(old) is None


def test_html_base_href_and_percent_encoded_filename(upstream: Upstream) -> None:
    body = (f'<html><head><base href="/mirror/files/"></head><body>'
            f'<a href="demo-1.0%2Blocal-py3-none-any.whl#sha256={H1}">x</a></body></html>').encode()
    upstream.routes["/simple/demo/"] = Route(body=body, content_type="text/html; charset=utf-8")
    (file,) = page(upstream).files
    assert file.filename == "demo-1.0+local-py3-none-any.whl"
    assert file.url == f"{upstream.base}/mirror/files/demo-1.0%2Blocal-py3-none-any.whl"


# -- failures ----------------------------------------------------------------------------------------------


def test_404_is_none_and_bad_names_are_never_sent(upstream: Upstream) -> None:
    index = UpstreamIndex(f"{upstream.base}/simple/")
    assert index.fetch_project("missing") is None
    with pytest.raises(InvalidName):
        index.fetch_project("../etc")
    assert list(upstream.hits) == ["/simple/missing/"]


@pytest.mark.parametrize("status", [500, 502, 503, 401, 403, 429])
def test_error_statuses_are_unavailable(upstream: Upstream, status: int) -> None:
    upstream.routes["/simple/demo/"] = Route(status=status, body=b"oops", content_type="text/plain")
    with pytest.raises(UpstreamUnavailable, match=f"HTTP {status}"):
        UpstreamIndex(f"{upstream.base}/simple/").fetch_project("demo")


def test_timeout_and_refused_connection_are_unavailable(upstream: Upstream) -> None:
    upstream.routes["/simple/demo/"] = Route(delay=1.0, body=b"{}", content_type=JSON_V1)
    with pytest.raises(UpstreamUnavailable, match="Timeout"):
        UpstreamIndex(f"{upstream.base}/simple/", timeout=0.2).fetch_project("demo")
    base = upstream.base
    upstream.stop()
    with pytest.raises(UpstreamUnavailable, match="ConnectionError"):
        UpstreamIndex(f"{base}/simple/", timeout=1).fetch_project("demo")


def test_oversize_page_is_refused_with_or_without_a_length(upstream: Upstream) -> None:
    files = [{"filename": f"demo-1.{i}.tar.gz", "url": f"demo-1.{i}.tar.gz", "hashes": {"sha256": H1}}
             for i in range(2000)]
    route = json_page("demo", files)
    assert len(route.body) > 100_000  # type: ignore[arg-type]
    upstream.routes["/simple/demo/"] = route
    with pytest.raises(UpstreamUnavailable, match="larger than 100000 bytes"):
        page(upstream, max_page_bytes=100_000)
    route.send_length = False  # the cap holds while reading too
    with pytest.raises(UpstreamUnavailable, match="larger than 100000 bytes"):
        page(upstream, max_page_bytes=100_000)
    # A gzip body small on the wire is counted decompressed.
    upstream.routes["/simple/demo/"] = Route(body=gzip.compress(route.body), content_type=JSON_V1,  # type: ignore[arg-type]
                                             headers={"Content-Encoding": "gzip"})
    with pytest.raises(UpstreamUnavailable, match="larger than 100000 bytes"):
        page(upstream, max_page_bytes=100_000)
    with pytest.raises(UpstreamUnavailable, match="more than 1000 files"):
        page(upstream, max_files=1000)
    assert len(page(upstream).files) == 2000
    html = "".join(f'<a href="demo-1.{i}.tar.gz#sha256={H1}">x</a>' for i in range(2000)).encode()
    upstream.routes["/simple/demo/"] = Route(body=html, content_type="text/html")
    with pytest.raises(UpstreamUnavailable, match="more than 1000 files"):
        page(upstream, max_files=1000)


GOOD_FILE = {"filename": "demo-1.0.tar.gz", "url": "demo-1.0.tar.gz", "hashes": {"sha256": H1}}


@pytest.mark.parametrize(("body", "why"), [
    (b"<not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"meta": {"api-version": "1.0"}, "name": "demo"}', "'files'"),
    (json.dumps({"meta": {"api-version": "2.0"}, "name": "demo", "files": []}).encode(), "api-version"),
    (json.dumps({"meta": {}, "name": "demo", "files": []}).encode(), "api-version"),
    (json.dumps({"meta": {"api-version": "1.0"}, "name": "other", "files": []}).encode(), "not of 'demo'"),
    (json.dumps({"meta": {"api-version": "1.0"}, "name": "demo", "files": {}}).encode(), "'files'"),
    (json.dumps({"meta": {"api-version": "1.0"}, "name": "demo", "files": ["x"]}).encode(), "not an object"),
    (json.dumps({"meta": {"api-version": "1.0"}, "name": "demo",
                 "files": [{**GOOD_FILE, "hashes": "sha256"}]}).encode(), "'hashes'"),
    (json.dumps({"meta": {"api-version": "1.0"}, "name": "demo",
                 "files": [{**GOOD_FILE, "size": "12"}]}).encode(), "'size'"),
    (json.dumps({"meta": {"api-version": "1.0"}, "name": "demo",
                 "files": [{**GOOD_FILE, "size": True}]}).encode(), "'size'"),
    (json.dumps({"meta": {"api-version": "1.0"}, "name": "demo",
                 "files": [{**GOOD_FILE, "yanked": 1}]}).encode(), "'yanked'"),
    (json.dumps({"meta": {"api-version": "1.0"}, "name": "demo",
                 "files": [{**GOOD_FILE, "core-metadata": "yes"}]}).encode(), "'core-metadata'"),
    (json.dumps({"meta": {"api-version": "1.0"}, "name": "demo",
                 "files": [{**GOOD_FILE, "filename": None}]}).encode(), "'filename'"),
    (b"[" * 100_000, "not JSON"),
])
def test_garbage_json_is_a_malformed_page(upstream: Upstream, body: bytes, why: str) -> None:
    upstream.routes["/simple/demo/"] = Route(body=body, content_type=JSON_V1)
    with pytest.raises(UpstreamUnavailable, match="malformed") as caught:
        UpstreamIndex(f"{upstream.base}/simple/").fetch_project("demo")
    assert why in str(caught.value)


def test_unexpected_content_type_is_refused(upstream: Upstream) -> None:
    upstream.routes["/simple/demo/"] = Route(body=b"demo-1.0.tar.gz", content_type="text/plain")
    with pytest.raises(UpstreamUnavailable, match="content type 'text/plain'"):
        UpstreamIndex(f"{upstream.base}/simple/").fetch_project("demo")


def test_overlong_values_are_skipped_or_cut(upstream: Upstream) -> None:
    upstream.routes["/simple/demo/"] = json_page("demo", [
        {**GOOD_FILE, "requires-python": ">=3" + "," * 5000},
        {"filename": "demo-1.1.tar.gz", "url": "demo-1.1.tar.gz", "hashes": {"sha256": H1}, "yanked": "r" * 5000},
    ])
    result = page(upstream)
    assert [f.filename for f in result.files] == ["demo-1.1.tar.gz"] and result.skipped == 1
    assert len(result.files[0].yanked_reason) == 1024


# -- cooldown and times ----------------------------------------------------------------------------------


def test_filter_cooldown() -> None:
    now = datetime(2024, 6, 10, 12, 0, tzinfo=timezone.utc)

    def file(name: str, uploaded: str | None) -> UpstreamFile:
        return UpstreamFile(name, f"https://x/{name}", H1, upload_time=uploaded)

    old = file("demo-1.0.tar.gz", "2024-06-01T00:00:00.000000Z")
    edge = file("demo-1.1.tar.gz", "2024-06-03T12:00:00.000000Z")  # exactly 7 days old: offered
    fresh = file("demo-1.2.tar.gz", "2024-06-09T00:00:00.000000Z")
    future = file("demo-1.3.tar.gz", "2024-07-01T00:00:00.000000Z")
    unknown = file("demo-1.4.tar.gz", None)
    files = [old, edge, fresh, future, unknown]
    assert filter_cooldown(files, None, now) == tuple(files)
    assert filter_cooldown(files, 7 * 86400, now) == (old, edge)
    assert filter_cooldown(files, 0, now) == (old, edge, fresh)


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ("2024-01-02T03:04:05.1Z", datetime(2024, 1, 2, 3, 4, 5, 100000, tzinfo=timezone.utc)),
    ("2024-01-02T03:04:05.123456789Z", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)),
    ("2024-01-02T03:04:05+02:00", datetime(2024, 1, 2, 1, 4, 5, tzinfo=timezone.utc)),
    ("2024-01-02 03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ("2024-13-02T03:04:05Z", None),
    ("yesterday", None),
    ("", None),
])
def test_parse_upload_time(text: str, expected: datetime | None) -> None:
    assert parse_upload_time(text) == expected


def test_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        UpstreamIndex("file:///etc/")
