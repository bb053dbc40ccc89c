"""Opening a repository's storage, rebuilding its remote index (``update_index``), reading it.

A registered backend is either a storage adapter, which the core wraps in its
:class:`PackageStore` (every policy in one place; all of pywharf's own backends), or a class
implementing the whole :class:`Backend` interface itself.
"""

from __future__ import annotations

from pywharf_core.index.formats import dump_index, index_log_position, parse_index_changes
from pywharf_core.index.snapshot import IndexSnapshot
from pywharf_core.model.records import FileRecord
from pywharf_core.service.package_store import PackageStore
from pywharf_core.storage.api import Storage
from pywharf_core.storage.backend import Backend, BackendContext
from pywharf_core.storage.config import PkgRepoConfig
from pywharf_core.storage.registry import BackendSpec


def open_backend(spec: BackendSpec, config: PkgRepoConfig, context: BackendContext) -> Backend:
    instance = spec.backend_class(config, context)
    return PackageStore(instance) if isinstance(instance, Storage) else instance


def rebuild_remote_index(backend: Backend) -> int:
    """Rebuild the remote index from what storage holds; returns the number of files."""
    if isinstance(backend, PackageStore):
        return backend.rebuild_index()
    records = list(backend.list_files())
    backend.publish_remote_index(dump_index(records))
    return len(records)


def read_remote_index(storage: Storage) -> list[FileRecord]:
    """What a server syncing ``storage`` would serve: the base document, then the index log after it
    (deleted files and the files of a quarantined project are not served)."""
    store = PackageStore(storage)
    remote = store.fetch_remote_index(None)
    data = remote.data if remote is not None else None
    snapshot = IndexSnapshot.build(parse_index_changes(data) if data else [])
    snapshot = snapshot.with_records(
        change for _, change in store.read_log(index_log_position(data)) if change is not None)
    hidden = {name for name, status in snapshot.statuses.items() if not status.offers_files}
    return sorted((r for r in snapshot.files.values() if r.distrib not in hidden), key=lambda r: r.filename)
