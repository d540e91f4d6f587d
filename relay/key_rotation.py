"""What ``comity-relay rotate-key`` needs beyond the key files: which relay key each
network's membership log names today.

The answer comes from replaying each log with the same verifier the relay and every
client run (keys/log.py), never from a shortcut over the stored text: ``--retire``
destroys a key on the strength of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from keys.encoding import b64d, parse
from keys.identity import IdentityPublicKey
from keys.log import LogVerifier

from .relaykey import DATABASE_FILE
from .store import Store

#: log entries read per query
PAGE = 1000


@dataclass(frozen=True)
class NetworkKey:
    network: str
    relay_key: IdentityPublicKey      # named at the log's head
    seq: int                          # the head


async def network_keys(data_dir: Path) -> list[NetworkKey]:
    """Each network this relay holds, with the relay key its log names at its head."""
    store = await Store.open(data_dir / DATABASE_FILE)
    try:
        found = []
        for network in await store.list_networks():
            verifier = LogVerifier(b64d(network.genesis_hash))
            since = 0
            while True:
                page = await store.log_entries(network.name, since, PAGE)
                for row in page:
                    verifier.append(parse(row.entry))
                if len(page) < PAGE:
                    break
                since = page[-1].seq + 1
            found.append(NetworkKey(network.name, verifier.roster.relay_key, verifier.seq))
        return found
    finally:
        await store.close()
