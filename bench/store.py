"""Benchmark durable message submission through the relay store (group commit).

    python bench/store.py [--seconds 3] [--dir PATH] [--envelope-bytes 2048]

For 1 and 50 concurrent tasks, calls ``Store.submit_message`` (3 recipients,
one envelope of ``--envelope-bytes``) in a loop for ``--seconds`` and counts
the calls that returned, i.e. that were committed with synchronous=FULL. The
database lives in a fresh folder under ``--dir`` (default: the system temp
folder): put it on the disk you mean to deploy on, since the figure is bound by
that disk's fsync latency, which the table also reports.

Prints a table; writes JSON to bench/results/store.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relay.store import Store  # noqa: E402

NETWORK = "bench-net"
RECIPIENTS = ["bob", "carol", "dave"]


def fsync_latency(folder: Path, rounds: int = 200) -> float:
    """Median seconds for a 4 KiB write + fdatasync on ``folder``'s disk."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            os.write(fd, b"x" * 4096)
            os.fdatasync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times)


async def run(folder: Path, tasks: int, seconds: float, envelope_bytes: int) -> dict:
    store = await Store.open(folder / f"relay-{tasks}.db")
    await store.create_network(NETWORK, "genesis", "{}", 0)
    envelope = '{"ciphertext":"%s"}' % ("x" * envelope_bytes)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(number: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            message_id = f"m-{number}-{i}"
            start = time.perf_counter()
            await store.submit_message(NETWORK, message_id, "alice", RECIPIENTS, envelope,
                                       "h-" + message_id, len(envelope), [], '{"r":1}', 0)
            latencies.append(time.perf_counter() - start)
            i += 1

    commits = store.db.commits
    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(tasks)))
    elapsed = time.perf_counter() - start
    commits = store.db.commits - commits
    await store.close()
    latencies.sort()
    return {
        "tasks": tasks,
        "submits": len(latencies),
        "submits_per_second": round(len(latencies) / elapsed),
        "commits_per_second": round(commits / elapsed),
        "mean_batch": round(len(latencies) / max(commits, 1), 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--envelope-bytes", type=int, default=2048)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="comity-bench-") as tmp:
        folder = Path(tmp)
        fsync_ms = fsync_latency(folder) * 1000
        rows = [asyncio.run(run(folder, tasks, args.seconds, args.envelope_bytes))
                for tasks in (1, 50)]

    print(f"durable submit_message, {args.envelope_bytes}-byte envelope, 3 recipients; "
          f"disk fdatasync median {fsync_ms:.2f} ms")
    header = ("tasks", "submits/s", "commits/s", "mean batch", "p50 ms", "p99 ms")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for r in rows:
        print(f"| {r['tasks']} | {r['submits_per_second']} | {r['commits_per_second']} | "
              f"{r['mean_batch']} | {r['p50_ms']} | {r['p99_ms']} |")

    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "store.json").write_text(json.dumps({
        "benchmark": "store.submit_message",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "fdatasync_median_ms": round(fsync_ms, 3)},
        "envelope_bytes": args.envelope_bytes,
        "seconds": args.seconds,
        "rows": rows,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
