"""Fast unit tests of the pieces every request and every config load relies on.

No server, no subprocess: names (path-traversal guard), the index model and its TOML formats,
the local-index journal, the config loader's error messages, the auth-verdict cache and the
file_system backend's create-only store. Each test says why the behaviour matters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest
from backend_fixtures import staged_file

from pywharf_backends.file_system import FileSystemBackend, FileSystemConfig
from pywharf_core.index.formats import IndexFormatError, dump_index, dump_index_json, parse_index, parse_index_json
from pywharf_core.index.local import LocalIndexStore
from pywharf_core.index.snapshot import IndexSnapshot
from pywharf_core.model.errors import ConfigError, FileConflict, InvalidName
from pywharf_core.model.names import normalize_project, parse_dist_filename, validate_repo_name
from pywharf_core.model.records import FileRecord, freeze_meta
from pywharf_core.service import repository as pkg_repo_module
from pywharf_core.service.package_store import PackageStore
from pywharf_core.service.repository import AuthExpiry, PkgRepo
from pywharf_core.storage.backend import Backend, BackendContext, Permission, StagedFile, StoreOutcome
from pywharf_core.storage.config import ConfigSource, build_config, load_admin_secrets, load_repo_configs
from pywharf_core.storage.registry import installed_backends

SHA_A = "a" * 64
SHA_B = "b" * 64


def record(filename: str, sha256: str = SHA_A, size: int = 10, **meta: Any) -> FileRecord:
    dist = parse_dist_filename(filename)
    return FileRecord(
        filename=filename,
        distrib=dist.project,
        version=str(dist.version),
        sha256=sha256,
        size=size,
        upload_time="2026-01-02T03:04:05.000006Z",
        requires_python=">=3.8",
        meta=freeze_meta(meta),
    )


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "project", "version", "filetype"),
    [
        ("demo-1.0-py3-none-any.whl", "demo", "1.0", "bdist_wheel"),
        ("Demo_Pkg-2.0.1-py2.py3-none-any.whl", "demo-pkg", "2.0.1", "bdist_wheel"),
        ("demo-1.0-1build-cp311-cp311-manylinux_2_17_x86_64.whl", "demo", "1.0", "bdist_wheel"),
        ("demo-1.0+local.1-py3-none-any.whl", "demo", "1.0+local.1", "bdist_wheel"),
        ("demo-1.0.tar.gz", "demo", "1.0", "sdist"),
        ("demo-1.0+local.1.tar.gz", "demo", "1.0+local.1", "sdist"),
        ("zope.interface-5.0rc1.tar.gz", "zope-interface", "5.0rc1", "sdist"),
        ("demo-1.0.zip", "demo", "1.0", "sdist"),
    ],
)
def test_parse_dist_filename_accepts_real_distribution_names(filename, project, version, filetype):
    """Every filename twine/uv produce (incl. local versions, which private indexes use a lot)
    must be accepted, with the project normalised so pages group files correctly."""
    dist = parse_dist_filename(filename)
    assert dist.filename == filename
    assert dist.project == project
    assert str(dist.version) == version
    assert dist.filetype == filetype


@pytest.mark.parametrize(
    "filename",
    [
        "../x-1.0-py3-none-any.whl",
        "..-1.0.tar.gz",
        "x/y-1.0.tar.gz",
        "x\\y-1.0.tar.gz",
        "/etc/passwd-1.0.tar.gz",
        ".hidden-1.0.tar.gz",
        "demo-1.0.tar.gz\0.whl",
        "demo\0-1.0.tar.gz",
        "demo-1.0.tar.gz\n",
        "demo-1.0.egg",
        "demo-1.0.exe",
        "demo-1.0.tar.bz2",
        "demo-1.0.tgz",
        "demo-1.0-py3-none-any.WHL",
        "demo-1.0",
        "demo.whl",
        "demo-x.y.z.tar.gz",
        "",
        "a" * 250 + "-1.0.tar.gz",
    ],
)
def test_parse_dist_filename_rejects_unsafe_or_unknown_names(filename):
    """Filenames become paths in storage: traversal, hidden files, NUL/control bytes and
    anything that is not a wheel or sdist must be refused before touching the disk."""
    with pytest.raises(InvalidName):
        parse_dist_filename(filename)


@pytest.mark.parametrize(
    "filename", ["démo-1.0.tar.gz", "demo 1-1.0.tar.gz", "demo$-1.0.tar.gz", "démo-1.0-py3-none-any.whl"]
)
def test_parse_dist_filename_rejects_non_pep508_project_names(filename):
    """A filename whose project part is not a PEP 508 name (spaces, ``$``, non-ASCII) can never
    match an upload's ``name`` and, in a legacy index, makes ``parse_index`` raise InvalidName
    instead of skipping the entry; packaging already refuses ``demo 1-...whl`` for wheels, so
    sdists (and non-ASCII wheels) should be refused the same way."""
    with pytest.raises(InvalidName):
        parse_dist_filename(filename)


@pytest.mark.parametrize("name", ["local", "a", "my-repo.1", "A_b-c", "x" * 64, "r2d2"])
def test_validate_repo_name_accepts_boring_names(name):
    """Repo names are folder names and basic-auth usernames: the documented alphabet works."""
    assert validate_repo_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "..", "../evil", "a..b", "a b", "a/b", "a\\b", "-a", "a-", ".a", "a.", "x" * 65, "é",
     "local\n", "local\r", "lo\0cal"],
)
def test_validate_repo_name_rejects_paths_and_odd_characters(name):
    """A repo name becomes ``ROOT/cache/<name>``: separators, ``..``, whitespace and control
    characters (a trailing newline included: ``$`` in a regex matches before it) must fail."""
    with pytest.raises(InvalidName):
        validate_repo_name(name)


def test_validate_repo_name_rejects_non_strings():
    """TOML table names are always strings, but callers from code must not crash on others."""
    with pytest.raises(InvalidName):
        validate_repo_name(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "normalized"),
    [("Demo", "demo"), ("Demo_Pkg", "demo-pkg"), ("zope.interface", "zope-interface"),
     ("a--b__c..d", "a-b-c-d"), ("X", "x")],
)
def test_normalize_project_follows_pep503(name, normalized):
    """Pages and uploads are keyed by the PEP 503 form, so ``Demo_Pkg`` and ``demo-pkg`` are
    the same project."""
    assert normalize_project(name) == normalized


@pytest.mark.parametrize("name", ["", "-demo", "demo-", "de mo", "démo", "demo/x", "demo\n"])
def test_normalize_project_rejects_invalid_names(name):
    """Project names reach URLs and index keys: non-PEP 508 names (incl. a trailing newline)
    must be refused rather than normalised into something odd."""
    with pytest.raises(InvalidName):
        normalize_project(name)


# -- index: records and snapshots ----------------------------------------------------------------


def test_file_record_toml_round_trip_keeps_multi_valued_fields_as_tuples():
    """The index is written by one server and read by others: a dump/parse round trip must give
    back equal records, with multi-valued fields still tuples even with 0 or 1 value."""
    records = [
        record(
            "demo-1.0-py3-none-any.whl",
            classifiers=["Programming Language :: Python :: 3", "License :: OSI Approved"],
            requires_dist=["requests>=2"],
            project_urls=[],
            summary="Ünïcödé summary with \"quotes\" and\nnewline",
            keywords="a,b",
        ),
        record("demo-1.0.tar.gz", sha256=SHA_B, size=20),
        record("other-2.0+local.1-py3-none-any.whl", size=0),
    ]
    parsed = parse_index(dump_index(records))
    assert sorted(parsed, key=lambda r: r.filename) == sorted(records, key=lambda r: r.filename)
    wheel = next(r for r in parsed if r.filename == "demo-1.0-py3-none-any.whl")
    assert wheel.meta["classifiers"] == ("Programming Language :: Python :: 3", "License :: OSI Approved")
    assert wheel.meta["requires_dist"] == ("requests>=2",)
    assert wheel.meta["project_urls"] == ()
    assert wheel.meta["summary"] == "Ünïcödé summary with \"quotes\" and\nnewline"
    assert isinstance(wheel.meta, MappingProxyType)


def test_dump_index_is_reproducible():
    """The same records in any order produce the same bytes, so index changes are real changes."""
    a = record("demo-1.0.tar.gz")
    b = record("demo-2.0.tar.gz")
    assert dump_index([a, b]) == dump_index([b, a])
    assert dump_index([a, b]).startswith(b"format = 2")


def test_freeze_meta_drops_transport_and_sidecar_fields():
    """Upload transport fields (``:action``, ``content``) and the bulky ``description`` never
    belong in the index."""
    meta = freeze_meta({":action": "file_upload", "protocol_version": "1", "description": "x" * 100,
                        "summary": "s", "classifiers": "single"})
    assert dict(meta) == {"summary": "s", "classifiers": ("single",)}


def test_snapshot_build_groups_and_sorts():
    """Project pages list files sorted by filename; the root page lists projects sorted."""
    snap = IndexSnapshot.build([record("zeta-1.0.tar.gz"), record("demo-2.0.tar.gz"),
                                record("demo-1.0.tar.gz")])
    assert snap.project_names == ("demo", "zeta")
    assert [r.filename for r in snap.projects["demo"]] == ["demo-1.0.tar.gz", "demo-2.0.tar.gz"]
    assert len(snap) == 3


def test_with_records_keeps_unchanged_project_tuples_identical():
    """Page caches detect staleness by tuple identity: an upload to one project must not
    invalidate the cached pages of every other project."""
    base = IndexSnapshot.build([record("demo-1.0.tar.gz"), record("other-1.0.tar.gz")])
    other_before = base.projects["other"]
    demo_before = base.projects["demo"]
    new = base.with_records([record("demo-2.0.tar.gz")])
    assert new is not base
    assert new.projects["other"] is other_before
    assert new.projects["demo"] is not demo_before
    assert [r.filename for r in new.projects["demo"]] == ["demo-1.0.tar.gz", "demo-2.0.tar.gz"]
    # The old snapshot is immutable: requests still holding it see the old state.
    assert [r.filename for r in base.projects["demo"]] == ["demo-1.0.tar.gz"]
    assert "demo-2.0.tar.gz" not in base.files


def test_with_records_of_known_records_returns_same_snapshot():
    """Re-applying records already present (journal replay, identical re-upload) is free."""
    rec = record("demo-1.0.tar.gz")
    base = IndexSnapshot.build([rec])
    assert base.with_records([rec]) is base
    assert base.with_records([]) is base


def test_with_records_replaces_a_file_of_the_same_name():
    """A sync may bring a corrected record for a filename: it replaces, never duplicates."""
    base = IndexSnapshot.build([record("demo-1.0.tar.gz", sha256=SHA_A), record("demo-2.0.tar.gz")])
    new = base.with_records([record("demo-1.0.tar.gz", sha256=SHA_B)])
    assert new.files["demo-1.0.tar.gz"].sha256 == SHA_B
    assert [r.sha256 for r in new.projects["demo"] if r.filename == "demo-1.0.tar.gz"] == [SHA_B]
    assert len(new.projects["demo"]) == 2
    assert len(new) == 2
    assert base.files["demo-1.0.tar.gz"].sha256 == SHA_A


def test_with_records_moving_a_file_to_another_project_empties_the_old_one():
    """If a replacement record names another distrib, the old project must not keep a ghost."""
    old = record("demo-1.0.tar.gz")
    moved = dataclasses.replace(old, distrib="renamed")
    new = IndexSnapshot.build([old]).with_records([moved])
    assert "demo" not in new.projects
    assert new.project_names == ("renamed",)
    assert new.projects["renamed"] == (moved,)


# -- index: formats and corruption ---------------------------------------------------------------

LEGACY_INDEX = """\
mtime = 1577836800

