"""Which core metadata a distribution file yields, and what is served as ``<file>.metadata``.

pip and uv resolve from ``<file>.metadata`` (PEP 658) without downloading the file, so it must
be what the installed distribution will really say: the METADATA of the wheel's *own*
dist-info (not a vendored one), and an sdist's PKG-INFO only when PEP 643 makes it reliable.
The archives are real zip and tar.gz files built here; the last test goes through the upload
endpoint of the app, in-process.
"""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
import time
import zipfile
from collections.abc import Callable
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_config
from distbuilder import metadata_text
from starlette.testclient import TestClient
from test_upload_rules import READ, WRITE, Dist, encode_multipart, make_sdist, make_wheel, upload_fields

import pywharf_core.model.metadata as metadata_module
from pywharf_core.http.app import create_app
from pywharf_core.model.metadata import (
    _split_message,
    extract_core_metadata,
    parse_metadata,
    read_core_metadata,
    read_metadata_bytes,
)
from pywharf_core.model.records import MULTI_VALUED_FIELDS
from pywharf_core.service.server_state import ServerSettings, ServerState, build_repos, load_setup

JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"


# -- archives -----------------------------------------------------------------------------------


def write_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A zip whose central directory lists ``members`` in this order."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def write_tar_gz(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def meta(name: str, version: str, *extra: str, metadata_version: str = "2.1") -> bytes:
    lines = [f"Metadata-Version: {metadata_version}", f"Name: {name}", f"Version: {version}", *extra]
    return ("\n".join(lines) + "\n\nLong description.\n").encode()


def wheel(tmp_path: Path, filename: str, members: list[tuple[str, bytes]]) -> Path:
    return write_zip(tmp_path / filename, [("demo/__init__.py", b"VALUE = 1\n"), *members])


def sdist(tmp_path: Path, pkg_info: bytes, filename: str = "demo-1.0.tar.gz") -> Path:
    return write_tar_gz(tmp_path / filename, [("demo-1.0/PKG-INFO", pkg_info), ("demo-1.0/setup.py", b"")])


# -- wheels: the own dist-info, and only it -----------------------------------------------------


def test_wheel_serves_its_own_metadata_not_a_vendored_one_listed_first(tmp_path: Path) -> None:
    own = meta("demo", "1.0", "Requires-Dist: requests")
    path = wheel(tmp_path, "demo-1.0-py3-none-any.whl", [
        ("other-2.0.dist-info/METADATA", meta("other", "2.0", "Requires-Dist: evil")),
        ("demo-1.0.dist-info/METADATA", own),
        ("demo-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\n"),
    ])
    assert zipfile.ZipFile(path).namelist()[1] == "other-2.0.dist-info/METADATA"
    assert read_metadata_bytes(path) == own
    assert extract_core_metadata(path, path.name) == own
    fields = read_core_metadata(path)
    assert (fields["name"], fields["version"], fields["requires_dist"]) == ("demo", "1.0", ["requests"])


@pytest.mark.parametrize("directory", ["Foo_Bar-1.0", "foo_bar-1.0", "Foo.Bar-1.0.0", "foo-bar-1.0"])
def test_wheel_finds_its_own_dist_info_in_another_spelling(tmp_path: Path, directory: str) -> None:
    own = meta("Foo_Bar", "1.0")
    path = wheel(tmp_path, "foo_bar-1.0-py3-none-any.whl", [
        ("other-2.0.dist-info/METADATA", meta("other", "2.0")),
        (f"{directory}.dist-info/METADATA", own),
    ])
    assert extract_core_metadata(path, path.name) == own


