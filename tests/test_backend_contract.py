"""The storage contract, once, for every backend: what the core promises whatever stores the files.

Each test runs for every backend in ``backend_fixtures.SETUPS`` (file_system, s3 on a real
SeaweedFS, github on the GitHub REST stand-in, and the in-memory reference adapter) and drives
it only through the core's use cases:
uploads, pages, downloads and yanks over the HTTP API of in-process apps, the ``update_index``
command, and index sync. No test touches a backend object, so the suite holds while the backend
interface is reshaped; a new backend is one more entry in ``SETUPS``.

Known failures are strict xfails, on the backends that fail only, with the reason: when a fix
lands the test XPASSes, which fails the run until the mark is removed. (One exception: a race that
fails only most of the time is a non-strict xfail; see its comment.)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from backend_fixtures import SETUPS, App, BackendUnderTest, Engines, make_backend, record_fields, sha256
from distbuilder import DistSpec, build_sdist, build_wheel
from test_upload_rules import Dist

from pywharf_core.index.lifecycle_document import LIFECYCLE_KEY, parse_tombstone
from pywharf_core.service.package_store import tombstone_key

MIB = 1 << 20


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    """One SeaweedFS and one GitHub stand-in for the whole module, started when first needed."""
    shared = Engines(tmp_path_factory.mktemp("engines"))
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture(params=sorted(SETUPS))
def backend(request: pytest.FixtureRequest, engines: Engines, tmp_path: Path) -> Iterator[BackendUnderTest]:
    """The backend named by the parameter, over fresh storage."""
    under_test = make_backend(request.param, engines, tmp_path)
    try:
        yield under_test
    finally:
        under_test.close()


@pytest.fixture(scope="module")
def large_wheel(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """A real ~20 MB wheel (a random, incompressible member), built once for every backend."""
    spec = DistSpec("bigfile", "1.0")
    path = build_wheel(spec, tmp_path_factory.mktemp("large"), extra_bytes=os.urandom(20 * MIB))
    return Dist(spec, path)


# -- helpers -------------------------------------------------------------------------------------------


def wheel(folder: Path, name: str, version: str, tag: str = "", **spec: object) -> Dist:
    """A wheel of ``name``/``version``; another ``tag`` gives other bytes under the same filename."""
    dist_spec = DistSpec(name, version, **spec)  # type: ignore[arg-type]
    out = folder / "dists" / f"{name}-{version}-{tag or 'x'}"
    return Dist(dist_spec, build_wheel(dist_spec, out, extra_bytes=tag.encode()))


def wheel_metadata(dist: Dist) -> bytes:
    """The METADATA file inside a wheel (what the server serves at ``<file>.metadata``)."""
    with zipfile.ZipFile(io.BytesIO(dist.data)) as zf:
        return zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")))


def ok(response: httpx.Response) -> None:
    assert response.status_code == 200, f"{response.status_code} {response.text}"


def field_differences(uploaded: dict | None, rebuilt: dict | None) -> dict[str, tuple[object, object]]:
    """{field: (uploaded value, rebuilt value)} of every field that differs, ``meta.<key>`` for metadata."""
    if uploaded is None or rebuilt is None:
        return {"record": (uploaded, rebuilt)}
    flat_uploaded = {k: v for k, v in uploaded.items() if k != "meta"}
    flat_rebuilt = {k: v for k, v in rebuilt.items() if k != "meta"}
    flat_uploaded.update({f"meta.{k}": v for k, v in uploaded["meta"].items()})
    flat_rebuilt.update({f"meta.{k}": v for k, v in rebuilt["meta"].items()})
    return {key: (flat_uploaded.get(key, "<missing>"), flat_rebuilt.get(key, "<missing>"))
            for key in sorted(flat_uploaded.keys() | flat_rebuilt.keys())
            if flat_uploaded.get(key, "<missing>") != flat_rebuilt.get(key, "<missing>")}


def xfail_on(request: pytest.FixtureRequest, backend: BackendUnderTest, reasons: dict[str, str]) -> None:
    """A strict xfail on the backends in ``reasons`` only (the others must pass)."""
    if backend.type in reasons:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reasons[backend.type]))


# -- 1-3: upload, identical re-upload, conflicting re-upload -------------------------------------------


def test_upload_is_listed_and_downloads_the_same_bytes(backend: BackendUnderTest, tmp_path: Path) -> None:
    app = backend.app()
    dist = wheel(tmp_path, "listed", "1.0")
    ok(app.upload(dist))
    files = app.files("listed")
    assert list(files) == [dist.filename]
    assert files[dist.filename]["hashes"] == {"sha256": dist.sha256}
    assert sha256(app.download("listed", dist.filename)) == dist.sha256


def test_identical_reupload_is_200_and_changes_nothing(backend: BackendUnderTest, tmp_path: Path) -> None:
    app = backend.app()
    dist = wheel(tmp_path, "again", "1.0")
    ok(app.upload(dist))
    page, api = app.files("again"), app.project_json("again")
    first_time = api["urls"][0]["upload_time_iso_8601"]
    assert first_time and page[dist.filename]["upload-time"] == first_time

    ok(app.upload(dist))
    assert app.files("again") == page
    assert app.project_json("again") == api
    # Nor in storage: the index rebuilt from it keeps the first upload's time.
    backend.update_index()
    rebuilt = backend.app("fresh").project_json("again")
    assert [(f["filename"], f["upload_time_iso_8601"]) for f in rebuilt["urls"]] == [(dist.filename, first_time)]


def test_identical_reupload_through_another_server_changes_nothing(backend: BackendUnderTest,
                                                                   tmp_path: Path) -> None:
    """A client retrying an upload that a load balancer sends to another server."""
    first, second = backend.app("a"), backend.app("b")
    dist = wheel(tmp_path, "retried", "1.0")
    ok(first.upload(dist))
    first_time = first.project_json("retried")["urls"][0]["upload_time_iso_8601"]
    ok(second.upload(dist))
    assert second.project_json("retried")["urls"][0]["upload_time_iso_8601"] == first_time


def test_same_filename_with_other_bytes_is_409_and_keeps_the_first(backend: BackendUnderTest,
                                                                   tmp_path: Path) -> None:
    app = backend.app()
    first, other = wheel(tmp_path, "clash", "1.0", "first"), wheel(tmp_path, "clash", "1.0", "other")
    assert first.filename == other.filename and first.sha256 != other.sha256
    ok(app.upload(first))
    refused = app.upload(other)
    assert refused.status_code == 409, f"{refused.status_code} {refused.text}"
    assert first.filename in refused.text
    assert app.files("clash")[first.filename]["hashes"]["sha256"] == first.sha256
    assert sha256(app.download("clash", first.filename)) == first.sha256


# -- 4: create-only under a race -----------------------------------------------------------------------


def race(apps: list[App], racers: list[Dist]) -> list[tuple[int, str]]:
    """Upload every racer at once (threads released together), spread over ``apps``;
    returns each racer's (status, body)."""
    barrier = threading.Barrier(len(racers))
    results: list[tuple[int, str]] = [(0, "")] * len(racers)

    def run(i: int) -> None:
        barrier.wait()
        response = apps[i % len(apps)].upload(racers[i])
        results[i] = (response.status_code, response.text)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(racers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def test_racing_uploads_of_one_filename_have_exactly_one_winner(backend: BackendUnderTest, tmp_path: Path) -> None:
    """8 uploads of DIFFERENT bytes under one filename, at once, through two servers sharing the
    storage: one 200, seven 409 naming the file, and every server, and the index rebuilt from
    storage, serve the winner's bytes."""
    apps = [backend.app("a"), backend.app("b")]
    racers = [wheel(tmp_path, "race", "1.0", f"racer-{i}") for i in range(8)]
    assert len({r.filename for r in racers}) == 1 and len({r.sha256 for r in racers}) == 8
    filename = racers[0].filename
    results = race(apps, racers)
    statuses = [status for status, _ in results]
    assert sorted(statuses) == [200] + [409] * 7, results
    assert all(filename in text for status, text in results if status == 409), results
    winner = racers[statuses.index(200)]

    for app in apps:
        assert sha256(app.download("race", filename)) == winner.sha256
    assert apps[statuses.index(200) % 2].files("race")[filename]["hashes"]["sha256"] == winner.sha256
    backend.update_index()
    fresh = backend.app("fresh")
    record = fresh.record(filename)
    assert record is not None and (record.sha256, record.size) == (winner.sha256, len(winner.data))
    assert sha256(fresh.download("race", filename)) == winner.sha256


def test_racing_uploads_keep_the_winners_metadata(backend: BackendUnderTest, tmp_path: Path,
                                                  request: pytest.FixtureRequest) -> None:
    """The PEP 658 metadata stored with a filename is the winner's, not a loser's: racers whose
    METADATA differ (summary), spread over two servers, on 3 filenames in turn."""
    apps = [backend.app("a"), backend.app("b")]
    rounds = []
    for round_ in range(3):
        racers = [wheel(tmp_path, f"meta-race-{round_}", "1.0", f"racer-{i}", summary=f"racer {i}")
                  for i in range(8)]
        statuses = [status for status, _ in race(apps, racers)]
        assert sorted(statuses) == [200] + [409] * 7, statuses
        rounds.append((racers, statuses.index(200)))
    backend.update_index()
    fresh = backend.app("fresh")
    for round_, (racers, winner) in enumerate(rounds):
        metadata = [sha256(wheel_metadata(r)) for r in racers]
        record = fresh.record(racers[0].filename)
        assert record is not None and record.sha256 == racers[winner].sha256
        served = fresh.download(f"meta-race-{round_}", f"{racers[0].filename}.metadata")
        assert (record.metadata_sha256, sha256(served)) == (metadata[winner], metadata[winner]), (
            f"round {round_}: winner {winner}, metadata of racer {metadata.index(record.metadata_sha256)}")
        assert record.meta.get("summary") == f"racer {winner}"


# -- 5: one release file per canonical identity --------------------------------------------------------


def test_respelled_filename_of_a_stored_file_is_409(backend: BackendUnderTest, tmp_path: Path) -> None:
    """``Immut-1.0-py3-none-any.whl``, ``immut-1.0.0-...`` and ``immut-01.0-...`` are one file
    (same project, version and tags): once one is stored, the others are conflicts."""
    app = backend.app()
    stored = "Immut-1.0-py3-none-any.whl"
    ok(app.upload(wheel(tmp_path, "Immut", "1.0"), filename=stored))
    for version in ("1.0.0", "01.0"):
        respelled = wheel(tmp_path, "immut", version, f"respelled-{version}")
        assert respelled.filename == f"immut-{version}-py3-none-any.whl"
        refused = app.upload(respelled)
        assert refused.status_code == 409, f"{respelled.filename}: {refused.status_code} {refused.text}"
        assert stored in refused.text, refused.text
    assert list(app.files("immut")) == [stored]


# -- 6: the index rebuilt from storage equals the one uploads built ------------------------------------


RICH_FIELDS: dict[str, str | list[str]] = {
    "summary": "Everything twine sends",
    "description": "# Rich\n\nA *long* description, kept beside the file.\n",
    "description_content_type": "text/markdown; charset=UTF-8; variant=GFM",
    "author": "Ada Lovelace",
    "author_email": "ada@example.org",
    "maintainer": "Charles Babbage",
    "maintainer_email": "charles@example.org",
    "license": "MIT",
    "keywords": "storage,contract,index",
    "home_page": "https://example.org/rich",
    "download_url": "https://example.org/rich/download",
    "platform": "any",
    "classifiers": ["Development Status :: 4 - Beta", "License :: OSI Approved :: MIT License",
                    "Programming Language :: Python :: 3", "Topic :: Software Development"],
    "requires_dist": ["requests>=2", "tomli; python_version < '3.11'", "pytest; extra == 'test'"],
    "requires_python": ">=3.10",
    "project_urls": ["Homepage, https://example.org/rich", "Issues, https://example.org/rich/issues"],
    "provides_extra": ["test", "docs"],
}


def test_rebuilt_index_equals_what_the_uploads_built(backend: BackendUnderTest, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    """Every field of every record (digests included) survives ``update_index`` + a fresh sync."""
    app = backend.app()
    spec = DistSpec("rich", "2.0", summary=str(RICH_FIELDS["summary"]), requires_python=">=3.10",
                    requires_dist=list(RICH_FIELDS["requires_dist"]), classifiers=list(RICH_FIELDS["classifiers"]),
                    project_urls=list(RICH_FIELDS["project_urls"]), description=str(RICH_FIELDS["description"]))
    dists = [Dist(spec, build_wheel(spec, tmp_path / "w")), Dist(spec, build_sdist(spec, tmp_path / "s"))]
    uploaded = {}
    for dist in dists:
        ok(app.upload(dist, fields=RICH_FIELDS))
        uploaded[dist.filename] = record_fields(app.record(dist.filename))
        meta = uploaded[dist.filename]["meta"]
        # The upload's own record is complete (so a rebuilt one that drops a field fails below).
        assert meta["md5_digest"] == hashlib.md5(dist.data, usedforsecurity=False).hexdigest()
        assert meta["blake2_256_digest"] == hashlib.blake2b(dist.data, digest_size=32).hexdigest()
        assert meta["provides_extra"] == ("test", "docs") and meta["author_email"] == "ada@example.org"

    backend.update_index()
    fresh = backend.app("fresh")
    differences = {filename: field_differences(before, record_fields(fresh.record(filename)))
                   for filename, before in uploaded.items()}
    digests = {"meta.md5_digest", "meta.blake2_256_digest"}
    assert {f: {k: v for k, v in d.items() if k not in digests} for f, d in differences.items()} == {
        filename: {} for filename in uploaded}, "field: (uploaded, rebuilt)"
    assert differences == {filename: {} for filename in uploaded}, "field: (uploaded, rebuilt)"


# -- 7: yank state lives in storage --------------------------------------------------------------------


def test_yank_and_unyank_survive_update_index(backend: BackendUnderTest, tmp_path: Path) -> None:
    app = backend.app()
    target, bystander = wheel(tmp_path, "yanky", "1.0"), wheel(tmp_path, "yanky", "1.1")
    ok(app.upload(target))
    ok(app.upload(bystander))

    yanked = app.yank("yanky", target.filename, "broken build")
    ok(yanked)
    assert yanked.text.split() == [target.filename]
    assert app.files("yanky")[target.filename]["yanked"] == "broken build"
    backend.update_index()
    after_yank = backend.app("after-yank")
    files = after_yank.files("yanky")
    assert (files[target.filename]["yanked"], files[bystander.filename]["yanked"]) == ("broken build", False)
    record = after_yank.record(target.filename)
    assert record is not None and (record.yanked, record.yanked_reason) == (True, "broken build")

    ok(app.yank("yanky", target.filename, undo=True))
    assert app.files("yanky")[target.filename]["yanked"] is False
    backend.update_index()
    after_unyank = backend.app("after-unyank")
    assert {name: entry["yanked"] for name, entry in after_unyank.files("yanky").items()} == {
        target.filename: False, bystander.filename: False}
    record = after_unyank.record(target.filename)
    assert record is not None and (record.yanked, record.yanked_reason) == (False, "")


# -- 8: big files ----------------------------------------------------------------------------------------


def test_large_file_round_trips(backend: BackendUnderTest, large_wheel: Dist) -> None:
    app = backend.app()
    ok(app.upload(large_wheel))
    entry = app.files("bigfile")[large_wheel.filename]
    assert entry["hashes"]["sha256"] == large_wheel.sha256 and entry["size"] == len(large_wheel.data)
    assert sha256(app.download("bigfile", large_wheel.filename)) == large_wheel.sha256


# -- 9: listing after the index is rebuilt ("compaction") ----------------------------------------------


def test_listing_after_compaction(backend: BackendUnderTest, tmp_path: Path) -> None:
    """Uploads made after an ``update_index`` are not lost by the next sync, by a restart, or by
    the next ``update_index``."""
    dists = [wheel(tmp_path, "compact", f"1.{i}") for i in range(5)]
    names = sorted(d.filename for d in dists)
    app = backend.app("a")
    for dist in dists[:3]:
        ok(app.upload(dist))
    backend.update_index()
    app.sync()
    assert sorted(app.files("compact")) == names[:3]
    for dist in dists[3:]:
        ok(app.upload(dist))
    app.sync()
    assert sorted(app.files("compact")) == names

    app.close()
    restarted = backend.app("a")  # the same server (same ROOT) started again
    assert sorted(restarted.files("compact")) == names

    backend.update_index()
    restarted.sync()
    assert sorted(restarted.files("compact")) == names
    other = backend.app("other")  # a server that never saw an upload
    assert sorted(other.files("compact")) == names
    for dist in dists:
        assert other.files("compact")[dist.filename]["hashes"]["sha256"] == dist.sha256


def test_another_server_lists_an_upload_after_one_sync(backend: BackendUnderTest, tmp_path: Path) -> None:
    """Scale-out: an upload through one server reaches the remote index, so another lists it."""
    if not backend.index_on_upload:
        pytest.skip(f"{backend.type}: uploads reach the remote index only through update_index")
    a, b = backend.app("a"), backend.app("b")
    dist = wheel(tmp_path, "spread", "1.0")
    ok(a.upload(dist))
    b.sync()
    assert b.files("spread")[dist.filename]["hashes"]["sha256"] == dist.sha256
    assert b.download("spread", dist.filename) == dist.data


# -- lifecycle (issue 16): statuses and deletions ----------------------------------------------------------


def test_status_and_deletion_reach_another_server_and_survive_update_index(backend: BackendUnderTest,
                                                                          tmp_path: Path) -> None:
    app = backend.app()
    old, kept = wheel(tmp_path, "gone", "1.0"), wheel(tmp_path, "gone", "1.1")
    ok(app.upload(old))
    ok(app.upload(kept))
    deleted = app.client.post(f"/delete/gone/{old.filename}", auth=backend.write)
    ok(deleted)
    assert deleted.text.split() == [old.filename]
    other = backend.app("other")
    assert list(other.files("gone")) == [kept.filename]
    assert other.client.get(f"/simple/gone/{old.filename}", auth=backend.read).status_code == 404
    assert other.upload(wheel(tmp_path, "gone", "1.0", tag="other bytes")).status_code == 409
    ok(other.upload(old))  # the same bytes may come back
    app.sync()
    assert sha256(app.download("gone", old.filename)) == old.sha256
    ok(app.client.post("/status/gone", data={"status": "archived", "reason": "done"}, auth=backend.write))

    backend.update_index()
    rebuilt = backend.app("rebuilt")
    assert sorted(rebuilt.files("gone")) == sorted([old.filename, kept.filename])
    page = rebuilt.client.get("/simple/gone/", auth=backend.read,
                              headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    assert page.json()["project-status"] == {"status": "archived", "reason": "done"}
    assert rebuilt.upload(wheel(tmp_path, "gone", "2.0")).status_code == 403

    ok(rebuilt.client.post("/delete/gone", auth=backend.write))
    backend.update_index()
    final = backend.app("final")
    assert final.files("gone") == {}
    assert final.client.get(f"/simple/gone/{kept.filename}", auth=backend.read).status_code == 404
    app.sync()
    assert app.files("gone") == {}  # its journalled uploads do not bring the files back


def test_each_deleted_file_has_its_tombstone_document_and_update_index_keeps_them(
        backend: BackendUnderTest, tmp_path: Path) -> None:
    """One tombstone document per deleted file (a deletion costs the same however many came
    before); update_index carries tombstones forward without listing them, and a file whose
    deletion stopped before its bytes were removed stays deleted."""
    app = backend.app()
    one, two, stuck, kept = (wheel(tmp_path, "tomb", v) for v in ("1.0", "2.0", "3.0", "4.0"))
    for dist in (one, two, stuck, kept):
        ok(app.upload(dist))
    ok(app.client.post(f"/delete/tomb/{one.filename}", auth=backend.write))
    ok(app.client.post(f"/delete/tomb/{two.filename}", auth=backend.write))
    storage = app.storage
    for dist in (one, two):
        document = storage.read_document(tombstone_key(dist.filename))
        assert document is not None and parse_tombstone(dist.filename, document.data).sha256 == dist.sha256
    lifecycle = storage.read_document(LIFECYCLE_KEY)
    assert lifecycle is None or "deleted" not in json.loads(lifecycle.data)
    assert app.upload(wheel(tmp_path, "tomb", "1.0", tag="other bytes")).status_code == 409
    backend.update_index()  # the first base: tombstones from the log

    real_delete = storage.delete
    storage.delete = lambda key: None if stuck.filename in key else real_delete(key)  # interrupted
    try:
        ok(app.client.post(f"/delete/tomb/{stuck.filename}", auth=backend.write))
    finally:
        storage.delete = real_delete
    assert storage.has_blob(stuck.filename)
    backend.update_index()  # the next: from the previous base and the log after it
    rebuilt = backend.app("rebuilt")
    assert list(rebuilt.files("tomb")) == [kept.filename]
    assert rebuilt.deleted() == sorted([one.filename, two.filename, stuck.filename])
    assert rebuilt.client.get(f"/simple/tomb/{stuck.filename}", auth=backend.read).status_code == 404
    assert rebuilt.upload(wheel(tmp_path, "tomb", "2.0", tag="other bytes")).status_code == 409
    ok(rebuilt.upload(two))  # the same bytes come back
    assert storage.read_document(tombstone_key(two.filename)) is None
    backend.update_index()
    assert sorted(backend.app("final").files("tomb")) == sorted([two.filename, kept.filename])


def test_a_legacy_lifecycle_document_with_tombstones_is_honoured(backend: BackendUnderTest, tmp_path: Path) -> None:
    """Stores written before one document per tombstone kept every tombstone in lifecycle.json."""
    app = backend.app()
    kept, stuck = wheel(tmp_path, "legacy", "1.0"), wheel(tmp_path, "legacy", "2.0")
    never = wheel(tmp_path, "legacy", "3.0")  # deleted (by the old code) and never stored since
    ok(app.upload(kept))
    ok(app.upload(stuck))  # its old deletion stopped before the bytes were removed

    def table(dist: Dist) -> dict[str, str]:
        return {"distrib": "legacy", "version": dist.spec.version, "sha256": dist.sha256,
                "deleted_time": "2026-11-01T00:00:00.000000Z"}
    legacy = {"format": 1, "status": {}, "deleted": {stuck.filename: table(stuck), never.filename: table(never)}}
    storage = app.storage
    storage.write_document(LIFECYCLE_KEY, json.dumps(legacy).encode(), storage.document_version(LIFECYCLE_KEY))

    refused = app.upload(wheel(tmp_path, "legacy", "3.0", tag="other bytes"))
    assert refused.status_code == 409 and "was deleted" in refused.text
    backend.update_index()
    rebuilt = backend.app("rebuilt")
    assert list(rebuilt.files("legacy")) == [kept.filename]
    assert rebuilt.deleted() == sorted([stuck.filename, never.filename])
    ok(rebuilt.upload(never))  # the same bytes may come back
    ok(rebuilt.upload(stuck))
    backend.update_index()
    assert sorted(backend.app("final").files("legacy")) == sorted([kept.filename, stuck.filename, never.filename])
