"""Core metadata (PEP 566/643) read from a distribution file itself.

Used when storage holds a file without the upload's metadata sidecar (e.g. copied in by
hand, or a crash between storing the file and its sidecar): ``update_index`` still gets the
name, version, requires-python, classifiers... from the wheel's own
``{name}-{version}.dist-info/METADATA`` or the sdist's ``PKG-INFO``. Only the metadata member is
read, never the whole archive.

The same bytes are what the upload serves as ``<file>.metadata`` (PEP 658): pip and uv resolve
from that file alone, without downloading the distribution, so it must be the metadata the
installed distribution will really have.

Archives come from clients, so reading them is bounded (the ``MAX_*`` constants below): a
gzip bomb or an archive of hundreds of thousands of members costs at most about a second of
CPU at upload time. A distribution past a bound is still accepted, without PEP 658 metadata
(installers then download the file itself, as for any file without it), and one warning is
logged: the bounds sit well above real distributions, and an index must not refuse a valid
file because it is big.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from pywharf_core.model.records import MULTI_VALUED_FIELDS

# Core-metadata header -> legacy upload form field (what twine sends).
_FIELD_NAMES = {
    "metadata-version": "metadata_version",
    "name": "name",
    "version": "version",
    "summary": "summary",
    "description": "description",
    "description-content-type": "description_content_type",
    "keywords": "keywords",
    "home-page": "home_page",
    "download-url": "download_url",
    "author": "author",
    "author-email": "author_email",
    "maintainer": "maintainer",
    "maintainer-email": "maintainer_email",
    "license": "license",
    "license-expression": "license_expression",
    "license-file": "license_files",
    "classifier": "classifiers",
    "requires-dist": "requires_dist",
    "requires-python": "requires_python",
    "requires-external": "requires_external",
    "project-url": "project_urls",
    "provides-extra": "provides_extra",
    "provides-dist": "provides_dist",
    "obsoletes-dist": "obsoletes_dist",
    "platform": "platform",
    "supported-platform": "supported_platform",
    "dynamic": "dynamic",
}
log = logging.getLogger(__name__)

# Largest METADATA / PKG-INFO read. Real ones are KBs (a long description: a few hundred KB).
MAX_METADATA_BYTES = 16 * 1024 * 1024
# Bytes of an sdist's tar stream decompressed while looking for PKG-INFO (about 0.2-0.5 s of
# zlib). Hatchling and flit write PKG-INFO last, so a big sdist is read to its end: 256 MiB
# is several times the largest sdists on PyPI, unpacked.
MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024
# Tar members scanned for PKG-INFO: tarfile parses a header in about 25 us, so this is about
# half a second. Big sdists (compilers, vendored C++ trees) hold 5-15 thousand files.
MAX_TAR_MEMBERS = 20_000
# A zip's central directory is parsed whole by ``zipfile`` (about 6 us per entry): its size
# (from the end record, checked before parsing) and declared entry count are bounded. The
# largest wheels on PyPI (tensorflow, torch: 15-25 thousand files) have directories of 2-4 MiB.
MAX_ZIP_DIRECTORY_BYTES = 8 * 1024 * 1024
MAX_ZIP_ENTRIES = 100_000

# What an installer resolves from ``<file>.metadata``. If an sdist marks one of them as Dynamic
# (PEP 643), the wheel built from it may say otherwise, so its PKG-INFO must not be served.
_RESOLVER_FIELDS = frozenset({"requires-dist", "requires-python", "provides-extra"})

# A line email.feedparser counts as part of the header block: an envelope ``From `` line, a
# field name (printable ASCII but ':', possibly empty) and a colon, or a continuation.
_HEADER_LINE = re.compile(r"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
_LINE_ENDS = ("\n", "\r", "\r\n")


def _split_message(text: str) -> tuple[list[tuple[str, str]], str]:
    """``(headers in order, body)`` of METADATA text, exactly as ``email.parser.HeaderParser``
    with the compat32 policy reads it.

    Hand-written because HeaderParser costs about 4 us per header line and far more per
    malformed one (it builds a defect object for each): a 30 KB METADATA of ``:`` lines took
    50 ms, a 16 MB one of short headers 7.6 s, at upload time. This is one pass over
    ``readlines()`` (which splits on ``\\r\\n``, ``\\r`` and ``\\n`` as the feed parser does),
    with the feed parser's rules for envelope lines, continuation lines and the first
    non-header line; ``tests/test_metadata_extraction.py`` checks it against HeaderParser.
    """
    lines = io.StringIO(text, newline="").readlines()
    is_header = _HEADER_LINE.match
    end = 0
    count = len(lines)
    while end < count and is_header(lines[end]):
        end += 1
    # An empty line ends the headers and is dropped; any other line is the body's first.
    body_start = end + 1 if end < count and lines[end] in _LINE_ENDS else end
    headers: list[tuple[str, str]] = []
    pushed_back: str | None = None
    name = ""
    parts: list[str] = []
    for index in range(end):
        line = lines[index]
        if line[0] in " \t":
            if name:  # a continuation with no header before it is dropped
                parts.append(line)
            continue
        if name:
            headers.append((name, "".join(parts).rstrip("\r\n")))
            name = ""
        if line.startswith("From "):
            # First line: the mbox envelope, not a header. Last line: the body's first.
            # Anywhere else: dropped.
            if index and index == end - 1:
                pushed_back = line
            continue
        colon = line.find(":")
        if colon == 0:  # no field name: dropped
            continue
        name = line[:colon]
        parts = [line[colon + 1 :].lstrip(" \t")]
    if name:
        headers.append((name, "".join(parts).rstrip("\r\n")))
    body = lines[body_start:]
    if pushed_back is not None:
        body.insert(0, pushed_back)
    return headers, "".join(body)


def _is_own_dist_info(directory: str, project: str, version: Version) -> bool:
    """Whether ``directory`` is ``{project}-{version}.dist-info``, in any spelling of either
    (``Foo_Bar-1.0.dist-info`` belongs to ``foo_bar-1.0-py3-none-any.whl``)."""
    if not directory.endswith(".dist-info"):
        return False
    name, sep, raw_version = directory[: -len(".dist-info")].rpartition("-")
    if not sep or canonicalize_name(name) != project:
        return False
    try:
        return Version(raw_version) == version
    except InvalidVersion:
        return False


def _read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | None:
    """One member's bytes, or None when it is bigger than MAX_METADATA_BYTES. The read is
    bounded too, not only the size the archive claims."""
    if info.file_size > MAX_METADATA_BYTES:
        return None
    with archive.open(info) as handle:
        data = handle.read(MAX_METADATA_BYTES + 1)
    return data if len(data) <= MAX_METADATA_BYTES else None


class ArchiveTooLarge(Exception):
    """Reading the archive would pass one of the ``MAX_*`` bounds."""


# End of central directory record (and its zip64 locator and record): the formats ``zipfile``
# reads them with; the search follows ``zipfile._EndRecData`` so both find the same record.
_EOCD = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")


def _check_zip_directory(handle: BinaryIO) -> None:
    """Raise ArchiveTooLarge when the zip's central directory is past the bounds, before
    ``zipfile`` parses all of it (it ignores the declared count and parses every entry)."""
    handle.seek(0, io.SEEK_END)
    size = handle.tell()
    tail_size = min(size, _EOCD.size + 0xFFFF)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    start = len(tail) - _EOCD.size
    if not (start >= 0 and tail[start:start + 4] == b"PK\x05\x06" and tail[-2:] == b"\0\0"):
        start = tail.rfind(b"PK\x05\x06")
    if start < 0 or start + _EOCD.size > len(tail):
        return  # not a zip: zipfile says so
    _sig, _disk, _cd_disk, _here, entries, directory_size, _offset, _comment = _EOCD.unpack_from(tail, start)
    record_at = size - tail_size + start
    if record_at >= _EOCD64_LOCATOR.size + _EOCD64.size:  # zipfile prefers zip64 values when present
        handle.seek(record_at - _EOCD64_LOCATOR.size - _EOCD64.size)
        zip64 = handle.read(_EOCD64.size + _EOCD64_LOCATOR.size)
        if zip64[_EOCD64.size:_EOCD64.size + 4] == b"PK\x06\x07" and zip64[:4] == b"PK\x06\x06":
            fields = _EOCD64.unpack_from(zip64)
            entries, directory_size = fields[7], fields[8]
    if entries > MAX_ZIP_ENTRIES or directory_size > MAX_ZIP_DIRECTORY_BYTES:
        raise ArchiveTooLarge(f"{entries} zip entries in a {directory_size}-byte central directory "
                              f"(bounds: {MAX_ZIP_ENTRIES} entries, {MAX_ZIP_DIRECTORY_BYTES} bytes)")
    handle.seek(0)


@contextlib.contextmanager
def _open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    """The zip at ``path``, its central directory checked against the bounds first."""
    with open(path, "rb") as handle:
        _check_zip_directory(handle)
        with zipfile.ZipFile(handle) as archive:
            yield archive


class _BoundedStream:
    """A decompressed stream ``tarfile`` may read and seek forward in only up to
    MAX_DECOMPRESSED_BYTES: a read or seek past it raises ArchiveTooLarge *before* anything
    is decompressed (a member claiming 512 MiB is refused at its header, and a pax or GNU long
    name header cannot make tarfile inflate gigabytes into memory)."""

    def __init__(self, raw: gzip.GzipFile) -> None:
        self.raw = raw

    def _check(self, end: int) -> None:
        if end > MAX_DECOMPRESSED_BYTES:
            raise ArchiveTooLarge(f"more than {MAX_DECOMPRESSED_BYTES} bytes decompressed")

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise ArchiveTooLarge("unbounded read")
        self._check(self.raw.tell() + size)
        return self.raw.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.raw.tell()
        elif whence != io.SEEK_SET:
            raise ArchiveTooLarge("seek from the end of a compressed stream")
        self._check(offset)
        return self.raw.seek(offset)

    def tell(self) -> int:
        return self.raw.tell()


def _read_wheel_metadata(path: Path, name: str) -> bytes | None:
    """The METADATA of the wheel's own dist-info directory.

    Not just any ``*.dist-info/METADATA``: a wheel may vendor another distribution's dist-info,
    and serving that one would make pip and uv resolve the wrong dependencies. The name and
    version come from the wheel filename (PEP 427). No own dist-info, or two spellings of it
    (which one would an installer use?): None.
    """
    try:
        project, version, _build, _tags = parse_wheel_filename(name)
    except InvalidWheelFilename:
        return None
    with _open_zip(path) as archive:
        found = [
            info
            for info in archive.infolist()
            if info.filename.endswith("/METADATA")
            and info.filename.count("/") == 1
            and _is_own_dist_info(info.filename.partition("/")[0], project, version)
        ]
        if len(found) != 1:
            return None
        return _read_zip_member(archive, found[0])


def _read_sdist_pkg_info(path: Path, name: str) -> bytes | None:
    """The sdist's top-level ``{dir}/PKG-INFO`` (deeper ones belong to an egg-info)."""
    if name.endswith(".zip"):
        with _open_zip(path) as archive:
            for info in archive.infolist():
                parts = info.filename.split("/")
                if len(parts) == 2 and parts[1] == "PKG-INFO":
                    return _read_zip_member(archive, info)
        return None
    # A tar.gz has no index: members are read in order until PKG-INFO (first or last, by the
    # build backend), within MAX_TAR_MEMBERS and MAX_DECOMPRESSED_BYTES.
    with gzip.open(path, "rb") as raw, tarfile.open(fileobj=_BoundedStream(raw), mode="r:") as archive:
        for count, member in enumerate(archive, 1):
            if count > MAX_TAR_MEMBERS:
                raise ArchiveTooLarge(f"more than {MAX_TAR_MEMBERS} members")
            parts = member.name.split("/")
            if len(parts) == 2 and parts[1] == "PKG-INFO" and member.isfile():
                if member.size > MAX_METADATA_BYTES:
                    return None
                handle = archive.extractfile(member)
                if handle is None:
                    return None
                data = handle.read(MAX_METADATA_BYTES + 1)
                return data if len(data) <= MAX_METADATA_BYTES else None
    return None