@pytest.mark.parametrize("members", [
    [("vendored-1.0.dist-info/METADATA", b"")],  # only vendored ones
    [("demo-1.1.dist-info/METADATA", b"")],  # another version
    [("demox-1.0.dist-info/METADATA", b"")],  # another name with the same prefix
    [("demo-1.0/demo-1.0.dist-info/METADATA", b"")],  # not top-level
    [("demo-1.0.dist-info/RECORD", b"")],  # the directory without METADATA
    [],
], ids=["vendored-only", "other-version", "prefix-name", "nested", "no-metadata", "no-dist-info"])
def test_wheel_without_its_own_dist_info_has_no_metadata(tmp_path: Path, members: list) -> None:
    members = [(name, data or meta("x", "1")) for name, data in members]
    path = wheel(tmp_path, "demo-1.0-py3-none-any.whl", [("other-2.0.dist-info/METADATA", meta("other", "2.0")),
                                                         *members])
    assert read_metadata_bytes(path) is None
    assert extract_core_metadata(path, path.name) is None
    assert read_core_metadata(path) == {}


def test_wheel_with_two_spellings_of_its_dist_info_is_ambiguous(tmp_path: Path) -> None:
    path = wheel(tmp_path, "demo-1.0-py3-none-any.whl", [
        ("demo-1.0.dist-info/METADATA", meta("demo", "1.0")),
        ("Demo-1.0.dist-info/METADATA", meta("demo", "1.0", "Requires-Dist: other")),
    ])
    assert extract_core_metadata(path, path.name) is None


def test_staged_upload_uses_the_given_filename(tmp_path: Path) -> None:
    own = meta("demo", "1.0")
    staged = write_zip(tmp_path / "upload-123.part", [("demo-1.0.dist-info/METADATA", own)])
    assert extract_core_metadata(staged, "demo-1.0-py3-none-any.whl") == own
    assert extract_core_metadata(staged, "other-1.0-py3-none-any.whl") is None


