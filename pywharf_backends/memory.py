"""The ``memory`` backend: a store in the server's memory, the reference storage adapter.

It exists to show what a backend is (the whole of it is this file: ~150 lines for a store with
no persistence of its own) and to run the backend contract suite on a fourth, trivially correct
store. Everything in it is lost when the process ends, so it is for tests and demos only.

Repositories with the same ``store_id`` share one store, which is how tests stand up several
servers (or an ``update_index`` run) over one storage inside one process.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from pywharf_core.storage.api import BlobInfo, Document, Storage, VersionConflict
from pywharf_core.storage.backend import BackendContext, DownloadTarget, StreamedFile
from pywharf_core.storage.config import SharedSecretConfig
from pywharf_core.storage.registry import BackendSpec

CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class MemoryConfig(SharedSecretConfig):
    max_file_bytes: int = 64 * 1024 * 1024  # it all lives in RAM: keep files small
    store_id: str = ""  # repositories with the same id share one store ("": the repository's name)



@dataclass
class _Store:
    blobs: dict[str, tuple[bytes, str, datetime]] = field(default_factory=dict)  # key -> (data, sha256, time)
    documents: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # key -> (data, version)
    lock: threading.Lock = field(default_factory=threading.Lock)
    versions: Iterator[int] = field(default_factory=itertools.count)


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


def reset_stores() -> None:
    """Forget every memory store (tests)."""
    with _STORES_LOCK:
        _STORES.clear()


class MemoryBackend(Storage):
    config: MemoryConfig

    def __init__(self, config: MemoryConfig, context: BackendContext) -> None:  # type: ignore[override]
        super().__init__(config, context)
        with _STORES_LOCK:
            self.store = _STORES.setdefault(config.store_id or config.name, _Store())
        self._staging = Path(context.root) / "cache" / config.name / "staging"

    # -- blobs -----------------------------------------------------------------------------------

    def staging_dir(self) -> Path:
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging

    def put_blob(self, key: str, source: Path, size: int, sha256: str) -> bool:
        data = source.read_bytes()  # the store *is* memory; uploads are bounded by max_file_bytes
        with self.store.lock:
            if key in self.store.blobs:
                return False
            self.store.blobs[key] = (data, sha256, datetime.now(timezone.utc))
            return True

    def blob_sha256(self, key: str) -> str | None:
        blob = self.store.blobs.get(key)
        return blob[1] if blob is not None else None

    def locate(self, key: str) -> DownloadTarget | None:
        blob = self.store.blobs.get(key)
        if blob is None:
            return None
        data = blob[0]
        return StreamedFile(iter([data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]), len(data))

    def open_blob(self, key: str) -> BinaryIO | None:
        blob = self.store.blobs.get(key)
        return io.BytesIO(blob[0]) if blob is not None else None

    def list_blobs(self) -> Iterator[BlobInfo]:
        with self.store.lock:
            items = list(self.store.blobs.items())
        for key, (data, _, created) in items:
            if "/" not in key and not key.startswith("."):
                yield BlobInfo(key, len(data), created)

    def delete(self, key: str) -> None:
        with self.store.lock:
            self.store.blobs.pop(key, None)
            self.store.documents.pop(key, None)

    # -- documents -------------------------------------------------------------------------------

    def read_document(self, key: str) -> Document | None:
        document = self.store.documents.get(key)
        return Document(*document) if document is not None else None

    def write_document(self, key: str, data: bytes, expected: str | None) -> str:
        with self.store.lock:
            current = self.store.documents.get(key)
            if (current[1] if current is not None else None) != expected:
                raise VersionConflict(f"{key}: expected version {expected!r}")
            version = f"{next(self.store.versions)}-{hashlib.sha256(data).hexdigest()[:12]}"
            self.store.documents[key] = (bytes(data), version)
            return version


BACKEND = BackendSpec(type="memory", config_class=MemoryConfig, backend_class=MemoryBackend, process_local=True)
