"""The kinds of repository a config may name: the installed backends plus the core's own kinds.

``proxy`` (``pywharf_core.storage.proxy_config``) and ``group``
(``pywharf_core.storage.group_config``) are not backend plugins but repositories the core builds
on a registered store; ``installed_backends`` stays the entry points' view (commands, the
Docker image's check).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pywharf_core.storage.group_config import GROUP_SPEC
from pywharf_core.storage.proxy_config import PROXY_SPEC
from pywharf_core.storage.registry import BackendSpec, installed_backends

log = logging.getLogger(__name__)

CORE_KINDS = {PROXY_SPEC.type: PROXY_SPEC, GROUP_SPEC.type: GROUP_SPEC}


def repository_types() -> Mapping[str, BackendSpec]:
    """Backends and core kinds by type name. A plugin that registers a core kind's name is
    ignored, with an error: the name is the core's."""
    backends = dict(installed_backends())
    for name, spec in CORE_KINDS.items():
        if name in backends and backends[name] is not spec:
            log.error("backend %r ignored: %r is a core repository type", backends[name].backend_class, name)
        backends[name] = spec
    return backends
