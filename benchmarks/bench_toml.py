"""Parse/dump time of a 10,000-file index: `toml` (the card's package) vs stdlib `tomllib` +
`tomli-w` (what pywharf uses), and the JSON form of the same document (the local cache).

Run from the repo root: python -m benchmarks.bench_toml
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import toml
import tomli_w

from benchmarks.corpus import build_corpus
from pywharf_core.index.formats import dump_index, dump_index_json, parse_index, parse_index_json

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        records = build_corpus(Path(tmp) / "storage", projects=2000, files_per_project=5, file_bytes=16)
        data = dump_index(records)
        text = data.decode()
        document = tomllib.loads(text)
        as_json = dump_index_json(records)
        rows = [
            ("parse: toml.loads", best_of(lambda: toml.loads(text))),
            ("parse: tomllib.loads", best_of(lambda: tomllib.loads(text))),
            ("parse: pywharf parse_index (tomllib + records)", best_of(lambda: parse_index(data))),
            ("parse: pywharf parse_index_json (local cache)", best_of(lambda: parse_index_json(as_json))),
            ("dump: toml.dumps", best_of(lambda: toml.dumps(document))),
            ("dump: tomli_w.dumps", best_of(lambda: tomli_w.dumps(document))),
        ]
        print(f"index of {len(records)} files, {len(data) / 1024:.0f} KiB")
        for label, seconds in rows:
            print(f"  {label:<50} {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
