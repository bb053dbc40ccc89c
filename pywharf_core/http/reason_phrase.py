"""Custom HTTP reason phrases, so that twine shows *why* an upload was refused.

twine prints the status line's reason phrase (``HTTPError: 409 Conflict from URL`` followed by
``response.reason``), not the body, unless run with ``--verbose``. PyPI puts its message in the
reason phrase for that reason. ASGI has no field for a reason phrase, so the app records it in
a context variable for the current request task, and uvicorn's status-line tables are wrapped
to consult it. If uvicorn's internals change, the wrapper is simply not installed and clients
get the standard phrase (the body still carries the message).
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar

log = logging.getLogger(__name__)

_current: ContextVar[tuple[int, bytes] | None] = ContextVar("pywharf_reason_phrase", default=None)
_UNSAFE = re.compile(rb"[^\x20-\x7e]")
MAX_LENGTH = 200


def set_reason_phrase(status: int, reason: str) -> None:
    """Use ``reason`` as the reason phrase of this request's ``status`` response."""
    phrase = _UNSAFE.sub(b"?", reason.encode("ascii", "replace"))[:MAX_LENGTH].strip()
    if phrase:
        _current.set((status, phrase))


class _PhraseTable(dict):
    """A status-code table (uvicorn's) returning the custom phrase for the current request."""

    def __init__(self, base: dict, as_status_line: bool) -> None:
        super().__init__(base)
        self._as_status_line = as_status_line

    def __getitem__(self, status: int) -> bytes:
        custom = _current.get()
        if custom is None or custom[0] != status:
            return super().__getitem__(status)
        if self._as_status_line:
            return b"HTTP/1.1 %d %s\r\n" % (status, custom[1])
        return custom[1]


def install_for_uvicorn() -> bool:
    """Wrap uvicorn's status tables; returns False (and changes nothing) if they are not found."""
    try:
        from uvicorn.protocols.http import h11_impl, httptools_impl
    except ImportError:  # pragma: no cover - httptools or h11 missing
        return False
    installed = False
    for module, attribute, as_line in ((httptools_impl, "STATUS_LINE", True), (h11_impl, "STATUS_PHRASES", False)):
        table = getattr(module, attribute, None)
        if isinstance(table, dict) and not isinstance(table, _PhraseTable) and isinstance(table.get(200), bytes):
            setattr(module, attribute, _PhraseTable(table, as_line))
            installed = True
    if not installed:
        log.debug("uvicorn status tables not found: standard reason phrases only")
    return installed
