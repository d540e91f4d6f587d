"""Child process of the store's crash test (tests/test_relay_store.py); not a test itself.

    python tests/relay_store_crash_child.py DB_PATH WORKERS [no-checkpoints]

Opens the store, then submits messages from WORKERS concurrent tasks forever,
printing each message id on stdout (flushed) only after ``submit_message``
returned: a printed id is an acknowledged, supposedly durable, write. The
parent kills this process with SIGKILL in the middle of it. With ``no-checkpoints`` the
background checkpointer never runs, so everything committed is still in the WAL when it dies
(tests/test_relay_integrity.py then deletes or damages the WAL).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relay import db  # noqa: E402
from relay.store import Store  # noqa: E402

NETWORK = "crash-net"
RECIPIENTS = ["bob", "carol", "dave"]


def envelope_for(message_id: str) -> tuple[str, str]:
    """The envelope and its hash, derived from the id so the parent can resubmit it."""
    return '{"id":"%s","ciphertext":"%s"}' % (message_id, "x" * 700), "hash-" + message_id


async def worker(store: Store, number: int) -> None:
    i = 0
    while True:
        message_id = f"m-{number}-{i}"
        envelope, envelope_hash = envelope_for(message_id)
        await store.submit_message(NETWORK, message_id, "alice", RECIPIENTS, envelope,
                                   envelope_hash, len(envelope), [], '{"receipt":1}', 1000 + i)
        sys.stdout.write(message_id + "\n")
        sys.stdout.flush()
        i += 1


async def main() -> None:
    if sys.argv[3:] == ["no-checkpoints"]:
        db.CHECKPOINT_INTERVAL = 24 * 3600
    store = await Store.open(sys.argv[1])
    await store.create_network(NETWORK, "genesis-hash", '{"seq":0}', 1000)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.gather(*(worker(store, n) for n in range(int(sys.argv[2]))))


if __name__ == "__main__":
    asyncio.run(main())