[[pkgs]]
type = "file_system"
distrib = "demo-pkg"
package = "demo_pkg-1.0-py3-none-any"
ext = ".whl"
sha256 = "ABCDEF0123000000000000000000000000000000000000000000000000000000"
package_path = "/srv/storage/demo-pkg/demo_pkg-1.0-py3-none-any.whl"

[pkgs.meta]
distrib = "demo-pkg"
sha256 = "ABCDEF0123000000000000000000000000000000000000000000000000000000"
name = "Demo_Pkg"
version = "1.0"
requires_python = ">=3.7"
summary = "Demo"
classifiers = "Programming Language :: Python :: 3"

[[pkgs]]
type = "file_system"
distrib = "demo-pkg"
package = "demo_pkg-1.0"
ext = ".tar.gz"
sha256 = "0123abcdef000000000000000000000000000000000000000000000000000000"

[pkgs.meta]
name = "Demo_Pkg"
version = "1.0"

[[pkgs]]
type = "file_system"
distrib = "other"
package = "other-0.1"
ext = "tar.gz"
sha256 = "ff00000000000000000000000000000000000000000000000000000000000000"

[pkgs.meta]
version = "0.1"
"""


def test_parse_legacy_0_2_3_index():
    """Upgrading from pywharf 0.2.3 must keep serving the existing index: ``package`` + ``ext``
    (with or without the leading dot, 0.2.3 stored it without) make the filename, sha256 is
    lower-cased, and single-string multi-valued fields become 1-tuples."""
    records = {r.filename: r for r in parse_index(LEGACY_INDEX)}
    assert set(records) == {"demo_pkg-1.0-py3-none-any.whl", "demo_pkg-1.0.tar.gz", "other-0.1.tar.gz"}
    wheel = records["demo_pkg-1.0-py3-none-any.whl"]
    assert wheel.distrib == "demo-pkg"
    assert wheel.version == "1.0"
    assert wheel.sha256 == "abcdef0123000000000000000000000000000000000000000000000000000000"
    assert wheel.requires_python == ">=3.7"
    assert wheel.meta["summary"] == "Demo"
    assert wheel.meta["classifiers"] == ("Programming Language :: Python :: 3",)
    assert records["demo_pkg-1.0.tar.gz"].sha256 == "0123abcdef000000000000000000000000000000000000000000000000000000"
    assert records["other-0.1.tar.gz"].distrib == "other"
    snap = IndexSnapshot.build(records.values())
    assert snap.project_names == ("demo-pkg", "other")


@pytest.mark.parametrize("with_distrib_and_version", [False, True])
@pytest.mark.parametrize(
    "filename", ["../evil-1.0.tar.gz", "sub/evil-1.0.tar.gz", ".evil-1.0.tar.gz", "evil-1.0.exe"]
)
def test_index_skips_unusable_filenames(filename, with_distrib_and_version):
    """The remote index is data from storage, not trusted code: an entry whose filename could
    escape the storage folder (or is no distribution) is skipped, whether or not the entry also
    carries ``distrib``/``version`` (which lets the parser skip re-parsing the filename)."""
    extra = 'distrib = "evil"\nversion = "1.0"\n' if with_distrib_and_version else ""
    document = (f'format = 2\n[files."{filename}"]\n{extra}sha256 = "{SHA_A}"\n'
                f'[files."good-1.0.tar.gz"]\ndistrib = "good"\nversion = "1.0"\nsha256 = "{SHA_B}"\n')
    assert [r.filename for r in parse_index(document)] == ["good-1.0.tar.gz"]


def test_index_json_round_trip():
    """The local cache is JSON (fast start-up): it must hold exactly what the TOML index holds."""
    records = [record("demo-1.0-py3-none-any.whl", classifiers=["a", "b"], requires_dist=["x"]),
               record("demo-1.0.tar.gz", sha256=SHA_B)]
    assert parse_index_json(dump_index_json(records)) == records
    assert parse_index_json(dump_index_json(records)) == parse_index(dump_index(records))


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"files": 3}'])
def test_corrupt_index_json_raises_index_format_error(data):
    """A damaged local cache must be reported as IndexFormatError so start-up re-syncs."""
    with pytest.raises(IndexFormatError):
        parse_index_json(data)


def test_legacy_index_skips_unusable_filenames():
    """One bad entry (e.g. a traversal name) must not make the whole legacy index unusable."""
    doc = LEGACY_INDEX + '\n[[pkgs]]\npackage = "../evil-1.0"\next = ".tar.gz"\nsha256 = "' + SHA_A + '"\n'
    assert len(parse_index(doc)) == 3


@pytest.mark.parametrize(
    "document",
    [
        '[files."demo-1.0.tar.gz"\nsha256 = "x"\n',
        'format = 2\n[files."demo-1.0.tar.gz"]\nsha256 = "unterminated\n',
        "files = 3\n",
        'files = {"demo-1.0.tar.gz" = 3}\n',
        '[files."demo-1.0.tar.gz"]\nsize = 3\n',
        b"\xff\xfe not utf-8",
    ],
    ids=["bad-header", "unterminated-string", "files-not-table", "entry-not-table", "no-sha256", "not-utf8"],
)
def test_corrupt_index_raises_index_format_error(document):
    """A corrupt index must raise IndexFormatError (and nothing else) so the caller keeps the
    last good index instead of crashing."""
    with pytest.raises(IndexFormatError):
        parse_index(document)


@pytest.mark.parametrize(
    "document",
    [
        '[files."demo-1.0.tar.gz"]\nsha256 = "ab"\nmeta = "oops"\n',
        '[files."demo-1.0.tar.gz"]\nsha256 = "ab"\nsize = "abc"\n',
        'mtime = 1\n[[pkgs]]\npackage = "demo-1.0"\next = "tar.gz"\nsha256 = "ab"\nsize = "abc"\n',
        'mtime = 1\n[[pkgs]]\npackage = "demo-1.0"\next = "tar.gz"\nsha256 = "ab"\nmeta = "oops"\n',
        'mtime = 1\n[[pkgs]]\npackage = "demo-1.0"\next = "tar.gz"\nsha256 = "ab"\ndistrib = "bad name!"\n',
        'mtime = 1\n[[pkgs]]\npackage = "démo-1.0"\next = "tar.gz"\nsha256 = "ab"\n',
    ],
    ids=["meta-not-a-table", "size-not-int", "legacy-size-not-int", "legacy-meta-not-a-table",
         "legacy-bad-distrib", "legacy-non-ascii-project"],
)
def test_malformed_index_entries_never_raise_other_exceptions(document):
    """``parse_index`` promises IndexFormatError on malformed structure (or skipping an unusable
    entry). LocalIndexStore.load_synced/load_journal only catch IndexFormatError, so any other
    exception type here would crash server start-up on a damaged local index."""
    with contextlib.suppress(IndexFormatError):
        parse_index(document)


# -- local index ---------------------------------------------------------------------------------


def test_journal_append_and_load(tmp_path: Path):
    """Uploads survive a restart through the append-only journal, in upload order."""
    store = LocalIndexStore(tmp_path, "local")
    assert store.load_journal() == []
    first, second = record("demo-1.0.tar.gz", classifiers=["a", "b"]), record("demo-2.0.tar.gz")
    store.append_journal(first)
    store.append_journal(second)
    assert LocalIndexStore(tmp_path, "local").load_journal() == [first, second]
    assert store.journal_path == tmp_path / "cache" / "local" / "uploads.jsonl"


def test_journal_torn_trailing_entry_is_skipped(tmp_path: Path):
    """A crash mid-append leaves a partial last entry: it is skipped, earlier entries load, and
    later appends still load."""
    store = LocalIndexStore(tmp_path, "local")
    good = record("demo-1.0.tar.gz")
    store.append_journal(good)
    store.append_journal(record("demo-2.0.tar.gz"))
    data = store.journal_path.read_bytes()
    cut = data.rindex(b'"sha256"') + len(b'"sha256":"aaa')  # inside the sha256 string
    store.journal_path.write_bytes(data[:cut])
    assert store.load_journal() == [good]
    third = record("demo-3.0.tar.gz")
    store.append_journal(third)
    assert store.load_journal() == [good, third]


def test_journal_truncated_at_any_byte_never_yields_a_wrong_record(tmp_path: Path):
    """Whatever byte a crash stops the last append at, loading must give either the complete
    record or skip it: never a record with a wrong size, missing metadata or a cut value."""
    store = LocalIndexStore(tmp_path, "local")
    good = record("demo-1.0.tar.gz")
    last = record("demo-2.0.tar.gz", size=123456, classifiers=["x :: y", "z"], summary="hello")
    store.append_journal(good)
    store.append_journal(last)
    data = store.journal_path.read_bytes()
    start = data.rindex(b"\n", 0, len(data) - 1) + 1  # the last line
    wrong = []
    for cut in range(start, len(data)):
        store.journal_path.write_bytes(data[:cut])
        loaded = store.load_journal()
        if loaded not in ([good], [good, last]):
            wrong.append((cut - start, [r for r in loaded if r != good]))
    assert not wrong, f"{len(wrong)} truncation points load a wrong record, e.g. {wrong[0]}"


def test_save_synced_prunes_journal_entries_listed_remotely(tmp_path: Path):
    """Once the remote index lists an upload, its journal entry is dropped; others stay."""
    store = LocalIndexStore(tmp_path, "local")
    a, b, c = record("demo-1.0.tar.gz"), record("demo-2.0.tar.gz"), record("other-1.0.tar.gz")
    for rec in (a, b, c):
        store.append_journal(rec)
    store.save_synced([a, c], "token-1")
    assert store.load_journal() == [b]
    records, token = store.load_synced()
    assert token == "token-1"
    assert sorted(records, key=lambda r: r.filename) == [a, c]
    store.save_synced([a, b, c], "token-2")
    assert store.load_journal() == []
    assert LocalIndexStore(store.folder.parent.parent, "local").load_synced()[1] == "token-2"


def test_load_synced_of_corrupt_local_index_is_empty(tmp_path: Path):
    """A damaged local copy is not fatal: the server starts empty and re-syncs."""
    store = LocalIndexStore(tmp_path, "local")
    assert store.load_synced() == ([], None)
    store.index_path.write_bytes(b"[files\nnot toml")
    store.token_path.write_text("tok")
    assert store.load_synced() == ([], None)


# -- config --------------------------------------------------------------------------------------

SOURCE = ConfigSource("/etc/pywharf/config.toml")
FS_TABLE = {"type": "file_system", "read_secret": "read-secret-00", "write_secret": "write-secret"}


def config_error(call, *args) -> str:
    with pytest.raises(ConfigError) as info:
        call(*args)
    return str(info.value)


@pytest.mark.parametrize(
    ("table", "key", "fragment"),
    [
        ({"type": "file_system", "write_secret": "write-secret"}, "read_secret", "missing required key"),
        ({**FS_TABLE, "max_file_bytes": "big"}, "max_file_bytes", "must be an integer, got str"),
        ({**FS_TABLE, "max_file_bytes": True}, "max_file_bytes", "must be an integer, got bool"),
        ({**FS_TABLE, "max_file_bytes": 1.5}, "max_file_bytes", "must be an integer"),
        ({**FS_TABLE, "max_file_bytes": 0}, "max_file_bytes", "positive"),
        ({**FS_TABLE, "read_secret": 5}, "read_secret", "must be a string, got int"),
        ({**FS_TABLE, "read_secret": ""}, "read_secret", "must not be empty"),
        ({**FS_TABLE, "storage_path": 5}, "storage_path", "must be a string"),
        ({**FS_TABLE, "colour": "red"}, "colour", "unknown key"),
        ({**FS_TABLE, "name": "x"}, "name", "unknown key"),
        ({**FS_TABLE, "sync_index_interval": 0}, "sync_index_interval", "positive"),
        ({**FS_TABLE, "sync_index_interval": -5}, "sync_index_interval", "positive"),
    ],
    ids=["missing-read-secret", "max-bytes-str", "max-bytes-bool", "max-bytes-float", "max-bytes-zero",
         "read-secret-int", "read-secret-empty", "storage-path-int", "unknown-key", "name-key",
         "interval-zero", "interval-negative"],
)
def test_build_config_errors_name_file_table_and_key(table, key, fragment):
    """Operators fix configs from the one error line: it must say which file, table and key."""
    message = config_error(build_config, FileSystemConfig, "local", table, SOURCE)
    assert message.startswith(f"/etc/pywharf/config.toml: [local] key {key!r}: ")
    assert fragment in message


def test_build_config_applies_defaults():
    """Optional keys get the documented defaults (README table)."""
    config = build_config(FileSystemConfig, "local", FS_TABLE, SOURCE)
    assert isinstance(config, FileSystemConfig)
    assert (config.name, config.max_file_bytes, config.sync_index_interval, config.storage_path) == (
        "local", 5368709119, 60, None)


def test_config_repr_hides_secrets():
    """Configs end up in logs and tracebacks: the secrets must not be in their repr."""
    config = build_config(FileSystemConfig, "local",
                          {**FS_TABLE, "read_secret": "TOPSECRET-READ", "write_secret": "TOPSECRET-WRITE"}, SOURCE)
    assert "TOPSECRET" not in repr(config)


@pytest.mark.parametrize(
    ("document", "where", "fragment"),
    [
        ({"local": {k: v for k, v in FS_TABLE.items() if k != "type"}}, "[local] key 'type'", "missing required key"),
        ({"local": {**FS_TABLE, "type": "nope"}}, "[local] key 'type'", "unknown backend type 'nope'"),
        ({"local": {**FS_TABLE, "type": ["file_system"]}}, "[local] key 'type'", ""),
        ({"local": {**FS_TABLE, "type": {"a": 1}}}, "[local] key 'type'", ""),
        ({"../evil": FS_TABLE}, '["../evil"]', "repo name"),
        ({"a b": FS_TABLE}, '["a b"]', "repo name"),
        ({"local": 5}, "[local]", "must be a table"),
    ],
    ids=["missing-type", "unknown-type", "type-list", "type-table", "name-traversal", "name-space",
         "not-a-table"],
)
def test_load_repo_configs_errors(document, where, fragment):
    """Whole-document validation: bad names, bad tables and bad ``type`` values all produce the
    one-line ConfigError (never a TypeError from using a list as a dict key)."""
    with pytest.raises(ConfigError) as info:
        load_repo_configs(document, SOURCE, installed_backends())
    message = str(info.value)
    assert message.startswith(f"/etc/pywharf/config.toml: {where}"), message
    assert fragment in message


def test_load_repo_configs_builds_every_table():
    """Several repos in one file are all built, keyed by name."""
    configs = load_repo_configs({"a": FS_TABLE, "b": {**FS_TABLE, "max_file_bytes": 10}}, SOURCE,
                                installed_backends())
    assert sorted(configs) == ["a", "b"]
    assert configs["b"].max_file_bytes == 10
    assert configs["a"].name == "a"


ADMIN = ConfigSource("/etc/pywharf/admin.toml")


@pytest.mark.parametrize(
    ("document", "where", "fragment"),
    [
        ({"other": {"type": "file_system", "raw": "x"}}, "[other]", "no package repository"),
        ({"local": {"type": "file_system", "raw": "x", "env": "X"}}, "[local] key 'raw'", "exactly one"),
        ({"local": {"type": "file_system"}}, "[local] key 'raw'", "exactly one"),
        ({"local": {"type": "file_system", "env": "PYWHARF_TEST_UNSET"}}, "[local] key 'env'", "not set"),
        ({"local": {"type": "file_system", "env": "PYWHARF_TEST_EMPTY"}}, "[local] key 'env'", "not set"),
        ({"local": {"type": "github", "raw": "x"}}, "[local] key 'type'", "does not match"),
        ({"local": {"raw": "x"}}, "[local] key 'type'", "missing required key"),
        ({"local": {"type": "file_system", "raw": 5}}, "[local] key 'raw'", "non-empty string"),
        ({"local": {"type": "file_system", "raw": ""}}, "[local] key 'raw'", "non-empty string"),
        ({"local": {"type": "file_system", "raw": "x", "token": "y"}}, "[local] key 'token'", "unknown key"),
        ({"local": "x"}, "[local]", "must be a table"),
    ],
    ids=["not-in-config", "raw-and-env", "neither", "env-unset", "env-empty", "type-mismatch",
         "type-missing", "raw-int", "raw-empty", "unknown-key", "not-a-table"],
)
def test_load_admin_secrets_errors(document, where, fragment):
    """Admin-secret mistakes name the admin file (not the config), the table and the key."""
    configs = load_repo_configs({"local": FS_TABLE}, SOURCE, installed_backends())
    with pytest.raises(ConfigError) as info:
        load_admin_secrets(document, ADMIN, configs, environ={"PYWHARF_TEST_EMPTY": ""})
    message = str(info.value)
    assert message.startswith(f"/etc/pywharf/admin.toml: {where}"), message
    assert fragment in message


def test_load_admin_secrets_resolves_raw_and_env():
    """``raw`` is used as is; ``env`` is read from the environment given."""
    configs = load_repo_configs({"a": FS_TABLE, "b": FS_TABLE}, SOURCE, installed_backends())
    secrets = load_admin_secrets(
        {"a": {"type": "file_system", "raw": "s1"}, "b": {"type": "file_system", "env": "TOKEN"}},
        ADMIN, configs, environ={"TOKEN": "s2"},
    )
    assert secrets == {"a": "s1", "b": "s2"}


# -- auth cache ----------------------------------------------------------------------------------


class CountingBackend(Backend):
    """A backend whose authenticate() counts calls; storage methods are never used here."""

    def __init__(self, config, context, verdicts: dict[str, Permission]) -> None:
        super().__init__(config, context)
        self.verdicts = verdicts
        self.calls = 0

    def authenticate(self, secret: str) -> Permission:
        self.calls += 1
        return self.verdicts.get(secret, Permission.NONE)

    def staging_dir(self):
        raise NotImplementedError

    def store(self, record, staged, metadata, core_metadata):
        raise NotImplementedError

    def locate(self, filename):
        raise NotImplementedError

    def locate_metadata(self, filename):
        raise NotImplementedError

    def set_yanked(self, filename, yanked, reason):
        raise NotImplementedError

    def fetch_remote_index(self, known_token):
        raise NotImplementedError

    def list_files(self):
        raise NotImplementedError

    def publish_remote_index(self, data):
        raise NotImplementedError


@pytest.fixture
def auth_repo(tmp_path: Path, monkeypatch):
    """A PkgRepo over a CountingBackend, with a controllable monotonic clock."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(pkg_repo_module, "time", SimpleNamespace(monotonic=lambda: clock.now,
                                                                 time=lambda: clock.now))
    config = build_config(FileSystemConfig, "local", FS_TABLE, SOURCE)
    backend = CountingBackend(config, BackendContext(root=tmp_path),
                              {"r": Permission.READ, "w": Permission.WRITE})
    repo = PkgRepo(config, backend, LocalIndexStore(tmp_path, "local"), AuthExpiry(read=100, write=10))
    return repo, backend, clock


