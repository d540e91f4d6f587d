"""The background sweep: retention, expired invites and rotations, orphan blobs, used challenges past expiry.

Runs every ``SWEEP_INTERVAL``. Each step is idempotent and crash-safe: the
store marks rows before files are deleted, so a sweep cut short by a crash is
finished by the next one.
"""

from __future__ import annotations

import asyncio
import logging

from keys.encoding import b64e, canonical
from keys.receipts import make_relay_receipt

from .constants import ORPHAN_BLOB_TTL, PENDING_ROTATION_TTL, SWEEP_INTERVAL
from .db import Damaged, DiskFull

log = logging.getLogger("comity.relay")


async def sweep_once(relay) -> dict:
    now = relay.now()
    done = {"not_collected": 0, "invites": 0, "blobs": 0}
    retention = {}
    for network in await relay.store.list_networks():
        state = await relay.network(network.name)
        retention[network.name] = state.roster.policy.retention
    while True:
        expired = await relay.store.expire_messages(now, retention)
        if not expired:
            break
        for item in expired:
            message = await relay.store.get_message(item.network, item.message_id)
            state = await relay.network(item.network)

            def make(prev: str, item=item, message=message, state=state) -> str:
                return canonical(make_relay_receipt(
                    relay.key_for(state), "not-collected", network=b64e(state.genesis_hash),
                    message_id=item.message_id, envelope_hash=message.envelope_hash,
                    sender=message.sender, time=now, recipient=item.recipient,
                    prev=prev)).decode("utf-8")

            await relay.store.append_relay_receipt(item.network, item.message_id, item.recipient,
                                                   "not-collected", make, now)
            relay.hub.publish(item.network, message.sender, {"type": "status", "id": item.message_id})
            done["not_collected"] += 1
    done["invites"] = len(await relay.store.expire_invites(now))
    await relay.store.expire_pending_rotations(now - PENDING_ROTATION_TTL)
    while True:
        claimed = await relay.store.claim_orphan_blobs(now - ORPHAN_BLOB_TTL)
        if not claimed:
            break
        for blob in claimed:
            await relay.blobs.delete(blob.blob_id)
            relay.blob_pieces.pop(blob.blob_id, None)
        done["blobs"] += await relay.store.delete_blob_rows(b.blob_id for b in claimed)
    await relay.store.expire_creation_tokens(now)
    await relay.store.expire_used_challenges(now)
    return done


async def sweeper(relay) -> None:
    while True:
        try:
            await sweep_once(relay)
        except asyncio.CancelledError:
            raise
        except (Damaged, DiskFull):
            pass                # logged once where it was seen (relay/integrity.py), not per sweep
        except Exception:
            log.exception("sweep failed; retrying at the next interval")
        await asyncio.sleep(SWEEP_INTERVAL)
