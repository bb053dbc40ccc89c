"""The ``file_system`` backend: package files in a local folder.

Layout of the storage folder (default ``ROOT/cache/<repo>/storage``)::

    index.toml                      the remote index (written by ``update_index``)
    <filename>                      each package file, immutable once stored
    .pywharf/<filename>.toml        the upload's metadata (incl. description), so the index
                                    can be rebuilt from storage alone
    .upload-*.part                  uploads being received (same folder: atomic link/rename)

Storing is create-only: the staged file is hard-linked to its final name, which fails if the
name exists, so two concurrent uploads (even from two servers sharing the folder) cannot both
win and nobody ever sees a partial file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from pywharf_core.model.errors import FileConflict, InvalidName
from pywharf_core.model.metadata import description_of, extract_core_metadata, read_core_metadata
from pywharf_core.model.names import parse_dist_filename
from pywharf_core.model.records import FileRecord, freeze_meta, is_sha256_hex
from pywharf_core.storage.atomic_write import fsync_dir, write_atomically
from pywharf_core.storage.backend import (
    Backend,
    DownloadTarget,
    LocalFile,
    Permission,
    RemoteIndex,
    StagedFile,
    StoreOutcome,
)
from pywharf_core.storage.config import PkgRepoConfig
from pywharf_core.storage.registry import BackendSpec
from pywharf_core.storage.shared_secrets import shared_secret_permission

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

INDEX_FILENAME = "index.toml"
SIDECAR_DIR = ".pywharf"


@dataclass(frozen=True, kw_only=True)
class FileSystemConfig(PkgRepoConfig):
    read_secret: str = field(repr=False)  # clients with it may read (install)
    write_secret: str = field(repr=False)  # clients with it may read and upload
    max_file_bytes: int = 5368709119
    storage_path: str | None = None  # where files are stored; None: ROOT/cache/<repo>/storage

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if not self.read_secret:
            problems.append(("read_secret", "must not be empty"))
        if not self.write_secret:
            problems.append(("write_secret", "must not be empty"))
        return problems


class FileSystemBackend(Backend):
    config: FileSystemConfig

    def __init__(self, config: FileSystemConfig, context: Any) -> None:  # type: ignore[override]
        super().__init__(config, context)
        if config.storage_path:
            self.storage = Path(config.storage_path).resolve()
        else:
            self.storage = (Path(context.root) / "cache" / config.name / "storage").resolve()
        self.storage.mkdir(parents=True, exist_ok=True)
        (self.storage / SIDECAR_DIR).mkdir(exist_ok=True)

    # -- auth --------------------------------------------------------------------------------

    def authenticate(self, secret: str) -> Permission:
        return shared_secret_permission(secret, self.config.read_secret, self.config.write_secret)

    # -- files -------------------------------------------------------------------------------

    def _path(self, filename: str) -> Path:
        """The storage path of a validated filename (defence in depth against traversal)."""
        parse_dist_filename(filename)
        path = self.storage / filename
        if path.parent != self.storage:
            raise InvalidName(f"invalid distribution filename {filename!r}")
        return path

    def _sidecar(self, filename: str) -> Path:
        return self.storage / SIDECAR_DIR / f"{filename}.toml"

    def _metadata_path(self, filename: str) -> Path:
        return self.storage / SIDECAR_DIR / f"{filename}.metadata"

    def staging_dir(self) -> Path:
        return self.storage

    def store(
        self,
        record: FileRecord,
        staged: StagedFile,
        metadata: Mapping[str, Any],
        core_metadata: bytes | None,
    ) -> StoreOutcome:
        final = self._path(record.filename)
        # Sidecars are written to temp files first and only renamed into place once the file
        # itself is stored, so a losing racer never overwrites the winner's sidecars.
        pending = [(self._sidecar(record.filename), tomli_w.dumps(dict(metadata)).encode())]
        if core_metadata is not None:
            pending.append((self._metadata_path(record.filename), core_metadata))
        temps: list[tuple[str, Path]] = []
        try:
            for target, data in pending:
                temps.append((_write_temp(target.parent, data), target))
            try:
                _link_exclusive(staged.path, final)
            except FileExistsError:
                if self._stored_sha256(record.filename) == staged.sha256:
                    return StoreOutcome.IDENTICAL
                raise FileConflict(
                    f"File already exists: {record.filename!r} is stored with different content."
                ) from None
            for temp, target in temps:
                os.replace(temp, target)
            fsync_dir(self.storage / SIDECAR_DIR)
            fsync_dir(self.storage)
            return StoreOutcome.CREATED
        finally:
            for temp, _ in temps:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)

    def _stored_sha256(self, filename: str) -> str:
        meta = self._read_sidecar(filename)
        if meta and isinstance(meta.get("sha256"), str):
            return meta["sha256"]
        return _sha256_of(self._path(filename))

    def _read_sidecar(self, filename: str) -> dict[str, Any] | None:
        try:
            return tomllib.loads(self._sidecar(filename).read_text("utf-8"))
        except (FileNotFoundError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            return None

    def locate(self, filename: str) -> DownloadTarget | None:
        try:
            path = self._path(filename)
        except InvalidName:
            return None
        return LocalFile(path) if path.is_file() else None

    def locate_metadata(self, filename: str) -> DownloadTarget | None:
        try:
            self._path(filename)
        except InvalidName:
            return None
        path = self._metadata_path(filename)
        return LocalFile(path) if path.is_file() else None

    def set_yanked(self, filename: str, yanked: bool, reason: str) -> None:
        path = self._path(filename)
        if not path.is_file():
            raise FileNotFoundError(filename)
        meta = self._read_sidecar(filename) or read_core_metadata(path)
        meta.update(yanked=yanked, yanked_reason=reason if yanked else "")
        write_atomically(self._sidecar(filename), tomli_w.dumps(meta).encode())

    def read_description(self, filename: str) -> tuple[str, str] | None:
        """The upload's description, from the sidecar (the browser UI renders it)."""
        try:
            self._path(filename)
        except InvalidName:
            return None
        return description_of(self._read_sidecar(filename) or {})

    # -- index -------------------------------------------------------------------------------

    def fetch_remote_index(self, known_token: str | None) -> RemoteIndex | None:
        path = self.storage / INDEX_FILENAME
        try:
            st = path.stat()
        except FileNotFoundError:
            absent = "absent"
            return None if known_token == absent else RemoteIndex(absent, None)
        token = f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"
        if token == known_token:
            return None
        return RemoteIndex(token, path.read_bytes())

    def list_files(self) -> Iterator[FileRecord]:
        for entry in os.scandir(self.storage):
            if entry.name.startswith(".") or not entry.is_file() or entry.name == INDEX_FILENAME:
                continue
            try:
                dist = parse_dist_filename(entry.name)
            except InvalidName:
                continue
            path = Path(entry.path)
            meta = self._read_sidecar(entry.name) or read_core_metadata(path)
            size = entry.stat().st_size
            sha256 = meta.get("sha256") if meta.get("size") == size and is_sha256_hex(meta.get("sha256")) else None
            yield FileRecord(
                filename=entry.name,
                distrib=dist.project,
                version=str(meta.get("version") or dist.version),
                sha256=sha256 or _sha256_of(path),
                size=size,
                upload_time=str(meta.get("upload_time", "")),
                requires_python=str(meta.get("requires_python", "")),
                meta=freeze_meta({k: v for k, v in meta.items() if k not in _RECORD_KEYS}),
                metadata_sha256=self._backfill_metadata(entry.name, path),
                yanked=bool(meta.get("yanked", False)),
                yanked_reason=str(meta.get("yanked_reason", "")),
            )

    def _backfill_metadata(self, filename: str, path: Path) -> str:
        """sha256 of the stored PEP 658 file, extracting it from the distribution if missing."""
        target = self._metadata_path(filename)
        try:
            return hashlib.sha256(target.read_bytes()).hexdigest()
        except FileNotFoundError:
            pass
        data = extract_core_metadata(path, filename)
        if data is None:
            return ""
        write_atomically(target, data)
        return hashlib.sha256(data).hexdigest()

    def publish_remote_index(self, data: bytes) -> None:
        write_atomically(self.storage / INDEX_FILENAME, data)


_RECORD_KEYS = frozenset({"sha256", "size", "upload_time", "metadata_sha256", "yanked", "yanked_reason"})


def _write_temp(folder: Path, data: bytes) -> str:
    fd, name = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return name


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _link_exclusive(source: Path, target: Path) -> None:
    """Create ``target`` from ``source`` only if ``target`` does not exist (atomic)."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            # No hard links here (some network/FUSE file systems): O_EXCL placeholder + rename.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            os.replace(source, target)
            return
        raise
    os.chmod(target, 0o644)


BACKEND = BackendSpec(type="file_system", config_class=FileSystemConfig, backend_class=FileSystemBackend)
