"""Authentication: challenge, signature by the identity key, short-lived bearer token."""

from __future__ import annotations

import os

from keys.constants import DAY
from keys.encoding import b64e
from keys.hpke import EncryptionKey, make_key_record
from keys.identity import IdentityKey
from relay.constants import CHALLENGE_TTL, MAX_CHALLENGES_PER_MEMBER, TOKEN_TTL
from tests.relay_helpers import (Member, authenticate, create_network, relay,  # noqa: F401
                                 sign_challenge, start_relay)


async def challenge(relay, network, handle: str) -> str:
    reply = await relay.post(network.path + "/auth/challenge", {"handle": handle})
    assert reply.status == 200, reply
    body = reply.json()
    assert body["expires"] == relay.now() + CHALLENGE_TTL
    return body["challenge"]


async def post_token(relay, network, body):
    return await relay.post(network.path + "/auth/token", body)


async def mailbox(relay, network, member) -> int:
    return (await relay.get(network.path + "/mailbox", member=member)).status


async def test_challenge_signature_token(relay):
    network = await create_network(relay)
    ana = network.admin
    value = await challenge(relay, network, "ana")
    reply = await post_token(relay, network, sign_challenge(relay, network, ana, value))
    assert reply.status == 200, reply
    body = reply.json()
    assert body["expires"] == relay.now() + TOKEN_TTL
    assert body["token"].startswith("v1.")
    ana.token = body["token"]
    assert await mailbox(relay, network, ana) == 200


async def test_replayed_challenge_refused(relay):
    network = await create_network(relay)
    ana = network.admin
    value = await challenge(relay, network, "ana")
    body = sign_challenge(relay, network, ana, value)
    assert (await post_token(relay, network, body)).status == 200
    reply = await post_token(relay, network, body)
    assert (reply.status, reply.error) == (401, "bad-challenge")
    failures = [e for e in await relay.audit_events() if e[0] == "auth-failed"]
    assert [(f[2], f[3]["reason"]) for f in failures] == [("ana", "bad-challenge")]


async def test_failed_attempt_uses_the_challenge_up(relay):
    network = await create_network(relay)
    ana = network.admin
    value = await challenge(relay, network, "ana")
    wrong = sign_challenge(relay, network, ana, value, identity=IdentityKey.generate())
    assert (await post_token(relay, network, wrong)).error == "bad-signature"
    right = sign_challenge(relay, network, ana, value)
    reply = await post_token(relay, network, right)
    assert (reply.status, reply.error) == (401, "bad-challenge")


async def test_expired_challenge_refused(relay):
    network = await create_network(relay)
    ana = network.admin
    value = await challenge(relay, network, "ana")
    relay.clock.advance(CHALLENGE_TTL + 1)
    reply = await post_token(relay, network, sign_challenge(relay, network, ana, value))
    assert (reply.status, reply.error) == (401, "bad-challenge")


async def test_challenge_is_bound_to_the_handle(relay):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    value = await challenge(relay, network, "ana")          # asked for ana, used by bob
    reply = await post_token(relay, network, sign_challenge(relay, network, bob, value))
    assert (reply.status, reply.error) == (401, "bad-challenge")


async def test_wrong_signature_refused_and_audited(relay):
    network = await create_network(relay)
    ana = network.admin
    value = await challenge(relay, network, "ana")
    body = sign_challenge(relay, network, ana, value, identity=IdentityKey.generate())
    reply = await post_token(relay, network, body)
    assert (reply.status, reply.error) == (401, "bad-signature")
    assert "token" not in reply.json()
    value = await challenge(relay, network, "ana")
    reply = await post_token(relay, network, {"handle": "ana", "challenge": value,
                                              "signature": b64e(os.urandom(64))})
    assert (reply.status, reply.error) == (401, "bad-signature")
    failures = [e for e in await relay.audit_events() if e[0] == "auth-failed"]
    assert [(f[1], f[2], f[3]["reason"]) for f in failures] == [
        ("refco", "ana", "bad-signature"), ("refco", "ana", "bad-signature")]


async def test_signature_for_another_relay_refused(tmp_path):
    """The signed statement names the relay key: a signature made for relay A fails at B."""
    async with start_relay(tmp_path / "a") as a, start_relay(tmp_path / "b") as b:
        network = await create_network(a)
        ana = network.admin
        value = await challenge(a, network, "ana")
        body = sign_challenge(b, network, ana, value)         # names B's key, sent to A
        reply = await a.post(network.path + "/auth/token", body)
        assert (reply.status, reply.error) == (401, "bad-signature")


async def test_non_member_cannot_authenticate(relay):
    network = await create_network(relay)
    stranger = Member.generate("mallory", relay.now())
    value = await challenge(relay, network, "mallory")
    reply = await relay.post(network.path + "/auth/token",
                             sign_challenge(relay, network, stranger, value))
    assert (reply.status, reply.error) == (403, "not-a-member")


async def test_unknown_network(relay):
    reply = await relay.post("/v1/networks/nowhere/auth/challenge", {"handle": "ana"})
    assert (reply.status, reply.error) == (404, "no-network")


async def test_token_for_another_network_refused(relay):
    refco = await create_network(relay, "refco")
    sahel = await create_network(relay, "sahel", admin="ana")
    reply = await relay.get(sahel.path + "/mailbox", member=refco.admin)
    assert (reply.status, reply.error) == (401, "bad-token")


