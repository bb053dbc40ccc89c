"""The upload use case: check a received upload against its file and build its record.

Nothing the client claims about the bytes is trusted: digests are recomputed while the file is
received, and the filename must agree with the form's ``name``/``version``/``filetype``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from packaging.version import InvalidVersion, Version

from pywharf_core.model.errors import InvalidName, UploadRejected
from pywharf_core.model.names import DistFilename, normalize_project
from pywharf_core.model.records import MULTI_VALUED_FIELDS, TRANSPORT_FIELDS, FileRecord, freeze_meta, utc_timestamp
from pywharf_core.storage.backend import StagedFile

_DIGEST_FIELDS = {"md5_digest": "md5", "sha256_digest": "sha256", "blake2_256_digest": "blake2_256"}


@dataclass
class ReceivedUpload:
    fields: dict[str, list[str]]
    dist: DistFilename
    staged: StagedFile



def _single(fields: Mapping[str, list[str]], key: str) -> str:
    values = fields.get(key) or [""]
    return values[-1]


def validate_upload(upload: ReceivedUpload) -> tuple[FileRecord, dict[str, Any]]:
    """Check the form against the file; return the index record and the full metadata.

    Nothing the client claims about the bytes is trusted: digests are recomputed and compared,
    the filename must agree with ``name``/``version``/``filetype``.
    """
    fields, dist, staged = upload.fields, upload.dist, upload.staged
    action = _single(fields, ":action")
    if action != "file_upload":
        raise UploadRejected(400, f"Unsupported ':action' {action!r}; only 'file_upload' is supported.")
    name, version = _single(fields, "name"), _single(fields, "version")
    if not name or not version:
        raise UploadRejected(400, "The 'name' and 'version' fields are required.")
    try:
        if normalize_project(name) != dist.project:
            raise UploadRejected(
                400, f"The filename {dist.filename!r} does not match the project name {name!r}."
            )
    except InvalidName as exc:
        raise UploadRejected(400, f"Invalid project name {name!r}.") from exc
    try:
        if Version(version) != dist.version:
            raise UploadRejected(
                400, f"The filename {dist.filename!r} does not match the version {version!r}."
            )
    except InvalidVersion as exc:
        raise UploadRejected(400, f"Invalid version {version!r}.") from exc
    filetype = _single(fields, "filetype")
    if filetype and filetype != dist.filetype:
        raise UploadRejected(
            400, f"The filetype {filetype!r} does not match the filename {dist.filename!r}."
        )
    computed = {"md5": staged.md5, "sha256": staged.sha256, "blake2_256": staged.blake2_256}
    for form_key, algorithm in _DIGEST_FIELDS.items():
        claimed = _single(fields, form_key).strip().lower()
        if claimed and claimed != computed[algorithm]:
            raise UploadRejected(
                400, f"The {form_key} supplied does not match the digest of the uploaded file."
            )

    metadata: dict[str, Any] = {}
    for key, values in fields.items():
        if key in TRANSPORT_FIELDS or key in _DIGEST_FIELDS:
            continue
        kept = [v for v in values if v != ""]
        if not kept:
            continue
        metadata[key] = kept if key in MULTI_VALUED_FIELDS or len(kept) > 1 else kept[0]
    metadata["filetype"] = dist.filetype
    record = FileRecord(
        filename=dist.filename,
        distrib=dist.project,
        version=version,
        sha256=staged.sha256,
        size=staged.size,
        upload_time=utc_timestamp(),
        requires_python=_single(fields, "requires_python"),
        meta=freeze_meta({**metadata, "md5_digest": staged.md5, "blake2_256_digest": staged.blake2_256}),
    )
    metadata.update(sha256=staged.sha256, size=staged.size, upload_time=record.upload_time)
    return record, metadata
