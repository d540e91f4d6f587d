"""Networks over HTTP: creation with a one-time token, reading the log, and appending to it.

The relay runs the same log verifier as every client: each refusal reason a
client would give comes back as a 400 ``bad-entry`` naming that reason, and
the log does not move.
"""

from __future__ import annotations

import os
import re

import pytest

from keys.constants import DAY, HOUR
from keys.encoding import b64e
from keys.hpke import EncryptionKey, make_key_record
from keys.identity import IdentityKey
from keys.log import default_policy, entry_hash, make_genesis, member_record
from keys.log_head import verify_log_head
from relay.constants import MAX_LOG_PAGE
from tests.relay_helpers import Member, create_network, relay  # noqa: F401  (fixture)


def genesis_for(relay, name: str = "refco", handle: str = "ana", relay_key=None):
    admin = Member.generate(handle, relay.now())
    return admin, make_genesis(admin.identity, name, admin.record("admin"), default_policy(),
                               relay.now(), relay_key=relay_key or relay.state.key.public)


async def token_rows(relay) -> int:
    return (await relay.table_counts())["creation_tokens"]


# -- creation ----------------------------------------------------------------------------------

async def test_create_network_with_token(relay):
    _, genesis = genesis_for(relay)
    token = await relay.creation_token("refco")
    reply = await relay.post("/v1/networks", {"token": token, "genesis": genesis})
    assert reply.status == 201, reply
    body = reply.json()
    assert body["network"] == "refco"
    assert body["relay_key"] == relay.state.key.public.b64()
    from keys.log import entry_hash
    assert body["genesis_hash"] == b64e(entry_hash(genesis))
    assert await token_rows(relay) == 0          # used up


async def test_a_genesis_naming_another_relay_key_is_refused(relay):
    """The relay a network names must be this one: otherwise every member would refuse it."""
    _, genesis = genesis_for(relay, relay_key=IdentityKey.generate().public)
    token = await relay.creation_token("refco")
    reply = await relay.post("/v1/networks", {"token": token, "genesis": genesis})
    assert (reply.status, reply.error) == (400, "wrong-relay-key"), reply
    assert await token_rows(relay) == 1          # the token stays usable
    assert (await relay.table_counts())["networks"] == 0


async def test_set_relay_key_naming_another_key_is_refused(relay):
    network = await create_network(relay, "refco")
    other = IdentityKey.generate().public.b64()
    entry = network.entry("set-relay-key", {"relay_key": other}, [network.admin.identity])
    reply = await network.append(entry)
    assert (reply.status, reply.error) == (400, "wrong-relay-key"), reply


async def test_token_is_one_time_and_survives_a_refused_creation(relay):
    admin, genesis = genesis_for(relay)
    token = await relay.creation_token("refco")
    broken = {**genesis, "time": genesis["time"] + 1}        # signature no longer matches
    reply = await relay.post("/v1/networks", {"token": token, "genesis": broken})
    assert (reply.status, reply.error) == (400, "bad-entry")
    assert "(bad-signature)" in reply.json()["message"]
    assert await token_rows(relay) == 1                        # a refusal does not use it up
    reply = await relay.post("/v1/networks", {"token": token, "genesis": genesis})
    assert reply.status == 201, reply
    # The token is gone: the same token cannot create the network a second time, even after
    # the first network's name is taken by another genesis.
    assert await token_rows(relay) == 0
    _, other = genesis_for(relay)
    reply = await relay.post("/v1/networks", {"token": token, "genesis": other})
    assert reply.status in (403, 409)


async def test_wrong_token_refused(relay):
    _, genesis = genesis_for(relay)
    await relay.creation_token("refco")
    for token in ("x" * 32, b64e(os.urandom(24))):
        reply = await relay.post("/v1/networks", {"token": token, "genesis": genesis})
        assert (reply.status, reply.error) == (403, "bad-creation-token"), reply
    for token in ("short", 12345, None, "y" * 200):
        reply = await relay.post("/v1/networks", {"token": token, "genesis": genesis})
        assert (reply.status, reply.error) == (403, "bad-creation-token"), reply
    assert (await relay.table_counts())["networks"] == 0


async def test_token_for_another_network_refused(relay):
    _, genesis = genesis_for(relay, "refco")
    token = await relay.creation_token("sahel")
    reply = await relay.post("/v1/networks", {"token": token, "genesis": genesis})
    assert (reply.status, reply.error) == (403, "bad-creation-token")
    assert await token_rows(relay) == 1


async def test_expired_token_refused(relay):
    _, genesis = genesis_for(relay)
    token = await relay.creation_token("refco", ttl=HOUR)
    relay.clock.advance(HOUR + 1)
    reply = await relay.post("/v1/networks", {"token": token, "genesis": genesis})
    assert (reply.status, reply.error) == (403, "bad-creation-token")
    assert (await relay.table_counts())["networks"] == 0