def test_auth_read_verdict_cached_until_expiry(auth_repo):
    """Backends like GitHub are slow/rate-limited: a read secret is checked once per expiry."""
    repo, backend, clock = auth_repo
    for _ in range(5):
        assert repo.grant_for("r").permission is Permission.READ
    assert backend.calls == 1
    clock.now += 99
    assert repo.grant_for("r").permission is Permission.READ
    assert backend.calls == 1
    clock.now += 2  # past the 100 s read expiry
    assert repo.grant_for("r").permission is Permission.READ
    assert backend.calls == 2


def test_auth_write_verdict_uses_write_expiry_and_revalidates(auth_repo):
    """Write secrets are trusted for the (shorter) write expiry; a revoked secret is noticed."""
    repo, backend, clock = auth_repo
    assert repo.grant_for("w").permission is Permission.WRITE
    clock.now += 9
    assert repo.grant_for("w").permission is Permission.WRITE
    assert backend.calls == 1
    clock.now += 2
    backend.verdicts["w"] = Permission.NONE  # revoked meanwhile
    assert repo.grant_for("w").permission is Permission.NONE
    assert backend.calls == 2
    assert repo.grant_for("w").permission is Permission.NONE
    assert backend.calls == 3


def test_auth_failures_are_not_cached(auth_repo):
    """A wrong secret must be re-checked every time (it may become valid; nothing to trust)."""
    repo, backend, _ = auth_repo
    for _ in range(3):
        assert repo.grant_for("wrong").permission is Permission.NONE
    assert backend.calls == 3
    assert repo._auth_cache == {}


