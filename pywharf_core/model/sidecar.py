"""The sidecar: the document kept beside each stored file, so the index can be rebuilt from
storage alone, every field equal to what the upload built.

It holds every field the upload carried (core metadata, ``description`` included, which is too
big for the index) plus the stored file's facts: ``sha256``, ``size``, ``upload_time``, the
upload's ``md5_digest`` / ``blake2_256_digest``, ``metadata_sha256`` (``""``: checked, the file
has no PEP 658 metadata to serve) and the PEP 592 yank state. It is TOML, the shape pywharf 0.2.3
wrote into GitHub release bodies, so those bodies and file_system/s3 sidecars read alike.

One definition for every backend: before issue 12 three copies disagreed and an index rebuilt on
file_system or github lost the digests.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import tomli_w

from pywharf_core.model.names import DistFilename
from pywharf_core.model.records import STORED_METADATA_FIELDS, FileRecord, freeze_meta, is_sha256_hex

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Keys about the stored file, not core metadata: never copied into a record's ``meta``.
RECORD_KEYS = frozenset(
    {"sha256", "size", "upload_time", "metadata_sha256", "yanked", "yanked_reason", "asset", "distrib", "filename"}
)


def sidecar_fields(record: FileRecord, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The sidecar of ``record``: the upload's ``metadata`` fields plus the file's facts."""
    fields = {k: v for k, v in metadata.items() if v is not None}
    for key, value in record.meta.items():  # the digests (and anything else the record kept)
        fields.setdefault(key, list(value) if isinstance(value, tuple) else value)
    fields.update(
        version=record.version,
        sha256=record.sha256,
        size=record.size,
        upload_time=record.upload_time,
        metadata_sha256=record.metadata_sha256,
        yanked=record.yanked,
        yanked_reason=record.yanked_reason,
    )
    if record.requires_python:
        fields["requires_python"] = record.requires_python
    return fields


def dump_sidecar(fields: Mapping[str, Any]) -> bytes:
    return tomli_w.dumps(dict(fields)).encode("utf-8")


def parse_sidecar(data: bytes) -> dict[str, Any] | None:
    """The sidecar's fields; None when it is not TOML (damaged: rebuilt from the file itself)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for candidate in (text, text.replace("\r\n", "\n")):  # a web editor may have added CRs
        try:
            return tomllib.loads(candidate)
        except tomllib.TOMLDecodeError:
            continue
    return None


def usable_sha256(fields: Mapping[str, Any], size: int) -> str | None:
    """The sidecar's sha256 when it describes a file of ``size`` bytes (else the file is re-hashed)."""
    sha256 = fields.get("sha256")
    if fields.get("size") == size and is_sha256_hex(sha256):
        return str(sha256)
    return None


def record_from_sidecar(
    dist: DistFilename, fields: Mapping[str, Any], *, sha256: str, size: int, metadata_sha256: str,
    upload_time: str = "",
) -> FileRecord:
    """The index record of a stored file, from its sidecar fields and the verified facts."""
    return FileRecord(
        filename=dist.filename,
        distrib=dist.project,
        version=str(fields.get("version") or dist.version),
        sha256=sha256,
        size=size,
        upload_time=str(fields.get("upload_time") or upload_time),
        requires_python=str(fields.get("requires_python") or ""),
        # Only metadata fields: a sidecar written before uploads were filtered may hold any form
        # field a client sent (``bogus``, a second ``sha256``...); they stay out of the index.
        meta=freeze_meta({k: v for k, v in fields.items()
                          if k in STORED_METADATA_FIELDS and k not in RECORD_KEYS and not isinstance(v, dict)}),
        metadata_sha256=metadata_sha256,
        yanked=bool(fields.get("yanked", False)),
        yanked_reason=str(fields.get("yanked_reason") or ""),
    )
