"""Core metadata (PEP 566/643) read from a distribution file itself.

Used when storage holds a file without the upload's metadata sidecar (e.g. copied in by
hand, or a crash between storing the file and its sidecar): ``update_index`` still gets the
name, version, requires-python, classifiers... from the wheel's ``*.dist-info/METADATA`` or the
sdist's ``PKG-INFO``. Only the metadata member is read, never the whole archive.
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Mapping
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

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
MAX_METADATA_BYTES = 16 * 1024 * 1024


def read_metadata_bytes(path: Path, filename: str | None = None) -> bytes | None:
    """The raw METADATA / PKG-INFO of a wheel or sdist, or None if it has none (or is broken).

    ``filename`` is the distribution's name when ``path`` is not (e.g. a staged upload).
    """
    name = filename or path.name
    try:
        if name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    parts = info.filename.split("/")
                    is_wheel_meta = len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA"
                    is_sdist_meta = len(parts) == 2 and parts[1] == "PKG-INFO" and name.endswith(".zip")
                    if (is_wheel_meta or is_sdist_meta) and info.file_size <= MAX_METADATA_BYTES:
                        return archive.read(info)
        elif name.endswith(".tar.gz"):
            with tarfile.open(path, "r:gz") as archive:
                for member in archive:
                    parts = member.name.split("/")
                    if len(parts) == 2 and parts[1] == "PKG-INFO" and member.isfile():
                        if member.size > MAX_METADATA_BYTES:
                            return None
                        handle = archive.extractfile(member)
                        return handle.read() if handle else None
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError):
        return None
    return None


def parse_metadata(data: bytes) -> dict[str, Any]:
    """METADATA text -> upload-form field names; multi-use fields as lists."""
    message = HeaderParser().parsestr(data.decode("utf-8", "replace"))
    fields: dict[str, Any] = {}
    for header, value in message.items():
        key = _FIELD_NAMES.get(header.lower())
        if key is None:
            continue
        value = str(value)
        if key in fields:
            previous = fields[key]
            fields[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        elif key in MULTI_VALUED_FIELDS:
            fields[key] = [value]
        else:
            fields[key] = value
    body = message.get_payload()
    if isinstance(body, str) and body.strip() and "description" not in fields:
        fields["description"] = body
    return fields


def read_core_metadata(path: Path) -> dict[str, Any]:
    """Core metadata of the distribution at ``path``; empty when it cannot be read."""
    data = read_metadata_bytes(path, path.name)
    return parse_metadata(data) if data is not None else {}


def extract_core_metadata(path: Path, filename: str) -> bytes | None:
    """The file to serve as ``<file>.metadata`` (PEP 658), or None when there is none.

    Wheels: their ``*.dist-info/METADATA``. Sdists: ``PKG-INFO`` only for Metadata-Version 2.2
    or later, the first version where an sdist's metadata is reliable (PEP 643).
    """
    data = read_metadata_bytes(path, filename)
    if data is None or filename.endswith(".whl"):
        return data
    version = HeaderParser().parsestr(data.decode("utf-8", "replace")).get("Metadata-Version", "0")
    try:
        major, minor = (int(part) for part in str(version).strip().split(".")[:2])
    except ValueError:
        return None
    return data if (major, minor) >= (2, 2) else None


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
