"""Identity rotations waiting at the relay: every request kept, bounded, swept (issue 9, break 3).

In-process against the real app (tests/relay_helpers.py) and against the store on real files.
"""

from __future__ import annotations

import sqlite3

import pytest

from keys.constants import DAY
from keys.encoding import b64e
from keys.hpke import EncryptionKey, make_key_record
from keys.identity import IdentityKey
from keys.log import ENTRY_PURPOSE, default_policy, entry_hash, signed_content
from relay import schema
from relay.constants import MAX_PENDING_ROTATIONS_PER_MEMBER, PENDING_ROTATION_TTL
from relay.store import LogConflict, Store
from tests.relay_helpers import create_network, relay  # noqa: F401  (fixture)


def rotation(network, member) -> dict:
    """A rotate-identity-key entry for ``member`` onto a fresh key, signed by its current key
    and the new one: what the member, or a thief holding its current key, can make."""
    new = IdentityKey.generate()
    record = make_key_record(new, EncryptionKey.generate().public, version=2,
                             created=network.relay.now(), not_after=network.relay.now() + 30 * DAY)
    body = {"handle": member.handle, "identity_key": new.public.b64(), "encryption_key": record}
    return network.entry("rotate-identity-key", body, [member.identity, new])


def countersigned(entry: dict, admin) -> dict:
    signatures = entry["signatures"] + [{"key": admin.identity.public.b64(),
                                         "sig": admin.identity.sign_b64(ENTRY_PURPOSE,
                                                                        signed_content(entry))}]
    return {**entry, "signatures": sorted(signatures, key=lambda s: s["key"])}


async def submit(network, member, entry):
    return await network.relay.post(network.path + "/rotations", {"entry": entry}, member=member)


async def listed(network) -> list[tuple[str, str, dict]]:
    reply = await network.relay.get(network.path + "/rotations", member=network.admin)
    assert reply.status == 200, reply
    return [(r["id"], r["handle"], r["entry"]) for r in reply.json()["rotations"]]


async def test_a_second_request_never_replaces_the_first(relay):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    mine, thiefs = rotation(network, bob), rotation(network, bob)
    for entry in (mine, thiefs):
        reply = await submit(network, bob, entry)
        assert (reply.status, reply.json()) == (202, {"status": "pending",
                                                      "id": b64e(entry_hash(entry))})
    expected = sorted([(b64e(entry_hash(e)), "bob", e) for e in (mine, thiefs)],
                      key=lambda r: r[0])
    assert await listed(network) == expected             # same age: then by id
    # The identical request again is the same request: accepted, not stored twice.
    reply = await submit(network, bob, mine)
    assert (reply.status, reply.json()["id"]) == (202, b64e(entry_hash(mine)))
    assert (await relay.table_counts())["pending_rotations"] == 2


async def test_requests_per_member_are_bounded_and_a_full_list_refuses(relay):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    carol = await network.add_member("carol")
    for _ in range(MAX_PENDING_ROTATIONS_PER_MEMBER):
        assert (await submit(network, bob, rotation(network, bob))).status == 202
    reply = await submit(network, bob, rotation(network, bob))
    assert (reply.status, reply.error) == (409, "too-many-rotations")
    assert "waiting" in reply.json()["message"]
    assert (await relay.table_counts())["pending_rotations"] == MAX_PENDING_ROTATIONS_PER_MEMBER
    # Nothing was evicted to make room, and other members are not affected.
    assert (await submit(network, carol, rotation(network, carol))).status == 202
    assert [h for _, h, _ in await listed(network)].count("bob") == MAX_PENDING_ROTATIONS_PER_MEMBER


async def test_requests_go_when_the_log_moves_on(relay):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    mine, thiefs = rotation(network, bob), rotation(network, bob)
    for entry in (mine, thiefs):
        assert (await submit(network, bob, entry)).status == 202
    # The admin approves one: the other no longer chains, so it is gone in the same step.
    assert (await network.append(countersigned(mine, network.admin))).status == 201
    assert await listed(network) == []
    assert (await relay.table_counts())["pending_rotations"] == 0

    carol = await network.add_member("carol")
    stale = rotation(network, carol)
    assert (await submit(network, carol, stale)).status == 202
    entry = network.entry("set-policy", {"policy": default_policy()}, [network.admin.identity])
    assert (await network.append(entry)).status == 201
    assert await listed(network) == []
    reply = await submit(network, carol, stale)             # signed for a position now taken
    assert (reply.status, reply.error) == (409, "log-conflict")
    assert (await relay.table_counts())["pending_rotations"] == 0


async def test_unapproved_requests_expire(relay):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    assert (await submit(network, bob, rotation(network, bob))).status == 202
    await network.advance(PENDING_ROTATION_TTL - 1)
    await relay.sweep()
    assert (await relay.table_counts())["pending_rotations"] == 1
    await network.advance(2)
    await relay.sweep()
    assert (await relay.table_counts())["pending_rotations"] == 0
    assert await listed(network) == []


async def test_the_store_keeps_a_request_only_for_the_next_position(tmp_path):
    store = await Store.open(tmp_path / "relay.db")
    try:
        await store.create_network("ejn", "g", '{"seq": 0}', 1)
        assert await store.put_pending_rotation("ejn", "id-1", "bob", 1, "{}", 5, per_member=2)
        assert not await store.put_pending_rotation("ejn", "id-1", "bob", 1, "{}", 6, per_member=2)
        for seq in (0, 2):
            with pytest.raises(LogConflict):
                await store.put_pending_rotation("ejn", "id-2", "bob", seq, "{}", 5, per_member=2)
        assert [(r.rotation_id, r.seq, r.submitted_at) for r in
                await store.pending_rotations("ejn")] == [("id-1", 1, 5)]
        await store.append_log_entry("ejn", 1, "h1", '{"seq": 1}')
        assert await store.pending_rotations("ejn") == []
    finally:
        await store.close()


async def test_the_upgrade_drops_the_one_per_member_requests(tmp_path):
    path = tmp_path / "relay.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("BEGIN; CREATE TABLE schema_version (version INTEGER NOT NULL);"
                       + "".join(schema.MIGRATIONS[:3]) + "; INSERT INTO schema_version VALUES (3);"
                       "INSERT INTO networks VALUES ('ejn', 'g', 1);"
                       "INSERT INTO pending_rotations VALUES ('ejn', 'bob', '{}', 1); COMMIT;")
    conn.close()
    store = await Store.open(path)
    try:
        columns = await store.db.read(lambda db: [r[1] for r in db.execute(
            "PRAGMA table_info(pending_rotations)")])
        assert columns == ["network", "rotation_id", "handle", "seq", "entry", "submitted_at"]
        assert await store.db.read(lambda db: db.execute(
            "SELECT count(*) FROM pending_rotations").fetchone()[0]) == 0
    finally:
        await store.close()
    assert (tmp_path / "relay.db.v3.bak").exists()