def test_cached_grant_never_calls_the_backend(auth_repo):
    """``cached_grant`` runs on the event loop: it answers from the cache only, and only
    while the verdict is within its expiry."""
    repo, backend, clock = auth_repo
    assert repo.cached_grant("r") is None
    assert backend.calls == 0
    repo.grant_for("r")
    assert repo.cached_grant("r").permission is Permission.READ
    clock.now += 101
    assert repo.cached_grant("r") is None
    assert repo.cached_grant("wrong") is None
    assert backend.calls == 1


def test_auth_cache_is_keyed_by_hash_not_secret(auth_repo):
    """Secrets are never kept in memory structures that might be dumped: only their SHA-256."""
    repo, _, _ = auth_repo
    repo.grant_for("w")
    assert list(repo._auth_cache) == [hashlib.sha256(b"w").digest()]


# -- file_system backend -------------------------------------------------------------------------


@pytest.fixture
def fs_backend(tmp_path: Path) -> PackageStore:
    """The file_system adapter inside the core's PackageStore (what a server runs)."""
    config = build_config(FileSystemConfig, "local", {**FS_TABLE, "read_secret": "read-secret-00",
                                                      "write_secret": "write-secret"}, SOURCE)
    return PackageStore(FileSystemBackend(config, BackendContext(root=tmp_path / "root")))


