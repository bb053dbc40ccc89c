"""pypi.org's JSON API, as the bots that read it need it (issue 16): every URL it names is a page
this server has (shared and per-repository URLs), the keys pypi.org always sends are there, file
digests are the file's, and ``last_serial`` follows the project's changes the same way on two
servers sharing a store.

Real servers (``pywharf server`` processes), real uploads (twine) and plain HTTP for the rest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import requests
import tomli_w
from conftest import Server, client_env, run, tool, wait_for
from distbuilder import DistSpec, build_sdist, build_wheel

A_READ, A_WRITE = "alpha-read-secret", "alpha-write-secret"
B_READ, B_WRITE = "bravo-read-secret", "bravo-write-secret"
FIXTURE = Path(__file__).parent / "fixtures" / "pypi_json_sampleproject.json"
NOT_SERVED = {"ownership", "_provenance"}  # pypi.org's accounts; the fixture's own note


def config(storage: Path) -> str:
    return tomli_w.dumps({
        "alpha": {"type": "file_system", "read_secret": A_READ, "write_secret": A_WRITE,
                  "storage_path": str(storage), "sync_index_interval": 1},
        "bravo": {"type": "file_system", "read_secret": B_READ, "write_secret": B_WRITE},
    })


@pytest.fixture
def pair(server_factory, tmp_path: Path) -> tuple[Server, Server]:
    """Two servers whose repository ``alpha`` shares one storage folder."""
    storage = tmp_path / "alpha-storage"
    storage.mkdir()
    a = server_factory(config(storage), "--extra_index_url=", root_name="root-a")
    b = server_factory(config(storage), "--extra_index_url=", root_name="root-b")
    return a, b


def twine_upload(server: Server, paths: list[Path], tmp_path: Path, repo: str = "alpha",
                 secret: str = A_WRITE) -> None:
    run([tool("twine"), "upload", "--repository-url", f"{server.base}/repos/{repo}/simple/", "-u", "ci",
         "-p", secret, "--non-interactive", "--disable-progress-bar", *map(str, paths)],
        client_env(tmp_path), timeout=120)


def get(server: Server, path: str, auth: tuple[str, str] = ("alpha", A_READ)) -> requests.Response:
    return requests.get(path if path.startswith("http") else f"{server.base}{path}", auth=auth, timeout=10,
                        allow_redirects=False)


def named_urls(document: dict[str, Any]) -> list[str]:
    """Every URL the document names: the three info pages and every file."""
    info = document["info"]
    urls = [info["package_url"], info["project_url"], info["release_url"]]
    urls += [f["url"] for f in document["urls"]]
    urls += [f["url"] for files in document.get("releases", {}).values() for f in files]
    return urls


def publish(tmp_path: Path, server: Server, version: str) -> list[Path]:
    spec = DistSpec("Json.Demo", version, summary="JSON API parity", requires_python=">=3.9",
                    project_urls=["Source, https://example.invalid/src"])
    dists = [build_wheel(spec, tmp_path / f"dist-{version}"), build_sdist(spec, tmp_path / f"dist-{version}")]
    twine_upload(server, dists, tmp_path)
    return dists


def test_every_url_the_json_names_is_a_page_of_this_server(pair, tmp_path: Path) -> None:
    a, _ = pair
    publish(tmp_path, a, "1.0")
    publish(tmp_path, a, "2.0")
    # An API token: works on the repository's own URLs only, so it proves those are what is named.
    token = requests.post(f"{a.base}/_/tokens/alpha", data={"scope": "read"}, auth=("alpha", A_WRITE),
                          timeout=10).json()["token"]
    cases = [
        ("/pypi/json-demo/json", ("alpha", A_READ), f"{a.base}/"),
        ("/pypi/json-demo/1.0/json", ("alpha", A_READ), f"{a.base}/"),
        ("/repos/alpha/pypi/json-demo/json", ("__token__", token), f"{a.base}/repos/alpha/"),
        ("/repos/alpha/pypi/json-demo/1.0/json", ("__token__", token), f"{a.base}/repos/alpha/"),
    ]
    for path, auth, base in cases:
        response = get(a, path, auth)
        assert response.status_code == 200, (path, response.text)
        document = response.json()
        version = "1.0" if "/1.0/" in path else "2.0"
        assert document["info"]["package_url"] == document["info"]["project_url"] == f"{base}project/json-demo/"
        assert document["info"]["release_url"] == f"{base}project/json-demo/{version}/"
        urls = named_urls(document)
        assert len(urls) == 3 + (2 if "/1.0/" in path else 2 + 4), urls
        for url in urls:
            assert url.startswith(base), (path, url)
            page = get(a, url, auth)
            assert page.status_code == 200, (path, url, page.status_code, page.text[:200])
        release_page = get(a, document["info"]["release_url"], auth).text
        assert f"Files of {version}" in release_page
        assert "json_demo-1.0-py3-none-any.whl" in get(a, f"{base}project/json-demo/1.0/", auth).text
    # The pages answer for the repository the URL names: bravo's credentials open none of alpha's.
    assert get(a, "/repos/alpha/project/json-demo/", ("bravo", B_READ)).status_code in (303, 401)
    assert get(a, "/repos/bravo/project/json-demo/", ("x", B_READ)).status_code == 404


def test_the_keys_pypi_org_always_sends_are_sent(pair, tmp_path: Path) -> None:
    a, _ = pair
    publish(tmp_path, a, "1.0")
    reference = json.loads(FIXTURE.read_text())
    reference_file = reference["urls"][0]
    for path in ("/pypi/json-demo/json", "/repos/alpha/pypi/json-demo/1.0/json"):
        document = get(a, path).json()
        expected_top = set(reference) - NOT_SERVED - ({"releases"} if "/1.0/" in path else set())
        assert set(document) == expected_top, path
        assert set(reference["info"]) <= set(document["info"]), set(reference["info"]) - set(document["info"])
        files = document["urls"] + [f for fs in document.get("releases", {}).values() for f in fs]
        assert files
        for entry in files:
            assert set(entry) == set(reference_file), set(reference_file) ^ set(entry)
            assert set(entry["digests"]) == set(reference_file["digests"])
        assert document["vulnerabilities"] == []
        assert document["info"]["downloads"] == reference["info"]["downloads"]
        assert document["info"]["project_urls"] == {"Source": "https://example.invalid/src"}
        assert isinstance(document["last_serial"], int) and 0 < document["last_serial"] < 2**53


def test_file_digests_are_the_files_own(pair, tmp_path: Path) -> None:
    a, _ = pair
    dists = publish(tmp_path, a, "1.0")
    document = get(a, "/repos/alpha/pypi/json-demo/json").json()
    by_name = {entry["filename"]: entry for entry in document["urls"]}
    assert set(by_name) == {d.name for d in dists}
    for dist in dists:
        entry = by_name[dist.name]
        served = get(a, entry["url"]).content
        assert served == dist.read_bytes()
        assert entry["md5_digest"] == entry["digests"]["md5"] == hashlib.md5(served, usedforsecurity=False).hexdigest()
        assert entry["digests"]["sha256"] == hashlib.sha256(served).hexdigest()
        assert entry["digests"]["blake2b_256"] == hashlib.blake2b(served, digest_size=32).hexdigest()
        assert entry["size"] == len(served)
        assert entry["packagetype"] == ("bdist_wheel" if dist.name.endswith(".whl") else "sdist")
    wheel = next(e for e in document["urls"] if e["filename"].endswith(".whl"))
    metadata = get(a, wheel["url"] + ".metadata").content
    assert wheel["core-metadata"] == {"sha256": hashlib.sha256(metadata).hexdigest()}


def test_last_serial_follows_uploads_and_yanks_alike_on_two_servers(pair, tmp_path: Path) -> None:
    a, b = pair

    def serials(server: Server) -> tuple[int, int]:
        """The project document's serial and its version document's (two requests)."""
        response = get(server, "/repos/alpha/pypi/json-demo/json")
        assert response.status_code == 200, response.text
        document = response.json()
        assert response.headers["x-pypi-last-serial"] == str(document["last_serial"])
        return document["last_serial"], get(server, "/repos/alpha/pypi/json-demo/1.0/json").json()["last_serial"]

    def serial(server: Server) -> int:
        project, version = serials(server)
        assert version == project, "one project, one serial"
        return project

    def b_agrees(expected: int) -> None:
        # B syncs on its own schedule: a sync may land between its two answers, so wait for both.
        wait_for(lambda: get(b, "/repos/alpha/pypi/json-demo/json").status_code == 200
                 and serials(b) == (expected, expected), 10, lambda: f"B never reached serial {expected}:\n{b.log()}")

    publish(tmp_path, a, "1.0")
    first = serial(a)
    assert serial(a) == first, "an unchanged project keeps its serial"
    b_agrees(first)

    publish(tmp_path, a, "2.0")
    uploaded = serial(a)
    assert uploaded != first
    b_agrees(uploaded)

    yank = requests.post(f"{a.base}/repos/alpha/yank/json-demo/2.0", data={"reason": "broken"},
                         auth=("ci", A_WRITE), timeout=10)
    assert yank.status_code == 200, yank.text
    yanked = serial(a)
    assert yanked not in (first, uploaded)
    b_agrees(yanked)

    # Another project's upload leaves this one's serial alone.
    twine_upload(a, [build_wheel(DistSpec("other-demo", "1.0"), tmp_path / "other")], tmp_path)
    assert serial(a) == yanked


def test_a_groups_json_names_pages_the_group_answers(server_factory, tmp_path: Path) -> None:
    """Through a group, the project is its member's: the pages the JSON names show it too."""
    config = tomli_w.dumps({
        "team": {"type": "file_system", "read_secret": A_READ, "write_secret": A_WRITE},
        "all": {"type": "group", "members": ["team"], "read_secret": B_READ, "write_secret": B_WRITE},
    })
    server = server_factory(config, "--extra_index_url=")
    spec = DistSpec("Json.Demo", "1.0")
    twine_upload(server, [build_wheel(spec, tmp_path / "dist")], tmp_path, repo="all", secret=B_WRITE)
    document = get(server, "/repos/all/pypi/json-demo/json", ("x", B_READ)).json()
    assert document["info"]["release_url"] == f"{server.base}/repos/all/project/json-demo/1.0/"
    for url in named_urls(document):
        page = get(server, url, ("x", B_READ))
        assert page.status_code == 200, (url, page.status_code, page.text[:200])
    assert "json_demo-1.0-py3-none-any.whl" in get(server, document["info"]["release_url"], ("x", B_READ)).text
    assert get(server, "/repos/all/project/absent/", ("x", B_READ)).status_code == 404
