"""The interface the service layer talks to for one repository's storage.

New backends do not implement it: they implement the much smaller storage adapter of
``pywharf_core.storage.api`` and the core's ``PackageStore`` turns that into this interface,
with every policy in one place (all of pywharf's own backends are adapters). A backend may
still implement it directly; then it answers four questions: *who may do what*
(:meth:`Backend.authenticate`), *keep this file* (:meth:`Backend.store`), *where are this
file's bytes* (:meth:`Backend.locate`) and
*what does the remote index say* (:meth:`Backend.fetch_remote_index`, plus
:meth:`Backend.list_files` / :meth:`Backend.publish_remote_index` for ``update_index``).

Methods are synchronous and may block (disk, network): the core calls them from worker
threads, never on the event loop.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pywharf_core.model.lifecycle import IndexChange
from pywharf_core.model.records import FileRecord
from pywharf_core.storage.config import PkgRepoConfig


class Permission(enum.IntEnum):
    """What a secret allows; WRITE implies READ."""

    NONE = 0
    READ = 1
    WRITE = 2


@dataclass(frozen=True, slots=True)
class StagedFile:
    """An uploaded file fully written (and fsynced) to ``path`` inside the staging folder."""

    path: Path
    size: int
    sha256: str
    md5: str
    blake2_256: str


class StoreOutcome(enum.Enum):
    CREATED = "created"
    IDENTICAL = "identical"  # the same bytes were already stored under that name: nothing changed


@dataclass(frozen=True, slots=True)
class LocalFile:
    """The file's bytes are in a local file the server streams (with Range support)."""

    path: Path


@dataclass(frozen=True, slots=True)
class Redirect:
    """The client should fetch the bytes from ``url`` (e.g. a short-lived signed URL)."""

    url: str


@dataclass(frozen=True, slots=True)
class StreamedFile:
    """The server relays the bytes itself, chunk by chunk (e.g. from an object store).

    ``chunks`` is a blocking iterator (the server pulls it from worker threads, so memory stays
    flat whatever the size); its ``close()``, when it has one, releases the source and is called
    when the bytes are not wanted after all (HEAD, 304). ``size`` is the byte count when known.
    """

    chunks: Iterator[bytes]
    size: int | None = None


DownloadTarget = LocalFile | Redirect | StreamedFile


@dataclass(frozen=True, slots=True)
class RemoteIndex:
    """The remote index document and an opaque token identifying its version."""

    token: str
    data: bytes | None  # None: the backend has no remote index yet (an empty repository)


@dataclass(frozen=True)
class LentStore:
    """Another repository's store, lent to a core repository (a proxy's ``storage = "<repo>"``):
    the lender's settings already relocated to a folder of their own
    (``PkgRepoConfig.relocated``) and the lender's admin secret (its store's credentials)."""

    config: PkgRepoConfig
    admin_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class BackendContext:
    """What the server gives a backend besides its config."""

    root: Path  # the server's ROOT folder
    admin_secret: str | None = None  # for index sync; None where the backend needs none
    lent_store: LentStore | None = None  # where a core repository keeps its files, if not its own folder


class Backend(ABC):
    """One configured package repository's storage."""

    def __init__(self, config: PkgRepoConfig, context: BackendContext) -> None:
        self.config = config
        self.context = context

    @abstractmethod
    def authenticate(self, secret: str) -> Permission:
        """The permission ``secret`` grants. Must compare secrets in constant time."""

    @abstractmethod
    def staging_dir(self) -> Path:
        """A folder where the core streams an upload before :meth:`store`.

        Put it on the same file system as the final location when the backend renames files,
        so that storing is atomic.
        """

    @abstractmethod
    def store(
        self,
        record: FileRecord,
        staged: StagedFile,
        metadata: Mapping[str, Any],
        core_metadata: bytes | None,
    ) -> StoreOutcome:
        """Keep the staged file under ``record.filename``, create-only.

        ``metadata`` is every core-metadata field of the upload (including ``description``), to
        be kept beside the file so the index can be rebuilt from storage alone.
        ``core_metadata`` is the distribution's METADATA file (PEP 658), to be served at
        ``<file>.metadata``; None when the file has none. Returns IDENTICAL when the same bytes
        are already stored; raises FileConflict when different bytes are. The staged file may
        be consumed (renamed); the core deletes it if it is still there.
        """

    @abstractmethod
    def locate(self, filename: str) -> DownloadTarget | None:
        """Where to get ``filename``'s bytes, or None when the backend does not hold it."""

    @abstractmethod
    def locate_metadata(self, filename: str) -> DownloadTarget | None:
        """Where to get ``filename``'s PEP 658 metadata file, or None when there is none."""

    @abstractmethod
    def set_yanked(self, filename: str, yanked: bool, reason: str) -> None:
        """Persist the PEP 592 yank state of a stored file (``update_index`` must see it)."""

    @abstractmethod
    def fetch_remote_index(self, known_token: str | None) -> RemoteIndex | None:
        """The remote index, or None when its token still equals ``known_token`` (unchanged)."""

    @abstractmethod
    def list_files(self) -> Iterator[FileRecord]:
        """Every file the backend really holds, with its metadata (for ``update_index``)."""

    @abstractmethod
    def publish_remote_index(self, data: bytes) -> None:
        """Replace the remote index atomically with ``data``."""

    # -- optional: the remote index log (a PackageStore has one; direct backends need not) ------

    def stored_record(self, filename: str) -> FileRecord | None:
        """The record storage holds for ``filename`` (to answer an identical re-upload with the
        original record, upload time included); None when unknown or not supported."""
        return None

    def announce(self, record: IndexChange) -> None:
        """Make an acknowledged record visible to every server sharing the storage (index log).

        Raises when it cannot: the upload is then answered 503 (the file stays stored, listed by no
        index until a retry or ``update_index``). Default: nothing
        (the backend updates its remote index itself, or relies on ``update_index``)."""
        return None

    def read_log(self, after: int) -> list[tuple[int, IndexChange | None]]:
        """Index log entries after position ``after``, one batch (see ``pywharf_core.index.remote_log``):
        the caller asks again after the last one while a batch comes back full."""
        return []

    def describe_remote_index(self) -> str:
        """Where the remote index lives, for error messages (a path, a key, a URL)."""
        return f"the remote index of {self.config.name!r}"

    def count_files(self) -> int:
        """How many distribution files storage holds (asked only when a new remote index
        shrinks implausibly, to tell damage from deletions)."""
        return sum(1 for _ in self.list_files())

    def read_description(self, filename: str) -> tuple[str, str] | None:
        """``(long description, its content type)`` kept beside ``filename``, or None.

        Optional (only the browser UI asks; the description is too large for the index). When
        None, the UI reads the PEP 658 metadata file or the distribution itself if they are local.
        """
        return None