async def test_missing_forged_and_expired_tokens(relay):
    network = await create_network(relay)
    ana = network.admin
    reply = await relay.get(network.path + "/mailbox")
    assert (reply.status, reply.error) == (401, "unauthenticated")
    for token in ("garbage", "v1.a.b", "v1..", ana.token[:-2] + "AA", ana.token + "x",
                  "v1." + "A" * 2000 + ".x"):
        reply = await relay.get(network.path + "/mailbox",
                                headers={"Authorization": f"Bearer {token}"})
        assert (reply.status, reply.error) == (401, "bad-token"), token
    relay.clock.advance(TOKEN_TTL + 1)
    reply = await relay.get(network.path + "/mailbox", member=ana)
    assert (reply.status, reply.error) == (401, "bad-token")
    await authenticate(relay, network, ana)
    assert await mailbox(relay, network, ana) == 200


async def test_removed_member_token_stops_at_once(relay):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    assert await mailbox(relay, network, bob) == 200
    await network.remove("bob")
    reply = await relay.get(network.path + "/mailbox", member=bob)
    assert (reply.status, reply.error) == (403, "not-a-member")
    value = await challenge(relay, network, "bob")
    reply = await post_token(relay, network, sign_challenge(relay, network, bob, value))
    assert (reply.status, reply.error) == (403, "not-a-member")


async def test_identity_rotation_invalidates_the_old_token(relay):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    new_identity = IdentityKey.generate()
    new_key = EncryptionKey.generate()
    record = make_key_record(new_identity, new_key.public, version=2, created=relay.now(),
                             not_after=relay.now() + 30 * DAY)
    entry = network.entry("rotate-identity-key",
                          {"handle": "bob", "identity_key": new_identity.public.b64(),
                           "encryption_key": record},
                          [bob.identity, new_identity, network.admin.identity])
    reply = await network.append(entry, by=bob)
    assert reply.status == 201, reply

    reply = await relay.get(network.path + "/mailbox", member=bob)
    assert (reply.status, reply.error) == (401, "bad-token")
    assert "replaced identity key" in reply.json()["message"]
    old_identity, bob.identity = bob.identity, new_identity
    # The old key no longer authenticates; the new one does.
    value = await challenge(relay, network, "bob")
    body = sign_challenge(relay, network, bob, value, identity=old_identity)
    assert (await post_token(relay, network, body)).error == "bad-signature"
    await authenticate(relay, network, bob)
    assert await mailbox(relay, network, bob) == 200


async def test_member_rate_limit(tmp_path):
    async with start_relay(tmp_path / "relay", rate_per_second=1, rate_burst=8) as relay:
        network = await create_network(relay)
        bob = await network.add_member("bob")            # spends a few of ana's requests
        statuses = [await mailbox(relay, network, network.admin) for _ in range(10)]
        assert statuses[0] == 200 and statuses[-1] == 429, statuses
        assert statuses == sorted(statuses)              # once refused, refused until refill
        reply = await relay.get(network.path + "/mailbox", member=network.admin)
        assert (reply.status, reply.error) == (429, "rate-limited")
        assert reply.headers["Retry-After"] == "1"
        # Another member has its own budget.
        assert await mailbox(relay, network, bob) == 200


async def test_anonymous_rate_limit(relay):
    network = await create_network(relay)
    statuses = set()
    for n in range(100):
        # A new handle each time: the per-member cap on challenges must not be what answers.
        reply = await relay.post(network.path + "/auth/challenge", {"handle": f"user{n:03d}"})
        statuses.add(reply.status)
        if reply.status == 429:
            assert reply.error == "rate-limited"
            break
    assert statuses == {200, 429}


async def test_challenges_outstanding_per_member_are_capped(relay):
    network = await create_network(relay)
    ana = network.admin
    values = [await challenge(relay, network, "ana") for _ in range(MAX_CHALLENGES_PER_MEMBER)]
    before = await relay.table_counts()
    reply = await relay.post(network.path + "/auth/challenge", {"handle": "ana"})
    assert (reply.status, reply.error) == (429, "rate-limited")
    assert reply.headers["Retry-After"] == "5"
    assert await relay.table_counts() == before
    # The refusal took nothing away: an outstanding challenge still works, and frees a place.
    reply = await post_token(relay, network, sign_challenge(relay, network, ana, values[3]))
    assert reply.status == 200, reply
    await challenge(relay, network, "ana")
    # Someone else's challenges are not counted against ana.
    await challenge(relay, network, "bob")


async def test_challenges_outstanding_on_the_relay_are_capped(relay, monkeypatch):
    from relay.handlers import session
    monkeypatch.setattr(session, "MAX_OUTSTANDING_CHALLENGES", 3)
    network = await create_network(relay)
    for handle in ("ana", "bob", "carol"):
        await challenge(relay, network, handle)
    reply = await relay.post(network.path + "/auth/challenge", {"handle": "dave"})
    assert (reply.status, reply.error) == (429, "rate-limited")


async def test_sweep_deletes_expired_challenges_only(relay):
    network = await create_network(relay)
    await challenge(relay, network, "ana")
    relay.clock.advance(CHALLENGE_TTL + 1)
    fresh = await challenge(relay, network, "ana")
    await relay.sweep()
    def op(db):
        return [row[0] for row in db.execute("SELECT challenge FROM auth_challenges")]
    assert await relay.store.db.read(op) == [fresh]
