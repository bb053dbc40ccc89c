"""Opening a repository's storage, and rebuilding its remote index (``update_index``).

A registered backend is either a storage adapter, which the core wraps in its
:class:`PackageStore` (every policy in one place), or a class implementing the whole
:class:`Backend` interface itself (the github backend, until it is ported).
"""

from __future__ import annotations

from pywharf_core.index.formats import dump_index
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
