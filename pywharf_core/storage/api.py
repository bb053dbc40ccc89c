"""The storage seam: what a backend adapts, and nothing else.

A backend is a *storage adapter*: it knows how to keep bytes in one kind of store (a folder, a
bucket, a cloud) and nothing about packages. Every policy (which names are acceptable, when an
upload conflicts, what is kept beside a file, how the index is built, merged and synced) lives
once in the core (``pywharf_core.service.package_store``), on top of these primitives:

- **blobs**, immutable: distribution files and their PEP 658 metadata files. Written
  create-only (:meth:`Storage.put_blob`), so of two racing writers exactly one wins and nobody
  ever sees a partial blob; then located for download, opened for reading, listed, deleted.
- **documents**, small and mutable: a file's sidecar, the index base document, the entries of
  the append-only index log, identity claims. Read with a version token and written with
  compare-and-swap (:meth:`Storage.write_document`), which is all the core needs for
  concurrency across servers sharing one store.

Keys are plain relative names the core builds and validates (``demo-1.0.tar.gz``,
``.pywharf/demo-1.0.tar.gz.toml``, ``.pywharf/log/000000000042.json``); an adapter may rely on
them never holding ``..``, a leading ``/`` or a backslash. Methods block (disk, network): the
core calls them from worker threads. Each adapter bounds its own waits (timeouts) and reports a
store that cannot be reached as :class:`~pywharf_core.model.errors.BackendUnavailable`.

Compared with Warehouse's ``IFileStorage`` (get, get_metadata, get_checksum, store) this adds
the versioned documents that let servers without a database agree on an index, and with
pypiserver's ``Backend`` it keeps the derived operations (conflicts, listings by project) in
the core rather than in every backend.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, ClassVar

from pywharf_core.model.errors import PywharfError
from pywharf_core.storage.backend import BackendContext, DownloadTarget, Permission
from pywharf_core.storage.config import PkgRepoConfig


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob as a listing shows it."""

    key: str
    size: int
    modified: datetime | None = None


@dataclass(frozen=True, slots=True)
class Document:
    """A small document and the version token to pass back to replace it."""

    data: bytes
    version: str


class VersionConflict(PywharfError):
    """A compare-and-swap lost: the document is not at the version the writer expected."""


class Storage(ABC):
    """One configured package repository's store (see the module docstring)."""

    # Whether writing a small document is cheap enough to do once per stored file during
    # ``update_index`` (e.g. identity claims for files stored before claims existed). False where
    # each write is costly or visible (on GitHub every document write is a commit).
    cheap_documents: ClassVar[bool] = True

    def __init__(self, config: PkgRepoConfig, context: BackendContext) -> None:
        self.config = config
        self.context = context

    # -- blobs ----------------------------------------------------------------------------------

    @abstractmethod
    def staging_dir(self) -> Path:
        """A local folder where the core streams uploads before :meth:`put_blob`.

        Put it on the same file system as the final location when the store renames files.
        """

    @abstractmethod
    def put_blob(self, key: str, source: Path, size: int, sha256: str) -> bool:
        """Store the file at ``source`` under ``key`` unless ``key`` exists.

        True when this call created it; False when ``key`` already held a blob (nothing was
        written). Atomic: readers see the whole blob or none. ``source`` may be consumed
        (renamed) and is fsynced already. ``sha256`` is the content's digest, to keep beside
        the blob where the store can (object metadata), so :meth:`blob_sha256` is cheap.
        """

    @abstractmethod
    def blob_sha256(self, key: str) -> str | None:
        """The sha256 of the stored blob (from the store's metadata, or by reading it); None if absent."""

    def has_blob(self, key: str) -> bool:
        """Whether ``key`` holds a blob; override where the store answers without reading it."""
        return self.blob_sha256(key) is not None

    @abstractmethod
    def locate(self, key: str) -> DownloadTarget | None:
        """Where a client gets the blob's bytes (local file, signed URL, or a stream); None if absent."""

    @abstractmethod
    def open_blob(self, key: str) -> BinaryIO | None:
        """A readable binary stream of the blob (caller closes it), or None if absent."""

    @abstractmethod
    def list_blobs(self) -> Iterator[BlobInfo]:
        """Every blob at the top level (distribution files; not the ``.pywharf/`` companions)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a blob or document; no error when absent. Used to undo a failed upload."""

    # -- documents ------------------------------------------------------------------------------

    @abstractmethod
    def read_document(self, key: str) -> Document | None:
        """The document and its version token, or None when there is none."""

    @abstractmethod
    def write_document(self, key: str, data: bytes, expected: str | None) -> str:
        """Write ``data`` if the document is at version ``expected`` (None: only if absent).

        Returns the new version token; raises :class:`VersionConflict` when the condition
        does not hold (someone else wrote first). Atomic: readers see the old or the new.
        """

    def document_version(self, key: str) -> str | None:
        """The document's current version token without its bytes (None when absent).

        Index sync asks this every interval: override it where the store answers it cheaply
        (a stat, a HEAD); the default reads the document.
        """
        document = self.read_document(key)
        return document.version if document is not None else None

    # -- optional capabilities -----------------------------------------------------------------

    def describe(self, key: str) -> str:
        """Where ``key`` is, for messages an operator acts on (a path, s3://bucket/key...)."""
        return f"{key} in the {self.config.type} storage of {self.config.name!r}"

    def authenticate(self, secret: str) -> Permission | None:
        """The permission ``secret`` grants when the store itself decides (e.g. GitHub tokens).

        None (the default): the core checks the config's ``read_secret`` / ``write_secret``.
        """
        return None

    def cleanup_staging(self, max_age_seconds: float) -> int:
        """Remove abandoned uploads from :meth:`staging_dir`; the core calls it at start."""
        removed = 0
        folder = self.staging_dir()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if entry.name.startswith(".upload-") and entry.name.endswith(".part"):
                try:
                    if time.time() - entry.stat().st_mtime > max_age_seconds:
                        os.unlink(entry.path)
                        removed += 1
                except OSError:
                    continue
        return removed
