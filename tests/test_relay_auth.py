"""Authentication: challenge, signature by the identity key, short-lived bearer token."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from keys.constants import DAY
from keys.encoding import b64d, b64e
from keys.hpke import EncryptionKey, make_key_record
from keys.identity import IdentityKey
from relay.auth import CHALLENGE_BYTES, Authenticator, RateLimiter
from relay.constants import ANON_RATE_BURST, ANON_RATE_PER_SECOND, CHALLENGE_TTL, TOKEN_TTL
from relay.errors import RelayError
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


async def test_a_failed_attempt_leaves_the_challenge_to_the_member(relay):
    """Only a valid signature uses a challenge up: a stranger's wrong guess cannot spoil it."""
    network = await create_network(relay)
    ana = network.admin
    value = await challenge(relay, network, "ana")
    wrong = sign_challenge(relay, network, ana, value, identity=IdentityKey.generate())
    assert (await post_token(relay, network, wrong)).error == "bad-signature"
    right = sign_challenge(relay, network, ana, value)
    reply = await post_token(relay, network, right)
    assert reply.status == 200, reply
    assert (await post_token(relay, network, right)).error == "bad-challenge"


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


async def test_challenges_spend_no_budget_and_store_nothing(relay):
    """Anyone may ask for any number of challenges for a handle: the relay writes nothing and
    the member still logs in (a flood used to fill a per-handle cap of 16: issue 9, break 6)."""
    network = await create_network(relay)
    ana = network.admin
    before = await relay.table_counts()
    statuses = {(await relay.post(network.path + "/auth/challenge", {"handle": "ana"})).status
                for _ in range(3 * ANON_RATE_BURST)}
    assert statuses == {200}
    assert await relay.table_counts() == before
    await authenticate(relay, network, ana)
    assert await mailbox(relay, network, ana) == 200


async def test_failed_token_requests_spend_the_address_budget_valid_ones_do_not(relay):
    network = await create_network(relay)
    ana = network.admin
    # A budget that does not refill while the test runs, so the counts are exact.
    relay.state.anon_limiter = RateLimiter(ANON_RATE_PER_SECOND, ANON_RATE_BURST, clock=lambda: 0.0)
    value = await challenge(relay, network, "ana")
    wrong = sign_challenge(relay, network, ana, value, identity=IdentityKey.generate())
    statuses = [(await post_token(relay, network, wrong)).status for _ in range(ANON_RATE_BURST + 5)]
    assert statuses == [401] * ANON_RATE_BURST + [429] * 5
    # Audited while the address had budget, not beyond: a flood writes a bounded number of rows.
    failures = [e for e in await relay.audit_events() if e[0] == "auth-failed"]
    assert len(failures) == ANON_RATE_BURST
    reply = await post_token(relay, network, wrong)
    assert (reply.status, reply.error, reply.headers["Retry-After"]) == (429, "rate-limited", "1")
    # The same address, the budget spent: a valid signature still gets its token.
    reply = await post_token(relay, network, sign_challenge(relay, network, ana, value))
    assert reply.status == 200, reply
    # Other unauthenticated writes share the spent budget.
    reply = await relay.post(network.path + "/enrollments", {"request": {}})
    assert (reply.status, reply.error) == (429, "rate-limited")


async def test_anonymous_rate_limit(relay):
    statuses = set()
    for _ in range(3 * ANON_RATE_BURST):
        reply = await relay.post("/v1/networks", {"genesis": {}, "token": "x"})
        statuses.add(reply.status)
        if reply.status == 429:
            assert reply.error == "rate-limited"
            break
    assert 429 in statuses and len(statuses) == 2, statuses


async def test_valid_signatures_spend_the_members_budget(tmp_path):
    async with start_relay(tmp_path / "relay", rate_per_second=1, rate_burst=4) as relay:
        network = await create_network(relay)
        ana = network.admin
        relay.state.member_limiter = RateLimiter(1, 4, clock=lambda: 0.0)   # no refill

        def used(db):
            return {row[0] for row in db.execute("SELECT challenge FROM used_challenges")}
        before = await relay.store.db.read(used)
        statuses = []
        for _ in range(6):
            value = await challenge(relay, network, "ana")
            statuses.append((await post_token(relay, network,
                                              sign_challenge(relay, network, ana, value))).status)
        assert statuses == [200] * 4 + [429] * 2
        # What the member's budget refused did not use the challenge up.
        after = await relay.store.db.read(used)
        assert value not in after and len(after - before) == 4


async def test_replays_spend_the_address_budget_not_the_members(relay):
    """Someone who saw a signed token request cannot lock the member out by resending it."""
    network = await create_network(relay)
    ana = network.admin
    relay.state.member_limiter = RateLimiter(1, 3, clock=lambda: 0.0)        # no refill
    body = sign_challenge(relay, network, ana, await challenge(relay, network, "ana"))
    reply = await post_token(relay, network, body)
    assert reply.status == 200, reply
    ana.token = reply.json()["token"]
    for _ in range(5):
        reply = await post_token(relay, network, body)
        assert (reply.status, reply.error) == (401, "bad-challenge")
    assert await mailbox(relay, network, ana) == 200


