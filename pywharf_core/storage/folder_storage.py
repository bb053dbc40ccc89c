"""A core repository's own folder: the ``file_system`` adapter opened by type name.

Proxies (their cache) and groups (their API tokens) keep files like a ``file_system``
repository, under ``storage_path`` (default ``ROOT/cache/<name>/storage``), but they are core
kinds of repository and the core never imports ``pywharf_backends``: the adapter is found in
the registry and every storage call is passed on to it. Authentication is the core's default
(the config's shared secrets) unless a subclass decides it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pywharf_core.model.errors import ConfigError
from pywharf_core.storage.api import BlobInfo, Document, Storage
from pywharf_core.storage.backend import BackendContext, DownloadTarget
from pywharf_core.storage.config import ConfigSource, PkgRepoConfig, build_config
from pywharf_core.storage.registry import installed_backends

FOLDER_BACKEND = "file_system"


def open_store(owner: str, config: PkgRepoConfig, context: BackendContext) -> Storage:
    """The registered storage adapter of ``config.type`` over ``config``, for repository ``owner``."""
    spec = installed_backends().get(config.type)
    if spec is None or not issubclass(spec.backend_class, Storage):
        raise ConfigError(f"[{owner}]: its files are kept in a {config.type!r} store, which is not installed "
                          "or is no storage adapter")
    return spec.backend_class(config, context)  # type: ignore[arg-type]


class FolderStorage(Storage):
    """Storage in a folder through the registered ``file_system`` adapter (see the module docstring)."""

    def __init__(self, config: Any, context: BackendContext) -> None:  # type: ignore[override]
        super().__init__(config, context)
        self.inner = self.open_inner(config, context)

    def open_inner(self, config: Any, context: BackendContext) -> Storage:
        """The folder's adapter: ``file_system`` over ``storage_path`` (default ``ROOT/cache/<name>/storage``)."""
        spec = installed_backends().get(FOLDER_BACKEND)
        if spec is None:
            raise ConfigError(f"[{config.name}]: its files are kept in a {FOLDER_BACKEND!r} store, "
                              "which is not installed")
        table: dict[str, Any] = {
            "type": FOLDER_BACKEND,
            "max_file_bytes": config.max_file_bytes,
            "read_secret": config.read_secret,
            "min_secret_chars": config.min_secret_chars,
            # Required by the file_system schema, never used: the adapter only keeps the files;
            # authentication goes by the repository's own config (or a subclass).
            "write_secret": secrets.token_urlsafe(32),
        }
        if config.storage_path:
            table["storage_path"] = config.storage_path
        folder_config = build_config(spec.config_class, config.name, table, ConfigSource(f"<folder of {config.name}>"))
        return open_store(config.name, folder_config, BackendContext(root=context.root))

    def describe(self, key: str) -> str:
        return self.inner.describe(key)

    def staging_dir(self) -> Path:
        return self.inner.staging_dir()

    def put_blob(self, key: str, source: Path, size: int, sha256: str) -> bool:
        return self.inner.put_blob(key, source, size, sha256)

    def blob_sha256(self, key: str) -> str | None:
        return self.inner.blob_sha256(key)

    def has_blob(self, key: str) -> bool:
        return self.inner.has_blob(key)

    def locate(self, key: str) -> DownloadTarget | None:
        return self.inner.locate(key)

    def open_blob(self, key: str) -> BinaryIO | None:
        return self.inner.open_blob(key)

    def list_blobs(self) -> Iterator[BlobInfo]:
        return self.inner.list_blobs()

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def read_document(self, key: str) -> Document | None:
        return self.inner.read_document(key)

    def write_document(self, key: str, data: bytes, expected: str | None) -> str:
        return self.inner.write_document(key, data, expected)

    def document_version(self, key: str) -> str | None:
        return self.inner.document_version(key)

    def cleanup_staging(self, max_age_seconds: float) -> int:
        return self.inner.cleanup_staging(max_age_seconds)