async def test_duplicate_network_name_refused(relay):
    await create_network(relay, "refco")
    _, genesis = genesis_for(relay, "refco", "bea")
    token = await relay.creation_token("refco")
    reply = await relay.post("/v1/networks", {"token": token, "genesis": genesis})
    assert (reply.status, reply.error) == (409, "network-exists")
    assert await token_rows(relay) == 1          # not consumed by a refused creation


async def test_body_must_carry_a_genesis(relay):
    network = await create_network(relay, "refco")
    token = await relay.creation_token("sahel")
    entry = network.entry("set-policy", {"policy": default_policy()}, [network.admin.identity])
    reply = await relay.post("/v1/networks", {"token": token, "genesis": entry})
    assert (reply.status, reply.error) == (400, "bad-entry")
    reply = await relay.post("/v1/networks", {"token": token, "genesis": "genesis"})
    assert (reply.status, reply.error) == (400, "bad-entry")


async def test_many_networks_on_one_relay(relay):
    refco = await create_network(relay, "refco")
    sahel = await create_network(relay, "sahel", admin="moussa")
    for network in (refco, sahel):
        reply = await network.read_log(network.admin)
        assert reply.status == 200
        assert reply.json()["entries"] == [network.genesis]


# -- reading the log ---------------------------------------------------------------------------

async def grow_log(network, entries: int) -> None:
    policy = default_policy()
    for i in range(entries):
        policy = {**policy, "retention": policy["retention"] + DAY}
        reply = await network.append(network.entry("set-policy", {"policy": policy},
                                                   [network.admin.identity]))
        assert reply.status == 201, reply


async def test_log_paging(relay):
    network = await create_network(relay)
    await grow_log(network, 6)                  # seqs 0..6
    ana = network.admin

    reply = await network.read_log(ana)
    body = reply.json()
    assert [e["seq"] for e in body["entries"]] == list(range(7))
    assert body["entries"] == network.entries
    assert body["head"] == network.roster.head()
    assert body["more"] is False

    reply = await network.read_log(ana, since=2, limit=3)
    body = reply.json()
    assert [e["seq"] for e in body["entries"]] == [2, 3, 4]
    assert body["more"] is True
    assert body["head"] == {"seq": 6, "hash": b64e(network.verifier.hash_at(6))}
    # Every page carries the head signed by the relay key, dated by the relay's clock.
    signed = verify_log_head(body["signed_head"], relay.state.key.public)
    assert (signed["seq"], signed["hash"], signed["time"]) == (6, body["head"]["hash"], relay.now())
    assert signed["network"] == b64e(network.verifier.hash_at(0))

    reply = await network.read_log(ana, since=5, limit=3)
    assert [e["seq"] for e in reply.json()["entries"]] == [5, 6]
    assert reply.json()["more"] is False

    reply = await network.read_log(ana, since=7)
    assert reply.json()["entries"] == [] and reply.json()["more"] is False

    # Page by page from 0, a client rebuilds exactly the log.
    seen, since = [], 0
    while True:
        body = (await network.read_log(ana, since=since, limit=2)).json()
        seen += body["entries"]
        if not body["more"]:
            break
        since = body["entries"][-1]["seq"] + 1
    assert seen == network.entries


@pytest.mark.parametrize("query", ["since=-1", "since=abc", "since=1.5", "limit=0",
                                   f"limit={MAX_LOG_PAGE + 1}", "limit=", "since=9" * 20])
async def test_log_paging_parameters_checked(relay, query):
    network = await create_network(relay)
    reply = await relay.get(network.path + "/log?" + query, member=network.admin)
    assert (reply.status, reply.error) == (400, "bad-request"), reply


async def test_log_needs_a_member_or_an_invite(relay):
    network = await create_network(relay)
    reply = await network.read_log()
    assert (reply.status, reply.error) == (401, "unauthenticated")
    reply = await relay.get("/v1/networks/nowhere/log", member=network.admin)
    assert reply.status in (401, 404)


async def test_log_readable_with_a_pending_invite(relay):
    network = await create_network(relay)
    invite = await network.invite("bob")
    header = {"Comity-Invite": b64e(invite.invite_id)}
    reply = await network.read_log(headers=header)
    assert reply.status == 200, reply
    assert reply.json()["entries"] == [network.genesis]

    for bad in (b64e(os.urandom(32)), "../../etc/passwd", "x"):
        reply = await network.read_log(headers={"Comity-Invite": bad})
        assert (reply.status, reply.error) == (404, "no-invite"), reply

    # The enrollee reads the log, is added: the invite is answered and no longer opens the log.
    newcomer, reply = await network.enroll(invite)
    assert reply.status == 202
    reply = await network.approve(invite, newcomer)
    assert reply.status == 201
    reply = await network.read_log(headers=header)
    assert (reply.status, reply.error) == (404, "no-invite")


