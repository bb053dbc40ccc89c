"""Time `pywharf update_index file_system` over a storage folder of 10,000 files.

Run from the repo root: python -m benchmarks.bench_update_index [--projects 2000] [--files 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.corpus import build_corpus
from pywharf_core.index.formats import parse_index


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=2000)
    parser.add_argument("--files", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp) / "storage"
        build_corpus(storage, args.projects, args.files, file_bytes=2048)
        (storage / "index.toml").unlink()
        pywharf = str(Path(sys.executable).parent / "pywharf")
        start = time.perf_counter()
        subprocess.run([pywharf, "update_index", "file_system", "bench", "--storage_path", str(storage)],
                       check=True, capture_output=True)
        elapsed = time.perf_counter() - start
        records = parse_index((storage / "index.toml").read_bytes())
        size = (storage / "index.toml").stat().st_size
        print(f"update_index of {len(records)} files: {elapsed:.2f} s (index {size / 1024:.0f} KiB, "
              f"{size / len(records):.0f} bytes/file)")


if __name__ == "__main__":
    main()