async def test_sweep_forgets_expired_used_challenges_only(relay):
    network = await create_network(relay)
    ana = network.admin
    old = await challenge(relay, network, "ana")
    assert (await post_token(relay, network, sign_challenge(relay, network, ana, old))).status == 200
    relay.clock.advance(CHALLENGE_TTL + 1)
    fresh = await challenge(relay, network, "ana")
    assert (await post_token(relay, network, sign_challenge(relay, network, ana, fresh))).status == 200
    await relay.sweep()
    def op(db):
        return [row[0] for row in db.execute("SELECT challenge FROM used_challenges")]
    assert await relay.store.db.read(op) == [fresh]


# -- the challenge itself: derived from a relay MAC and a time, never stored when issued --------

SECRET = bytes(range(32))
T0 = 1_700_000_000


class FixedClock:
    def __init__(self, now: int):
        self.now = now

    def __call__(self) -> float:
        return float(self.now)


def authenticator(now: int = T0, secret: bytes = SECRET) -> Authenticator:
    return Authenticator(secret, clock=FixedClock(now))


def refused(auth: Authenticator, network: str, handle: str, text: str) -> None:
    with pytest.raises(RelayError) as caught:
        auth.check_challenge(network, handle, text)
    assert caught.value.code == "bad-challenge"


def test_challenge_layout_from_fixed_parts():
    """time (8 bytes big-endian) || nonce (16) || HMAC-SHA256 under the label, as documented."""
    nonce = bytes(range(100, 116))
    text, expires = authenticator()._challenge_from_parts("refco", "ana", T0, nonce)
    raw = b64d(text)
    head = T0.to_bytes(8, "big") + nonce
    mac = hmac.new(SECRET, b"comity/v1/auth-challenge\x00" + head + b"refco\x00ana",
                   hashlib.sha256).digest()
    assert raw == head + mac and len(raw) == CHALLENGE_BYTES
    assert expires == T0 + CHALLENGE_TTL


def test_a_challenge_checks_out_for_its_network_and_handle_until_it_expires():
    text, expires = authenticator().issue_challenge("refco", "ana")
    for now in (T0, T0 + CHALLENGE_TTL):
        found = authenticator(now).check_challenge("refco", "ana", text)
        assert (found.text, found.raw, found.expires) == (text, b64d(text), expires)


def test_expired_and_future_challenges_refused():
    text, _ = authenticator().issue_challenge("refco", "ana")
    refused(authenticator(T0 + CHALLENGE_TTL + 1), "refco", "ana", text)
    refused(authenticator(T0 - 1), "refco", "ana", text)       # the clock was set back


def test_challenge_for_another_handle_or_network_refused():
    auth = authenticator()
    text, _ = auth.issue_challenge("refco", "ana")
    refused(auth, "refco", "bob", text)
    refused(auth, "sahel", "ana", text)
    # The separator keeps the split: "refc" + "oana" is not "refco" + "ana".
    refused(auth, "refc", "oana", text)


@pytest.mark.parametrize("change", ["mac", "time", "nonce"])
def test_forged_challenge_refused(change):
    auth = authenticator()
    raw = bytearray(b64d(auth.issue_challenge("refco", "ana")[0]))
    if change == "time":
        raw[:8] = (T0 + 5).to_bytes(8, "big")            # still young enough: only the MAC tells
    else:
        raw[{"nonce": 8, "mac": CHALLENGE_BYTES - 1}[change]] ^= 1
    refused(authenticator(T0 + 10), "refco", "ana", b64e(bytes(raw)))


def test_challenge_from_another_secret_or_of_another_shape_refused():
    text, _ = authenticator(secret=bytes(32)).issue_challenge("refco", "ana")
    refused(authenticator(), "refco", "ana", text)
    mine, _ = authenticator().issue_challenge("refco", "ana")
    for bad in (mine[:-2], mine + "AA", b64e(os.urandom(32)), "", "not base64!"):
        refused(authenticator(), "refco", "ana", bad)
        assert Authenticator.challenge_shaped(bad) is False
    assert Authenticator.challenge_shaped(mine) is True


async def test_forged_and_other_network_challenges_refused_and_audited(relay):
    refco = await create_network(relay, "refco")
    sahel = await create_network(relay, "sahel")
    ana = refco.admin
    elsewhere = await challenge(relay, sahel, "ana")         # the same handle, another network
    reply = await post_token(relay, refco, sign_challenge(relay, refco, ana, elsewhere))
    assert (reply.status, reply.error) == (401, "bad-challenge")
    raw = bytearray(b64d(await challenge(relay, refco, "ana")))
    raw[0] ^= 1                                               # an earlier time, same MAC
    forged = b64e(bytes(raw))
    reply = await post_token(relay, refco, sign_challenge(relay, refco, ana, forged))
    assert (reply.status, reply.error) == (401, "bad-challenge")
    failures = [e for e in await relay.audit_events() if e[0] == "auth-failed"]
    assert [(f[1], f[2], f[3]["reason"]) for f in failures] == [
        ("refco", "ana", "bad-challenge"), ("refco", "ana", "bad-challenge")]