async def test_expired_invite_does_not_open_the_log(relay):
    network = await create_network(relay)
    invite = await network.invite("bob", expires=relay.now() + HOUR)
    relay.clock.advance(HOUR)
    reply = await network.read_log(headers={"Comity-Invite": b64e(invite.invite_id)})
    assert (reply.status, reply.error) == (404, "no-invite")


async def test_invite_opens_only_its_own_network(relay):
    refco = await create_network(relay, "refco")
    sahel = await create_network(relay, "sahel", admin="moussa")
    invite = await refco.invite("bob")
    reply = await sahel.read_log(headers={"Comity-Invite": b64e(invite.invite_id)})
    assert (reply.status, reply.error) == (404, "no-invite")


# -- appending: every refusal reason -----------------------------------------------------------

def _remove_then_touch(network, bob):
    return [network.entry("remove-member", {"handle": "bob"}, [network.admin.identity])], \
        lambda: network.entry("set-role", {"handle": "bob", "role": "admin"},
                              [network.admin.identity])


def _new_record(handle: str, identity, now: int) -> dict:
    encryption = EncryptionKey.generate()
    record = make_key_record(identity, encryption.public, version=1, created=now,
                             not_after=now + 30 * DAY)
    return member_record(identity.public, record, handle=handle, name=handle.title())


def refusal(reason: str, network, bob):
    """(entries to append first, a function building the refused entry) for ``reason``."""
    ana = network.admin
    now = network.relay.now()
    policy = {"policy": default_policy()}
    if reason == "bad-entry":
        return [], lambda: {**network.entry("set-policy", policy, [ana.identity]), "extra": 1}
    if reason == "bad-signature":
        def tampered():
            entry = network.entry("set-policy", policy, [ana.identity])
            entry["body"]["policy"]["retention"] += 1
            return entry
        return [], tampered
    if reason == "wrong-signer":
        return [], lambda: network.entry("set-policy", policy, [bob.identity])
    if reason == "removed-member":
        return _remove_then_touch(network, bob)
    if reason == "unknown-member":
        return [], lambda: network.entry("remove-member", {"handle": "nobody"}, [ana.identity])
    if reason == "duplicate-handle":
        other = Member.generate("bob", now)
        return [], lambda: network.entry("add-member", {"member": other.record()}, [ana.identity])
    if reason == "duplicate-key":
        return [], lambda: network.entry(
            "add-member", {"member": _new_record("dave", ana.identity, now)}, [ana.identity])
    if reason == "last-admin":
        return [], lambda: network.entry("remove-member", {"handle": "ana"}, [ana.identity])
    if reason == "gap":
        return [], lambda: network.entry("set-policy", policy, [ana.identity],
                                         seq=network.verifier.seq + 2)
    if reason == "fork":
        return [], lambda: network.entry("set-policy", policy, [ana.identity],
                                         prev=os.urandom(32))
    if reason == "duplicate-entry":
        return [], lambda: network.entries[-1]
    if reason == "bad-time":
        return [], lambda: network.entry("set-policy", policy, [ana.identity],
                                         time=network.entries[-1]["time"] - 10)
    raise AssertionError(reason)


REASONS = ["bad-entry", "bad-signature", "wrong-signer", "removed-member", "unknown-member",
           "duplicate-handle", "duplicate-key", "last-admin", "gap", "fork", "duplicate-entry",
           "bad-time"]


@pytest.mark.parametrize("reason", REASONS)
async def test_append_refusal_reasons(relay, reason):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    before, build = refusal(reason, network, bob)
    for entry in before:
        assert (await network.append(entry)).status == 201
    head = (await network.read_log(network.admin)).json()["head"]
    rows = await relay.table_counts()

    reply = await network.append(build())
    assert (reply.status, reply.error) == (400, "bad-entry"), reply
    assert reply.json()["message"].endswith(f"({reason})"), reply

    # Nothing moved: same head, same rows, and the next good entry still follows.
    assert (await network.read_log(network.admin)).json()["head"] == head
    assert await relay.table_counts() == rows
    good = network.entry("set-policy", {"policy": default_policy()}, [network.admin.identity])
    assert (await network.append(good)).status == 201


def test_every_log_refusal_reason_is_covered():
    """A reason added to docs/protocol.md §4 without a relay test here fails this."""
    import pathlib
    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    section = text[text.index("### Reason codes"):text.index("### Vectors")]
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", section, re.M))
    assert documented - {"unknown-seq"} == set(REASONS)


