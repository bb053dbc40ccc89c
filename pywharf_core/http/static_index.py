"""A static simple index (PEP 503 HTML + PEP 691 JSON files) for hosts that serve files as they
are (GitHub Pages, a bucket, file://), rendered by the same functions as the server's pages."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterable
from pathlib import Path

from pywharf_core.http.pages import (
    render_links_html,
    render_project_html,
    render_project_json,
    render_root_html,
    render_root_json,
)
from pywharf_core.model.records import FileRecord
from pywharf_core.storage.services import StaticLink


def write_static_index(records: Iterable[FileRecord], out: Path, link: StaticLink, title: str) -> list[Path]:
    """``out/simple/<project>/index.html`` and ``index.json`` per project, the root pages, and
    ``out/index.html``; each file's link is ``link``'s (see :data:`StaticLink`)."""
    if out.exists():
        shutil.rmtree(out)
    simple = out / "simple"
    simple.mkdir(parents=True)
    projects: dict[str, list[FileRecord]] = {}
    for record in records:
        projects.setdefault(record.distrib, []).append(record)
    written: list[Path] = []
    names = []
    for project, entries in sorted(projects.items()):
        folder = simple / project
        folder.mkdir()
        shown, hrefs = [], {}
        for record in sorted(entries, key=lambda r: r.filename):
            found = link(record, folder)
            if found is None:
                continue
            hrefs[record.filename], with_metadata = found
            shown.append(record if with_metadata else dataclasses.replace(record, metadata_sha256=""))
        if not shown:
            shutil.rmtree(folder)
            continue
        names.append(project)
        (folder / "index.html").write_bytes(render_project_html(project, shown, hrefs))
        (folder / "index.json").write_bytes(render_project_json(project, shown, hrefs))
        written += [folder / "index.html", folder / "index.json"]
    (simple / "index.html").write_bytes(render_root_html(names))
    (simple / "index.json").write_bytes(render_root_json(names))
    (out / "index.html").write_bytes(render_links_html(title, [("simple/", "simple/")]))
    return [*written, simple / "index.html", simple / "index.json", out / "index.html"]
