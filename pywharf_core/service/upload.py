"""The upload use case (the legacy API's contract, in one place), after the HTTP layer has
streamed the form to the staging folder.

1. Validate: nothing the client claims about the bytes is trusted (digests are recomputed while
   the file is received) and the filename must agree with ``name``/``version``/``filetype``.
2. Refuse an upload to an archived or quarantined project (PEP 792: 403 naming the status and
   its reason) and a second spelling of a stored distribution (409 naming the stored file).
   The store checks both again against storage (another server may have just changed them).
3. Extract the PEP 658 metadata file from the distribution itself.
4. Store (create-only: IDENTICAL or CREATED, or a 409 for other bytes under the name).
5. Announce it in the remote index log, then journal it locally; only then is it acknowledged.
   If the announcement fails the answer is a 503 and the complete file stays stored, listed by
   no index until the client's retry (IDENTICAL, which announces it) or ``update_index``:
   deleting it could lose a 200 that another server gave for the same bytes meanwhile.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from packaging.version import InvalidVersion, Version

from pywharf_core.model.errors import BackendUnavailable, FileConflict, InvalidName, UploadRejected
from pywharf_core.model.lifecycle import upload_refusal
from pywharf_core.model.metadata import extract_core_metadata
from pywharf_core.model.names import DistFilename, normalize_project, parse_dist_filename
from pywharf_core.model.records import (
    MULTI_VALUED_FIELDS,
    UPLOAD_METADATA_FIELDS,
    FileRecord,
    freeze_meta,
    utc_timestamp,
)
from pywharf_core.service.grants import Grant
from pywharf_core.service.repository import PkgRepo
from pywharf_core.storage.backend import StagedFile, StoreOutcome

log = logging.getLogger(__name__)

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
    if not version.isascii() or not version.isprintable():
        # packaging strips Unicode whitespace: "1.0\u2028" would equal the filename's 1.0 and be stored
        raise UploadRejected(400, f"Invalid version {version!r}: PEP 440 versions are ASCII.")
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
        if key not in UPLOAD_METADATA_FIELDS:  # the upload contract's fields only
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
    metadata.update(sha256=staged.sha256, size=staged.size, upload_time=record.upload_time,
                    md5_digest=staged.md5, blake2_256_digest=staged.blake2_256)
    return record, metadata


@functools.lru_cache(maxsize=1 << 16)
def _identity(filename: str) -> str:
    try:
        return parse_dist_filename(filename).identity
    except InvalidName:
        return ""


def check_identity(repo: PkgRepo, dist: DistFilename) -> None:
    """409 when the repository already serves the same distribution under another spelling."""
    for record in repo.snapshot.projects.get(dist.project, ()):
        if record.filename != dist.filename and _identity(record.filename) == dist.identity:
            raise FileConflict(
                f"File already exists: {record.filename!r} is the same distribution as {dist.filename!r} "
                "(same project, version and tags); a release cannot be replaced."
            )


def accept_upload(repo: PkgRepo, upload: ReceivedUpload, grant: Grant | None = None) -> tuple[StoreOutcome, FileRecord]:
    """Steps 1-5 of the module docstring; blocking (run it in a worker thread).

    ``grant``: what the uploader's credentials allow (an API token may be limited to some
    projects: anything else is a 403 naming them); None for the write secret."""
    record, metadata = validate_upload(upload)
    if grant is not None and not grant.may_upload(upload.dist.project):
        raise UploadRejected(403, grant.upload_refusal(upload.dist.project))
    status = repo.snapshot.statuses.get(upload.dist.project)
    if status is not None and status.refuses_uploads:
        raise UploadRejected(403, upload_refusal(status))
    check_identity(repo, upload.dist)
    core_metadata = extract_core_metadata(upload.staged.path, upload.dist.filename)
    if core_metadata is not None:
        digest = hashlib.sha256(core_metadata).hexdigest()
        record = dataclasses.replace(record, metadata_sha256=digest)
        metadata["metadata_sha256"] = digest
    backend = repo.backend
    try:
        outcome = backend.store(record, upload.staged, metadata, core_metadata)
    except OSError as exc:  # full disk, read-only mount...: the store's fault, not the client's
        raise BackendUnavailable(f"storage error: {exc.strerror or exc}") from exc
    if outcome is StoreOutcome.IDENTICAL:
        record = repo.snapshot.files.get(record.filename) or backend.stored_record(record.filename) or record
    if outcome is StoreOutcome.CREATED or record.filename not in repo.snapshot.files:
        try:
            backend.announce(record)
        except Exception as exc:
            # The file stays stored (never deleted: see PackageStore.store) but no index lists it:
            # the client's retry (IDENTICAL) announces it, or update_index lists it.
            log.error("repo %r: %s is stored but could not be added to the index log: %s",
                      repo.name, record.filename, exc)
            raise BackendUnavailable(
                f"the file was stored but could not be added to the index ({exc}); retry the upload") from exc
        try:
            repo.record_upload(record)
        except OSError as exc:
            raise BackendUnavailable(f"local journal error: {exc.strerror or exc}") from exc
    return outcome, record