async def test_member_may_append_its_own_rotation(relay):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    new_key = EncryptionKey.generate()
    record = make_key_record(bob.identity, new_key.public, version=2, created=relay.now(),
                             not_after=relay.now() + 30 * DAY)
    entry = network.entry("rotate-encryption-key", {"handle": "bob", "encryption_key": record},
                          [bob.identity])
    reply = await network.append(entry, by=bob)
    assert reply.status == 201, reply
    assert reply.json() == {"seq": entry["seq"],
                            "hash": b64e(network.verifier.hash_at(entry["seq"]))}


async def test_append_needs_a_member_token(relay):
    network = await create_network(relay)
    entry = network.entry("set-policy", {"policy": default_policy()}, [network.admin.identity])
    reply = await relay.post(network.path + "/log", {"entry": entry})
    assert (reply.status, reply.error) == (401, "unauthenticated")
    reply = await relay.post(network.path + "/log", {"entry": "not an object"},
                             member=network.admin)
    assert (reply.status, reply.error) == (400, "bad-entry")


async def test_log_survives_a_restart(tmp_path):
    from tests.relay_helpers import start_relay
    async with start_relay(tmp_path / "relay") as first:
        network = await create_network(first)
        await grow_log(network, 3)
        entries = list(network.entries)
    async with start_relay(tmp_path / "relay") as second:
        network.relay = second
        from tests.relay_helpers import authenticate
        await authenticate(second, network, network.admin)
        reply = await network.read_log(network.admin)
        assert reply.json()["entries"] == entries
        # The relay replayed the log: it verifies the next entry against it.
        good = network.entry("set-policy", {"policy": default_policy()}, [network.admin.identity])
        assert (await network.append(good)).status == 201
        assert (await network.append(good)).error == "bad-entry"


# -- identity rotations waiting for an admin ---------------------------------------------------

def rotation(network, member, *, signers=None, seq=None, extra=None):
    """A rotate-identity-key entry signed by the member's old and new keys (no admin yet)."""
    from keys.identity import IdentityKey
    new = IdentityKey.generate()
    record = make_key_record(new, EncryptionKey.generate().public, version=2,
                             created=network.relay.now(), not_after=network.relay.now() + 30 * DAY)
    body = {"handle": member.handle, "identity_key": new.public.b64(), "encryption_key": record}
    entry = network.entry("rotate-identity-key", body,
                          signers if signers is not None else [member.identity, new], seq=seq)
    if extra:
        entry = {**entry, **extra}
    return new, entry


async def test_identity_rotation_waits_for_an_admin(relay):
    from keys.log import ENTRY_PURPOSE, signed_content
    network = await create_network(relay)
    bob = await network.add_member("bob")
    new, entry = rotation(network, bob)
    reply = await relay.post(network.path + "/rotations", {"entry": entry}, member=bob)
    assert (reply.status, reply.json()) == (202, {"status": "pending",
                                                  "id": b64e(entry_hash(entry))})
    assert (await relay.get(network.path + "/rotations", member=bob)).error == "not-an-admin"

    listed = (await relay.get(network.path + "/rotations", member=network.admin)).json()
    assert [(r["id"], r["handle"], r["entry"]) for r in listed["rotations"]] == [
        (b64e(entry_hash(entry)), "bob", entry)]
    ana = network.admin
    signatures = entry["signatures"] + [{"key": ana.identity.public.b64(),
                                         "sig": ana.identity.sign_b64(ENTRY_PURPOSE,
                                                                      signed_content(entry))}]
    entry = {**entry, "signatures": sorted(signatures, key=lambda s: s["key"])}
    assert (await network.append(entry)).status == 201
    assert (await relay.get(network.path + "/rotations", member=ana)).json() == {"rotations": []}
    assert (await relay.get(network.path + "/mailbox", member=bob)).error == "bad-token"


async def test_identity_rotation_checked_before_it_is_kept(relay):
    from keys.identity import IdentityKey
    network = await create_network(relay)
    bob = await network.add_member("bob")
    await network.add_member("carol")

    async def submit(entry, by=bob):
        return await relay.post(network.path + "/rotations", {"entry": entry}, member=by)

    _, only_new = rotation(network, bob, signers=[IdentityKey.generate()])
    assert (await submit(only_new)).error == "bad-entry"             # bob did not sign it
    _, entry = rotation(network, bob)
    assert (await submit(entry, by=network.members["carol"])).error == "bad-entry"   # not carol's
    _, stale = rotation(network, bob, seq=network.verifier.seq)
    assert (await submit(stale)).status == 409
    _, extra = rotation(network, bob, extra={"note": "x"})
    assert (await submit(extra)).error == "bad-entry"
    _, tampered = rotation(network, bob)
    tampered["time"] += 1
    assert (await submit(tampered)).error == "bad-entry"
    assert (await submit({"kind": "rotate-identity-key"})).error == "bad-entry"
    assert (await relay.table_counts())["pending_rotations"] == 0
