"""A deletion's and an upload's latency in a file_system store holding 10 vs 10,000 tombstones.

The cost of deleting one file, and of uploading one, must not grow with the number of files
deleted before (retention deletes dev builds nightly). For each tombstone count T this builds
a fresh ``file_system`` store in a temporary folder, deletes T files (never stored: only their
tombstones and log entries are written, through ``PackageStore.delete_files`` itself, so the
same script measures any version of the code), then times ``--rounds`` rounds of: one upload
(``PackageStore.store`` + its log entry) of a small new file, then its deletion. In process,
no HTTP: what is measured is the storage work of the two operations (documents, fsyncs).

Run from the repo root inside the project venv:

    python -m benchmarks.bench_delete [--tombstones 10 10000] [--rounds 40]

To measure another checkout with this script: ``cd OTHER && PYTHONPATH=$PWD python
/path/to/benchmarks/bench_delete.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from pywharf_backends.file_system import FileSystemBackend, FileSystemConfig
from pywharf_core.model.records import FileRecord
from pywharf_core.service.package_store import PackageStore
from pywharf_core.storage.backend import BackendContext, StagedFile
from pywharf_core.storage.config import ConfigSource, build_config

SEED_BATCH = 1000  # tombstones per delete_files call while seeding
DELETED_TIME = "2026-12-01T00:00:00.000000Z"


def record(filename: str, version: str, data: bytes) -> FileRecord:
    return FileRecord(filename, "bench", version, hashlib.sha256(data).hexdigest(), len(data),
                      "2026-12-01T00:00:00.000000Z")


def staged(folder: Path, data: bytes) -> StagedFile:
    path = folder / "staged.part"
    path.write_bytes(data)
    return StagedFile(path, len(data), hashlib.sha256(data).hexdigest(),
                      hashlib.md5(data, usedforsecurity=False).hexdigest(),
                      hashlib.blake2b(data, digest_size=32).hexdigest())


def measure(tombstones: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-delete-") as tmp:
        root = Path(tmp)
        table = {"type": "file_system", "read_secret": "bench-read-secret", "write_secret": "bench-write-secret",
                 "storage_path": str(root / "storage")}
        config = build_config(FileSystemConfig, "bench", table, ConfigSource("bench"))
        store = PackageStore(FileSystemBackend(config, BackendContext(root=root)))
        start = time.perf_counter()
        for first in range(0, tombstones, SEED_BATCH):
            batch = [record(f"old-{n}.0.tar.gz", f"{n}.0", b"%d" % n)
                     for n in range(first, min(first + SEED_BATCH, tombstones))]
            store.delete_files(batch, DELETED_TIME)
        seeded = time.perf_counter() - start
        uploads, deletions = [], []
        for n in range(rounds):
            data = os.urandom(2048)
            rec = record(f"bench-1.{n}.tar.gz", f"1.{n}", data)
            start = time.perf_counter()
            store.store(rec, staged(root, data), {"name": "bench", "version": rec.version}, None)
            store.announce(rec)
            uploads.append(time.perf_counter() - start)
            start = time.perf_counter()
            store.delete_files([rec], DELETED_TIME)
            deletions.append(time.perf_counter() - start)
        lifecycle = root / "storage" / ".pywharf" / "lifecycle.json"
        return {
            "seed_s": seeded,
            "upload_ms_p50": statistics.median(uploads) * 1000,
            "upload_ms_max": max(uploads) * 1000,
            "delete_ms_p50": statistics.median(deletions) * 1000,
            "delete_ms_max": max(deletions) * 1000,
            "lifecycle_kib": lifecycle.stat().st_size / 1024 if lifecycle.exists() else 0.0,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tombstones", type=int, nargs="+", default=[10, 10000])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    print(f"{'tombstones':>10} {'upload p50':>11} {'upload max':>11} {'delete p50':>11} {'delete max':>11} "
          f"{'lifecycle.json':>15} {'seeding':>9}")
    for count in args.tombstones:
        m = measure(count, args.rounds)
        print(f"{count:>10,} {m['upload_ms_p50']:>8.2f} ms {m['upload_ms_max']:>8.2f} ms "
              f"{m['delete_ms_p50']:>8.2f} ms {m['delete_ms_max']:>8.2f} ms {m['lifecycle_kib']:>11.0f} KiB "
              f"{m['seed_s']:>7.1f} s", flush=True)


if __name__ == "__main__":
    main()
