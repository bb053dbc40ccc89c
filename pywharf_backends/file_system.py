"""The ``file_system`` backend: package files in a local (or network) folder.

A storage adapter (``pywharf_core.storage.api``); the layout and every policy are the core's
(``pywharf_core.service.package_store``). Default folder: ``ROOT/cache/<repo>/storage``.

- Blobs are created with a hard link from the staged upload (``link`` fails if the name
  exists), so two concurrent uploads, even from two servers sharing the folder, cannot both
  win and nobody ever sees a partial file. Uploads are staged in the same folder
  (``.upload-*.part``) so the link is never across file systems.
- Documents are written to a temp file and then linked (create-only) or renamed over the old
  one; a document's version token is its inode, mtime and size. Compare-and-swap runs under
  one ``filelock`` lock (``.pywharf/documents.lock``), so servers sharing the folder agree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from pywharf_core.model.errors import BackendUnavailable, InvalidName
from pywharf_core.storage.api import BlobInfo, Document, Storage, VersionConflict
from pywharf_core.storage.atomic_write import FILE_MODE, fsync_dir, umask_file_mode, write_synced_temp
from pywharf_core.storage.backend import DownloadTarget, LocalFile
from pywharf_core.storage.config import SharedSecretConfig
from pywharf_core.storage.process_lock import ProcessFileLock
from pywharf_core.storage.registry import BackendSpec

LOCK_TIMEOUT_SECONDS = 30


@dataclass(frozen=True, kw_only=True)
class FileSystemConfig(SharedSecretConfig):
    # A folder the server serves files from: confined under ROOT for configs sent over HTTP.
    path_keys: ClassVar[tuple[str, ...]] = ("storage_path",)

    max_file_bytes: int = 5368709119
    storage_path: str | None = None  # where files are stored (relative: to ROOT); None: ROOT/cache/<repo>/storage

    def relocated(self, folder: str) -> FileSystemConfig:
        """A folder inside this repository's folder (see ``PkgRepoConfig.relocated``)."""
        base = self.storage_path or f"cache/{self.name}/storage"
        return dataclasses.replace(self, storage_path=str(Path(base) / folder))


class FileSystemBackend(Storage):
    config: FileSystemConfig

    def __init__(self, config: FileSystemConfig, context: Any) -> None:  # type: ignore[override]
        super().__init__(config, context)
        if config.storage_path:
            # Relative to ROOT, like the default folder (not to whatever directory the server
            # happened to start in).
            self.root = (Path(context.root) / config.storage_path).resolve()
        else:
            self.root = (Path(context.root) / "cache" / config.name / "storage").resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".pywharf").mkdir(exist_ok=True)
        # One lock for every compare-and-swap in this store (each holds it for a stat + rename).
        self._cas_lock = ProcessFileLock(str(self.root / ".pywharf" / "documents.lock"), timeout=LOCK_TIMEOUT_SECONDS)

    def _path(self, key: str) -> Path:
        """The path of a key the core built; refuses anything that would leave the folder."""
        if not key or key.startswith("/") or "\\" in key or "\0" in key or ".." in key.split("/"):
            raise InvalidName(f"invalid storage key {key!r}")
        return self.root / key

    def describe(self, key: str) -> str:
        return str(self.root / key)

    # -- blobs -----------------------------------------------------------------------------------

    def staging_dir(self) -> Path:
        return self.root

    def put_blob(self, key: str, source: Path, size: int, sha256: str) -> bool:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _link_exclusive(source, target)
            _adopt_umask_mode(target)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _unavailable(exc, key) from exc
        fsync_dir(target.parent)
        return True

    def blob_sha256(self, key: str) -> str | None:
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return None
        digest = hashlib.sha256()
        with handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def has_blob(self, key: str) -> bool:
        return self._path(key).is_file()

    def locate(self, key: str) -> DownloadTarget | None:
        path = self._path(key)
        return LocalFile(path) if path.is_file() else None

    def open_blob(self, key: str) -> BinaryIO | None:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            return None

    def list_blobs(self) -> Iterator[BlobInfo]:
        for entry in os.scandir(self.root):
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat()
            yield BlobInfo(entry.name, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    # -- documents -------------------------------------------------------------------------------

    @staticmethod
    def _version(st: os.stat_result) -> str:
        return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"

    def document_version(self, key: str) -> str | None:
        try:
            return self._version(os.stat(self._path(key)))
        except FileNotFoundError:
            return None

    def read_document(self, key: str) -> Document | None:
        try:
            with open(self._path(key), "rb") as handle:
                st = os.fstat(handle.fileno())
                return Document(handle.read(), self._version(st))
        except FileNotFoundError:
            return None

    def write_document(self, key: str, data: bytes, expected: str | None) -> str:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = write_synced_temp(target.parent, data)
        try:
            if expected is None:
                try:
                    _link_exclusive(temp, target)
                except FileExistsError:
                    raise VersionConflict(f"{key} exists") from None
            else:
                with self._cas_lock:
                    if self.document_version(key) != expected:
                        raise VersionConflict(f"{key} changed")
                    os.replace(temp, target)
            fsync_dir(target.parent)
            return self._version(os.stat(target))
        except OSError as exc:
            raise _unavailable(exc, key) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)


def _unavailable(exc: OSError, key: str) -> BackendUnavailable:
    """A storage error (full disk, read-only mount...) as a 503 naming its cause."""
    return BackendUnavailable(f"file system error on {key!r}: {exc.strerror or exc}")


def _link_exclusive(source: Path, target: Path) -> None:
    """Create ``target`` from ``source`` only if ``target`` does not exist (atomic)."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            # No hard links here (some network/FUSE file systems): O_EXCL placeholder + rename.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            os.close(fd)
            os.replace(source, target)
            return
        raise


def _adopt_umask_mode(target: Path) -> None:
    """Give a stored blob the mode any new file of this process gets (0o666, umask applied).

    Its inode is the staged upload's, created 0o600 by the upload stream; before issue 13 it
    was made 0o644 whatever the umask, so ``umask 077`` still left packages world-readable.
    A mount that cannot change modes (some FUSE/SMB ones) keeps its own policy."""
    try:
        os.chmod(target, umask_file_mode())
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP):
            raise


BACKEND = BackendSpec(type="file_system", config_class=FileSystemConfig, backend_class=FileSystemBackend)
