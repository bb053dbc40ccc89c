"""What an index sync costs a server, in CPU time, as the repository grows.

Builds a file_system store whose base document (index.toml) lists ``--files`` files (synthetic
records, as update_index writes them) and a server-side repository over it (the one
``pywharf server`` builds), then measures with ``time.process_time`` (CPU, not wall clock):

- the first sync (parses the whole base: paid once at start and after each compaction);
- a sync when nothing changed (a stat of index.toml and one probe of the index log);
- a sync after one upload by another server (one new index log entry): issue 12's target is
  < 50 ms with 50,000 files;
- a restart that re-reads ``--log-entries`` log entries written since the last compaction.

Run from the repo root: python -m benchmarks.bench_sync [--files 50000] [--log-entries 10000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import tomli_w

from pywharf_core.index.formats import dump_index
from pywharf_core.model.records import FileRecord, freeze_meta
from pywharf_core.service.server_state import ServerSettings, build_repos, load_setup

RESULTS = Path(__file__).resolve().parent / "results"


def record(i: int, project: str = "pkg") -> FileRecord:
    name = f"{project}{i // 5}"
    filename = f"{name}-1.{i % 5}-py3-none-any.whl"
    return FileRecord(filename=filename, distrib=name, version=f"1.{i % 5}", sha256=f"{i:064x}", size=1000 + i,
                      upload_time="2026-11-30T12:00:00.000000Z", requires_python=">=3.9",
                      meta=freeze_meta({"summary": f"package {i}", "classifiers": ["Programming Language :: Python"],
                                        "filetype": "bdist_wheel", "md5_digest": f"{i:032x}"}),
                      metadata_sha256=f"{i + 1:064x}")


def cpu(action) -> float:
    started = time.process_time()
    action()
    return (time.process_time() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--log-entries", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pywharf-bench-sync-") as tmp:
        root, storage = Path(tmp) / "root", Path(tmp) / "storage"
        storage.mkdir()
        (storage / "index.toml").write_bytes(dump_index((record(i) for i in range(args.files)), log_position=0))
        config = tomli_w.dumps({"bench": {"type": "file_system",
                                          "read_secret": "bench-read-secret", "write_secret": "bench-write-secret",
                                          "storage_path": str(storage), "sync_index_interval": 3600}})
        repo = build_repos(load_setup(config, None, is_text=True), ServerSettings(root=root))["bench"]
        results: dict[str, float] = {"files": args.files, "log_entries": args.log_entries}
        results["first_sync_ms"] = cpu(repo.sync_once)
        assert len(repo.snapshot) == args.files, len(repo.snapshot)
        results["unchanged_sync_ms"] = statistics.median(cpu(repo.sync_once) for _ in range(args.repeat))
        samples = []
        for n in range(args.repeat):
            repo.backend.announce(record(args.files + n, "new"))  # another server's upload
            samples.append(cpu(repo.sync_once))
        assert len(repo.snapshot) == args.files + args.repeat
        results["sync_after_one_upload_ms"] = statistics.median(samples)
        for n in range(args.log_entries):
            repo.backend.announce(record(n, "logged"))
        box: list = []
        results["restart_load_ms"] = cpu(lambda: box.append(
            build_repos(load_setup(config, None, is_text=True), ServerSettings(root=root))["bench"]))
        restarted = box[0]
        results["restart_sync_with_log_ms"] = cpu(restarted.sync_once)
        assert len(restarted.snapshot) == args.files + args.repeat + args.log_entries, len(restarted.snapshot)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_sync-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    for key, value in results.items():
        print(f"{key:28} {value:10.1f}")
    print(f"(written to {out})")


if __name__ == "__main__":
    main()