def stage(backend: PackageStore, data: bytes, tag: str) -> StagedFile:
    return staged_file(backend.staging_dir() / f".upload-{tag}.part", data)


def store(backend: PackageStore, filename: str, data: bytes, tag: str):
    staged = stage(backend, data, tag)
    rec = record(filename, sha256=staged.sha256, size=staged.size)
    meta = {"name": rec.distrib, "version": rec.version, "sha256": staged.sha256, "size": staged.size,
            "upload_time": rec.upload_time, "description": "long text"}
    try:
        return backend.store(rec, staged, meta, None)
    finally:
        staged.path.unlink(missing_ok=True)  # what the core does after store()


def test_store_creates_file_and_sidecar(fs_backend: PackageStore):
    """A new upload lands under its name with its metadata beside it (for update_index)."""
    assert store(fs_backend, "demo-1.0.tar.gz", b"first", "1") is StoreOutcome.CREATED
    stored = fs_backend.storage.root / "demo-1.0.tar.gz"
    assert stored.read_bytes() == b"first"
    assert fs_backend.storage.root == (fs_backend.context.root / "cache" / "local" / "storage").resolve()
    sidecar = fs_backend.storage.root / ".pywharf" / "demo-1.0.tar.gz.toml"
    assert hashlib.sha256(b"first").hexdigest() in sidecar.read_text()
    assert [r.filename for r in fs_backend.list_files()] == ["demo-1.0.tar.gz"]
    leftovers = [p.name for p in fs_backend.storage.root.rglob("*") if p.name.endswith((".tmp", ".part"))]
    assert leftovers == []


