"""Benchmark the relay's start-up storage check (``PRAGMA quick_check``) on a large database.

    python bench/integrity.py [--messages 100000] [--dir PATH]

Fills a fresh store with ``--messages`` submissions (2 KiB envelope, 3 recipients, a signed
receipt's worth of text each, as bench/store.py submits), closes it, then times
``relay.datacheck.check_before_start`` (what ``comity-relay serve`` runs before it listens)
three times: the first with the file just written (in the page cache), then after asking the
kernel to drop the file's cached pages (``posix_fadvise DONTNEED``), which approximates a cold
start. Prints the database size and the times; writes JSON to bench/results/integrity.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relay.datacheck import check_before_start  # noqa: E402
from relay.store import Store  # noqa: E402

NETWORK = "bench-net"
RECIPIENTS = ["bob", "carol", "dave"]
#: submissions per gather: large enough for full group-commit batches
WAVE = 1000


async def fill(database: Path, messages: int) -> None:
    store = await Store.open(database)
    envelope = '{"ciphertext":"%s"}' % ("x" * 2048)
    receipt = '{"receipt":"%s"}' % ("r" * 400)
    try:
        await store.create_network(NETWORK, "genesis-hash", '{"seq":0}', 1000)
        for start in range(0, messages, WAVE):
            await asyncio.gather(*(store.submit_message(
                NETWORK, f"m-{i}", "alice", RECIPIENTS, envelope, f"hash-{i}", len(envelope), [],
                receipt, 1000 + i) for i in range(start, min(messages, start + WAVE))))
    finally:
        await store.close()


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        data = Path(folder)
        started = time.perf_counter()
        asyncio.run(fill(data / "relay.db", args.messages))
        filled = time.perf_counter() - started
        size = (data / "relay.db").stat().st_size
        warm = check_before_start(data)
        drop_cache(data / "relay.db")
        cold = check_before_start(data)
        warm_again = check_before_start(data)
    result = {"messages": args.messages, "database_bytes": size, "fill_seconds": round(filled, 1),
              "quick_check_warm_s": round(min(warm, warm_again), 3),
              "quick_check_cold_s": round(cold, 3),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}"}
    print(f"{args.messages} messages, relay.db {size / 2**20:.0f} MiB: quick_check "
          f"{result['quick_check_warm_s']} s cached, {result['quick_check_cold_s']} s after "
          "dropping the page cache")
    out = ROOT / "bench" / "results" / "integrity.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
