"""Per-application objects built on first use (session codec, failure limiter, revocations).

Why lazily: building some of them has side effects a server that never sees a browser should
not have (``session.key`` is created under ROOT on first use), and every one needs the settings
of the app it belongs to, so it lives on ``app.state``, not in a module global (tests build
many apps in one process). One lock makes "build once" hold when two first requests race.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import HTTPConnection

T = TypeVar("T")

_build_lock = threading.Lock()


def app_singleton(conn: HTTPConnection, attribute: str, build: Callable[[Any], T]) -> T:
    """``conn.app.state.<attribute>``, built by ``build(settings)`` the first time it is asked for."""
    app_state = conn.app.state
    value = getattr(app_state, attribute, None)
    if value is None:
        with _build_lock:
            value = getattr(app_state, attribute, None)
            if value is None:
                value = build(app_state.pywharf.settings)
                setattr(app_state, attribute, value)
    return value  # type: ignore[no-any-return]
