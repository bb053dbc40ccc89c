"""A release's long description: where it is kept, and its rendering to safe HTML.

The description is too large for the index (``index.SIDECAR_ONLY_FIELDS``): backends keep it
beside the file (``file_system``: the upload's ``.pywharf/<file>.toml`` sidecar). It is looked
up in this order, first hit wins:

1. :meth:`Backend.read_description` (the upload's own fields; backends may answer None);
2. the PEP 658 ``<file>.metadata`` file, when the backend holds it locally or streams it;
3. the distribution's METADATA / PKG-INFO, when the file is local.

Rendering uses ``readme_renderer`` (what PyPI uses): Markdown (GFM or CommonMark variant), reST
(also the default when no content type was given, as on PyPI) or plain text, and its output is
always sanitized by ``nh3`` (scripts, event handlers, ``javascript:`` URLs removed).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from email.message import Message
from html import escape

import readme_renderer.markdown
import readme_renderer.rst
import readme_renderer.txt

from pywharf_core.model.metadata import description_of, parse_metadata, read_core_metadata
from pywharf_core.model.records import FileRecord
from pywharf_core.storage.backend import Backend, LocalFile, StreamedFile

log = logging.getLogger(__name__)

# Longer descriptions are shown as plain text: rendering megabytes of reST would stall a worker.
MAX_RENDERED_CHARS = 512 * 1024
_MAX_METADATA_FILE_BYTES = 16 * 1024 * 1024


def find_description(backend: Backend, records: Sequence[FileRecord]) -> tuple[str, str] | None:
    """``(description, content type)`` of a release (any of its files), or None. Blocking I/O."""
    ordered = sorted(records, key=lambda r: not r.filename.endswith(".whl"))
    for record in ordered:
        found = backend.read_description(record.filename)
        if found is not None and found[0].strip():
            return found
    for record in ordered:
        found = description_of(_local_metadata(backend, record))
        if found is not None:
            return found
    return None


def _read_capped(target: StreamedFile) -> bytes | None:
    """A streamed metadata file's bytes, or None past the cap (the source is closed either way)."""
    data = bytearray()
    try:
        for chunk in target.chunks:
            data += chunk
            if len(data) > _MAX_METADATA_FILE_BYTES:
                return None
    finally:
        close = getattr(target.chunks, "close", None)
        if callable(close):
            close()
    return bytes(data)


def _local_metadata(backend: Backend, record: FileRecord) -> dict[str, object]:
    """Fields of the release's PEP 658 file (local or streamed), else of the local distribution."""
    try:
        target = backend.locate_metadata(record.filename)
        if isinstance(target, LocalFile) and target.path.stat().st_size <= _MAX_METADATA_FILE_BYTES:
            return parse_metadata(target.path.read_bytes())
        if isinstance(target, StreamedFile):
            data = _read_capped(target)
            if data is not None:
                return parse_metadata(data)
        target = backend.locate(record.filename)
        if isinstance(target, LocalFile):
            return read_core_metadata(target.path)
    except OSError as exc:
        log.warning("cannot read the metadata of %s: %s", record.filename, exc)
    return {}


def _parse_content_type(content_type: str) -> tuple[str, dict[str, str]]:
    message = Message()
    message["content-type"] = content_type or "text/x-rst"
    params = {str(k).lower(): str(v) for k, v in message.get_params(failobj=[])[1:]}
    return message.get_content_type(), params


def render_description(text: str, content_type: str) -> str:
    """Sanitized HTML for a long description (never raises: falls back to escaped text)."""
    if len(text) > MAX_RENDERED_CHARS:
        return _plain(text[:MAX_RENDERED_CHARS] + "\n…")
    kind, params = _parse_content_type(content_type)
    rendered: str | None = None
    try:
        if kind == "text/markdown":
            variant = params.get("variant", "GFM")
            rendered = readme_renderer.markdown.render(text, variant=variant if variant == "CommonMark" else "GFM")
        elif kind == "text/plain":
            rendered = readme_renderer.txt.render(text)
        else:  # text/x-rst, and PyPI's default when no content type was given
            rendered = readme_renderer.rst.render(text)
    except Exception as exc:  # a renderer bug must not take the page down
        log.warning("rendering a %s description failed: %s", kind, exc)
    return demote_headings(rendered) if rendered is not None else _plain(text)


_HEADING_TAG = re.compile(r"<(/?)h([1-6])\b", re.IGNORECASE)


def demote_headings(html: str, by: int = 2) -> str:
    """README ``<h1>`` becomes ``<h3>`` (and so on, h6 at most): the page keeps one ``<h1>``, the
    project's name, and the README's outline nests under its "Description" ``<h2>``, as screen
    readers expect. Run on sanitized HTML, so only real heading tags match."""
    return _HEADING_TAG.sub(lambda m: f"<{m.group(1)}h{min(6, int(m.group(2)) + by)}", html)


def _plain(text: str) -> str:
    return f'<pre class="plain-description">{escape(text)}</pre>'
