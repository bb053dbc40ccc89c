"""Build a synthetic pywharf repository: N projects x K files, written straight to storage
(sidecar + remote index), so benchmarks start from a realistic index without N uploads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import tomli_w

from pywharf_core.index.formats import dump_index
from pywharf_core.model.records import FileRecord, freeze_meta, utc_timestamp


def build_corpus(storage: Path, projects: int, files_per_project: int, file_bytes: int = 2048) -> list[FileRecord]:
    storage.mkdir(parents=True, exist_ok=True)
    (storage / ".pywharf").mkdir(exist_ok=True)
    records = []
    payload = os.urandom(file_bytes)
    for p in range(projects):
        name = f"proj{p:05d}"
        for v in range(files_per_project):
            filename = f"{name}-1.{v}-py3-none-any.whl"
            data = payload + filename.encode()
            (storage / filename).write_bytes(data)
            meta = {
                "name": name, "version": f"1.{v}", "filetype": "bdist_wheel", "pyversion": "py3",
                "metadata_version": "2.1", "summary": f"Synthetic project {name}",
                "classifiers": ["Programming Language :: Python :: 3", "License :: OSI Approved :: MIT License"],
                "requires_dist": ["requests>=2", "packaging"], "requires_python": ">=3.8",
            }
            record = FileRecord(
                filename=filename, distrib=name, version=f"1.{v}",
                sha256=hashlib.sha256(data).hexdigest(), size=len(data), upload_time=utc_timestamp(),
                requires_python=">=3.8", meta=freeze_meta(meta),
            )
            sidecar = {**meta, "sha256": record.sha256, "size": record.size, "upload_time": record.upload_time}
            (storage / ".pywharf" / f"{filename}.toml").write_bytes(tomli_w.dumps(sidecar).encode())
            records.append(record)
    (storage / "index.toml").write_bytes(dump_index(records))
    return records
