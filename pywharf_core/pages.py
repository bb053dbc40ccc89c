"""PEP 503 HTML pages. Pure functions of a snapshot's records, cached by the caller."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from urllib.parse import quote

from pywharf_core.index import FileRecord

_HEAD = (
    "<!DOCTYPE html>\n<html>\n<head>\n"
    '<meta name="pypi:repository-version" content="1.0">\n'
    "<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n"
)
_TAIL = "</body>\n</html>\n"


def render_root(project_names: Iterable[str]) -> bytes:
    """``/simple/``: one link per (normalised) project name."""
    parts = [_HEAD.format(title="Simple index")]
    parts.extend(f'<a href="{quote(n)}/">{escape(n)}</a><br>\n' for n in project_names)
    parts.append(_TAIL)
    return "".join(parts).encode("utf-8")


def render_project(project: str, records: Iterable[FileRecord]) -> bytes:
    """``/simple/<project>/``: every file with its sha256 and Requires-Python."""
    parts = [_HEAD.format(title=f"Links for {escape(project)}")]
    for record in records:
        attrs = ""
        if record.requires_python:
            attrs = f' data-requires-python="{escape(record.requires_python, quote=True)}"'
        href = f"{quote(record.filename)}#sha256={record.sha256}"
        parts.append(f'<a href="{href}"{attrs}>{escape(record.filename)}</a><br>\n')
    parts.append(_TAIL)
    return "".join(parts).encode("utf-8")