def test_store_identical_bytes_is_a_no_op(fs_backend: PackageStore):
    """CI retries re-upload the same file: that must succeed and change nothing."""
    store(fs_backend, "demo-1.0.tar.gz", b"same", "1")
    stored = fs_backend.storage.root / "demo-1.0.tar.gz"
    inode = stored.stat().st_ino
    assert store(fs_backend, "demo-1.0.tar.gz", b"same", "2") is StoreOutcome.IDENTICAL
    assert stored.stat().st_ino == inode
    assert stored.read_bytes() == b"same"


def test_store_different_bytes_conflicts_and_keeps_original(fs_backend: PackageStore):
    """A filename is immutable once stored (PyPI semantics): different bytes are refused and
    neither the file nor its metadata is touched."""
    store(fs_backend, "demo-1.0.tar.gz", b"original", "1")
    sidecar = fs_backend.storage.root / ".pywharf" / "demo-1.0.tar.gz.toml"
    sidecar_before = sidecar.read_bytes()
    with pytest.raises(FileConflict, match="already exists"):
        store(fs_backend, "demo-1.0.tar.gz", b"tampered", "2")
    assert (fs_backend.storage.root / "demo-1.0.tar.gz").read_bytes() == b"original"
    assert sidecar.read_bytes() == sidecar_before
    companions = sorted(p.name for p in (fs_backend.storage.root / ".pywharf").iterdir())
    assert companions == ["demo-1.0.tar.gz.toml", "identity"]