def read_metadata_bytes(path: Path, filename: str | None = None) -> bytes | None:
    """The raw METADATA / PKG-INFO of a wheel or sdist, or None if it has none (or is broken).

    ``filename`` is the distribution's name when ``path`` is not (e.g. a staged upload).
    """
    name = filename or path.name
    try:
        if name.endswith(".whl"):
            return _read_wheel_metadata(path, name)
        if name.endswith((".zip", ".tar.gz")):
            return _read_sdist_pkg_info(path, name)
    except ArchiveTooLarge as exc:
        log.warning("%s: metadata not read, the archive is past a bound: %s", name, exc)
        return None
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError, zlib.error):
        return None
    return None


def parse_metadata(data: bytes) -> dict[str, Any]:
    """METADATA text -> upload-form field names; multi-use fields as lists.

    A field in MULTI_VALUED_FIELDS is always a list; any other field is a str, or a list when
    the file repeats it. Values are collected into lists as they come (linear: rebuilding the
    list on each repeat made 20,000 Classifier lines take a second).
    """
    headers, body = _split_message(data.decode("utf-8", "replace"))
    collected: dict[str, list[str]] = {}
    for header, value in headers:
        key = _FIELD_NAMES.get(header.lower())
        if key is None:
            continue
        values = collected.get(key)
        if values is None:
            collected[key] = [value]
        else:
            values.append(value)
    fields: dict[str, Any] = {
        key: values if key in MULTI_VALUED_FIELDS or len(values) > 1 else values[0]
        for key, values in collected.items()
    }
    if body.strip() and "description" not in fields:
        fields["description"] = body
    return fields


