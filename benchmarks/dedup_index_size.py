"""The journal's duplicate index (one segment's RocksDB database) after N random UUID keys,
written as appends write them (a lookup of 2,000 keys, then their batch): its size on disk, and
the memory its files' filters and index blocks take (RocksDB's estimate), per key.

    .venv/bin/python benchmarks/dedup_index_size.py --keys 1000000 5000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from ringfence.runtimes.embedded import dedup_index

BATCH = 2_000
SOURCE = "card-processor"


def measure(keys: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="rf-dedup-"))
    try:
        index = dedup_index.open_index(folder / "j-000000000001.dedup")
        for done in range(BATCH, keys + 1, BATCH):
            batch = [dedup_index.key(SOURCE, str(uuid.uuid4())) for _ in range(BATCH)]
            index.holding(batch)
            index.add(batch, done)
        db = index._handle()
        db.flush()
        time.sleep(5)  # compactions the flush set off
        files = list(index.path.iterdir())
        on_disk = sum(f.stat().st_size for f in files)
        readers = int(db.property_value("rocksdb.estimate-table-readers-mem") or 0)
        dedup_index.release(index)
        return {
            "keys": keys,
            "disk_mb": round(on_disk / 1e6, 1),
            "disk_bytes_per_key": round(on_disk / keys, 1),
            "filters_and_index_mb": round(readers / 1e6, 1),
            "filters_and_index_bytes_per_key": round(readers / keys, 2),
        }
    finally:
        shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[1_000_000])
    args = parser.parse_args()
    print(json.dumps({"runs": [measure(n) for n in args.keys]}, indent=1))


if __name__ == "__main__":
    main()