def test_store_refuses_traversal_filename(fs_backend: PackageStore, tmp_path: Path):
    """Defence in depth: even if a bad record reached the backend, nothing leaves storage."""
    staged = stage(fs_backend, b"x", "evil")
    bad = FileRecord(filename="../evil-1.0.tar.gz", distrib="evil", version="1.0", sha256=staged.sha256,
                     size=1, upload_time="")
    with pytest.raises(InvalidName):
        fs_backend.store(bad, staged, {}, None)
    assert not (fs_backend.storage.root.parent / "evil-1.0.tar.gz").exists()


def test_authenticate_uses_constant_time_comparison(fs_backend: PackageStore, monkeypatch):
    """Secrets must be compared with hmac.compare_digest (no timing oracle), and both secrets
    are always compared so timing does not reveal which one matched."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    expected = {"write-secret": Permission.WRITE, "read-secret-00": Permission.READ, "nope": Permission.NONE,
                "": Permission.NONE, "write-secret ": Permission.NONE}
    for secret, permission in expected.items():
        calls.clear()
        assert fs_backend.authenticate(secret) is permission
        assert len(calls) == 2, secret
        assert {b for _, b in calls} == {b"write-secret", b"read-secret-00"}
        assert all(a == secret.encode() for a, _ in calls)


def test_authenticate_decision_comes_only_from_compare_digest(fs_backend: PackageStore, monkeypatch):
    """If compare_digest says no, no other comparison (``==``) may grant access."""
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: False)
    assert fs_backend.authenticate("write-secret") is Permission.NONE
    assert fs_backend.authenticate("read-secret-00") is Permission.NONE


# -- batched parsing of large indexes ----------------------------------------------------------


def _many_records(count: int) -> list[FileRecord]:
    return [
        record(f"pkg{i:04d}-1.{i % 3}-py3-none-any.whl", summary=f"summary {i}",
               classifiers=["Programming Language :: Python :: 3", "License :: OSI Approved :: MIT License"],
               requires_dist=["requests>=2", "rich; extra == 'x'"])
        for i in range(count)
    ]


def test_batched_parse_equals_one_document_parse():
    """An index of many entries (several batches, each with a ``.meta`` subtable) parses in
    batches to exactly what parsing the whole document gives."""
    import tomllib

    from pywharf_core.index.formats import _BATCH_ENTRIES, _parse_in_batches, records_from_document

    records = _many_records(_BATCH_ENTRIES * 2 + 17)
    text = dump_index(records).decode()
    batched = _parse_in_batches(text)
    assert batched is not None, "a document pywharf wrote must take the batched path"
    assert batched == records_from_document(tomllib.loads(text))
    assert sorted(batched, key=lambda r: r.filename) == sorted(records, key=lambda r: r.filename)
    # Equal values are shared objects, not copies (that is where the memory goes).
    assert batched[0].meta["classifiers"] is batched[-1].meta["classifiers"]


def test_batched_parse_defers_to_the_full_parser_when_unsure():
    """Multi-line strings, or a filename repeated across batches: the whole-document parser
    decides (same records, same errors) instead of the batch splitter."""
    from pywharf_core.index.formats import _BATCH_ENTRIES, _parse_in_batches

    records = _many_records(_BATCH_ENTRIES + 5)
    text = dump_index(records).decode()
    multiline = text.replace('summary = "summary 3"', 'summary = """summary\n[files."x"]\n3"""')
    assert _parse_in_batches(multiline) is None
    assert len(parse_index(multiline)) == len(records)

    first = text.split('\n[files."')[1]
    repeated = text + '\n[files."' + first
    assert _parse_in_batches(repeated) is None
    with pytest.raises(IndexFormatError):
        parse_index(repeated)


def test_index_entries_with_markup_in_a_digest_are_skipped_not_rendered():
    """Security review finding: whoever can write the storage or the remote index must not be
    able to inject markup into simple pages through ``sha256`` / ``metadata_sha256`` (they are
    written into ``href`` and ``data-core-metadata``). Such entries are unusable: skipped."""
    from pywharf_core.http.pages import render_project_html
    from pywharf_core.model.errors import InvalidDigest

    good = record("ok-1.0-py3-none-any.whl")
    text = dump_index([good]).decode() + (
        '\n[files."xss-1.0-py3-none-any.whl"]\ndistrib = "xss"\nversion = "1.0"\n'
        'sha256 = "x\\"><script>alert(1)</script>"\nsize = 1\nupload_time = ""\n'
        '\n[files."xss-2.0-py3-none-any.whl"]\ndistrib = "xss"\nversion = "2.0"\n'
        f'sha256 = "{SHA_A}"\nmetadata_sha256 = "y\\"><img src=x onerror=alert(1)>"\nsize = 1\nupload_time = ""\n'
    )
    assert [r.filename for r in parse_index(text)] == [good.filename]
    with pytest.raises(InvalidDigest):
        dataclasses.replace(good, sha256="A" * 64)  # upper case is not how the index stores it
    with pytest.raises(InvalidDigest):
        dataclasses.replace(good, metadata_sha256="<b>")
    assert "<script" not in render_project_html("ok", [good]).decode()