def read_core_metadata(path: Path) -> dict[str, Any]:
    """Core metadata of the distribution at ``path``; empty when it cannot be read."""
    data = read_metadata_bytes(path, path.name)
    return parse_metadata(data) if data is not None else {}


def sdist_metadata_is_reliable(data: bytes) -> bool:
    """Whether an sdist's PKG-INFO says what the wheel built from it will say (PEP 643).

    Only from Metadata-Version 2.2 may a field be trusted as static, and only if it is not
    listed as ``Dynamic``. pypi.org serves ``.metadata`` for wheels only; an sdist's is served
    here when an installer would resolve the same thing from it as from the built wheel.
    """
    headers, _body = _split_message(data.decode("utf-8", "replace"))
    version = next((value for name, value in headers if name.lower() == "metadata-version"), "0")
    try:
        major, minor = (int(part) for part in version.strip().split(".")[:2])
    except ValueError:
        return False
    if (major, minor) < (2, 2):
        return False
    dynamic = {
        field.lower()
        for name, value in headers
        if name.lower() == "dynamic"
        for field in re.split(r"[\s,]+", value)
        if field
    }
    return not dynamic & _RESOLVER_FIELDS


def extract_core_metadata(path: Path, filename: str) -> bytes | None:
    """The file to serve as ``<file>.metadata`` (PEP 658), or None when there is none.

    Wheels: the METADATA of their own ``{name}-{version}.dist-info``. Sdists: ``PKG-INFO``
    only when it is reliable (Metadata-Version 2.2 or later and none of Requires-Dist,
    Requires-Python, Provides-Extra dynamic), because pip and uv trust it instead of building.
    """
    data = read_metadata_bytes(path, filename)
    if data is None or filename.endswith(".whl"):
        return data
    return data if sdist_metadata_is_reliable(data) else None


def description_of(fields: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(long description, its content type)`` from upload fields or parsed METADATA.

    The description is kept out of the index (it made the 0.2.3 index grow 12.7 KB per file);
    backends keep it beside the file and the browser UI renders it. An absent content type is
    left empty: PEP 566 says readers then assume reStructuredText.
    """
    description = fields.get("description")
    if not isinstance(description, str) or not description.strip():
        return None
    return description, str(fields.get("description_content_type") or "")