def test_wheel_reads_only_its_metadata_member_and_keeps_the_size_bound(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    own = meta("demo", "1.0")
    path = wheel(tmp_path, "demo-1.0-py3-none-any.whl", [
        ("other-2.0.dist-info/METADATA", meta("other", "2.0")),
        ("demo/big.bin", b"\0" * 1_000_000),
        ("demo-1.0.dist-info/METADATA", own),
    ])
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def recording_open(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    assert extract_core_metadata(path, path.name) == own
    assert opened == ["demo-1.0.dist-info/METADATA"]

    monkeypatch.setattr(metadata_module, "MAX_METADATA_BYTES", len(own) - 1)
    assert extract_core_metadata(path, path.name) is None, "too big: no fallback to another METADATA"


def test_broken_wheel_has_no_metadata(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    assert extract_core_metadata(path, path.name) is None
    assert read_core_metadata(path) == {}


# -- sdists: PKG-INFO only when PEP 643 makes it reliable ---------------------------------------


def test_sdist_metadata_version_2_1_is_not_served(tmp_path: Path) -> None:
    path = sdist(tmp_path, meta("demo", "1.0", "Requires-Dist: requests", metadata_version="2.1"))
    assert extract_core_metadata(path, path.name) is None
    assert read_core_metadata(path)["requires_dist"] == ["requests"], "still read for the index"


@pytest.mark.parametrize("metadata_version", ["2.2", "2.3", "2.4", " 2.2 "])
def test_sdist_metadata_version_2_2_without_dynamic_is_served(tmp_path: Path, metadata_version: str) -> None:
    pkg_info = meta("demo", "1.0", "Requires-Dist: requests", metadata_version=metadata_version)
    path = sdist(tmp_path, pkg_info)
    assert extract_core_metadata(path, path.name) == pkg_info


@pytest.mark.parametrize("dynamic", [
    ["Dynamic: Requires-Dist"],
    ["Dynamic: Requires-Python"],
    ["Dynamic: Provides-Extra"],
    ["Dynamic: requires-dist"],
    ["Dynamic: PROVIDES-EXTRA"],
    ["Dynamic: Summary", "Dynamic: Requires-Python"],
    ["dynamic:  Requires-Dist  "],
])
def test_sdist_with_dynamic_resolver_fields_is_not_served(tmp_path: Path, dynamic: list[str]) -> None:
    path = sdist(tmp_path, meta("demo", "1.0", "Requires-Dist: requests", *dynamic, metadata_version="2.2"))
    assert extract_core_metadata(path, path.name) is None


@pytest.mark.parametrize("dynamic", [["Dynamic: Summary"], ["Dynamic: Summary", "Dynamic: Classifier"]])
def test_sdist_with_only_other_dynamic_fields_is_served(tmp_path: Path, dynamic: list[str]) -> None:
    pkg_info = meta("demo", "1.0", *dynamic, metadata_version="2.2")
    path = sdist(tmp_path, pkg_info)
    assert extract_core_metadata(path, path.name) == pkg_info


def test_sdist_pkg_info_must_be_top_level(tmp_path: Path) -> None:
    pkg_info = meta("demo", "1.0", metadata_version="2.2")
    path = write_tar_gz(tmp_path / "demo-1.0.tar.gz", [
        ("demo-1.0/src/demo.egg-info/PKG-INFO", pkg_info),
        ("PKG-INFO", pkg_info),
    ])
    assert extract_core_metadata(path, path.name) is None
    path = write_tar_gz(tmp_path / "demo-1.0.tar.gz", [
        ("demo-1.0/src/demo.egg-info/PKG-INFO", meta("demo", "1.0", "Requires-Dist: x", metadata_version="2.2")),
        ("demo-1.0/PKG-INFO", pkg_info),
    ])
    assert extract_core_metadata(path, path.name) == pkg_info


def test_zip_sdist_serves_pkg_info_never_a_dist_info_metadata(tmp_path: Path) -> None:
    pkg_info = meta("demo", "1.0", metadata_version="2.2")
    path = write_zip(tmp_path / "demo-1.0.zip", [
        ("demo-1.0.dist-info/METADATA", meta("demo", "1.0", "Requires-Dist: evil", metadata_version="2.2")),
        ("demo-1.0/PKG-INFO", pkg_info),
    ])
    assert extract_core_metadata(path, path.name) == pkg_info
    dynamic = write_zip(tmp_path / "demo-2.0.zip", [
        ("demo-2.0/PKG-INFO", meta("demo", "2.0", "Dynamic: Requires-Dist", metadata_version="2.2")),
    ])
    assert extract_core_metadata(dynamic, dynamic.name) is None


# -- parse_metadata: same output as email.parser.HeaderParser, in linear time ---------------------


def reference_parse(data: bytes) -> dict[str, Any]:
    """What parse_metadata returned when it used HeaderParser (accumulation made linear)."""
    message = HeaderParser().parsestr(data.decode("utf-8", "replace"))
    fields: dict[str, Any] = {}
    for header, value in message.items():
        key = metadata_module._FIELD_NAMES.get(header.lower())
        if key is None:
            continue
        if key in fields:
            previous = fields[key]
            fields[key] = [*previous, str(value)] if isinstance(previous, list) else [previous, str(value)]
        elif key in MULTI_VALUED_FIELDS:
            fields[key] = [str(value)]
        else:
            fields[key] = str(value)
    body = message.get_payload()
    if isinstance(body, str) and body.strip() and "description" not in fields:
        fields["description"] = body
    return fields


EDGE_CASES = [
    "",
    "\n",
    "Name: demo",
    "Name: demo\nVersion: 1.0\n\nbody\n",
    "Name:demo\r\nSummary:\t  padded  \r\n\r\nbody\r\n",
    "Name: demo\rVersion: 1\r\rbody\r",
    "Summary:\n  folded\n\tagain\nName: x\n",
    " leading continuation\nName: demo\n",
    "From someone\nName: demo\n",
    "Name: demo\nFrom someone\nVersion: 1\n",
    "Name: demo\nFrom someone\n\nbody\n",
    "Name: demo\nFrom someone\nnot a header\nmore\n",
    "Name: demo\n:no name\n continuation of nothing\nVersion: 1\n",
    "Name: demo\nNot A Header: x\nVersion: 1\n",
    "Name: demo\nnot a header\n\nbody\n",
    "Classifier: a\nClassifier: b\nName: a\nName: b\nDescription: d\n\nbody\n",
    "Name: demo\n\n\n\n",
    "Name: démo\nSummary: ünïcode\n\nbödy\n",
    "Name: demo\n\x0bVersion: 1\n\x0c\n",
    "Name: demo\n\u2028Version: 1\n",
    "Requires-Dist: a\n" * 3 + "\nbody\n" + "Name: late\n",
    "Summary: " + "x" * 9000 + "\r\nName: demo\r\n\r\nbody",  # crosses the feed parser's 8 KB chunks
    "Name: demo\nDynamic: Requires-Dist\n Requires-Python\n",
]


@pytest.mark.parametrize("text", EDGE_CASES)
def test_parse_metadata_matches_header_parser_on_edge_cases(text: str) -> None:
    assert parse_metadata(text.encode()) == reference_parse(text.encode())
    message = HeaderParser().parsestr(text)
    assert _split_message(text) == (list(message.items()), message.get_payload())


def test_parse_metadata_matches_header_parser_on_random_documents() -> None:
    pieces = ["Name: demo", "Classifier: a :: b", "Summary:", "Summary:   spaced  ", " continued", "\tcontinued",
              "From me", "From: me", ":nameless", "::", "Bad Header: x", "", "body text", "Dynamic: Requires-Dist",
              "Ünïcode: x", "X-Weird!: y", "Description: d", "Requires-Dist: a; extra == 'b'", "\x0c", "a:"]
    endings = ["\n", "\r\n", "\r"]
    rng = random.Random(658)
    for _ in range(400):
        lines = [rng.choice(pieces) + rng.choice(endings) for _ in range(rng.randint(0, 30))]
        if rng.random() < 0.1:
            lines.insert(rng.randint(0, len(lines)), "Summary: " + "y" * rng.randint(8000, 9000) + "\n")
        text = "".join(lines)
        if rng.random() < 0.3:
            text = text.rstrip("\r\n")
        message = HeaderParser().parsestr(text)
        assert _split_message(text) == (list(message.items()), message.get_payload()), repr(text)
        assert parse_metadata(text.encode()) == reference_parse(text.encode()), repr(text)


def classifiers_metadata(count: int) -> bytes:
    header = "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
    return (header + "".join(f"Classifier: Topic :: Thing {i}\n" for i in range(count)) + "\nbody\n").encode()


def best_time(function: Callable[[], object], repeat: int = 5) -> float:
    """The fastest of ``repeat`` runs: noise on a shared VM only ever adds time."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def test_parse_metadata_of_20000_classifiers_is_fast() -> None:
    data = classifiers_metadata(20_000)
    started = time.perf_counter()
    fields = parse_metadata(data)
    elapsed = time.perf_counter() - started
    assert len(fields["classifiers"]) == 20_000
    assert fields["classifiers"][-1] == "Topic :: Thing 19999"
    assert fields["name"] == "demo"
    assert fields["description"] == "body\n"
    assert elapsed < 0.5, f"{elapsed:.3f} s for 20,000 Classifier headers"


def test_parse_metadata_cost_grows_linearly() -> None:
    """Quadratic accumulation took 5x longer for twice the headers; linear takes about 2x.

    The two sizes are timed in alternation, so that a busy moment on the VM slows both.
    """
    small, large = classifiers_metadata(20_000), classifiers_metadata(40_000)
    parse_metadata(small)  # warm up
    small_best = large_best = float("inf")
    for _ in range(5):
        small_best = min(small_best, best_time(lambda: parse_metadata(small), repeat=1))
        large_best = min(large_best, best_time(lambda: parse_metadata(large), repeat=1))
    ratio = large_best / small_best
    assert ratio < 3, f"twice the headers took {ratio:.2f}x the time ({small_best:.3f} s, {large_best:.3f} s)"


@pytest.mark.parametrize("text", [
    "a: b\n" * 6_000,  # thousands of tiny headers
    ":\n" * 15_000,  # malformed lines: HeaderParser builds a defect object for each (50 ms)
    "Description: x\n" + " \n" * 15_000,  # continuation lines
    "Classifier: X :: Y\r" * 1_600,
], ids=["tiny-headers", "nameless", "continuations", "cr-classifiers"])
def test_parse_metadata_of_30kb_with_thousands_of_headers_is_well_under_50ms(text: str) -> None:
    """About 3-15 ms here (HeaderParser: 6-56 ms); the bound leaves room for a busy VM."""
    data = text.encode()
    assert 25_000 < len(data) <= 31_000
    elapsed = best_time(lambda: parse_metadata(data))
    assert elapsed < 0.04, f"{elapsed * 1000:.1f} ms for {len(data)} bytes"


def test_parse_metadata_shapes() -> None:
    fields = parse_metadata(b"Name: demo\nClassifier: only one\nLicense: A\nLicense: B\nDynamic: Summary\n\nbody")
    assert fields == {"name": "demo", "classifiers": ["only one"], "license": ["A", "B"],
                      "dynamic": ["Summary"], "description": "body"}


# -- through the upload endpoint --------------------------------------------------------------


def in_process_client(root: Path) -> TestClient:
    settings = ServerSettings(root=root, extra_index_url="")
    state = ServerState(settings)
    state.repos = build_repos(load_setup(fs_config(), None, is_text=True), settings)
    return TestClient(create_app(state), raise_server_exceptions=False)


def post(client: TestClient, dist: Dist) -> None:
    body, content_type = encode_multipart(upload_fields(dist), dist.filename, dist.data)
    response = client.post("/simple/", content=body, headers={"Content-Type": content_type}, auth=WRITE)
    assert response.status_code == 200, response.text


def test_upload_serves_metadata_for_the_wheel_but_not_for_a_dynamic_sdist(tmp_path: Path) -> None:
    client = in_process_client(tmp_path / "root")
    dynamic_sdist = make_sdist(tmp_path / "dists", requires_dist=["requests"],
                               extra_metadata=["Dynamic: Requires-Dist"])
    static_sdist = make_sdist(tmp_path / "dists", version="2.0", requires_dist=["requests"])
    wheel_dist = make_wheel(tmp_path / "dists", requires_dist=["requests"])
    for dist in (dynamic_sdist, static_sdist, wheel_dist):
        post(client, dist)

    response = client.get("/simple/demo/", headers={"Accept": JSON_ACCEPT}, auth=READ)
    assert response.status_code == 200, response.text
    files = {entry["filename"]: entry for entry in response.json()["files"]}
    html = client.get("/simple/demo/", headers={"Accept": "text/html"}, auth=READ).text

    entry = files[dynamic_sdist.filename]
    assert not entry.get("core-metadata") and not entry.get("data-dist-info-metadata")
    assert not entry.get("dist-info-metadata")
    tag = next(line for line in html.splitlines() if dynamic_sdist.filename in line)
    assert "data-core-metadata" not in tag and "data-dist-info-metadata" not in tag
    response = client.get(f"/simple/demo/{dynamic_sdist.filename}.metadata", auth=READ)
    assert response.status_code == 404, response.text

    for dist in (wheel_dist, static_sdist):
        response = client.get(f"/simple/demo/{dist.filename}.metadata", auth=READ)
        assert response.status_code == 200, response.text
        assert b"Requires-Dist: requests" in response.content
        assert files[dist.filename]["core-metadata"] == {"sha256": hashlib.sha256(response.content).hexdigest()}
    wheel_metadata = client.get(f"/simple/demo/{wheel_dist.filename}.metadata", auth=READ).content
    assert wheel_metadata == metadata_text(wheel_dist.spec).encode()
